"""The search API end to end at scale, against a real ``cairn_serve`` process over HTTP.

    python benchmarks/search_api.py --n 1000000 --json bench-results/search_api.json

Builds a synthetic knowledge base fast (no embedding of the corpus):
``--n`` chunks in documents of ``--chunks-per-doc`` chunks, spread over 10
collections; database rows are written in bulk (raw SQL on SQLite), the
BM25 index from Zipf-distributed text (``benchmarks/bm25.py``'s generator)
and the dense index from random unit vectors, both written through
``IndexStore`` as the index writer would.  A user who may read 1 of the 10
collections (10% of the documents) searches through the REST API with an
API key: authentication, the permission filter (collection membership →
chunk-id mask), query embedding with the real model, both legs, fusion,
the chunk texts, JSON, audit record.  Reported: p50/p95 latency seen by the
client, the server's CPU time per query, the serving process's RSS, and how
long 1,000 chunks added afterwards take to become searchable (one index
pass by the single writer, then the server's reader picks the version up),
once by a writer that has just started and must read the index files, once
by a running writer that kept its copy from the pass before.

With ``--data-dir DIR`` the knowledge base is kept; a later run with the
same ``DIR`` reuses it and measures only the serving side again.

Team mode on SQLite with inline tasks (no Celery needed for searching).
The machine is shared: compare figures within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _setup import ROOT, django_setup, print_table, write_json  # noqa: E402
from bm25 import ZipfCorpus  # noqa: E402


def team_env(data_dir: Path) -> dict[str, str]:
    return {
        "CAIRN_DATA_DIR": str(data_dir), "CAIRN_MODE": "team", "CAIRN_TASKS": "inline",
        "CAIRN_SECRET_KEY": "bench-secret-key-not-for-production-0123456789-abcdefghij",
        "CAIRN_ALLOWED_HOSTS": "127.0.0.1,localhost", "CAIRN_SECURE_COOKIES": "0",
        "CAIRN_LOG_LEVEL": "WARNING",
    }


def build_corpus(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection, transaction
    from django.utils import timezone

    from access.models import User
    from access.services import Actor, api_key_create
    from kb.index import active_model, pin_active_if_unset, store_for
    from kb.models import Collection, IdBlock
    from kb.retrieval.dense import DenseIndex
    from kb.retrieval.index_store import IndexSnapshot
    from kb.retrieval.lexical import BM25Index

    n, per_doc = args.n, args.chunks_per_doc
    n_docs = n // per_doc
    reader = User.objects.create_user("reader", password=None)
    other = User.objects.create_user("other", password=None)
    collections = [Collection.objects.create(name=f"c{i}", owner=reader if i == 0 else other) for i in range(10)]
    _, secret = api_key_create(user=reader, name="bench", actor=Actor(user=reader))

    t = time.perf_counter()
    corpus = ZipfCorpus(args.vocab, 1.0, args.seed)
    docs = corpus.docs(n, mean=args.doc_tokens, sd=args.doc_tokens / 4)
    gen_s = time.perf_counter() - t
    now = timezone.now().isoformat()
    model = active_model().model_id  # each chunk records the model that made its vector
    t = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        # Documents round-robin over the collections: reader's collection holds every 10th.
        cur.executemany(
            "INSERT INTO kb_document (id, collection_id, title, created_by_id, created_at, attributes, "
            "search_chunk_count) VALUES (%s, %s, %s, %s, %s, '{}', 0)",
            [(d + 1, collections[d % 10].pk, f"doc-{d + 1}", other.pk, now) for d in range(n_docs)],
        )
        cur.executemany(
            "INSERT INTO kb_documentversion (id, document_id, number, sha256, size, kind, original_name, "
            "created_by_id, created_at, text, parsed_title, chunk_id_start, chunk_count, indexed_at) "
            "VALUES (%s, %s, 1, %s, 0, 'text', '', %s, %s, '', '', %s, %s, %s)",
            [(d + 1, d + 1, f"{d + 1:064x}", other.pk, now, d * per_doc + 1, per_doc, now) for d in range(n_docs)],
        )
        # What Document.make_current sets, in bulk: version d is document d's current one.
        cur.execute(f"UPDATE kb_document SET current_version_id = id, latest_version_id = id, "
                    f"search_chunk_start = (id - 1) * {per_doc} + 1, search_chunk_count = {per_doc}")
        step = 50_000
        for at in range(0, n_docs * per_doc, step):
            rows = []
            for c in range(at, min(at + step, n_docs * per_doc)):
                text = " ".join(docs[c])
                rows.append((c + 1, c // per_doc + 1, c // per_doc + 1, c % per_doc, text, "", 0, len(text),
                             len(docs[c]), model))
            cur.executemany(
                "INSERT INTO kb_chunk (id, version_id, document_id, ordinal, text, heading, char_start, char_end, "
                "token_count, embedding_model) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
    IdBlock.objects.update_or_create(name="chunk", defaults={"next_value": n_docs * per_doc + 1})
    db_s = time.perf_counter() - t
    print(f"database rows: {n_docs:,} documents, {n_docs * per_doc:,} chunks in {db_s:.0f}s", flush=True)

    n_chunks = n_docs * per_doc
    ids = np.arange(1, n_chunks + 1, dtype=np.int64)
    t = time.perf_counter()
    lexical = BM25Index()
    for at in range(0, n_chunks, 100_000):
        lexical.add(ids[at:at + 100_000], docs[at:at + 100_000])
    lexical._ensure_fresh()
    bm25_s = time.perf_counter() - t
    del docs
    t = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    vectors = rng.standard_normal((n_chunks, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pin_active_if_unset()
    store = store_for(active_model().model_id)
    dense = DenseIndex.build(args.dim, ids, vectors, config=store.dense_config)
    del vectors
    dense_s = time.perf_counter() - t
    t = time.perf_counter()
    with store.writer_lock():
        store.write(IndexSnapshot(0, store.model_id, dense, lexical))
    write_s = time.perf_counter() - t
    print(f"indexes: BM25 {bm25_s:.0f}s, dense ({dense.kind}) {dense_s:.0f}s, written in {write_s:.0f}s", flush=True)
    return {"secret": secret, "collection": collections[0].pk, "documents": n_docs, "chunks": n_chunks,
            "generate_s": gen_s, "db_s": db_s, "bm25_s": bm25_s, "dense_s": dense_s, "write_s": write_s,
            "dense_kind": dense.kind}


def reuse_corpus() -> dict[str, Any]:
    """A knowledge base an earlier run built in ``--data-dir`` (only the serving side is measured again)."""
    from access.models import User
    from access.services import Actor, api_key_create
    from kb.models import Chunk, Collection, Document

    reader = User.objects.get(username="reader")
    _, secret = api_key_create(user=reader, name="bench", actor=Actor(user=reader))
    print("reusing the knowledge base in --data-dir", flush=True)
    return {"secret": secret, "collection": Collection.objects.get(name="c0").pk, "reused": True,
            "documents": Document.objects.unrestricted("benchmark").count(), "chunks": Chunk.objects.unrestricted("benchmark").count(),
            "db_s": 0.0, "bm25_s": 0.0, "dense_s": 0.0, "write_s": 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_stat(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def get(url: str, secret: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def corpus_arguments(parser: argparse.ArgumentParser, *, n: int) -> None:
    """The options ``build_corpus`` reads (also used by ``model_switch.py``)."""
    parser.add_argument("--n", type=int, default=n, help="chunks")
    parser.add_argument("--chunks-per-doc", type=int, default=10)
    parser.add_argument("--doc-tokens", type=float, default=60.0)
    parser.add_argument("--vocab", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="keep the knowledge base here; a later run reuses it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    corpus_arguments(parser, n=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--busy", type=int, default=0,
                        help="processes that spin on the CPU while the server is measured (a busy host)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="cairn-search-bench-"))
    reuse = (data_dir / "cairn.sqlite3").exists()
    env = team_env(data_dir)
    django_setup(str(data_dir), **env)
    built = reuse_corpus() if reuse else build_corpus(args)
    secret = built.pop("secret")

    port = free_port()
    # A reproducible busy host: spinners competing with the server (and this client) for the cores.
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    server = subprocess.Popen(
        [sys.executable, "manage.py", "cairn_serve", "--port", str(port), "--no-migrate", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    report: dict[str, Any] = {"n": args.n, **built, "busy": args.busy, "load_avg_start": os.getloadavg()}
    try:
        t = time.perf_counter()
        while True:
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"cairn_serve exited: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.5)
        report["server_start_s"] = time.perf_counter() - t
        # From the corpus's Zipf distribution; a generator of their own, so a reused corpus gets the same ones.
        queries = [" ".join(q) for q in ZipfCorpus(args.vocab, 1.0, args.seed + 1).queries(args.queries + 5)]
        # Warm-up: the first search loads the index snapshot and the embedding model.
        t = time.perf_counter()
        status, body = get(f"{base}/search?" + urllib.parse.urlencode({"q": queries[0], "k": args.k}), secret)
        assert status == 200, body
        report["first_search_s"] = time.perf_counter() - t
        for q in queries[1:5]:
            get(f"{base}/search?" + urllib.parse.urlencode({"q": q, "k": args.k}), secret)
        status, denied = get(f"{base}/search?q=x", "cairn_00000000_wrong")
        report["bad_key_status"] = status
        from kb.models import Document

        readable = set(Document.objects.unrestricted("benchmark").filter(collection_id=built["collection"]).values_list("pk", flat=True))
        rss0, cpu0 = proc_stat(server.pid)
        latencies, empty, foreign = [], 0, 0
        for q in queries[5:]:
            t = time.perf_counter()
            status, body = get(f"{base}/search?" + urllib.parse.urlencode({"q": q, "k": args.k}), secret)
            latencies.append(time.perf_counter() - t)
            assert status == 200, body
            results = body["results"]
            empty += not results
            # Permission filter: every hit is a document of the reader's collection.
            foreign += sum(1 for r in results if int(r["document_id"]) not in readable)
        rss1, cpu1 = proc_stat(server.pid)
        ms = np.asarray(latencies) * 1e3
        report.update({
            "queries": len(latencies), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "server_cpu_ms_per_query": (cpu1 - cpu0) * 1e3 / len(latencies),
            "server_rss_mb": rss1, "empty_results": empty, "forbidden_hits": foreign,
        })
        print(f"search: p50 {report['p50_ms']:.0f} ms, p95 {report['p95_ms']:.0f} ms, server CPU "
              f"{report['server_cpu_ms_per_query']:.0f} ms/query, RSS {rss1:.0f} MiB", flush=True)

        # 1,000 new chunks: the ingest side stored them (with vectors) and flagged the job; one
        # index pass of the single writer publishes them; the server's reader picks the version up.
        # Twice: first by a writer that has just started (it reads the index files), then by one that
        # keeps its copy between passes, as the team-mode index worker does (CAIRN_INDEX_WRITER_KEEP).
        report["add_1000"] = add_and_wait(base, secret, args, built["collection"])
        report["add_1000_warm"] = add_and_wait(base, secret, args, built["collection"])
        report["server_rss_after_add_mb"] = proc_stat(server.pid)[0]
    finally:
        for spinner in spinners:
            spinner.kill()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    report["load_avg_end"] = os.getloadavg()
    busy = f", {args.busy} spinning process(es) competing" if args.busy else ""
    print_table(f"Search API end to end, {report['chunks']:,} chunks, user reads 1 of 10 collections (team mode, "
                f"API key, SQLite{busy})", [
        {"measure": "latency p50 / p95 (client, HTTP)", "value": f"{report['p50_ms']:.0f} / {report['p95_ms']:.0f} ms"},
        {"measure": "server CPU per query", "value": f"{report['server_cpu_ms_per_query']:.1f} ms"},
        {"measure": "serving process RSS", "value": f"{report['server_rss_mb']:.0f} MiB"},
        {"measure": "forbidden hits / empty results", "value": f"{report['forbidden_hits']} / {report['empty_results']}"},
        {"measure": "wrong API key", "value": str(report["bad_key_status"])},
        {"measure": "add 1,000 chunks, writer just started: index pass / visible", "value":
            f"{report['add_1000']['index_pass_s']:.1f} s / {report['add_1000']['visible_s']:.1f} s"},
        {"measure": "add 1,000 chunks, running writer: index pass / visible", "value":
            f"{report['add_1000_warm']['index_pass_s']:.1f} s / {report['add_1000_warm']['visible_s']:.1f} s"},
        {"measure": "build: db rows / BM25 / dense / write", "value":
            f"{report['db_s']:.0f} / {report['bm25_s']:.0f} / {report['dense_s']:.0f} / {report['write_s']:.0f} s"},
    ])
    write_json(str(args.json) if args.json else None, report)


def add_and_wait(base: str, secret: str, args: argparse.Namespace, collection_id: int) -> dict[str, float]:
    from django.utils import timezone

    from access.models import User
    from ingestion.indexing import index_pass
    from ingestion.models import IngestionJob
    from kb.index import active_model
    from kb.models import Chunk, Document, DocumentVersion
    from kb.services import chunk_ids_reserve

    reader = User.objects.get(username="reader")
    start = chunk_ids_reserve(1000)
    document = Document.objects.create(collection_id=collection_id, title="fresh", created_by=reader)
    version = DocumentVersion.objects.create(document=document, number=1, sha256="f" * 64, size=0,
                                             created_by=reader, chunk_id_start=start, chunk_count=1000)
    rng = np.random.default_rng(args.seed + 9)
    vectors = rng.standard_normal((1000, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    marker = f"zzfresh{start}m"  # unique to this run: a reused knowledge base has earlier runs' markers
    Chunk.objects.bulk_create([
        Chunk(id=start + i, version=version, document=document, ordinal=i, text=f"{marker}{i} new passage",
              heading="", char_start=0, char_end=10, token_count=3, embedding=vectors[i].tobytes())
        for i in range(1000)
    ], batch_size=1000)
    IngestionJob.objects.create(version=version, status=IngestionJob.Status.EMBEDDING, ready_to_index=True,
                                embedding_model=active_model().model_id, attempts=1, started_at=timezone.now())
    t = time.perf_counter()
    result = index_pass()
    index_pass_s = time.perf_counter() - t
    assert version.pk in result.indexed_versions, result
    while True:
        _, body = get(f"{base}/search?" + urllib.parse.urlencode({"q": f"{marker}7", "k": 3}), secret)
        if any(r["document_id"] == document.pk for r in body.get("results", [])):
            break
        if time.perf_counter() - t > 600:
            raise SystemExit("the new chunks never became searchable")
        time.sleep(0.1)
    return {"index_pass_s": index_pass_s, "visible_s": time.perf_counter() - t}


if __name__ == "__main__":
    main()
