"""Concurrent users against the team shape, with Locust, on loopback.

    pip install -e ".[bench]"     # Locust (not needed by Cairn or its tests)
    python benchmarks/load.py --json bench-results/load.json

The BEIR SciFact corpus (``--dataset``, default ``../shared/data/scifact``)
is ingested through Cairn's real pipeline, in this process, into a
PostgreSQL database of its own (``cairn_load_<hex>`` on 127.0.0.1:5432,
dropped afterwards) with Redis database 12 as the broker.  Then the team
shape's processes serve it: ``cairn_web`` (``--web-workers`` Uvicorn
workers) and one ``cairn_worker inference`` pool with the extractive
backend.  ``--users`` simulated users (default 50), each with an API key of
its own and viewer access to the collection, wait ``--think`` seconds (1)
between requests and send 80 % searches (``GET /api/v1/search``, k=10) and
20 % questions (``POST /api/v1/ask``), each a random SciFact query, for
``--duration`` seconds (120).  Locust runs in its own process on the same
machine, so the client's CPU counts against the server's.

Reported: requests, errors (anything but a 200 of the right shape), latency
p50/p95/p99/max per kind from every request's own time, throughput, and the
CPU time and memory of the web and inference processes.  Targets (issue 11):
0 errors, search p95 ≤ 300 ms.

With ``--data-dir DIR`` the database and index are kept (the database's name
is written in ``DIR``); a later run with the same ``DIR`` skips the ingestion.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _setup import print_table, tree_stat, write_json  # noqa: E402

SERVER = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/12"
SEARCH_P95_TARGET_MS = 300.0
WARM_S = 20  # seconds from the first request's end before the "after warm-up" figure counts


def database_for(data_dir: Path) -> tuple[str, str, bool]:
    """(database name, secret key, reused) for ``data_dir``: the ones an earlier run kept, or new ones."""
    import psycopg

    state = data_dir / "load-state.json"
    if state.exists():
        kept = json.loads(state.read_text())
        with psycopg.connect(f"{SERVER}/test", autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (kept["database"],)).fetchone():
                # Reused as a finished knowledge base only once an ingestion ran to its end.
                return kept["database"], kept["secret_key"], bool(kept.get("ingested"))
    name, key = f"cairn_load_{secrets.token_hex(4)}", secrets.token_urlsafe(50)
    with psycopg.connect(f"{SERVER}/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    state.write_text(json.dumps({"database": name, "secret_key": key}))
    return name, key, False


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare(dataset_dir: Path, users: int, *, reused: bool) -> dict[str, Any]:
    """Ingest the corpus (unless an earlier run did), make ``users`` viewers with API keys; the run's plan."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from access.models import User
    from access.services import Actor, api_key_create
    from ingestion import api
    from kb import services as kb_services
    from kb.evaluation import load_beir

    dataset = load_beir(dataset_dir, "test")
    owner, _ = User.objects.get_or_create(username="load-owner")
    started = time.perf_counter()
    from kb.models import Collection

    collection = Collection.objects.filter(name="scifact", owner=owner).first() if reused else None
    if collection is None:
        collection = api.corpus_ingest(dataset, user=owner, collection_name="scifact",
                                       run_jobs=lambda ids: api.jobs_run_here(ids, index_every=2000))
    ingest_s = time.perf_counter() - started
    keys = []
    for i in range(users):
        user, created = User.objects.get_or_create(username=f"load-{i:03d}")
        if created:
            kb_services.collection_share(actor=Actor(user=owner), collection=collection, principal=user,
                                         role="viewer")
        keys.append(api_key_create(user=user, name="load", actor=Actor(user=user))[1])
    queries = [text for text in dataset.queries.values() if text.strip()]
    return {"keys": keys, "queries": queries, "documents": len(dataset.corpus), "ingest_s": ingest_s}


