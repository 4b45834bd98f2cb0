"""What the "no good match" evidence costs per query, against an earlier commit's ``kb/retrieval/evidence.py``.

    python benchmarks/evidence_cost.py --data /work/data/squad --vectors-cache /tmp/squad.npy \
        [--baseline d830261] [--json out.json]

Builds the two indexes in-process as ``no_match.py --direct`` does (one
passage per corpus document, the bundled embedder, vectors cached), runs
``hybrid_retrieve`` once for up to 300 of the set's queries and 200 random
words of its corpus, then times ``evidence_of`` alone over those stored
retrievals: this checkout's, and — with ``--baseline REF`` — the module at
that git commit (``git show REF:kb/retrieval/evidence.py``, loaded beside
it; it must work with this checkout's ``BM25Index``). Median of
``--passes`` passes, µs per query, both in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from _setup import ROOT, django_setup, print_table, write_json


def load_baseline(ref: str) -> ModuleType:
    source = subprocess.run(["git", "show", f"{ref}:kb/retrieval/evidence.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "evidence_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("evidence_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["evidence_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--vectors-cache", type=Path, default=None)
    parser.add_argument("--baseline", default=None, help="a git commit whose evidence module to time too")
    parser.add_argument("--passes", type=int, default=9)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    django_setup()
    import numpy as np
    from no_match import direct_indexes, random_corpus_queries

    from kb import index
    from kb.evaluation import load_beir
    from kb.retrieval import evidence
    from kb.retrieval.fusion import FusionConfig
    from kb.retrieval.hybrid import hybrid_retrieve
    from kb.retrieval.tokenize import tokenize

    dataset = load_beir(Path(args.data))
    embedder = index.active_embedder()
    snapshot, allowed, texts, _ = direct_indexes(dataset, args.vectors_cache)
    lexical = snapshot.lexical
    queries = list(dataset.queries.values())[:300] + random_corpus_queries(texts, 200)
    retrievals = []
    for query in queries:
        tokens = tokenize(query)
        retrievals.append((hybrid_retrieve(snapshot, query_vector=embedder.encode_query(query), query_tokens=tokens,
                                           allowed=allowed, k=10, fusion=FusionConfig()), tokens))

    def per_query(module: Any, **kwargs: Any) -> float:
        started = time.perf_counter()
        for retrieval, tokens in retrievals:
            module.evidence_of(retrieval, lexical, tokens, thresholds=module.Thresholds(), **kwargs)
        return (time.perf_counter() - started) / len(retrievals) * 1e6

    modules: list[tuple[str, ModuleType, dict[str, Any]]] = []
    if args.baseline:
        modules.append((f"baseline {args.baseline}", load_baseline(args.baseline), {}))
    # The null asked for where the verdict turns on it, as search does (a fixed value: its computation is
    # once per index, not per query).
    modules.append(("this checkout", evidence, {"null": lambda: 0.5}))
    timings: dict[str, list[float]] = {name: [] for name, _, _ in modules}
    for _ in range(args.passes):  # interleaved, so a busy moment of the host hits both alike
        for name, module, kwargs in modules:
            timings[name].append(per_query(module, **kwargs))
    rows = [{"evidence module": name, "queries": len(retrievals), "µs per query (median)": float(np.median(t)),
             "min": float(np.min(t))} for name, t in timings.items()]
    print_table(f"{Path(args.data).name}: evidence_of per query, {args.passes} passes", rows)
    write_json(args.json, {"dataset": Path(args.data).name, "passages": len(texts), "rows": rows})


if __name__ == "__main__":
    main()
