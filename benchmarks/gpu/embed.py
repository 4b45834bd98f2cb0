"""Ingestion through the personal in-process worker vs bare ``encode``, on the same device, dtype and batch.

    python benchmarks/gpu/embed.py [--docs 200 --pages 12] [--format txt|pdf] [--json out.json]
    python benchmarks/gpu/embed.py --docs 4 --pages 4 --device cpu       # a quick run without a GPU

Cairn runs in this process as ``cairn_serve`` runs it, without the HTTP
server: a scratch data directory (SQLite), ``CAIRN_TASKS=local`` (the
personal shape's background worker thread, ``ingestion/local_worker.py``),
``CAIRN_EMBED_DEVICE=--device``.  Documents are uploaded through
``ingestion.api.document_upload`` (the service the upload endpoint calls);
the clock runs from the first upload until every document is INDEXED, after
one warm-up document (model loading is not throughput).

The baseline is ``SentenceTransformer.encode`` of exactly the chunk texts
the worker embeds (parsed and chunked here the same way), with the model on
the same device in the dtype and at the batch size the worker resolved from
``CAIRN_EMBED_DTYPE`` / ``CAIRN_EMBED_BATCH`` (``auto`` / ``0``: bf16 or
fp16 and a batch from the card's memory on a GPU), run before and after the
ingestion and counted as their mean.  Target: ingestion ≥ 0.8 × bare.

``--format txt`` (default) uploads plain-text documents; ``pdf`` uploads
PDFs (needs fpdf2 to make them and pypdfium2 to read them).

The model is the bundled all-MiniLM-L6-v2 (88 MB), or ``--model DIR``.
Where its weights cannot travel, ``--export-shape DIR`` (run where the
bundled package is installed) writes its configuration and tokenizer
without the weights (~0.7 MB), and ``--random-weights-from DIR`` on the
other host builds the same architecture with random weights: the same
tokens, shapes and FLOPs, so the same throughput (the vectors mean nothing,
and nothing here reads them).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _setup import django_setup, print_table, write_json  # noqa: E402
from ingest import page_text  # noqa: E402  (the same synthetic manual pages as benchmarks/ingest.py)


def make_corpus(docs: int, pages: int, fmt: str, seed: int = 7) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    if fmt == "pdf":
        from tests.ingestion.sample_files import make_pdf

        return [(f"manual-{i:04d}.pdf", make_pdf([page_text(rng) for _ in range(pages)])) for i in range(docs)]
    # Plain text: a "page" is a few paragraphs; blank lines separate them.
    return [(f"manual-{i:04d}.txt",
             "\n\n".join(page_text(rng) for _ in range(pages)).encode()) for i in range(docs)]


def chunk_texts(corpus: list[tuple[str, bytes]]) -> list[str]:
    """The exact texts the worker embeds (same parser, chunker, tokenizer and context prefix)."""
    from django.conf import settings

    from ingestion.chunking import chunk_document
    from ingestion.parsers import parse
    from kb import index
    from kb.retrieval.passages import index_text

    tokenizer = index.embedder_for(index.configured_model()).tokenizer
    texts: list[str] = []
    for name, data in corpus:
        parsed = parse(data)
        title = parsed.title or Path(name).stem
        for draft in chunk_document(parsed, tokenizer, size_tokens=settings.CAIRN_CHUNK_TOKENS,
                                    overlap_tokens=settings.CAIRN_CHUNK_OVERLAP):
            texts.append(index_text(draft.text, draft.heading, title))
    return texts


SHAPE_FILES = ("config.json", "config_sentence_transformers.json", "modules.json", "sentence_bert_config.json",
               "1_Pooling/config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "vocab.txt")


def export_shape(target: Path) -> None:
    """The bundled model's configuration and tokenizer, without its weights."""
    from kb.retrieval.embedding import bundled_model_path

    source = bundled_model_path()
    for name in SHAPE_FILES:
        if (source / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target / name)
    print(f"wrote {target} (configuration and tokenizer of {source})")


def random_weights(shape: Path) -> Path:
    """A copy of ``shape`` (a model directory without weights) with random weights of its architecture."""
    import torch
    from transformers import AutoConfig, AutoModel

    target = Path(tempfile.mkdtemp(prefix="cairn-random-model-"))
    shutil.copytree(shape, target, dirs_exist_ok=True)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(str(shape))).save_pretrained(str(target))
    return target


def bare_encode(texts: list[str], *, model_dir: Path, device: str, dtype: str, batch: int) -> float:
    """Seconds for one bare ``encode`` of ``texts``: the model loaded afresh, on ``device`` in ``dtype``."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    if dtype != "float32":
        model.to(getattr(torch, dtype))
    model.encode(texts[:batch], batch_size=batch)  # warm up
    synchronize(device)
    started = time.perf_counter()
    model.encode(texts, batch_size=batch, normalize_embeddings=True, show_progress_bar=False)
    synchronize(device)
    seconds = time.perf_counter() - started
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return seconds


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def wait_indexed(job_ids: list[int], timeout: float) -> dict[str, int]:
    """Poll the jobs' states until none is pending or running; their final states."""
    from ingestion.models import IngestionJob

    done = (IngestionJob.Status.INDEXED, IngestionJob.Status.FAILED)
    deadline = time.monotonic() + timeout
    while True:
        states = dict(IngestionJob.objects.filter(pk__in=job_ids).values_list("pk", "status"))
        if all(state in done for state in states.values()) and len(states) == len(job_ids):
            return {s: list(states.values()).count(s) for s in set(states.values())}
        if time.monotonic() > deadline:
            raise SystemExit(f"not indexed after {timeout:.0f} s: {states}")
        time.sleep(0.02)


