"""Overhead of the OpenAI-compatible endpoint over the native ask API, against a real ``cairn_serve`` process.

    python benchmarks/openai_compat.py --rounds 200 --json bench-results/openai_compat.json

Personal shape, extractive backend (no language model: the generation is
cheap, so what differs between the two paths — request parsing, the
follow-up rewrite, the response shape — is as visible as it can be).
A collection of ``--docs`` small Markdown documents is uploaded and indexed
with the real embedding model; then each round asks the same single-turn
question once through ``POST /api/v1/ask`` and once through
``POST /v1/chat/completions`` (order alternating between rounds so drift
on a shared machine hits both alike), plain and, with ``--stream``, also
streamed to the end.  Reported: p50/p95 client latency per path and the
p50 overhead of ``/v1/`` in percent (target: ≤ 5 %).  Rate limiting is off
(``CAIRN_RATE_LIMIT=0``) so that the two paths do exactly the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _setup import ROOT, print_table, write_json  # noqa: E402

from tests.e2e.processes import Http, Process, child_env, free_port, manage  # noqa: E402

QUESTION = "How often is the boiler descaled?"
TOPICS = ["boiler", "harbour", "glacier", "orchard", "foundry", "observatory", "vineyard", "lighthouse", "canal",
          "sawmill", "windmill", "bakery", "shipyard", "library", "quarry", "brewery", "aqueduct", "tannery"]


def documents(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        lines = [f"# The {topic} manual {i}",
                 f"The {topic} is descaled every {6 + i % 7} months by the maintenance team of site {i}.",
                 *(f"Section {j}: daily checks at the {topic} include inspections, repairs and an inventory of "
                   f"tools, written down by shift {j}." for j in range(8))]
        out.append((f"{topic}-{i}.md", "\n\n".join(lines).encode()))
    return out


def timed(base: str, path: str, payload: dict[str, Any]) -> float:
    request = urllib.request.Request(base + path, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
        status = response.status
    elapsed = time.perf_counter() - start
    if status != 200 or (payload.get("stream") and b"[DONE]" not in body and b"event: done" not in body):
        raise SystemExit(f"{path} answered {status}: {body[:300]!r}")
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="requests per path and mode")
    parser.add_argument("--docs", type=int, default=36, help="documents in the collection")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured rounds first")
    parser.add_argument("--stream", action="store_true", help="also measure streamed answers (read to the end)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cairn-bench-openai-"))
    port = free_port()
    env = child_env(CAIRN_DATA_DIR=str(root / "data"), CAIRN_LLM_BACKEND="extractive", CAIRN_RATE_LIMIT="0",
                    CAIRN_LOG_LEVEL="WARNING")
    os.chdir(ROOT)
    process = Process("cairn_serve", manage("cairn_serve", "--host", "127.0.0.1", "--port", str(port)), env, root)
    base = f"http://127.0.0.1:{port}"
    try:
        owner = Http(base)
        owner.wait_until_up(process)
        status, collection = owner.post_json("/api/v1/collections", {"name": "Manuals"})
        assert status == 201, collection
        for name, data in documents(args.docs):
            status, document = owner.upload(f"/api/v1/collections/{collection['id']}/documents", name, data)
            assert status == 201, document
            assert owner.wait_for_document(document["id"])["status"] == "INDEXED", process.log()

        ask = {"question": QUESTION, "collection": collection["id"]}
        chat = {"model": f"cairn-{collection['id']}", "messages": [{"role": "user", "content": QUESTION}]}
        modes = [False, True] if args.stream else [False]
        times: dict[tuple[str, bool], list[float]] = {(p, s): [] for p in ("ask", "chat") for s in modes}
        for stream in modes:
            for i in range(args.warmup + args.rounds):
                pair = [("ask", "/api/v1/ask", {**ask, "stream": stream}),
                        ("chat", "/v1/chat/completions", {**chat, "stream": stream})]
                for name, path, payload in (pair if i % 2 == 0 else pair[::-1]):
                    elapsed = timed(base, path, payload)
                    if i >= args.warmup:
                        times[(name, stream)].append(elapsed)
    finally:
        process.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)

    rows = []
    for stream in modes:
        ask_t, chat_t = times[("ask", stream)], times[("chat", stream)]
        ask_p50, chat_p50 = statistics.median(ask_t), statistics.median(chat_t)
        rows.append({
            "mode": "stream" if stream else "plain", "requests": len(ask_t),
            "ask_p50_ms": ask_p50 * 1000, "ask_p95_ms": percentile(ask_t, 0.95) * 1000,
            "chat_p50_ms": chat_p50 * 1000, "chat_p95_ms": percentile(chat_t, 0.95) * 1000,
            "overhead_p50_pct": (chat_p50 - ask_p50) / ask_p50 * 100,
        })
    print_table(f"POST /v1/chat/completions vs POST /api/v1/ask (extractive backend, {args.docs} documents, "
                "one question, client latency)", rows)
    write_json(args.json, {"benchmark": "openai_compat", "docs": args.docs, "rounds": args.rounds,
                           "question": QUESTION, "results": rows})


if __name__ == "__main__":
    main()