def named_cpu(name: str) -> float:
    """CPU seconds of every process called ``name`` (the PostgreSQL and Redis servers)."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm == name:
            total += (int(rest[11]) + int(rest[12])) / ticks
    return total


def summarise(records: list[list[Any]], duration: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in sorted({r[0] for r in records}):
        mine = [r for r in records if r[0] == name]
        ms = np.asarray([r[1] for r in mine])
        errors = [r for r in mine if r[3] or r[2] != 200]
        out[name] = {
            "requests": len(mine), "errors": len(errors), "per_s": len(mine) / duration,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
            "error_samples": sorted({f"{r[2]} {r[3]}" for r in errors})[:5],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--think", type=float, default=1.0, help="seconds each user waits between requests")
    parser.add_argument("--duration", type=int, default=120, help="seconds of load (after the users are spawned)")
    parser.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the database and index here for reuse")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not (args.dataset / "corpus.jsonl").exists():
        raise SystemExit(f"no BEIR dataset at {args.dataset} (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    if not 1 <= args.users <= 1000 or not 1 <= args.duration <= 3600:
        raise SystemExit("--users must be 1..1000 and --duration 1..3600 (the benchmark stays bounded)")
    try:
        import locust  # noqa: F401  (only checks it is installed; it runs in its own process)
    except ImportError:
        raise SystemExit('Locust is not installed: pip install -e ".[bench]"') from None

    from tests.e2e.processes import Http, Process, child_env, free_port, manage

    keep = args.data_dir is not None
    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="cairn-load-"))).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    database, secret_key, reused = database_for(data_dir)
    env = child_env(
        DATABASE_URL=f"{SERVER}/{database}", CAIRN_REDIS_URL=REDIS, CAIRN_SECRET_KEY=secret_key,
        CAIRN_DATA_DIR=str(data_dir), CAIRN_ALLOWED_HOSTS="127.0.0.1,localhost", CAIRN_SECURE_COOKIES="0",
        CAIRN_LLM_BACKEND="extractive", CAIRN_LOG_LEVEL="WARNING",
    )
    import redis

    if not reused:
        redis.Redis.from_url(REDIS).flushdb()  # the benchmark's own database number
    processes: list[Process] = []
    report: dict[str, Any] = {"users": args.users, "think_s": args.think, "duration_s": args.duration,
                              "web_workers": args.web_workers, "cores": os.cpu_count(), "reused": reused}
    try:
        os.environ.update(env, CAIRN_TASKS="inline", DJANGO_SETTINGS_MODULE="config.settings")
        print("ingesting the corpus in this process (skipped when reusing --data-dir) ...", flush=True)
        plan = prepare(args.dataset, args.users, reused=reused)
        report.update(documents=plan["documents"], ingest_s=plan["ingest_s"], queries=len(plan["queries"]))
        state = data_dir / "load-state.json"
        state.write_text(json.dumps({**json.loads(state.read_text()), "ingested": True}))
        from django.db import connections

        connections.close_all()

        port = free_port()
        logs = data_dir / "logs"
        logs.mkdir(exist_ok=True)
        web = Process("web", manage("cairn_web", "--port", str(port), "--workers", str(args.web_workers),
                                    "--log-level", "warning"), env, logs)
        inference = Process("inference", manage("cairn_worker", "inference", "--loglevel", "WARNING"), env, logs)
        processes += [web, inference]
        http = Http(f"http://127.0.0.1:{port}", token=plan["keys"][0])
        http.wait_until_up(web)
        # Warm-up: each Uvicorn worker loads the index snapshot and the query encoder on first use.
        for query in plan["queries"][: 4 * args.web_workers]:
            status, body = http.get("/api/v1/search?" + urllib.parse.urlencode({"q": query}))
            assert status == 200, body
        for query in plan["queries"][:3]:
            status, body = http.post_json("/api/v1/ask", {"question": query})
            assert status == 200, (status, body)

        plan_path, out_path = data_dir / "load-plan.json", data_dir / "load-records.json"
        plan_path.write_text(json.dumps({"keys": plan["keys"], "queries": plan["queries"], "think_s": args.think}))
        out_path.unlink(missing_ok=True)
        spawn_s = args.users / args.spawn_rate
        run_s = int(args.duration + spawn_s + 0.999)
        print(f"{args.users} users for {run_s} s ({spawn_s:.0f} s of it spawning) ...", flush=True)
        stats0 = {p.name: tree_stat(p.popen.pid) for p in processes}
        services0 = {name: named_cpu(name) for name in ("postgres", "redis-server")}
        started = time.perf_counter()
        client_cpu0 = os.times()
        subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "load_users.py"), "--headless",
             "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{run_s}s", "--stop-timeout", "30",
             "--host", f"http://127.0.0.1:{port}", "--only-summary", "--loglevel", "WARNING"],
            cwd=ROOT, env={**env, "CAIRN_LOAD_PLAN": str(plan_path), "CAIRN_LOAD_OUT": str(out_path)},
            check=False, timeout=run_s + 120, stdout=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - started
        client_cpu1 = os.times()
        stats1 = {p.name: tree_stat(p.popen.pid) for p in processes}
        services = {name: named_cpu(name) - services0[name] for name in services0}
        # The Locust process is this script's child: its CPU time is in os.times() once it has exited.
        services["locust client"] = (client_cpu1.children_user + client_cpu1.children_system
                                     - client_cpu0.children_user - client_cpu0.children_system)
        if not all(p.alive() for p in processes):
            raise SystemExit("a Cairn process died under load:\n" + "\n".join(p.log() for p in processes))
        records = json.loads(out_path.read_text())
    finally:
        for process in processes:
            process.stop()
        if not keep:
            drop_database(database)

    kinds = summarise(records, wall)
    report.update(wall_s=wall, kinds=kinds, load_avg=os.getloadavg())
    # Reported beside the target, not instead of it: the first seconds embed every query for the first time
    # in each web process (the query cache is cold) while the users are still arriving.
    started = min((r[4] for r in records if len(r) > 4), default=None)
    late = [r[1] for r in records if r[0] == "search" and started is not None and r[4] - started >= WARM_S]
    report["search_p95_after_warm_up_ms"] = float(np.percentile(late, 95)) if late else None
    for name, (rss, cpu) in stats1.items():
        report[f"{name}_rss_mib"] = rss
        report[f"{name}_cpu_s"] = cpu - stats0[name][1]
    search, ask = kinds.get("search", {}), kinds.get("ask", {})
    errors = sum(k["errors"] for k in kinds.values())
    report["targets_met"] = errors == 0 and search.get("p95_ms", 1e9) <= SEARCH_P95_TARGET_MS
    rows = [
        {"kind": name, "requests": k["requests"], "errors": k["errors"], "per s": f"{k['per_s']:.1f}",
         "p50 ms": f"{k['p50_ms']:.0f}", "p95 ms": f"{k['p95_ms']:.0f}", "p99 ms": f"{k['p99_ms']:.0f}",
         "max ms": f"{k['max_ms']:.0f}"}
        for name, k in kinds.items()
    ]
    print_table(f"Load: {args.users} users, {args.think:g} s think time, 80 % search / 20 % ask (extractive), "
                f"{report['documents']:,} SciFact documents, team shape, {args.web_workers} web workers, "
                f"{os.cpu_count()} cores shared with the Locust client", rows)
    report["other_cpu_s"] = services
    print_table("CPU and memory during the run (the PostgreSQL figure counts every database on the server)", [
        *({"process": name, "CPU s": f"{report[f'{name}_cpu_s']:.0f}",
           "CPU share": f"{report[f'{name}_cpu_s'] / wall:.2f} cores", "RSS MiB": f"{report[f'{name}_rss_mib']:.0f}"}
          for name in stats1),
        *({"process": name, "CPU s": f"{cpu:.0f}", "CPU share": f"{cpu / wall:.2f} cores", "RSS MiB": "-"}
          for name, cpu in services.items()),
    ])
    print(f"\nerrors: {errors}; search p95 {search.get('p95_ms', float('nan')):.0f} ms (target ≤ "
          f"{SEARCH_P95_TARGET_MS:.0f}); ask p95 {ask.get('p95_ms', float('nan')):.0f} ms; targets "
          f"{'met' if report['targets_met'] else 'NOT met'}")
    if report["search_p95_after_warm_up_ms"] is not None:
        print(f"search p95 after the first {WARM_S} s (warm query caches): "
              f"{report['search_p95_after_warm_up_ms']:.0f} ms (not the target's measure)")
    for name, k in kinds.items():
        for sample in k["error_samples"]:
            print(f"  {name} error: {sample}")
    write_json(str(args.json) if args.json else None, report)


if __name__ == "__main__":
    main()
