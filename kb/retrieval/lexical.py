"""The lexical leg: an Okapi BM25 inverted index keyed by chunk id.

Layout (``BM25Index``)
----------------------
* Rows: every added document gets an internal row number, in insertion
  order.  Chunk ids (arbitrary int64) map to rows through a sorted id array
  and ``np.searchsorted``, so ids may be large and sparse and the map costs
  16 bytes per chunk at any size.
* Postings: a term-major CSR matrix (term × row; ``_indptr``, ``_rows``,
  ``_tf``): for term ``t`` the rows containing it are
  ``_rows[_indptr[t]:_indptr[t+1]]``, ascending, each with its term
  frequency.  ``_weights`` runs parallel to ``_rows`` and holds the full
  BM25 contribution ``idf(t) · tf·(k1+1) / (tf + k1·(1-b+b·dl/avgdl))``, so a
  query is a scatter-add of a few slices into a dense score vector followed
  by a partial sort: no per-document Python anywhere.
* Adds append the new documents' (term, row) pairs (``_pending``, O(tokens));
  removals only clear the row's ``_live`` flag.  Both set ``_dirty``.  The
  next search (or save) rebuilds once for the whole batch: the pending
  pairs become one CSR block, stitched onto the matrix by scipy's C++ ``csr_hstack``,
  N, avgdl and document frequencies are recomputed over live rows, and the
  weights are recomputed with whole-array numpy expressions (O(nnz); N and
  avgdl change every weight, so nothing cheaper is exact).
* Compaction: dead rows keep their postings (with zero weight, so they
  never score) until more than ``COMPACT_FRACTION`` (20%) of rows are dead;
  the rebuild then drops them and renumbers rows.  Saving always compacts,
  so files hold live documents only.

Scoring is BM25 with Lucene's non-negative idf
``ln(1 + (N - n + 0.5) / (n + 0.5))``; N, n and avgdl count live documents
only, and a repeated query term counts once per occurrence (as rank-bm25's
``get_scores`` does).  Documents are token lists (see
``kb.retrieval.tokenize``); a document's length is its number of tokens.

Threading: ``search`` only reads shared arrays and allocates its own score
vector, so any number of threads may search one index concurrently as long
as nobody mutates it.  Mutation (``add``, ``remove``, ``save``'s compaction)
happens only in the single index writer on its own loaded copy, never on an
instance readers share.  The lazy rebuild is guarded by a lock, so two
threads that both find a freshly mutated index dirty rebuild it once.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

import numpy as np
import scipy.sparse as sp

from kb.retrieval.tokenize import tokenize

__all__ = ["BM25Index", "tokenize"]

_FORMAT = "cairn-bm25"
_FORMAT_VERSION = 1
_EMPTY_IDS = np.zeros(0, dtype=np.int64)
_EMPTY_SCORES = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class Cooccurrence:
    """How a query's terms occur together (``BM25Index.cooccurrence``)."""

    known: int  # distinct query terms the index holds
    held: int  # of those, how many the chunk holds (the rarest ``rarest`` at most)
    # Per set of terms tested (all held terms, then each pair of them): (live chunks holding the set,
    # chunks that would by chance were the terms independent, the most that could: the smallest df).
    tests: tuple[tuple[int, float, int], ...]


