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

import functools
import threading
from pathlib import Path

import numpy as np
from django.conf import settings

from kb.retrieval import active_model as record
from kb.retrieval.active_model import ActiveModel
from kb.retrieval.dense import DenseConfig
from kb.retrieval.embedding import Embedder, SentenceTransformerEmbedder, model_id
from kb.retrieval.embedding import get_embedder as _load_embedder
from kb.retrieval.index_store import IndexReader, IndexStore
from kb.retrieval.rerank import Reranker, load_reranker
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
    """A search query's vector, by the active model (the same that embedded the passages)."""
    return active_embedder().encode_query(text)


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
