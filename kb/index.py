"""This process's view of the index layer, configured from settings.

``kb.retrieval`` is plain Python that takes its configuration as arguments;
this module supplies it from Django settings: which embedding model is
active (the ``ACTIVE_MODEL`` record, else the configured model), its
embedder, the store and the reader of its index, the index writer, the
optional reranker.  Search (``kb.search``) and the ingestion pipeline
(``ingestion``) both reach the index through here, so a query and the
passages it should find are embedded by the same model.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from kb.retrieval import active_model as record
from kb.retrieval.active_model import ActiveModel
from kb.retrieval.dense import DenseConfig
from kb.retrieval.embedding import Embedder, SentenceTransformerEmbedder, model_id
from kb.retrieval.embedding import get_embedder as _load_embedder
from kb.retrieval.evidence import Null, null_of, null_sample
from kb.retrieval.index_store import IndexReader, IndexSnapshot, IndexStore
from kb.retrieval.legcheck import CHECK_PASSAGES, LegCheck, pseudo_queries
from kb.retrieval.rerank import Reranker, load_reranker
from kb.retrieval.tokenize import tokenize
from kb.retrieval.writer import IndexWriter


def index_dir() -> Path:
    return Path(settings.CAIRN_INDEX_DIR)


def get_embedder(configured: str | None, device: str | None = None,
                 dtype: str | None = None) -> SentenceTransformerEmbedder:
    """The process-wide embedder of a model directory (None: the bundled model), in ``CAIRN_EMBED_DTYPE``."""
    return _load_embedder(configured, device, dtype or settings.CAIRN_EMBED_DTYPE)


def embed_batch_size(embedder: Embedder) -> int:
    """Passages per forward pass: ``CAIRN_EMBED_BATCH``, else the embedder's choice for its device."""
    return settings.CAIRN_EMBED_BATCH or embedder.batch_size


def model_for(path: str | None) -> ActiveModel:
    return ActiveModel(model_id(path), path or None)


def configured_model() -> ActiveModel:
    """The model ``CAIRN_EMBEDDING_MODEL`` names (the bundled one when unset)."""
    return model_for(settings.CAIRN_EMBEDDING_MODEL)


def active_model() -> ActiveModel:
    """The model searches use now: the recorded one, else the configured one (one stat per call)."""
    return record.read_active(index_dir()) or configured_model()


def set_active(model: ActiveModel) -> None:
    record.write_active(index_dir(), model)


def pin_active_if_unset() -> ActiveModel:
    """The first index write pins the configured model as active (later config changes need a switch)."""
    return record.pin_active(index_dir(), configured_model())


def embedding_model_id() -> str:
    return active_model().model_id


def embedder_for(model: ActiveModel) -> Embedder:
    return get_embedder(model.path, settings.CAIRN_EMBED_DEVICE)


def active_embedder() -> Embedder:
    return embedder_for(active_model())


def embed_query(text: str) -> np.ndarray:
    """A search query's vector, by the active model (the same that embedded the passages).

    Kept for the ``CAIRN_QUERY_CACHE`` most recently asked texts of this
    process: a knowledge base is asked the same questions again (by
    colleagues, by a search followed by an ask, by a page reloaded), and the
    forward pass is a quarter of a search's CPU.  A vector depends only on
    the model and the exact text, so a kept one is the one the model would
    compute again (one text at a time, as here); the entry names the model,
    so a switch never reuses the old model's vectors.  No permission is
    involved: what a user may read is decided afterwards, per request.
    """
    embedder = active_embedder()
    size = settings.CAIRN_QUERY_CACHE
    if not size:
        return embedder.encode_query(text)
    key = (embedder.model_id, str(getattr(embedder, "path", "")), str(getattr(embedder, "dtype", "")),
           str(getattr(embedder, "device", "")), text)
    with _query_vectors_lock:
        cached = _query_vectors.get(key)
        if cached is not None:
            _query_vectors.move_to_end(key)
            return cached.copy()
    vector = embedder.encode_query(text)
    with _query_vectors_lock:
        _query_vectors[key] = vector.copy()
        while len(_query_vectors) > size:
            _query_vectors.popitem(last=False)
    return vector


_query_vectors: OrderedDict[tuple[str, str, str, str, str], np.ndarray] = OrderedDict()
_query_vectors_lock = threading.Lock()


def query_vectors_clear() -> None:
    """Forget every kept query vector (``embed_query``)."""
    with _query_vectors_lock:
        _query_vectors.clear()