class BM25Index:
    """Okapi BM25 over token lists, keyed by int64 chunk id (see the module docstring).

    Invariants (outside a rebuild):
    * ``len(_row_ids) == len(_doc_len) == len(_live)`` = number of rows R;
      the consolidated matrix covers rows ``[0, R - pending rows)`` and the
      pending blocks the rest, in order.
    * ``_sorted_ids`` is strictly increasing and holds exactly the live ids;
      ``_sorted_rows[i]`` is the live row of ``_sorted_ids[i]``.
    * ``_total_len`` is the sum of ``_doc_len`` over live rows.
    * When ``_dirty`` is False: no pending blocks, and ``_weights``/``_df``
      are exact for the current live set; dead rows' weights are 0.
    """

    COMPACT_FRACTION = 0.2
    COOCCURRENCE_SAMPLE = 4_096  # postings of the rarest term scanned at most (``cooccurrence``)

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        if not (np.isfinite(k1) and k1 >= 0):
            raise ValueError(f"k1 must be finite and >= 0, got {k1}")
        if not (0.0 <= b <= 1.0):
            raise ValueError(f"b must be in [0, 1], got {b}")
        self.k1 = float(k1)
        self.b = float(b)
        self._vocab: dict[str, int] = {}
        self._terms: list[str] = []
        self._indptr = np.zeros(1, dtype=np.int64)
        self._rows = np.zeros(0, dtype=np.int32)
        self._tf = np.zeros(0, dtype=np.float32)
        # Added documents not yet in the matrix: (term ids, rows within the batch, batch size) per add.
        self._pending: list[tuple[np.ndarray, np.ndarray, int]] = []
        self._row_ids = np.zeros(0, dtype=np.int64)
        self._doc_len = np.zeros(0, dtype=np.int64)
        self._live = np.zeros(0, dtype=bool)
        self._n_dead = 0
        self._total_len = 0
        self._sorted_ids = np.zeros(0, dtype=np.int64)
        self._sorted_rows = np.zeros(0, dtype=np.int64)
        self._weights = np.zeros(0, dtype=np.float32)
        self._df = np.zeros(0, dtype=np.int64)
        self._min_row_id = 0
        self._max_row_id = -1
        self._dirty = False
        self._rebuild_lock = threading.Lock()

    # ------------------------------------------------------------------ size

    def __len__(self) -> int:
        return len(self._sorted_ids)

    def __contains__(self, chunk_id: object) -> bool:
        if not isinstance(chunk_id, int | np.integer) or isinstance(chunk_id, bool):
            return False
        if not -(2**63) <= int(chunk_id) < 2**63:
            return False
        pos = int(np.searchsorted(self._sorted_ids, chunk_id))
        return pos < len(self._sorted_ids) and int(self._sorted_ids[pos]) == int(chunk_id)

    def ids(self) -> np.ndarray:
        """The live chunk ids, ascending (a copy)."""
        return self._sorted_ids.copy()

    @property
    def vocabulary_size(self) -> int:
        return len(self._terms)

    @property
    def avgdl(self) -> float:
        return self._total_len / len(self) if len(self) else 0.0

    def memory_bytes(self) -> int:
        """Bytes held in numpy arrays (the vocabulary dict and strings are extra)."""
        arrays: list[np.ndarray | None] = [
            self._indptr, self._rows, self._tf, self._row_ids, self._doc_len, self._live,
            self._sorted_ids, self._sorted_rows, self._weights, self._df,
        ]
        pending = sum(terms.nbytes + rows.nbytes for terms, rows, _ in self._pending)
        return int(sum(a.nbytes for a in arrays if a is not None) + pending)

    # -------------------------------------------------------------- mutation

    def add(self, ids: Sequence[int] | np.ndarray, docs: Sequence[Sequence[str]]) -> None:
        """Index ``docs[i]`` (a token list) under ``ids[i]``; an id already present is replaced.

        Within one call a repeated id keeps its last document.  Cost is
        proportional to the batch (plus an O(N) merge of the id map); the
        O(nnz) reweighting happens once, at the next search or save.
        """
        id_array = _as_id_array(ids)
        if len(id_array) != len(docs):
            raise ValueError(f"{len(id_array)} ids for {len(docs)} documents")
        if len(id_array) == 0:
            return
        unique, last_index = np.unique(id_array[::-1], return_index=True)
        if len(unique) != len(id_array):
            keep = np.sort(len(id_array) - 1 - last_index)
            id_array = id_array[keep]
            docs = [docs[i] for i in keep.tolist()]
        self.remove(id_array)

        n = len(id_array)
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=n)
        term_ids = self._term_ids(list(chain.from_iterable(docs)))
        local_rows = np.repeat(np.arange(n, dtype=np.int32), lengths)
        # Kept as (term, row) pairs, O(tokens): a CSR block per add would carry a pointer per
        # vocabulary term (~1 MB at 200k terms), per add — GBs over an index pass of many versions.
        self._pending.append((term_ids, local_rows, n))

        first_row = len(self._row_ids)
        new_rows = np.arange(first_row, first_row + n, dtype=np.int64)
        self._row_ids = np.concatenate([self._row_ids, id_array])
        self._doc_len = np.concatenate([self._doc_len, lengths])
        self._live = np.concatenate([self._live, np.ones(n, dtype=bool)])
        self._total_len += int(lengths.sum())

        order = np.argsort(id_array, kind="stable")
        sorted_new = id_array[order]
        at = np.searchsorted(self._sorted_ids, sorted_new)
        self._sorted_ids = np.insert(self._sorted_ids, at, sorted_new)
        self._sorted_rows = np.insert(self._sorted_rows, at, new_rows[order])
        self._dirty = True

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove these chunk ids; returns how many were present."""
        id_array = np.unique(_as_id_array(ids))
        if len(id_array) == 0 or len(self._sorted_ids) == 0:
            return 0
        pos = np.searchsorted(self._sorted_ids, id_array)
        inside = pos < len(self._sorted_ids)
        pos = pos[inside]
        pos = pos[self._sorted_ids[pos] == id_array[inside]]
        if len(pos) == 0:
            return 0
        rows = self._sorted_rows[pos]
        self._live[rows] = False
        self._n_dead += len(rows)
        self._total_len -= int(self._doc_len[rows].sum())
        self._sorted_ids = np.delete(self._sorted_ids, pos)
        self._sorted_rows = np.delete(self._sorted_rows, pos)
        self._dirty = True
        return len(pos)

    def _term_ids(self, tokens: list[str]) -> np.ndarray:
        """Vocabulary ids of ``tokens``, adding unseen terms (int32, same order).

        The dict lookups run through ``map`` in C; only tokens missing on the
        first pass are looked at again, so a batch of mostly known words costs
        one hash lookup per token.
        """
        vocab = self._vocab
        found = np.fromiter(map(vocab.get, tokens, repeat(-1)), dtype=np.int64, count=len(tokens))
        missing = np.flatnonzero(found < 0)
        if len(missing):
            missing_tokens = [tokens[i] for i in missing.tolist()]
            fresh = [t for t in dict.fromkeys(missing_tokens) if isinstance(t, str)]
            if len(fresh) != len(dict.fromkeys(missing_tokens)):
                raise TypeError("document tokens must be str")
            vocab.update(zip(fresh, range(len(self._terms), len(self._terms) + len(fresh)), strict=True))
            self._terms.extend(fresh)
            found[missing] = np.fromiter(map(vocab.__getitem__, missing_tokens), dtype=np.int64, count=len(missing))
        if len(self._terms) >= 2**31:
            raise OverflowError("vocabulary exceeds int32 term ids")
        return found.astype(np.int32)

    # --------------------------------------------------------------- rebuild

    def _ensure_fresh(self) -> None:
        if self._dirty:
            with self._rebuild_lock:
                if self._dirty:
                    self._rebuild()

    def _rebuild(self) -> None:
        """Consolidate pending blocks, compact if worthwhile, recompute df and weights."""
        self._consolidate()
        if self._n_dead > self.COMPACT_FRACTION * max(len(self._row_ids), 1):
            self._compact()
        counts = np.diff(self._indptr)
        if self._n_dead:
            live_postings = np.concatenate([[0], np.cumsum(self._live[self._rows], dtype=np.int64)])
            df = live_postings[self._indptr[1:]] - live_postings[self._indptr[:-1]]
        else:
            df = counts
        n_docs = len(self)
        avgdl = self._total_len / n_docs if n_docs and self._total_len else 1.0
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        k1, b = self.k1, self.b
        # Per-row length normaliser; +inf on dead rows turns their weight into 0.
        row_norm = (k1 * (1.0 - b + b * self._doc_len / avgdl)).astype(np.float32)
        if self._n_dead:
            row_norm[~self._live] = np.inf
        tf = self._tf
        weights = row_norm[self._rows]
        weights += tf
        np.divide(tf, weights, out=weights)
        weights *= np.repeat((idf * (k1 + 1.0)).astype(np.float32), counts)
        if k1 == 0 and self._n_dead:
            weights[~self._live[self._rows]] = 0.0  # tf/(tf+0) is 1 even for a dead row
        self._weights = weights
        self._df = np.asarray(df, dtype=np.int64)
        self._min_row_id = int(self._row_ids.min()) if len(self._row_ids) else 0
        self._max_row_id = int(self._row_ids.max()) if len(self._row_ids) else -1
        self._dirty = False

    def _consolidate(self) -> None:
        """Append the pending documents' postings to the term-major matrix."""
        if not self._pending:
            return
        n_terms = len(self._terms)
        sizes = [n for _, _, n in self._pending]
        added = sum(sizes)
        base_rows = len(self._row_ids) - added
        first = np.cumsum([0, *sizes[:-1]]).tolist()
        terms = np.concatenate([t for t, _, _ in self._pending])
        rows = np.concatenate([r + np.int32(f) for (_, r, _), f in zip(self._pending, first, strict=True)])
        # COO → CSR sums duplicate (term, row) pairs into term frequencies and,
        # being a stable counting sort over row-ordered input, leaves each
        # term's rows ascending.
        block = sp.csr_matrix((np.ones(len(terms), dtype=np.float32), (terms, rows)), shape=(n_terms, added))
        block.sum_duplicates()
        indptr = np.concatenate([self._indptr, np.full(n_terms + 1 - len(self._indptr), self._indptr[-1])])
        main = sp.csr_matrix((self._tf, self._rows, indptr), shape=(n_terms, base_rows))
        merged = sp.hstack([main, block], format="csr", dtype=np.float32)
        self._indptr = merged.indptr.astype(np.int64, copy=False)
        self._rows = merged.indices.astype(np.int32, copy=False)
        self._tf = merged.data
        self._pending = []

    def _compact(self) -> None:
        """Drop dead rows and terms left without postings; renumbers rows and terms."""
        live = self._live
        new_row = np.cumsum(live, dtype=np.int64) - 1
        keep = live[self._rows]
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        counts = kept_before[self._indptr[1:]] - kept_before[self._indptr[:-1]]
        self._rows = new_row[self._rows[keep]].astype(np.int32)
        self._tf = self._tf[keep]
        used = counts > 0
        if not used.all():
            self._terms = [t for t, u in zip(self._terms, used.tolist(), strict=True) if u]
            self._vocab = {t: i for i, t in enumerate(self._terms)}
            counts = counts[used]
        self._indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._row_ids = self._row_ids[live]
        self._doc_len = self._doc_len[live]
        self._live = np.ones(len(self._row_ids), dtype=bool)
        self._sorted_rows = new_row[self._sorted_rows]
        self._n_dead = 0

    # ---------------------------------------------------------------- search

    def search(
        self, query_tokens: Sequence[str], k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ``(ids int64, scores float32)``, best first, only scores > 0.

        ``allowed`` is a boolean mask by chunk id (ids outside it are not
        allowed); it is applied before the top-k selection, so a forbidden
        chunk never displaces an allowed one.  Ties are broken by the smaller
        chunk id, so results are deterministic.
        """
        if k <= 0 or len(self) == 0:
            return _EMPTY_IDS, _EMPTY_SCORES
        self._ensure_fresh()
        vocab = self._vocab
        query = Counter(t for t in map(vocab.get, query_tokens) if t is not None)
        if not query:
            return _EMPTY_IDS, _EMPTY_SCORES
        indptr, rows, weights = self._indptr, self._rows, self._weights
        n_rows = len(self._row_ids)
        spans = [(int(indptr[t]), int(indptr[t + 1]), count) for t, count in query.items()]
        spans = [s for s in spans if s[1] > s[0]]
        if not spans:
            return _EMPTY_IDS, _EMPTY_SCORES
        postings = sum(end - start for start, end, _ in spans)
        scores = np.zeros(n_rows, dtype=np.float32)
        for start, end, count in spans:
            contribution = weights[start:end]
            if count != 1:
                contribution = contribution * np.float32(count)
            np.add.at(scores, rows[start:end], contribution)
        row_ids = self._row_ids
        if postings * 8 < n_rows:
            # Few postings: work on the candidate rows they name, not on all rows.
            candidates = _unique_rows([rows[start:end] for start, end, _ in spans], n_rows)
            if allowed is not None:
                candidates = candidates[_allowed_ids(allowed, row_ids[candidates])]
        else:
            if allowed is not None:
                # Multiplying by the mask is branch-free; filtering a million
                # candidates with a random boolean mask is several times slower.
                np.multiply(scores, self._allowed_by_row(allowed), out=scores)
            # Partitioning only the positive scores: np.partition slows down
            # badly on a vector that is mostly equal zeros.
            candidates = np.flatnonzero(scores > 0)
        cand_scores = scores[candidates]
        chosen = _top_k(cand_scores, k, lambda positions: row_ids[candidates[positions]])
        chosen_rows, chosen_scores = candidates[chosen], cand_scores[chosen]
        result_ids = row_ids[chosen_rows]
        order = np.lexsort((result_ids, -chosen_scores))
        return result_ids[order], chosen_scores[order]

    def term_coverage(self, query_tokens: Sequence[str], chunk_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """For each of ``chunk_ids``: the IDF-weighted share of the query's distinct terms it holds (0 to 1).

        A term the index has never seen counts with the highest IDF (``df = 0``):
        a query of words no document holds covers nothing.  0 for an empty
        query or a chunk the index does not hold.  A binary search in each
        query term's postings per chunk asked about.
        """
        ids = _as_id_array(chunk_ids)
        coverage = np.zeros(len(ids), dtype=np.float64)
        terms = list(dict.fromkeys(query_tokens))
        if not terms or not len(ids) or len(self) == 0:
            return coverage
        self._ensure_fresh()
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        known = self._sorted_ids[pos] == ids
        rows = np.where(known, self._sorted_rows[pos], -1)
        n_docs = len(self)
        total = 0.0
        for term in terms:
            term_id = self._vocab.get(term)
            df = int(self._df[term_id]) if term_id is not None and term_id < len(self._df) else 0
            idf = float(np.log1p((n_docs - df + 0.5) / (df + 0.5)))
            total += idf
            if df and term_id is not None:
                # Each term's rows are ascending (``_consolidate``, ``_compact``): a binary search per chunk,
                # not a scan of a common term's postings (measured: np.isin cost 12 ms p50 at 1M chunks).
                postings = self._rows[int(self._indptr[term_id]):int(self._indptr[term_id + 1])]
                at = np.minimum(np.searchsorted(postings, rows), len(postings) - 1)
                coverage += idf * (postings[at] == rows)
        return coverage / total if total > 0 else coverage

    def cooccurrence(self, query_tokens: Sequence[str], chunk_id: int, *, rarest: int = 4) -> Cooccurrence:
        """How the query's terms that ``chunk_id`` holds occur together in the index, against chance.

        Of the query's distinct terms the index knows, the ``rarest`` ones the
        chunk holds (the rarest carry the evidence, and bound the cost).  One
        test for all of them together, then one per pair of them (when there
        are three or more): the number of live chunks holding the set
        (``together``), the number that would if the terms fell into chunks
        independently (``expected`` = N · Π df/N), and the most there could be
        (``possible``: the smallest df).  When the chunk holds fewer than two
        of them, one test: ``together`` 0, the rest for the query's two rarest
        known terms.
        """
        self._ensure_fresh()
        n_docs = len(self)
        known: list[tuple[int, int]] = []  # (df, term id)
        for term in dict.fromkeys(query_tokens):
            term_id = self._vocab.get(term)
            if term_id is not None and term_id < len(self._df) and self._df[term_id] > 0:
                known.append((int(self._df[term_id]), term_id))
        known.sort()
        row = -1
        pos = int(np.searchsorted(self._sorted_ids, chunk_id)) if n_docs else 0
        if pos < n_docs and int(self._sorted_ids[pos]) == int(chunk_id):
            row = int(self._sorted_rows[pos])
        held = [(df, t) for df, t in known if row >= 0 and self._holds(t, row)][:rarest]
        if len(held) < 2:
            pair = known[:2]
            expected = float(n_docs * np.prod([df / n_docs for df, _ in pair])) if pair and n_docs else 0.0
            return Cooccurrence(known=len(known), held=len(held),
                                tests=((0, expected, min((df for df, _ in pair), default=0)),))
        sets = [held] + ([[a, b] for i, a in enumerate(held) for b in held[i + 1:]] if len(held) > 2 else [])
        tests = tuple((self._together([t for _, t in terms]), float(n_docs * np.prod([df / n_docs for df, _ in terms])),
                       terms[0][0]) for terms in sets)
        return Cooccurrence(known=len(known), held=len(held), tests=tests)

    def _together(self, term_ids: list[int]) -> int:
        """Live chunks holding every one of ``term_ids`` (rarest first), counted on at most
        ``COOCCURRENCE_SAMPLE`` of the first term's postings and scaled up."""
        rows = self._postings(term_ids[0])
        # Common words (a rarest df in the hundreds of thousands at 1M chunks): count on a sample of the
        # rarest term's postings and scale up — the test compares counts far from the edge then. One
        # posting at random from each stretch of ``step`` (seeded): spread evenly, yet never in step
        # with a regular pattern in the rows.
        step = -(-len(rows) // self.COOCCURRENCE_SAMPLE)
        if step > 1:
            starts = np.arange(0, len(rows), step)
            picks = starts + np.random.default_rng(len(rows)).integers(0, step, len(starts))
            rows = rows[np.minimum(picks, len(rows) - 1)]
        for term_id in term_ids[1:]:
            postings = self._postings(term_id)
            at = np.minimum(np.searchsorted(postings, rows), len(postings) - 1)
            rows = rows[postings[at] == rows]
        return int(self._live[rows].sum()) * step

    def _postings(self, term_id: int) -> np.ndarray:
        """The rows holding ``term_id``, ascending (dead rows included until compaction)."""
        return self._rows[int(self._indptr[term_id]):int(self._indptr[term_id + 1])]

    def _holds(self, term_id: int, row: int) -> bool:
        postings = self._postings(term_id)
        at = int(np.searchsorted(postings, row))
        return at < len(postings) and int(postings[at]) == row

    def _allowed_by_row(self, allowed: np.ndarray) -> np.ndarray:
        """``allowed`` (a mask by chunk id) gathered onto rows; ids outside the mask are refused."""
        allowed = _as_bool_mask(allowed)
        if len(allowed) == 0:
            return np.zeros(len(self._row_ids), dtype=bool)
        if self._min_row_id >= 0 and self._max_row_id < len(allowed):
            return allowed[self._row_ids]
        return _allowed_ids(allowed, self._row_ids)

    def release_weights(self) -> None:
        """Free the BM25 weights (recomputed by the next search): what an index writer keeps needs none."""
        with self._rebuild_lock:
            self._weights = np.zeros(0, dtype=np.float32)
            self._dirty = True

    # ----------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to exactly ``path`` as an uncompressed npz (no pickled objects).

        Compacts first, so the file holds live documents only.  The caller
        makes it atomic (write to a temporary name, fsync, rename).
        """
        self._consolidate()
        if self._n_dead:
            self._compact()
            self._dirty = True
        text = "".join(self._terms)
        offsets = np.zeros(len(self._terms) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, self._terms), dtype=np.int64, count=len(self._terms)), out=offsets[1:])
        max_tf = int(self._tf.max()) if len(self._tf) else 0
        arrays: dict[str, np.ndarray] = {
            "format": np.array(_FORMAT),
            "format_version": np.array(_FORMAT_VERSION, dtype=np.int64),
            "params": np.array([self.k1, self.b], dtype=np.float64),
            "vocab_utf8": np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8),
            "vocab_offsets": offsets,
            "indptr": self._indptr,
            "rows": self._rows,
            # Term frequencies are small integers; the narrowest type that
            # holds them halves or quarters the largest array in the file.
            "tf": self._tf.astype(np.min_scalar_type(max_tf)),
            "row_ids": self._row_ids,
            "doc_len": self._doc_len,
        }
        with open(path, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, weights: bool = True) -> BM25Index:
        """Read a file written by ``save``; corrupt or inconsistent files raise ValueError.

        Loading never unpickles (``allow_pickle=False``).  A missing file
        raises FileNotFoundError unchanged, because callers retry on it.
        The weights are computed here rather than on the first query, so a
        reader that loads a new version serves it at full speed at once
        (``weights=False``: the index writer, which never searches, skips them).
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            raise
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:
            raise ValueError(f"{os.fspath(path)} is not a readable BM25 index: {exc}") from exc
        index = cls._from_arrays(arrays, os.fspath(path))
        if weights:
            index._ensure_fresh()
        return index

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], name: str) -> BM25Index:
        def fail(why: str) -> ValueError:
            return ValueError(f"{name} is not a valid BM25 index: {why}")

        required = {"format", "format_version", "params", "vocab_utf8", "vocab_offsets",
                    "indptr", "rows", "tf", "row_ids", "doc_len"}
        if missing := required - arrays.keys():
            raise fail(f"missing arrays {sorted(missing)}")
        if arrays["format"].shape != () or str(arrays["format"]) != _FORMAT:
            raise fail("wrong format marker")
        if arrays["format_version"].shape != () or int(arrays["format_version"]) != _FORMAT_VERSION:
            raise fail(f"unsupported format version {arrays['format_version']}")
        params = arrays["params"]
        if params.shape != (2,) or not np.all(np.isfinite(params)):
            raise fail("bad parameters")
        try:
            index = cls(float(params[0]), float(params[1]))
        except ValueError as exc:
            raise fail(str(exc)) from exc

        def typed(key: str, kinds: str, ndim: int = 1) -> np.ndarray:
            array = arrays[key]
            if array.dtype.kind not in kinds or array.ndim != ndim:
                raise fail(f"{key} has dtype {array.dtype} and {array.ndim} dimensions")
            return array

        blob = typed("vocab_utf8", "u")
        # copy=False: the arrays are fresh from the file, so already-right types are used as they are.
        offsets = typed("vocab_offsets", "iu").astype(np.int64, copy=False)
        indptr = typed("indptr", "iu").astype(np.int64, copy=False)
        rows = typed("rows", "iu")
        tf = typed("tf", "iuf")
        row_ids = typed("row_ids", "i").astype(np.int64, copy=False)
        doc_len = typed("doc_len", "iu").astype(np.int64, copy=False)
        n_terms, n_rows = len(offsets) - 1, len(row_ids)
        try:
            text = blob.tobytes().decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise fail("vocabulary is not UTF-8") from exc
        if n_terms < 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(text):
            raise fail("vocabulary offsets are inconsistent")
        bounds = offsets.tolist()
        terms = [text[a:z] for a, z in zip(bounds[:-1], bounds[1:], strict=True)]
        vocab = {t: i for i, t in enumerate(terms)}
        if len(vocab) != n_terms:
            raise fail("vocabulary has duplicate terms")
        if len(indptr) != n_terms + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise fail("posting pointers are inconsistent")
        if indptr[-1] != len(rows) or len(tf) != len(rows):
            raise fail("posting arrays have inconsistent lengths")
        if len(doc_len) != n_rows:
            raise fail("document lengths do not match the rows")
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n_rows):
            raise fail("a posting points outside the rows")
        if len(tf) and not float(tf.min()) >= 1:
            raise fail("term frequencies must be >= 1")
        if n_rows >= 2**31:
            raise fail("too many rows")
        rows = rows.astype(np.int32, copy=False)
        # Rows must ascend strictly within each term: a duplicate would be
        # counted twice in a score.  Term boundaries are exempt.  (Compared
        # in int32, in place: at 50M postings a widened np.diff costs ~1 s.)
        ascending = rows[1:] > rows[:-1]
        ascending[indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < len(rows))] - 1] = True
        if not ascending.all():
            raise fail("posting rows are not strictly ascending within a term")
        del ascending
        order = np.argsort(row_ids, kind="stable")
        sorted_ids = row_ids[order]
        if np.any(sorted_ids[1:] == sorted_ids[:-1]):
            raise fail("duplicate chunk ids")
        tf = tf.astype(np.float32)
        if not np.array_equal(_row_sums(indptr, rows, tf, n_rows), doc_len):
            raise fail("document lengths disagree with the postings")
        index._vocab, index._terms = vocab, terms
        index._indptr, index._rows, index._tf = indptr, rows, tf
        index._row_ids, index._doc_len = row_ids, doc_len
        index._live = np.ones(n_rows, dtype=bool)
        index._total_len = int(doc_len.sum())
        index._sorted_ids, index._sorted_rows = sorted_ids, order.astype(np.int64)
        index._dirty = True
        return index


