"""Calibrate the "no good match" signal: false positives on real questions, detection of nonsense ones.

    python benchmarks/no_match.py --data /work/shared/data/scifact --direct --vectors-cache /tmp/scifact.npy \
        --json scifact.json
    python benchmarks/no_match.py --data /work/data/squad --data-dir /tmp/cairn-squad --json squad.json
    python benchmarks/no_match.py --combine scifact.json squad.json [--fp-cap 0.03]

Two ways to get the legs:

* default — ingest the BEIR set into a Cairn data dir (``--data-dir`` reuses
  one) and search through Cairn's real path (``chunk_search_outcome``);
* ``--direct`` — build the two indexes in-process with ``kb.retrieval``
  (one passage per corpus document, title + text, the bundled embedder,
  vectors cached in ``--vectors-cache``) and run ``hybrid_retrieve`` and
  ``evidence_of`` on them — the same functions search calls, without the
  ingestion pipeline, for corpora too large to ingest on a small host.

Query sets, all reproducible (seed 15):

* ``real`` — every query of the set (each has a relevant document): the
  share flagged is the **false-positive rate**;
* ``off-topic`` — fixed questions from other domains (cooking, sport, cars,
  a few in Chinese) and "xylophone quantum zebra";
* ``random-vocab`` — 2–4 random whole words of the embedder's WordPiece
  vocabulary (ordinary English words);
* ``random-corpus`` — 2–4 random words of the corpus itself (surface forms
  found in at least two documents): the hard case, every word matches something;
* ``keyboard-mash`` — strings typed across keyboard rows.

The share of each nonsense set flagged is its **detection rate**
(1 − false-negative rate).  Queries are split in two halves (calibration,
test) by a seeded shuffle; the grid picks thresholds on the calibration
half of every dataset given (``--combine``) and reports both halves.  The
JSON keeps each query's raw signals, so ``--combine`` re-scores any grid
without searching again.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import time
from collections import Counter
from dataclasses import replace
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
    "今天晚上吃什么好",
    "怎么给自行车换内胎",
    "周末去哪里看电影",
    "猫为什么喜欢睡觉",
]
KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
SETS = ("real", "off-topic", "random-vocab", "random-corpus", "keyboard-mash")
NONSENSE = SETS[1:]
SIGNALS = ("dense_best", "dense_margin", "lexical_coverage", "lexical_agreement", "coherence")


def random_vocab_queries(count: int, seed: int = 15) -> list[str]:
    """2–4 random whole words of the bundled embedder's WordPiece vocabulary."""
    from kb.retrieval.embedding import bundled_model_path

    vocab = (Path(bundled_model_path()) / "vocab.txt").read_text(encoding="utf-8").split("\n")
    words = [w for w in vocab if re.fullmatch(r"[a-z]{4,}", w)]
    rng = random.Random(seed)
    return [" ".join(rng.sample(words, rng.randint(2, 4))) for _ in range(count)]


def random_corpus_queries(texts: list[str], count: int, seed: int = 15) -> list[str]:
    """2–4 random words of the corpus (lower-case, 4+ letters, in at least two documents)."""
    df: Counter[str] = Counter()
    for text in texts:
        df.update(set(re.findall(r"[a-z]{4,}", text.lower())))
    words = sorted(w for w, n in df.items() if n >= 2)
    rng = random.Random(seed)
    return [" ".join(rng.sample(words, rng.randint(2, 4))) for _ in range(count)]


def keyboard_mash(count: int, seed: int = 15) -> list[str]:
    rng = random.Random(seed)

    def word() -> str:
        row = KEYBOARD[rng.randrange(len(KEYBOARD))]
        return "".join(rng.choice(row) for _ in range(rng.randint(3, 8)))

    return [" ".join(word() for _ in range(rng.randint(1, 3))) for _ in range(count)]