def dense_config() -> DenseConfig:
    return DenseConfig(
        approx_above=settings.CAIRN_DENSE_APPROX_ABOVE,
        approx_spec=settings.CAIRN_DENSE_SPEC,
        rerank_depth=settings.CAIRN_DENSE_RERANK_DEPTH,
        ef_search=settings.CAIRN_DENSE_EF_SEARCH,
        exact_max=settings.CAIRN_DENSE_EXACT_MAX,
        delta_max=settings.CAIRN_DENSE_DELTA_MAX,
        device=settings.CAIRN_DENSE_DEVICE,
    )


def store_for(model_id: str) -> IndexStore:
    return IndexStore(index_dir(), model_id, dense_config=dense_config())


def index_store() -> IndexStore:
    """The files of the active model's index."""
    return store_for(active_model().model_id)


def writer_for(store: IndexStore) -> IndexWriter:
    """The index writer of ``store`` (use it with ``store.writer_lock()`` held)."""
    return IndexWriter(store, dimension=lambda: active_embedder().dim, keep=settings.CAIRN_INDEX_WRITER_KEEP)


_reader_lock = threading.Lock()


@functools.cache
def _reader_for(model_id: str, directory: str) -> IndexReader:
    return IndexReader(IndexStore(Path(directory), model_id, dense_config=dense_config()))


def index_reader() -> IndexReader:
    """This process's reader of the active model's index (follows new versions as they are written)."""
    with _reader_lock:
        return _reader_for(active_model().model_id, str(settings.CAIRN_INDEX_DIR))


def active_reranker() -> Reranker | None:
    """The configured cross-encoder (loaded once per process), or None when CAIRN_RERANKER is empty."""
    return load_reranker(settings.CAIRN_RERANKER, device=settings.CAIRN_EMBED_DEVICE,
                         batch_size=settings.CAIRN_RERANK_BATCH, dtype=settings.CAIRN_RERANK_DTYPE)


# --- the "no good match" null ------------------------------------------------------------------

logger = logging.getLogger(__name__)
NULL_FILE = "evidence-null.json"
NULL_SAMPLE = 1000  # passages whose words make the null queries
NULL_MIN_PASSAGES = 50  # below this the collection has no null (the fixed thresholds alone apply)
NULL_DRIFT = 0.1  # recomputed once the index has grown or shrunk by this share
_null_lock = threading.Lock()
_null_memo: dict[str, tuple[int, Null | None]] = {}


def _near(computed_at: int, size: int) -> bool:
    return abs(size - computed_at) <= NULL_DRIFT * max(computed_at, 1)


def no_match_null(snapshot: IndexSnapshot) -> Null | None:
    """This index's ``evidence.Null``: the best cosines of random queries made of the collection's own words.

    An incoherent query must beat what 95 % of them stay below (its
    ``threshold``); a nearly coherent one is judged with its p-value among
    them (``evidence._incoherent``).  Computed the first time a search needs it, then kept while
    the index stays within a tenth of the size it was computed at; shared
    between processes through ``evidence-null.json`` beside the index
    versions.  A computation reads the text of up to ``NULL_SAMPLE`` random
    passages (words only, never shown to anyone), embeds 200 short queries
    and searches them: about a second on a CPU.  None below
    ``NULL_MIN_PASSAGES`` passages or with ``CAIRN_NO_MATCH_NULL=0``.
    """
    if not settings.CAIRN_NO_MATCH_NULL:
        return None
    value: Null | None = _kept_per_index(
        snapshot, NULL_FILE, _null_memo, _null_lock, "No-good-match null",
        compute=lambda s: _compute_null(s),  # looked up at call time (tests replace it)
        encode=lambda value: {"threshold": None if value is None else value.threshold,
                              "cosines": None if value is None else list(value.cosines),
                              "queries": "evidence.null_queries"},
        # A file of an earlier version (a threshold, no cosines) raises KeyError: computed afresh.
        decode=lambda stored: None if stored["cosines"] is None else Null(tuple(float(c) for c in stored["cosines"])),
    )
    return value


