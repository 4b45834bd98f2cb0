"""Per-collection fusion tuning (``cairn_tune``) on a BEIR set: a golden sample, then the rest as a check.

    python benchmarks/tune.py --data ../shared/data/scifact --data-dir DIR --golden 100 [--json out.json]

Ingests (or reuses) the set as ``retrieval_quality.py`` does, replaces the
collection's golden set with ``--golden`` queries drawn at random (``--seed``)
with their qrels as expected documents, runs ``kb.tuning.fusion_tune`` (the
code behind ``cairn_tune``), and then scores the chosen setting and the
untuned default on every query *not* in the golden sample: the honest check
of whether tuning helped.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from _setup import ROOT, django_setup, print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--golden", type=int, default=100)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    django_setup(args.data_dir)
    from access.services import Actor, personal_user
    from ingestion.api import corpus_ingest, jobs_run_here
    from kb.evaluation import Dataset, evaluate, load_beir
    from kb.golden import golden_question_create
    from kb.models import GoldenQuestion
    from kb.selectors import readable_documents
    from kb.tuning import fusion_tune

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    dataset = load_beir(Path(args.data))
    user = personal_user()
    collection = corpus_ingest(dataset, user=user, collection_name="beir",
                               run_jobs=lambda ids: jobs_run_here(ids, index_every=2000))
    pk_of = {title.removesuffix(".md"): pk for pk, title in
             readable_documents(user, collection=collection).values_list("id", "title")}
    query_ids = sorted(dataset.queries)
    golden = set(random.Random(args.seed).sample(query_ids, args.golden))
    GoldenQuestion.objects.filter(collection=collection).delete()
    for query_id in sorted(golden):
        expected = [pk_of[d] for d, rel in dataset.qrels[query_id].items() if rel > 0 and d in pk_of]
        golden_question_create(actor=Actor(user=user), user=user, collection=collection,
                               question=dataset.queries[query_id], expected_documents=expected)
    result = fusion_tune(collection=collection, folds=args.folds)
    rest = Dataset(corpus=dataset.corpus, queries={q: t for q, t in dataset.queries.items() if q not in golden},
                   qrels={q: r for q, r in dataset.qrels.items() if q not in golden})
    held_out = {}
    for name, config in (("default", result.default), ("chosen", result.chosen)):
        held_out[name] = evaluate(rest, user=user, collection=collection, modes=["hybrid"], fusion=config)[0].ndcg10
    rows = [{"fusion": c.describe(), "golden nDCG@10": v,
             "": ("default " if c == result.default else "") + ("chosen" if c == result.chosen else "")}
            for c, v in zip(result.settings, result.ndcg, strict=True)]
    print_table(f"{Path(args.data).name}: {result.questions} golden questions, {result.folds}-fold CV", rows)
    summary = [{"cv tuned": result.cv_tuned, "cv default": result.cv_default, "cv margin": result.margin,
                "chosen": result.chosen.describe(), f"rest ({len(rest.queries)}) default": held_out["default"],
                f"rest ({len(rest.queries)}) chosen": held_out["chosen"]}]
    print_table("held out", summary)
    write_json(args.json, {"dataset": Path(args.data).name, "golden": args.golden, "seed": args.seed,
                           "table": rows, "summary": summary[0]})


if __name__ == "__main__":
    main()
