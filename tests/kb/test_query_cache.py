"""Kept query vectors (kb.index.embed_query, CAIRN_QUERY_CACHE): the model's own vector, per model, bounded."""

from __future__ import annotations

import numpy as np
import pytest

from kb import index


class Counting:
    """An embedder that counts its forward passes (the real one is slow to load and tested elsewhere)."""

    def __init__(self, model_id: str, scale: float = 1.0) -> None:
        self.model_id, self.dim, self.scale, self.calls = model_id, 4, scale, 0

    def encode_query(self, text: str) -> np.ndarray:
        self.calls += 1
        vector = np.array([len(text), sum(map(ord, text)) % 7, 1.0, self.scale], dtype=np.float32)
        return vector / np.linalg.norm(vector)


@pytest.fixture
def embedder(monkeypatch):
    current = Counting("model-a")
    monkeypatch.setattr(index, "active_embedder", lambda: current)
    return current


def test_a_repeated_query_is_embedded_once_and_gets_the_same_vector(embedder, settings):
    settings.CAIRN_QUERY_CACHE = 8
    first = index.embed_query("annual leave")
    again = index.embed_query("annual leave")
    assert embedder.calls == 1
    np.testing.assert_array_equal(first, again)
    again[:] = 0  # a caller changing its copy does not change what the next caller gets
    np.testing.assert_array_equal(index.embed_query("annual leave"), first)
    index.embed_query("Annual leave")  # the exact text: a different query is embedded
    assert embedder.calls == 2


def test_another_model_never_gets_the_kept_vector(monkeypatch, settings):
    settings.CAIRN_QUERY_CACHE = 8
    old, new = Counting("model-a"), Counting("model-b", scale=5.0)
    monkeypatch.setattr(index, "active_embedder", lambda: old)
    from_old = index.embed_query("annual leave")
    monkeypatch.setattr(index, "active_embedder", lambda: new)
    from_new = index.embed_query("annual leave")
    assert new.calls == 1 and not np.allclose(from_old, from_new)


def test_bounded_least_recently_used_first(embedder, settings):
    settings.CAIRN_QUERY_CACHE = 2
    for text in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        index.embed_query(text)
    assert embedder.calls == 3
    index.embed_query("a")
    assert embedder.calls == 3
    index.embed_query("b")
    assert embedder.calls == 4
    assert len(index._query_vectors) == 2


def test_zero_keeps_nothing(embedder, settings):
    settings.CAIRN_QUERY_CACHE = 0
    index.embed_query("annual leave")
    index.embed_query("annual leave")
    assert embedder.calls == 2 and not index._query_vectors
