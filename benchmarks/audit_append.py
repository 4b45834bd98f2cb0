"""Audit appends from several processes and threads at once: the lock-free path against group commit.

    python benchmarks/audit_append.py --json bench-results/audit_append.json

A PostgreSQL database of its own (``cairn_audit_bench_<hex>`` on
127.0.0.1:5432, migrated, dropped afterwards).  ``--processes`` processes
(default 2, as the team shape's two web workers) each run ``--threads``
threads (8) that append ``--events`` audit events (150) of a search's shape
each, pausing ``--pause-ms`` (5) between appends as a request does its other
work.  Two modes, alternating ``--rounds`` times (2):

* ``direct``: every thread appends itself (``audit_record``'s lock-free path:
  read the head, insert; a lost race is retried);
* ``group``: each process appends through its one appender thread
  (``access.services.audit_group_commit``, what a web process does).

Reported per run: wall time, CPU per event (all processes), and the
latency of one ``audit_record`` call (p50/p95/p99).  The chain is verified
at the end (``audit_chain_check``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _setup import print_table, write_json  # noqa: E402

SERVER = "postgres://postgres@127.0.0.1:5432"


def child(mode: str, start_at: float, threads: int, events: int, pause_s: float) -> None:
    import django

    django.setup()
    from django.db import connections

    from access import services
    from access.services import Actor, audit_record

    if mode == "group":
        services.audit_group_commit()
    actor = Actor(user=None, api_key_prefix="abcd1234", ip="127.0.0.1", request_id="0123456789abcdef")
    detail = {"query_chars": 50, "k": 10, "mode": "hybrid", "chunks_served": list(range(1000, 1010))}
    latencies: list[float] = []

    def work() -> None:
        for _ in range(events):
            started = time.perf_counter()
            audit_record(actor=actor, action="kb.search", target_type="collection", target_id="*",
                         rule="rbac: 1 readable collection(s); abac: no policy; deny by default", detail=detail)
            latencies.append(time.perf_counter() - started)
            time.sleep(pause_s)
        connections.close_all()

    time.sleep(max(0.0, start_at - time.time()))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print("RESULT " + json.dumps({"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
                                  "latencies_s": latencies}))


def run(mode: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    start_at = time.time() + 8  # every process set up before the first append
    argv = [sys.executable, __file__, "--child", mode, str(start_at), str(args.threads), str(args.events),
            str(args.pause_ms / 1000)]
    processes = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(args.processes)]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=600)
        if process.returncode != 0:
            raise SystemExit(f"a {mode} writer failed:\n{out[-3000:]}")
        results.append(json.loads(out.split("RESULT ", 1)[1]))
    latencies = np.asarray(sum((r["latencies_s"] for r in results), [])) * 1000
    return {"mode": mode, "events": len(latencies), "wall_s": max(r["wall_s"] for r in results),
            "cpu_ms_per_event": 1000 * sum(r["cpu_s"] for r in results) / len(latencies),
            "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
            "p99_ms": float(np.percentile(latencies, 99))}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, start_at, threads, events, pause_s = sys.argv[2:7]
        child(mode, float(start_at), int(threads), int(events), float(pause_s))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--events", type=int, default=150, help="appends per thread")
    parser.add_argument("--pause-ms", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not (1 <= args.processes <= 16 and 1 <= args.threads <= 64 and 1 <= args.events <= 10_000
            and 1 <= args.rounds <= 10):
        raise SystemExit("--processes 1..16, --threads 1..64, --events 1..10000, --rounds 1..10")
    import psycopg

    name = f"cairn_audit_bench_{secrets.token_hex(4)}"
    with psycopg.connect(f"{SERVER}/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    data_dir = tempfile.mkdtemp(prefix="cairn-audit-bench-")
    env = {**os.environ, "DATABASE_URL": f"{SERVER}/{name}", "CAIRN_SECRET_KEY": secrets.token_urlsafe(50),
           "CAIRN_DATA_DIR": data_dir, "CAIRN_ALLOWED_HOSTS": "localhost", "CAIRN_TASKS": "inline",
           "CAIRN_LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "config.settings"}
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
        rows = [run(mode, env, args) for _ in range(args.rounds) for mode in ("direct", "group")]
        check = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from access.audit_review import audit_chain_check; r = audit_chain_check(); print('CHAIN', r.ok)"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
        chain_ok = "CHAIN True" in check
    finally:
        with psycopg.connect(f"{SERVER}/test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print_table(f"Audit appends: {args.processes} processes x {args.threads} threads x {args.events} events, "
                f"{args.pause_ms:g} ms between a thread's appends ({os.cpu_count()} cores)", [
        {"mode": r["mode"], "events": r["events"], "wall s": f"{r['wall_s']:.2f}",
         "CPU ms/event": f"{r['cpu_ms_per_event']:.2f}", "p50 ms": f"{r['p50_ms']:.1f}",
         "p95 ms": f"{r['p95_ms']:.1f}", "p99 ms": f"{r['p99_ms']:.1f}"} for r in rows])
    print(f"\nthe chain verifies: {chain_ok}")
    write_json(str(args.json) if args.json else None, {"rows": rows, "chain_ok": chain_ok, **vars(args),
                                                         "json": str(args.json) if args.json else None})
    if not chain_ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
