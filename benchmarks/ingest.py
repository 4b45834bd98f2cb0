"""Ingestion throughput through Cairn's real workers vs. the bare embedder, and PDF parse speed.

    python benchmarks/ingest.py [--shape personal|team] [--docs 24 --pages 12] [--json out.json]

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


def chunk_texts(corpus: list[tuple[str, bytes]]) -> list[str]:
    """The exact texts the workers embed (same parser, chunker and context prefix)."""
    from django.conf import settings

    from ingestion.chunking import chunk_document
    from ingestion.parsers import parse
    from kb.index import get_embedder
    from kb.retrieval.passages import index_text

    tokenizer = get_embedder(None).tokenizer
    texts: list[str] = []
    for name, data in corpus:
        parsed = parse(data)
        title = parsed.title or name
        for draft in chunk_document(parsed, tokenizer, size_tokens=settings.CAIRN_CHUNK_TOKENS,
                                    overlap_tokens=settings.CAIRN_CHUNK_OVERLAP):
            texts.append(index_text(draft.text, draft.heading, title))
    return texts


def bare_encode(texts: list[str], *, batch: int, dtype: str, device: str | None) -> float:
    """Seconds for one bare ``encode`` of ``texts``, the model in ``dtype`` on ``device``."""
    import torch
    from sentence_transformers import SentenceTransformer

    from kb.retrieval.embedding import bundled_model_path

    model = SentenceTransformer(str(bundled_model_path()), device=device, local_files_only=True)
    if dtype in ("bfloat16", "float16"):
        model.to(getattr(torch, dtype))
    model.encode(texts[:64], batch_size=batch)  # warm up
    started = time.perf_counter()
    model.encode(texts, batch_size=batch, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - started


def embed_configuration() -> tuple[str, str | None, int]:
    """(dtype, device, batch size) as the workers embed: from the same settings, on the same machine."""
    from django.conf import settings

    from kb.index import embed_batch_size, get_embedder
    from kb.retrieval.embedding import resolve_dtype

    device = settings.CAIRN_EMBED_DEVICE or None
    batch = embed_batch_size(get_embedder(None, device))  # CAIRN_EMBED_BATCH, else the embedder's choice
    return resolve_dtype(settings.CAIRN_EMBED_DTYPE, device), device, batch


def baseline(texts: list[str], threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    dtype, device, batch = embed_configuration()
    return bare_encode(texts, batch=batch, dtype=dtype, device=device)


def start_stack(shape: str, root: Path, threads: int):  # type: ignore[no-untyped-def]
    from tests.e2e.processes import Http, Process, child_env, free_port, manage, run_manage

    port = free_port()
    processes = []
    torch_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
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
                        CAIRN_REDIS_URL="redis://127.0.0.1:6379/12", CAIRN_SECRET_KEY=secrets.token_hex(32),
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
    return http, processes, cleanup


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
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads, for the workers and the bare baseline alike (default: every core)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    from _setup import print_table, write_json

    os.environ.setdefault("CAIRN_DATA_DIR", tempfile.mkdtemp(prefix="cairn-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    parse = parse_speed()
    corpus = make_corpus(args.docs, args.pages)
    texts = chunk_texts(corpus)

    # The baseline runs before and after the end-to-end run and counts as their mean, so that
    # a change of load on a shared host during the run weighs on both sides alike.
    bare_before = baseline(texts, args.threads)
    root = Path(tempfile.mkdtemp(prefix="cairn-bench-stack-"))
    http, processes, cleanup = start_stack(args.shape, root, args.threads)
    try:
        collection = warm_up(http)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            uploaded = list(pool.map(
                lambda item: http.upload(f"/api/v1/collections/{collection}/documents", *item)[1], corpus))
        finals = [http.wait_for_document(d["id"], timeout=3600) for d in uploaded]
        e2e_seconds = time.perf_counter() - started
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
    bare_after = baseline(texts, args.threads)
    bare_seconds = (bare_before + bare_after) / 2
    e2e_rate, bare_rate = chunks / e2e_seconds, chunks / bare_seconds
    config = {"bare_dtype": pipeline_dtype, "pipeline_dtype": pipeline_dtype, "device": device or "auto (cpu here)",
              "batch_size": batch, "threads": args.threads}
    rows = [
        {"measure": "both sides: dtype / device / batch / threads",
         "value": f"{pipeline_dtype} / {config['device']} / {batch} / {args.threads}"},
        {"measure": "PDF parse (pypdfium2)", "value": f"{parse['pdf_pages_per_s']:.0f} pages/s"},
        {"measure": f"end-to-end ingest ({args.shape}, {args.docs} PDFs x {args.pages} pages)",
         "value": f"{e2e_rate:.1f} chunks/s ({chunks} chunks in {e2e_seconds:.1f} s)"},
        {"measure": f"bare SentenceTransformer.encode, same chunks, {pipeline_dtype} (mean of before/after)",
         "value": f"{bare_rate:.1f} chunks/s ({bare_before:.1f} s before, {bare_after:.1f} s after)"},
        {"measure": "ratio end-to-end / bare (target >= 0.8)", "value": f"{e2e_rate / bare_rate:.2f}"},
    ]
    print_table(f"Ingestion ({platform.machine()}, {os.cpu_count()} cores)", rows)
    write_json(args.json, {"shape": args.shape, "docs": args.docs, "pages": args.pages, "chunks": chunks,
                           "e2e_seconds": e2e_seconds, "e2e_chunks_per_s": e2e_rate, "bare_seconds": bare_seconds,
                           "bare_chunks_per_s": bare_rate, "bare_seconds_before": bare_before,
                           "bare_seconds_after": bare_after, "ratio": e2e_rate / bare_rate, **config, **parse})


if __name__ == "__main__":
    main()
