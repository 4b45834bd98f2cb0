"""Embedding speed and quality, fp32 vs bf16 on this CPU.

    python benchmarks/embed_dtype.py --scifact /work/shared/data/scifact --json bench-results/embed_dtype.json

Encodes the SciFact corpus (title + text, as Cairn embeds a chunk with its
title) with the bundled all-MiniLM-L6-v2 in float32 and in bfloat16, in
alternating rounds so both see the same machine load; reports passages/s,
the speed ratio, the cosine between the two embeddings of each passage, and
dense-only nDCG@10 on the test queries with exact search for both.
(``manage.py cairn_eval`` gives the same comparison through the whole
pipeline: ``CAIRN_EMBED_DTYPE=float32|bfloat16``.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def ndcg10(scores: np.ndarray, doc_ids: list[str], qrels: dict[str, dict[str, int]], qids: list[str]) -> float:
    total = 0.0
    for row, qid in enumerate(qids):
        top = np.argsort(-scores[row])[:10]
        relevant = qrels[qid]
        dcg = sum(relevant.get(doc_ids[d], 0) / math.log2(i + 2) for i, d in enumerate(top))
        ideal = sorted(relevant.values(), reverse=True)[:10]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        total += dcg / idcg if idcg else 0.0
    return total / len(qids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scifact", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="passages to time (0: the whole corpus)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from kb.retrieval.embedding import SentenceTransformerEmbedder, bundled_model_path, cpu_has_bf16

    corpus = [json.loads(line) for line in (args.scifact / "corpus.jsonl").open()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (args.scifact / "queries.jsonl").open())}
    qrels: dict[str, dict[str, int]] = {}
    with (args.scifact / "qrels" / "test.tsv").open() as handle:
        next(handle)
        for line in handle:
            qid, did, score = line.split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    texts = [f"{d.get('title', '')}\n{d.get('text', '')}" for d in corpus]
    if args.limit:
        texts = texts[: args.limit]
    doc_ids = [d["_id"] for d in corpus][: len(texts)]
    qids = [q for q in qrels if q in queries]
    models = {dt: SentenceTransformerEmbedder("all-MiniLM-L6-v2", bundled_model_path(), "cpu", dt)
              for dt in ("float32", "bfloat16")}
    for model in models.values():
        model.encode(texts[:64], batch_size=args.batch)  # warm-up
    seconds = {dt: 0.0 for dt in models}
    vectors: dict[str, list[np.ndarray]] = {dt: [] for dt in models}
    step = 512
    for at in range(0, len(texts), step):  # alternate, so both dtypes see the same load
        for dt, model in models.items():
            t = time.perf_counter()
            vectors[dt].append(model.encode(texts[at:at + step], batch_size=args.batch))
            seconds[dt] += time.perf_counter() - t
        print(f"{min(at + step, len(texts))}/{len(texts)}", end="\r", flush=True)
    docs = {dt: np.concatenate(v) for dt, v in vectors.items()}
    report = {"passages": len(texts), "cpu_bf16": cpu_has_bf16(),
              "passages_per_s": {dt: len(texts) / s for dt, s in seconds.items()},
              "speedup_bf16": seconds["float32"] / seconds["bfloat16"],
              "cosine_min": float((docs["float32"] * docs["bfloat16"]).sum(1).min()),
              "cosine_mean": float((docs["float32"] * docs["bfloat16"]).sum(1).mean())}
    if len(texts) == len(corpus):
        for dt, model in models.items():
            q = model.encode([queries[i] for i in qids], batch_size=args.batch)
            report[f"ndcg@10_{dt}"] = ndcg10(q @ docs[dt].T, doc_ids, qrels, qids)
        report["ndcg_delta"] = report["ndcg@10_bfloat16"] - report["ndcg@10_float32"]
    print()
    for key, value in report.items():
        print(f"{key:<22} {value}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