def halves(count: int, seed: int = 15) -> list[str]:
    """'calibration' or 'test' for each of ``count`` queries (a seeded shuffle, half each)."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    split = ["test"] * count
    for i in order[: count // 2]:
        split[i] = "calibration"
    return split


# --- scoring ---------------------------------------------------------------------------------


def flagged(signals: list[dict[str, Any]], thresholds: dict[str, float], null: Any = None) -> float:
    """The share of ``signals`` flagged under ``thresholds``; ``null``: the collection's ``Null`` (or None).

    ``thresholds["null"]`` 0 leaves the null out; ``thresholds["fisher"]`` 0 uses only its threshold (the
    third version), 1 also its p-values together with the co-occurrence test (``evidence._incoherent``).
    """
    from kb.retrieval.evidence import Thresholds, is_weak

    if not signals:
        return 0.0
    limits = Thresholds(**{k: v for k, v in thresholds.items() if k not in ("null", "fisher")})
    if thresholds.get("null", 1) and null is not None:
        limits = replace(limits, null_dense=null.threshold, null=null if thresholds.get("fisher", 1) else None)

    def weak(s: dict[str, Any]) -> bool:
        values = {k: s.get(k) for k in SIGNALS if k != "coherence"}
        if (
            values["lexical_coverage"] is None
        ):  # the leg always runs here: None is a run that found nothing
            values["lexical_coverage"] = 0.0
        return is_weak(**values, thresholds=limits, coherence=s.get("coherence"))

    return sum(weak(s) for s in signals) / len(signals)


def run_null(run: dict[str, Any]) -> Any:
    """The ``Null`` a run recorded (None for none, or for a run of a version that kept only its threshold)."""
    from kb.retrieval.evidence import Null

    cosines = run.get("null_cosines")
    return Null(tuple(cosines)) if cosines else None


def rates(run: dict[str, Any], thresholds: dict[str, float], half: str | None) -> dict[str, float]:
    out = {}
    for name in SETS:
        rows = [s for s in run["queries"][name] if half is None or s["half"] == half]
        out[name] = flagged(rows, thresholds, run_null(run))
    return out


GRID = {
    "dense": [0.3, 0.35, 0.4, 0.45],
    "margin": [-1.0, 0.1],
    "lexical": [0.5, 0.7, 1.01],
    "agreement": [-1.0, 0.1, 0.2],
    "coverage_alone": [0.999, 1.01],
    "dense_unseen": [0.0, 0.45, 0.6],
    "coherence": [0.0, 0.01, 0.05, 0.1, 0.2],
    "null": [0, 1],
    "fisher": [0, 1],
}


PRIMARY = ("off-topic", "random-vocab", "keyboard-mash")


def choose(runs: list[dict[str, Any]], fp_cap: float) -> list[dict[str, Any]]:
    """Grid rows whose calibration-half false-positive rate stays under ``fp_cap`` on every dataset.

    Sorted by the worst detection over the ``PRIMARY`` nonsense sets of
    every dataset, then their mean, then the worst detection of random corpus words (the
    hard case, partly real keyword queries on a topical corpus), then by
    fewer false positives — all on the calibration halves.
    """
    rows = []
    for values in itertools.product(*GRID.values()):
        t = dict(zip(GRID, values, strict=True))
        per = [rates(run, t, "calibration") for run in runs]
        fp = max(p["real"] for p in per)
        if fp > fp_cap:
            continue
        primary = [p[name] for p in per for name in PRIMARY]
        corpus = min(p["random-corpus"] for p in per)
        rows.append(
            {
                **t,
                "worst primary detection": min(primary),
                "mean primary detection": sum(primary) / len(primary),
                "worst random-corpus": corpus,
                "max false positives": fp,
            }
        )
    rows.sort(
        key=lambda r: (
            -r["worst primary detection"],
            -r["mean primary detection"],
            -r["worst random-corpus"],
            r["max false positives"],
        )
    )
    return rows


def report(
    runs: list[dict[str, Any]], thresholds: dict[str, float], title: str
) -> list[dict[str, Any]]:
    table = []
    for run in runs:
        for half in ("calibration", "test", None):
            r = rates(run, thresholds, half)
            table.append(
                {
                    "dataset": run["dataset"],
                    "half": half or "all",
                    "false positives (real)": r["real"],
                    **{f"detected {name}": r[name] for name in NONSENSE},
                }
            )
    print_table(title, table)
    return table


def combine(paths: list[str], fp_cap: float, json_out: str | None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import sys

    sys.path.insert(0, str(ROOT))
    runs = [json.loads(Path(p).read_text()) for p in paths]
    grid = choose(runs, fp_cap)
    print_table(
        f"grid, calibration halves, false positives <= {fp_cap:.0%} on every set (best 10)",
        grid[:10],
    )
    out: dict[str, Any] = {"fp_cap": fp_cap, "grid": grid[:50]}
    if grid:
        best = {k: grid[0][k] for k in GRID}
        out["chosen"] = best
        out["rates"] = report(runs, best, f"chosen on the calibration halves: {best}")
    write_json(json_out, out)


# --- searching -------------------------------------------------------------------------------


def direct_indexes(dataset: Any, cache: Path | None) -> Any:
    """The two indexes built in-process from a BEIR corpus (one passage per document, the bundled embedder,
    vectors cached in ``cache``): ``(snapshot, allowed mask, passage texts, ids)``. Shared with
    ``evidence_cost.py``."""
    from types import SimpleNamespace

    import numpy as np

    from kb import index
    from kb.retrieval.dense import DenseIndex
    from kb.retrieval.lexical import BM25Index
    from kb.retrieval.passages import index_text
    from kb.retrieval.tokenize import tokenize

    embedder = index.active_embedder()
    texts = [index_text(text, "", title) for title, text in dataset.corpus.values()]
    if cache is not None and cache.exists():
        vectors = np.load(cache)
    else:
        started = time.perf_counter()
        vectors = np.concatenate(
            [embedder.encode(texts[i : i + 256], batch_size=32) for i in range(0, len(texts), 256)]
        )
        print(f"embedded {len(texts)} passages in {time.perf_counter() - started:.0f} s")
        if cache is not None:
            np.save(cache, vectors.astype(np.float32))
    ids = np.arange(1, len(texts) + 1, dtype=np.int64)
    dense = DenseIndex(vectors.shape[1])
    dense.add(ids, vectors.astype(np.float32))
    lexical = BM25Index()
    lexical.add(ids, [tokenize(t) for t in texts])
    snapshot = SimpleNamespace(dense=dense, lexical=lexical)
    allowed = np.ones(len(texts) + 1, dtype=bool)
    allowed[0] = False
    return snapshot, allowed, texts, ids


def direct_searcher(dataset: Any, cache: Path | None) -> Any:
    """Search functions over in-process indexes built from the corpus (``--direct``)."""
    from kb import index
    from kb.retrieval.evidence import evidence_of, null_of, null_sample
    from kb.retrieval.fusion import FusionConfig
    from kb.retrieval.hybrid import hybrid_retrieve
    from kb.retrieval.tokenize import tokenize
    from kb.search import no_match_thresholds

    embedder = index.active_embedder()
    snapshot, allowed, texts, ids = direct_indexes(dataset, cache)
    dense, lexical = snapshot.dense, snapshot.lexical
    # The collection's null as Cairn computes it (kb.index.no_match_null): the same sample, queries and quantile.
    sample = null_sample(ids, index.NULL_SAMPLE)
    null = null_of([texts[int(i) - 1] for i in sample], embedder.encode,
                   lambda v: float(dense.search(v, 1)[1][0]))

    def search(text: str) -> Any:
        tokens = tokenize(text)
        retrieval = hybrid_retrieve(
            snapshot,
            query_vector=index.embed_query(text),
            query_tokens=tokens,
            allowed=allowed,
            k=10,
            fusion=FusionConfig(),
        )
        return evidence_of(
            retrieval, lexical, tokens, thresholds=no_match_thresholds(), lexical_ran=True,
            null=lambda: null,
        )

    return search, texts, null


def cairn_searcher(dataset: Any) -> Any:
    """Search functions over a Cairn collection the set is ingested into (the real search path)."""
    from access.services import personal_user
    from ingestion.api import corpus_ingest, jobs_run_here
    from kb import index
    from kb.evaluation import as_markdown
    from kb.search import chunk_search_outcome

    user = personal_user()
    collection = corpus_ingest(
        dataset,
        user=user,
        collection_name="beir",
        run_jobs=lambda ids: jobs_run_here(ids, index_every=2000),
    )

    def search(text: str) -> Any:
        return chunk_search_outcome(
            user, text, collection_ids=[collection.pk], k=10, rerank=False
        ).evidence

    snapshot = index.index_reader().snapshot()
    null = index.no_match_null(snapshot) if snapshot is not None else None
    return search, [as_markdown(title, text).decode() for title, text in dataset.corpus.values()], null


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument(
        "--data-dir", default=None, help="reuse a Cairn data dir (skips re-ingesting)"
    )
    parser.add_argument(
        "--direct", action="store_true", help="build the indexes in-process (no ingestion)"
    )
    parser.add_argument(
        "--vectors-cache", type=Path, default=None, help="--direct: cache the corpus vectors here"
    )
    parser.add_argument("--random", type=int, default=200, help="queries per random-word set")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--fp-cap", type=float, default=0.03, help="--combine: false-positive cap per dataset"
    )
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--combine", nargs="+", default=None, help="score the grid over these JSON outputs"
    )
    args = parser.parse_args()
    if args.combine:
        combine(args.combine, args.fp_cap, args.json)
        return
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    django_setup(args.data_dir)
    from django.conf import settings

    from kb.evaluation import load_beir

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    dataset = load_beir(Path(args.data))
    search, texts, null = (
        direct_searcher(dataset, args.vectors_cache) if args.direct else cairn_searcher(dataset)
    )
    queries = {
        "real": list(dataset.queries.values()),
        "off-topic": OFF_TOPIC,
        "random-vocab": random_vocab_queries(args.random),
        "random-corpus": random_corpus_queries(texts, args.random),
        "keyboard-mash": keyboard_mash(args.random // 2),
    }
    signals: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    for name, texts_ in queries.items():
        split = halves(len(texts_))
        signals[name] = []
        for text, half in zip(texts_, split, strict=True):
            evidence = search(text)
            signals[name].append(
                {
                    "query": text,
                    "half": half,
                    **{k: getattr(evidence, k) for k in SIGNALS},
                    "no_good_match": evidence.no_good_match,
                }
            )
    seconds = time.perf_counter() - started
    configured = {
        "dense": settings.CAIRN_NO_MATCH_DENSE,
        "margin": settings.CAIRN_NO_MATCH_MARGIN,
        "lexical": settings.CAIRN_NO_MATCH_LEXICAL,
        "agreement": settings.CAIRN_NO_MATCH_AGREEMENT,
        "coverage_alone": settings.CAIRN_NO_MATCH_COVERAGE_ALONE,
        "dense_unseen": settings.CAIRN_NO_MATCH_DENSE_UNSEEN,
        "coherence": settings.CAIRN_NO_MATCH_COHERENCE,
        "null": int(settings.CAIRN_NO_MATCH_NULL),
        "fisher": 1,
    }
    run = {
        "dataset": Path(args.data).name,
        "mode": "direct" if args.direct else "cairn",
        "passages": len(texts),
        "null": None if null is None else null.threshold,
        "null_cosines": None if null is None else list(null.cosines),
        "thresholds": configured,
        "queries": signals,
        "seconds_per_query": seconds / sum(len(v) for v in signals.values()),
    }
    run["rates"] = report(
        [run], configured, f"{run['dataset']}: configured thresholds {configured}"
    )
    write_json(args.json, run)


if __name__ == "__main__":
    main()