def upload(actor: Any, collection: Any, corpus: list[tuple[str, bytes]]) -> list[int]:
    from ingestion.api import document_upload
    from ingestion.models import IngestionJob

    versions = [document_upload(actor=actor, collection=collection, filename=name, chunks=[data]).version.pk
                for name, data in corpus]
    return list(IngestionJob.objects.filter(version_id__in=versions).values_list("pk", flat=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--format", choices=["txt", "pdf"], default="txt")
    parser.add_argument("--device", default="cuda", help="CAIRN_EMBED_DEVICE for both sides (cuda, cpu, cuda:1 …)")
    parser.add_argument("--dtype", default="auto", help="CAIRN_EMBED_DTYPE (auto: bf16/fp16 on a GPU)")
    parser.add_argument("--batch", type=int, default=0, help="CAIRN_EMBED_BATCH (0: chosen for the device)")
    parser.add_argument("--model", default=None, help="a sentence-transformers directory (default: the bundled one)")
    parser.add_argument("--random-weights-from", default=None, metavar="DIR",
                        help="a model directory without weights (see --export-shape): random weights, same shape")
    parser.add_argument("--export-shape", default=None, metavar="DIR",
                        help="write the bundled model's configuration and tokenizer to DIR, and stop")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.export_shape:
        export_shape(Path(args.export_shape))
        return
    model_env = {}
    if args.random_weights_from:
        model_env["CAIRN_EMBEDDING_MODEL"] = str(random_weights(Path(args.random_weights_from)))
    elif args.model:
        model_env["CAIRN_EMBEDDING_MODEL"] = str(Path(args.model).resolve())

    django_setup(CAIRN_TASKS="local", CAIRN_EMBED_DEVICE=args.device, CAIRN_EMBED_DTYPE=args.dtype,
                 CAIRN_EMBED_BATCH=str(args.batch), **model_env)
    from access.services import Actor, personal_user
    from ingestion.models import IngestionJob
    from kb import index
    from kb import services as kb_services
    from kb.models import Chunk
    from kb.retrieval.embedding import model_path

    model = index.configured_model()
    embedder = index.embedder_for(model)  # the instance the worker embeds with
    dtype, batch = embedder.dtype, index.embed_batch_size(embedder)
    device = str(embedder._model.device)
    corpus = make_corpus(args.docs, args.pages, args.format)
    texts = chunk_texts(corpus)

    # Bare encode before and after the ingestion, counted as their mean (a change of load or of GPU
    # clocks during the run weighs on both sides alike).
    model_dir = model_path(model.path)
    bare_before = bare_encode(texts, model_dir=model_dir, device=device, dtype=dtype, batch=batch)
    user = personal_user()
    actor = Actor(user=user)
    collection = kb_services.collection_create(actor=actor, owner=user, name="bench")
    wait_indexed(upload(actor, collection, [("warm-up.txt", b"Warm up the worker and the index. " * 40)]),
                 args.timeout)

    started = time.perf_counter()
    jobs = upload(actor, collection, corpus)
    states = wait_indexed(jobs, args.timeout)
    e2e_seconds = time.perf_counter() - started
    if states.get(IngestionJob.Status.FAILED):
        failed = IngestionJob.objects.filter(pk__in=jobs, status=IngestionJob.Status.FAILED).values_list("error")
        raise SystemExit(f"{states} — first errors: {list(failed[:2])}")
    chunks = Chunk.objects.unrestricted("benchmark").filter(version__job__in=jobs).count()
    assert chunks == len(texts), (chunks, len(texts))
    stages = {stage: sum(v or 0.0 for v in IngestionJob.objects.filter(pk__in=jobs)
                         .values_list(f"{stage}_seconds", flat=True)) for stage in IngestionJob.STAGES}
    bare_after = bare_encode(texts, model_dir=model_dir, device=device, dtype=dtype, batch=batch)
    bare_seconds = (bare_before + bare_after) / 2
    e2e_rate, bare_rate = chunks / e2e_seconds, chunks / bare_seconds
    model_label = ("all-MiniLM-L6-v2's shape, random weights" if args.random_weights_from
                   else model.model_id)
    name = device
    if device.startswith("cuda"):
        import torch

        name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    rows = [
        {"measure": "both sides: model / device / dtype / batch",
         "value": f"{model_label} / {name} / {dtype} / {batch}"},
        {"measure": f"ingestion, personal in-process worker ({args.docs} {args.format} x {args.pages} pages)",
         "value": f"{e2e_rate:,.1f} chunks/s ({chunks} chunks in {e2e_seconds:.2f} s)"},
        {"measure": "bare SentenceTransformer.encode, same chunks (mean of before/after)",
         "value": f"{bare_rate:,.1f} chunks/s ({bare_before:.2f} s before, {bare_after:.2f} s after)"},
        {"measure": "ratio ingestion / bare (target >= 0.8)", "value": f"{e2e_rate / bare_rate:.2f}"},
        {"measure": "job stage seconds, summed: parse / chunk / embed / index (waiting included)",
         "value": " / ".join(f"{stages[s]:.2f}" for s in IngestionJob.STAGES)},
    ]
    print_table(f"GPU ingestion ({platform.machine()}, {os.cpu_count()} cores)", rows)
    write_json(args.json, {
        "docs": args.docs, "pages": args.pages, "format": args.format, "chunks": chunks, "model": model_label,
        "device": name,
        "dtype": dtype, "batch_size": batch, "e2e_seconds": e2e_seconds, "e2e_chunks_per_s": e2e_rate,
        "bare_seconds": bare_seconds, "bare_seconds_before": bare_before, "bare_seconds_after": bare_after,
        "bare_chunks_per_s": bare_rate, "ratio": e2e_rate / bare_rate,
        "stage_seconds": stages,
    })


if __name__ == "__main__":
    main()
