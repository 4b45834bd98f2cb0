"""Calibrate the "no good match" signal: false positives on real questions, detection of nonsense ones.

    python benchmarks/no_match.py --data ../shared/data/scifact --data-dir DIR [--json out.json]
    python benchmarks/no_match.py --combine scifact.json squad.json

Ingests (or, with ``--data-dir``, reuses) a BEIR dataset as
``retrieval_quality.py`` does, then runs through Cairn's real search path
(``chunk_search_outcome``, the configured fusion):

* every real query of the split (they all have a relevant document): the
  share flagged "no good match" is the **false-positive rate**;
* ``--random`` queries of 2–4 words drawn at random (fixed seed) from the
  whole-word part of the bundled embedder's WordPiece vocabulary — ordinary
  English words, some of them in the corpus — and a fixed list of off-topic
  questions (cooking, sport, cars …) plus "xylophone quantum zebra": the
  share flagged is the **detection rate** (1 − the false-negative rate).

It prints both rates at the configured thresholds (``CAIRN_NO_MATCH_DENSE``,
``CAIRN_NO_MATCH_LEXICAL``) and over a grid of thresholds; the JSON keeps
each query's raw signals (best dense cosine, lexical coverage), so
``--combine`` can score a grid over several datasets at once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from pathlib import Path
from typing import Any

from _setup import ROOT, django_setup, print_table, write_json

OFF_TOPIC = [
    "xylophone quantum zebra",
    "how do I bake sourdough bread at home",
    "best pizza toppings with pineapple",
    "how to change a flat tyre on a bicycle",
    "who won the football world cup final",
    "lyrics of my favourite pop song",
    "cheap flights to Barcelona in August",
    "how to knit a woollen scarf for beginners",
    "what time does the supermarket close on Sunday",
    "recommended settings for a gaming mouse",
    "how to train a puppy to sit",
    "easy chords for learning the ukulele",
    "wedding dress shopping tips",
    "fix a leaking kitchen tap",
    "the rules of chess castling",
    "marshmallow trampoline saxophone",
    "purple elephant dancing tango moonlight",
    "how many goals did the striker score last season",
    "stain removal for red wine on carpet",
    "car insurance quote comparison",
]
DENSE_GRID = [0.15, 0.2, 0.25, 0.3, 0.35, 0.4]
LEXICAL_GRID = [0.4, 0.5, 0.6, 0.7, 0.8, 1.01]  # 1.01: the lexical leg never vouches for a match


def random_queries(count: int, seed: int = 15) -> list[str]:
    from kb.retrieval.embedding import bundled_model_path

    vocab = (Path(bundled_model_path()) / "vocab.txt").read_text(encoding="utf-8").split("\n")
    words = [w for w in vocab if re.fullmatch(r"[a-z]{4,}", w)]
    rng = random.Random(seed)
    return [" ".join(rng.sample(words, rng.randint(2, 4))) for _ in range(count)]


def flagged(signals: list[dict[str, Any]], dense: float, lexical: float) -> float:
    from kb.retrieval.evidence import is_weak

    if not signals:
        return 0.0
    hits = sum(is_weak(s["dense_best"], s["lexical_coverage"], dense_threshold=dense, lexical_threshold=lexical)
               for s in signals)
    return hits / len(signals)


def grid_rows(real: list[dict[str, Any]], nonsense: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for dense in DENSE_GRID:
        for lexical in LEXICAL_GRID:
            rows.append({"dense <": dense, "lexical <": lexical, "false positives (real)": flagged(real, dense, lexical),
                         "detected (nonsense)": flagged(nonsense, dense, lexical)})
    return rows


def combine(paths: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import sys

    sys.path.insert(0, str(ROOT))
    runs = [json.loads(Path(p).read_text()) for p in paths]
    real = [s for run in runs for s in run["real"]]
    nonsense = [s for run in runs for s in run["nonsense"]]
    print_table(f"{' + '.join(run['dataset'] for run in runs)}: {len(real)} real, {len(nonsense)} nonsense queries",
                grid_rows(real, nonsense))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--data-dir", default=None, help="reuse a Cairn data dir (skips re-ingesting)")
    parser.add_argument("--random", type=int, default=200, help="random-word queries")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--combine", nargs="+", default=None, help="score the grid over these JSON outputs")
    args = parser.parse_args()
    if args.combine:
        combine(args.combine)
        return
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    django_setup(args.data_dir)
    from django.conf import settings

    from access.services import personal_user
    from ingestion.api import corpus_ingest, jobs_run_here
    from kb.evaluation import load_beir
    from kb.search import chunk_search_outcome, fusion_config

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    dataset = load_beir(Path(args.data))
    user = personal_user()
    collection = corpus_ingest(dataset, user=user, collection_name="beir",
                               run_jobs=lambda ids: jobs_run_here(ids, index_every=2000))

    def signals(queries: list[str]) -> list[dict[str, Any]]:
        out = []
        for text in queries:
            evidence = chunk_search_outcome(user, text, collection_ids=[collection.pk], k=10, rerank=False).evidence
            out.append({"query": text, "dense_best": evidence.dense_best,
                        "lexical_coverage": evidence.lexical_coverage})
        return out

    real = signals(list(dataset.queries.values()))
    nonsense = signals(OFF_TOPIC + random_queries(args.random))
    dense, lexical = settings.CAIRN_NO_MATCH_DENSE, settings.CAIRN_NO_MATCH_LEXICAL
    summary = {"dataset": Path(args.data).name, "real_queries": len(real), "nonsense_queries": len(nonsense),
               "fusion": fusion_config().describe(), "dense_threshold": dense, "lexical_threshold": lexical,
               "false_positive_rate": flagged(real, dense, lexical),
               "detection_rate": flagged(nonsense, dense, lexical),
               "off_topic_detection_rate": flagged(nonsense[:len(OFF_TOPIC)], dense, lexical),
               "random_words_detection_rate": flagged(nonsense[len(OFF_TOPIC):], dense, lexical)}
    print_table(f"{summary['dataset']}: configured thresholds", [summary])
    print_table("threshold grid", grid_rows(real, nonsense))
    write_json(args.json, {**summary, "real": real, "nonsense": nonsense})


if __name__ == "__main__":
    main()