def _row_sums(indptr: np.ndarray, rows: np.ndarray, tf: np.ndarray, n_rows: int) -> np.ndarray:
    """Each row's total term frequency (its length), from the term-major postings.

    A sparse transpose-times-ones in scipy's C++ (~0.1 s at 50M postings)
    rather than ``np.bincount`` with weights (~0.6–1.4 s, which widens every
    weight to float64).  Term frequencies are checked >= 1 first, so every
    partial sum is at most the row's total, and float32 sums of integers are
    exact below 2**24; longer rows (never a chunk) take the exact slow path.
    """
    if len(rows) == 0 or n_rows == 0:
        return np.zeros(n_rows, dtype=np.float64)
    matrix = sp.csr_matrix((tf, rows, indptr), shape=(len(indptr) - 1, n_rows))
    sums = matrix.T @ np.ones(len(indptr) - 1, dtype=np.float32)
    if sums.max() >= 2**24:
        return np.bincount(rows, weights=tf, minlength=n_rows)
    return sums


def _as_id_array(ids: Any) -> np.ndarray:
    array = np.asarray(ids)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise TypeError(f"ids must be a 1-d sequence of integers, got dtype {array.dtype} shape {array.shape}")
    if array.dtype.kind == "u" and array.max() >= 2**63:
        raise OverflowError("ids must fit in int64")
    return array.astype(np.int64, copy=False)