def _kept_per_index(
    snapshot: IndexSnapshot, file: str, memo: dict[str, tuple[int, Any]], lock: threading.Lock, what: str, *,
    compute: Callable[[IndexSnapshot], Any], encode: Callable[[Any], dict[str, Any]],
    decode: Callable[[dict[str, Any]], Any],
) -> Any:
    """A value computed over the whole index: kept in ``memo`` and in ``file`` beside the index versions
    (for the other processes) while the index stays within ``NULL_DRIFT`` of the size it was computed at."""
    if snapshot.size < NULL_MIN_PASSAGES:
        return None
    key, size = snapshot.model_id, snapshot.size
    kept = memo.get(key)
    if kept is not None and _near(kept[0], size):
        return kept[1]
    with lock:
        kept = memo.get(key)
        if kept is not None and _near(kept[0], size):
            return kept[1]
        path = store_for(key).dir / file
        kept = None
        try:
            stored = json.loads(path.read_text())
            kept = (int(stored["size"]), decode(stored))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if kept is None or not _near(kept[0], size):
            started = time.monotonic()
            kept = (size, compute(snapshot))
            _write_json(path, {"size": size, **encode(kept[1])})
            logger.info("%s of %d passages: %s (%.1f s)", what, size, kept[1], time.monotonic() - started)
        memo[key] = kept
        return kept[1]


def _write_json(path: Path, content: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        tmp.write_text(json.dumps(content))
        os.replace(tmp, path)
    except OSError:  # a read-only index directory: this process keeps it in memory
        tmp.unlink(missing_ok=True)


def _compute_null(snapshot: IndexSnapshot) -> Null | None:
    from kb.models import Chunk

    sample = null_sample(snapshot.lexical.ids(), NULL_SAMPLE)
    texts = list(
        Chunk.objects.unrestricted("the no-good-match null: words of the whole index, never shown")
        .filter(pk__in=[int(i) for i in sample]).values_list("text", flat=True)
    )
    model = active_model()
    if model.model_id != snapshot.model_id:  # mid-switch: the next search computes it
        return None
    embedder = embedder_for(model)
    # Query by query, as searches embed them (``encode`` is the passage path, which web processes never run).
    return null_of(texts, lambda queries: np.stack([embedder.encode_query(q) for q in queries]),
                   lambda v: _best(snapshot, v))


def _best(snapshot: IndexSnapshot, vector: np.ndarray) -> float | None:
    scores = snapshot.dense.search(vector, 1)[1]
    return float(scores[0]) if len(scores) else None


# --- the leg check: does each leg read this index? (kb.retrieval.legcheck) ---------------------

LEG_CHECK_FILE = "leg-check.json"
_legs_lock = threading.Lock()
_legs_memo: dict[str, tuple[int, LegCheck | None]] = {}


def leg_check(snapshot: IndexSnapshot) -> LegCheck | None:
    """Each leg's success at finding the passage a span of its text came from (``kb.retrieval.legcheck``).

    Kept like the no-good-match null: computed the first time a default-fusion search needs it (about a
    second on a CPU: 100 passages read, 100 spans embedded, 200 searches), shared through
    ``leg-check.json`` beside the index versions, recomputed once the index has changed size by a tenth;
    None below ``NULL_MIN_PASSAGES`` passages or with ``CAIRN_LEG_CHECK=0``.
    """
    if not settings.CAIRN_LEG_CHECK:
        return None
    check: LegCheck | None = _kept_per_index(
        snapshot, LEG_CHECK_FILE, _legs_memo, _legs_lock, "Leg check",
        compute=lambda s: _compute_leg_check(s),  # looked up at call time (tests replace it)
        encode=lambda value: {"check": None if value is None else dataclasses.asdict(value)},
        decode=lambda stored: None if stored["check"] is None else LegCheck(**stored["check"]),
    )
    return check


def _compute_leg_check(snapshot: IndexSnapshot) -> LegCheck | None:
    from kb.models import Chunk

    sample = [int(i) for i in null_sample(snapshot.lexical.ids(), CHECK_PASSAGES)]
    rows = dict(
        Chunk.objects.unrestricted("the leg check: spans of passages searched for their source, never shown")
        .filter(pk__in=sample).values_list("pk", "text")
    )
    model = active_model()
    if not rows or model.model_id != snapshot.model_id:
        return None
    ids = [i for i in sample if i in rows]
    embedder = embedder_for(model)
    dense = lexical = 0
    for chunk_id, query in zip(ids, pseudo_queries([rows[i] for i in ids]), strict=True):
        dense += chunk_id in snapshot.dense.search(embedder.encode_query(query), 10)[0].tolist()
        lexical += chunk_id in snapshot.lexical.search(tokenize(query), 10)[0].tolist()
    return LegCheck(dense=dense / len(ids), lexical=lexical / len(ids), queries=len(ids))
