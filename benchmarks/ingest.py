"""Ingestion throughput through Cairn's real workers vs. the bare embedder, and PDF parse speed.

    python benchmarks/ingest.py [--shape personal|team] [--docs 24 --pages 12] [--json out.json]
    python benchmarks/ingest.py --shape team --dataset ../shared/data/scifact [--limit 1000] [--json out.json]

personal: a real ``cairn_serve`` process (web + in-process worker) on a scratch
data dir; team: real Celery worker processes (ingest ×1, index ×1) on
PostgreSQL + Redis (127.0.0.1) and the web process.  Documents are uploaded
over HTTP; the clock runs from the first upload until every document is
INDEXED.  The baseline is ``SentenceTransformer.encode`` on exactly the same
chunk texts in this process, after the workers are stopped (same machine,
same run), configured as the pipeline embeds: the same dtype (``CAIRN_EMBED_DTYPE``
resolved as the workers resolve it: bf16 on CPUs that compute it natively),
device, batch size (``CAIRN_EMBED_BATCH``, else the embedder's choice) and torch threads (``--threads``,
given to the workers too).  The table and the JSON say which.  Target:
end-to-end ≥ 0.8 × bare encode.

``--dataset DIR`` (a BEIR corpus, e.g. SciFact) measures many small
documents instead: each corpus entry (the first ``--limit``) is uploaded as
one Markdown document, as ``cairn_eval`` ingests it.  Documents are waited
for in the database (one query a second) rather than by polling each over
HTTP, so the web process spends its CPU on the uploads only.  The table also
reports bare ``encode`` called once per document (on the first 200), the
shape of the work when each small document is embedded on its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

WORDS = (
    "pump valve boiler turbine pressure safety inspection shift operator gauge maintenance schedule "
    "certificate coolant filter bearing lubricant vibration sensor alarm report incident supervisor "
    "hazard procedure isolation lockout permit ventilation exposure audit compliance training record "
    "calibration torque seal gasket leak flange weld corrosion coating insulation voltage breaker relay"
).split()


def page_text(rng: random.Random, words: int = 380) -> str:
    sentences = []
    remaining = words
    while remaining > 0:
        n = min(remaining, rng.randint(8, 20))
        sentence = " ".join(rng.choice(WORDS) for _ in range(n))
        sentences.append(sentence.capitalize() + ".")
        remaining -= n
    return " ".join(sentences)


def make_corpus(docs: int, pages: int, seed: int = 7) -> list[tuple[str, bytes]]:
    from tests.ingestion.sample_files import make_pdf

    rng = random.Random(seed)
    return [(f"manual-{i:03d}.pdf", make_pdf([page_text(rng) for _ in range(pages)])) for i in range(docs)]


def dataset_corpus(directory: Path, limit: int | None) -> list[tuple[str, bytes]]:
    """The first ``limit`` entries of a BEIR ``corpus.jsonl``, each as the Markdown file ``cairn_eval`` uploads."""
    import json

    from kb.evaluation import as_markdown

    corpus: list[tuple[str, bytes]] = []
    with (directory / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(corpus) >= limit:
                break
            entry = json.loads(line)
            corpus.append((f"{entry['_id']}.md", as_markdown(entry.get("title", ""), entry.get("text", ""))))
    return corpus


def parse_speed(pages: int = 200) -> dict[str, float]:
    from ingestion.parsers import parse
    from tests.ingestion.sample_files import make_pdf

    rng = random.Random(1)
    pdf = make_pdf([page_text(rng) for _ in range(pages)])
    parse(pdf)  # warm up
    rounds = 3
    started = time.perf_counter()
    for _ in range(rounds):
        parsed = parse(pdf)
    seconds = (time.perf_counter() - started) / rounds
    assert parsed.page_count == pages
    return {"pdf_pages": pages, "pdf_parse_seconds": seconds, "pdf_pages_per_s": pages / seconds}


def chunk_texts(corpus: list[tuple[str, bytes]]) -> list[list[str]]:
    """The exact texts the workers embed (same parser, chunker and context prefix), per document."""
    from django.conf import settings

    from ingestion.chunking import chunk_document
    from ingestion.parsers import parse
    from kb.index import get_embedder
    from kb.retrieval.passages import index_text

    tokenizer = get_embedder(None).tokenizer
    texts: list[list[str]] = []
    for name, data in corpus:
        parsed = parse(data)
        title = parsed.title or name
        texts.append([index_text(draft.text, draft.heading, title)
                      for draft in chunk_document(parsed, tokenizer, size_tokens=settings.CAIRN_CHUNK_TOKENS,
                                                  overlap_tokens=settings.CAIRN_CHUNK_OVERLAP)])
    return texts


def bare_encode(texts: list[str], *, batch: int, dtype: str, device: str | None,
                per_document: list[list[str]] | None = None) -> tuple[float, float]:
    """(Seconds, CPU seconds of this process) for one bare ``encode`` of ``texts``, the model in ``dtype`` on
    ``device``.  With ``per_document``: for one ``encode`` call per document of it instead.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from kb.retrieval.embedding import bundled_model_path

    model = SentenceTransformer(str(bundled_model_path()), device=device, local_files_only=True)
    if dtype in ("bfloat16", "float16"):
        model.to(getattr(torch, dtype))
    model.encode(texts[:64], batch_size=batch)  # warm up
    started, cpu = time.perf_counter(), time.process_time()
    if per_document is not None:
        for document in per_document:
            model.encode(document, batch_size=batch, normalize_embeddings=True, show_progress_bar=False)
    else:
        model.encode(texts, batch_size=batch, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - started, time.process_time() - cpu


def embed_configuration() -> tuple[str, str | None, int]:
    """(dtype, device, batch size) as the workers embed: from the same settings, on the same machine."""
    from django.conf import settings

    from kb.index import embed_batch_size, get_embedder
    from kb.retrieval.embedding import resolve_dtype

    device = settings.CAIRN_EMBED_DEVICE or None
    batch = embed_batch_size(get_embedder(None, device))  # CAIRN_EMBED_BATCH, else the embedder's choice
    return resolve_dtype(settings.CAIRN_EMBED_DTYPE, device), device, batch


def baseline(texts: list[str], threads: int, per_document: list[list[str]] | None = None) -> tuple[float, float]:
    import torch

    torch.set_num_threads(threads)
    dtype, device, batch = embed_configuration()
    return bare_encode(texts, batch=batch, dtype=dtype, device=device, per_document=per_document)


def start_stack(shape: str, root: Path, threads: int, redis_url: str):  # type: ignore[no-untyped-def]
    from tests.e2e.processes import Http, Process, child_env, free_port, manage, run_manage

    port = free_port()
    processes = []
    db = ""
    # Uploads come as fast as the client sends them: the API rate limit (600/min per key) would refuse some.
    torch_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                     "CAIRN_RATE_LIMIT": "off"}
    if shape == "personal":
        env = child_env(CAIRN_DATA_DIR=str(root / "data"), **torch_threads)
        web = Process("cairn_serve", manage("cairn_serve", "--port", str(port)), env, root)
        processes.append(web)
        http = Http(f"http://127.0.0.1:{port}")
        cleanup = None
    else:
        import psycopg

        db = f"cairn_bench_{secrets.token_hex(4)}"
        with psycopg.connect("postgres://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        env = child_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}",
                        CAIRN_REDIS_URL=redis_url, CAIRN_SECRET_KEY=secrets.token_hex(32),
                        CAIRN_ALLOWED_HOSTS="127.0.0.1", CAIRN_DATA_DIR=str(root / "shared"), **torch_threads)
        run_manage(env, "migrate", "--verbosity", "0")
        token = run_manage(env, "cairn_apikey", "--user", "bench", "--create-user").strip()
        celery = [sys.executable, "-m", "celery", "-A", "config", "worker", "--prefetch-multiplier", "1",
                  "--without-gossip", "--without-mingle", "--loglevel", "WARNING"]
        processes.append(Process("ingest", [*celery, "-Q", "ingest", "-c", "1", "-n", "i@%h"], env, root))
        processes.append(Process("index", [*celery, "-Q", "index", "-c", "1", "-n", "x@%h"], env, root))
        web = Process("web", manage("cairn_web", "--port", str(port), "--workers", "1"), env, root)
        processes.append(web)
        http = Http(f"http://127.0.0.1:{port}", token=token)

        def cleanup() -> None:
            with psycopg.connect("postgres://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    http.wait_until_up(web)
    job_counts = _job_counter(shape, root, db)
    return http, processes, cleanup, job_counts


def _job_counter(shape: str, root: Path, db: str):  # type: ignore[no-untyped-def]
    """A function returning ``{status: jobs}`` straight from the stack's database (no web request)."""
    query = "SELECT status, count(*) FROM ingestion_ingestionjob GROUP BY status"
    if shape == "team":
        import psycopg

        def team_counts() -> dict[str, int]:
            with psycopg.connect(f"postgres://postgres@127.0.0.1:5432/{db}") as conn:
                return dict(conn.execute(query).fetchall())

        return team_counts

    import sqlite3

    def personal_counts() -> dict[str, int]:
        conn = sqlite3.connect(f"file:{root / 'data' / 'cairn.sqlite3'}?mode=ro", uri=True, timeout=30)
        try:
            return dict(conn.execute(query).fetchall())
        finally:
            conn.close()

    return personal_counts


def wait_all_done(job_counts, expected: int, timeout: float = 7200) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Poll the database once a second until ``expected`` jobs (besides the warm-up's) are INDEXED or FAILED."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = job_counts()
        if counts.get("INDEXED", 0) + counts.get("FAILED", 0) >= expected + 1:  # + the warm-up document
            return counts
        time.sleep(1.0)
    raise SystemExit(f"not done after {timeout:.0f} s: {counts}")


def warm_up(http) -> int:  # type: ignore[no-untyped-def]
    """One small document first, so model loading is not counted as throughput."""
    _, collection = http.post_json("/api/v1/collections", {"name": "bench"})
    _, doc = http.upload(f"/api/v1/collections/{collection['id']}/documents", "warm.txt", b"warm up " * 50)
    http.wait_for_document(doc["id"], timeout=600)
    return int(collection["id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=["personal", "team"], default="personal")
    parser.add_argument("--docs", type=int, default=24)
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--dataset", type=Path, default=None,
                        help="a BEIR corpus directory (e.g. ../shared/data/scifact): one small Markdown document "
                             "per entry instead of generated PDFs")
    parser.add_argument("--limit", type=int, default=None, help="with --dataset: only its first N entries")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12",
                        help="team shape: the broker (a Redis database no other Celery workers use)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads, for the workers and the bare baseline alike (default: every core)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    from _setup import print_table, tree_stat, write_json

    os.environ.setdefault("CAIRN_DATA_DIR", tempfile.mkdtemp(prefix="cairn-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    parse = parse_speed()
    many_small = args.dataset is not None
    corpus = dataset_corpus(args.dataset, args.limit) if many_small else make_corpus(args.docs, args.pages)
    per_document = chunk_texts(corpus)
    texts = [text for document in per_document for text in document]
    # Bare encode one call per document (the shape of the work when each small document is embedded alone).
    sample = per_document[:200]
    one_by_one = baseline(texts, args.threads, per_document=sample)[0] if many_small else None

    # The baseline runs before and after the end-to-end run and counts as their mean, so that
    # a change of load on a shared host during the run weighs on both sides alike.
    bare_before, bare_cpu_before = baseline(texts, args.threads)
    root = Path(tempfile.mkdtemp(prefix="cairn-bench-stack-"))
    http, processes, cleanup, job_counts = start_stack(args.shape, root, args.threads, args.redis_url)
    uploads_seconds = 0.0
    try:
        collection = warm_up(http)
        cpu_before = {process.name: tree_stat(process.popen.pid)[1] for process in processes}
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            uploaded = list(pool.map(
                lambda item: http.upload(f"/api/v1/collections/{collection}/documents", *item)[1], corpus))
        uploads_seconds = time.perf_counter() - started
        if many_small:
            wait_all_done(job_counts, len(uploaded))
            e2e_seconds = time.perf_counter() - started
            listed = {d["id"]: d for d in http.get(f"/api/v1/collections/{collection}/documents")[1]["results"]}
            finals = [listed[d["id"]] for d in uploaded]
        else:
            finals = [http.wait_for_document(d["id"], timeout=3600) for d in uploaded]
            e2e_seconds = time.perf_counter() - started
        # CPU seconds each process (with its children: Celery's pool, the parse server) spent on the run.
        cpu = {process.name: tree_stat(process.popen.pid)[1] - cpu_before[process.name] for process in processes}
    finally:
        for process in processes:
            process.stop()
        if cleanup:
            cleanup()
    failed = [d for d in finals if d["status"] != "INDEXED"]
    if failed:
        raise SystemExit(f"{len(failed)} documents did not index: {failed[:2]}")
    chunks = sum(d["chunks"] for d in finals)
    assert chunks == len(texts), (chunks, len(texts))
    pipeline_dtype, device, batch = embed_configuration()
    bare_after, bare_cpu_after = baseline(texts, args.threads)
    bare_seconds = (bare_before + bare_after) / 2
    bare_cpu = (bare_cpu_before + bare_cpu_after) / 2
    # What ingesting costs besides the uploads: the workers (team), the whole server (personal, uploads included).
    pipeline_cpu = sum(seconds for name, seconds in cpu.items() if name != "web")
    e2e_rate, bare_rate = chunks / e2e_seconds, chunks / bare_seconds
    config = {"bare_dtype": pipeline_dtype, "pipeline_dtype": pipeline_dtype, "device": device or "auto (cpu here)",
              "batch_size": batch, "threads": args.threads}
    documents = len(corpus)
    what = (f"{documents} documents of {args.dataset.name}" if many_small
            else f"{args.docs} PDFs x {args.pages} pages")
    rows = [
        {"measure": "both sides: dtype / device / batch / threads",
         "value": f"{pipeline_dtype} / {config['device']} / {batch} / {args.threads}"},
        {"measure": "PDF parse (pypdfium2)", "value": f"{parse['pdf_pages_per_s']:.0f} pages/s"},
        {"measure": f"end-to-end ingest ({args.shape}, {what})",
         "value": f"{e2e_rate:.1f} chunks/s ({chunks} chunks in {e2e_seconds:.1f} s)"},
    ]
    if many_small:
        rows += [
            {"measure": "  per document / documents per second",
             "value": f"{e2e_seconds / documents:.3f} s / {documents / e2e_seconds:.1f} "
                      f"(uploads done after {uploads_seconds:.1f} s)"},
        ]
    rows += [
        {"measure": f"bare SentenceTransformer.encode, same chunks, {pipeline_dtype} (mean of before/after)",
         "value": f"{bare_rate:.1f} chunks/s ({bare_before:.1f} s before, {bare_after:.1f} s after)"},
        {"measure": "ratio end-to-end / bare (target >= 0.8)", "value": f"{e2e_rate / bare_rate:.2f}"},
    ]
    cpu_parts = ", ".join(f"{name} {seconds / documents * 1000:.0f} ms" for name, seconds in cpu.items())
    rows += [
        {"measure": "CPU per document, by process", "value": cpu_parts},
        {"measure": "CPU per document: bare encode (mean) / ingesting (" + (
            "ingest + index workers" if args.shape == "team" else "the whole server") + ")",
         "value": f"{bare_cpu / documents * 1000:.0f} ms / {pipeline_cpu / documents * 1000:.0f} ms "
                  f"(ratio {bare_cpu / pipeline_cpu:.2f})"},
    ]
    one_by_one_rate = None
    if one_by_one is not None:
        one_by_one_rate = sum(len(d) for d in sample) / one_by_one
        rows.append({"measure": f"bare encode, one call per document (first {len(sample)} documents)",
                     "value": f"{one_by_one_rate:.1f} chunks/s ({one_by_one / len(sample):.3f} s per document)"})
    print_table(f"Ingestion ({platform.machine()}, {os.cpu_count()} cores)", rows)
    write_json(args.json, {"shape": args.shape, "docs": args.docs, "pages": args.pages, "chunks": chunks,
                           "dataset": str(args.dataset) if many_small else None, "limit": args.limit,
                           "documents": documents, "uploads_seconds": uploads_seconds,
                           "e2e_seconds": e2e_seconds, "e2e_chunks_per_s": e2e_rate,
                           "e2e_seconds_per_document": e2e_seconds / documents, "bare_seconds": bare_seconds,
                           "bare_chunks_per_s": bare_rate, "bare_seconds_before": bare_before,
                           "bare_seconds_after": bare_after, "ratio": e2e_rate / bare_rate,
                           "bare_one_call_per_document_chunks_per_s": one_by_one_rate,
                           "cpu_seconds": cpu, "bare_cpu_seconds": bare_cpu, "pipeline_cpu_seconds": pipeline_cpu,
                           "cpu_ratio": bare_cpu / pipeline_cpu, **config, **parse})


if __name__ == "__main__":
    main()