def _unique_rows(slices: list[np.ndarray], n_rows: int) -> np.ndarray:
    """The distinct rows in ``slices`` without sorting: each row keeps the last position that wrote it."""
    if len(slices) == 1:
        return slices[0].astype(np.int64)
    rows = np.concatenate(slices)
    owner = np.empty(n_rows, dtype=np.int64)
    positions = np.arange(len(rows), dtype=np.int64)
    owner[rows] = positions
    return rows[owner[rows] == positions].astype(np.int64)


def _as_bool_mask(allowed: np.ndarray) -> np.ndarray:
    allowed = np.asarray(allowed)
    if allowed.ndim != 1:
        raise ValueError("allowed must be a 1-d mask indexed by chunk id")
    return allowed if allowed.dtype == np.bool_ else allowed.astype(bool)


def _allowed_ids(allowed: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Boolean keep-mask for ``ids`` under an allowed-by-id mask; ids outside it are refused."""
    allowed = _as_bool_mask(allowed)
    inside = (ids >= 0) & (ids < len(allowed))
    keep = np.zeros(len(ids), dtype=bool)
    keep[inside] = allowed[ids[inside]]
    return keep


def _top_k(
    values: np.ndarray, k: int, ids_of: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Positions of the k largest positive ``values`` (unordered); ties at the cut go to smaller ids.

    ``np.partition`` finds the k-th value in O(n) without sorting; one pass
    then collects everything at or above it, and only the (rare) tie at the
    cut needs the ids.
    """
    if len(values) <= k:
        return np.flatnonzero(values > 0)
    cut = len(values) - k
    kth = np.partition(values, cut)[cut]
    if not kth > 0:
        return np.flatnonzero(values > 0)
    chosen = np.flatnonzero(values >= kth)
    if len(chosen) > k:
        above = chosen[values[chosen] > kth]
        ties = chosen[values[chosen] == kth]
        ties = ties[np.argsort(ids_of(ties), kind="stable")[: k - len(above)]]
        chosen = np.concatenate([above, ties])
    return chosen
