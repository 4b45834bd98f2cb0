"""Hybrid retrieval: FAISS dense vectors + BM25 keywords, fused with RRF.

Nothing in this package knows about Django requests or models: it takes
arrays and returns ids, so every permission decision is made before it runs
(the ``allowed`` masks) and never inside it.
"""
