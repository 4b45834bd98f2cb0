"""A small indexed corpus built straight into the database and the index files (no parsing, no embedding).

Each document has one INDEXED version with one chunk containing ``WORD``,
so a search for ``WORD`` with a large ``k`` returns every document the user
may read — which makes "search results == the oracle" a set comparison.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.utils import timezone

from access.models import User
from kb.index import embedding_model_id, get_embedder
from kb.models import Chunk, Collection, Document, DocumentVersion
from kb.retrieval.index_store import IndexStore
from kb.retrieval.lexical import tokenize
from kb.services import chunk_ids_reserve

WORD = "zebra"


def build_corpus(collection: Collection, owner: User, n_docs: int, *, seed: int = 0) -> list[Document]:
    dim = get_embedder(settings.CAIRN_EMBEDDING_MODEL, settings.CAIRN_EMBED_DEVICE).dim
    rng = np.random.default_rng(seed)
    store = IndexStore(Path(settings.CAIRN_INDEX_DIR), embedding_model_id())
    snapshot = store.load() or store.empty(dim)
    documents, ids, vectors, tokens = [], [], [], []
    now = timezone.now()
    for i in range(n_docs):
        document = Document.objects.create(collection=collection, title=f"doc-{i}", created_by=owner)
        start = chunk_ids_reserve(1)
        text = f"{WORD} field note {i}: observations of herd number {i}."
        version = DocumentVersion.objects.create(
            document=document, number=1, sha256=f"{i:064x}", size=len(text), kind="txt", created_by=owner,
            text=text, chunk_id_start=start, chunk_count=1, indexed_at=now,
        )
        vector = rng.standard_normal(dim).astype(np.float32)
        vector /= np.linalg.norm(vector)
        Chunk.objects.create(id=start, version=version, document=document, ordinal=0, text=text,
                             char_start=0, char_end=len(text), token_count=12, embedding=vector.tobytes())
        document.make_current(version)
        document.latest_version = version
        document.save(update_fields=[*Document.CURRENT_FIELDS, "latest_version"])
        documents.append(document)
        ids.append(start)
        vectors.append(vector)
        tokens.append(tokenize(text))
    snapshot.dense.add(np.asarray(ids, dtype=np.int64), np.stack(vectors))
    snapshot.lexical.add(np.asarray(ids, dtype=np.int64), tokens)
    with store.writer_lock():
        store.write(snapshot)
    return documents


@pytest.fixture
def one_torch_thread():
    """Query embedding on one thread: on a busy shared CPU, thread oversubscription costs 10-50x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
