"""What the cross-encoder stage costs per query, with a MiniLM-L6-shaped cross-encoder.

    python benchmarks/rerank.py [--top-n 10,25,50] [--queries 30] [--threads 1] [--json out.json]

No cross-encoder checkpoint ships with Cairn, and latency does not depend on
the weights: the script builds a randomly initialised BERT with the shape of
``cross-encoder/ms-marco-MiniLM-L-6-v2`` (6 layers, 384 hidden, 12 heads) and
the bundled embedder's WordPiece tokenizer, saves it as a CrossEncoder
directory, loads it through ``kb.retrieval.rerank`` (the code users' rerankers
go through) and times scoring the top-N passages of real SciFact queries
(abstract passages, truncated like Cairn's 200-token chunks).  It says nothing
about quality: a random model's order is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _setup import ROOT, print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--top-n", default="10,25,50")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kb.retrieval.embedding import bundled_model_path
    from kb.retrieval.rerank import CrossEncoderReranker

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = Path(tempfile.mkdtemp(prefix="cairn-rerank-")) / "minilm-l6-shaped-cross-encoder"
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path(), local_files_only=True)
    tokenizer.save_pretrained(model_dir)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512, num_labels=1)
    torch.manual_seed(0)
    BertForSequenceClassification(config).eval().save_pretrained(model_dir)
    reranker = CrossEncoderReranker(model_dir)

    data = Path(args.data)
    passages = [json.loads(line) for line in (data / "corpus.jsonl").open()][:2000]
    texts = [" ".join(f"{p['title']} {p['text']}".split()[:150]) for p in passages]
    queries = [json.loads(line)["text"] for line in (data / "queries.jsonl").open()][: args.queries]
    reranker.score(queries[0], texts[:8])  # warm-up
    rows = []
    for top_n in [int(n) for n in args.top_n.split(",")]:
        times = []
        for i, query in enumerate(queries):
            batch = texts[(i * top_n) % (len(texts) - top_n):][:top_n]
            started = time.perf_counter()
            reranker.score(query, batch)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        rows.append({"top_n": top_n, "p50 ms/query": statistics.median(times),
                     "p95 ms/query": times[int(0.95 * (len(times) - 1))], "passages/s": top_n * 1000 / statistics.median(times)})
    print_table(f"cross-encoder stage, MiniLM-L6 shape, {len(queries)} SciFact queries, "
                f"torch threads {torch.get_num_threads()}", rows)
    write_json(args.json, {"model_shape": "BERT 6x384 (ms-marco-MiniLM-L-6-v2)", "queries": len(queries),
                           "threads": torch.get_num_threads(), "results": rows})


if __name__ == "__main__":
    main()
