""""No good match": whether the legs found anything relevant, from their raw scores (not the fused rank).

Fusion always returns *something* — the least bad passages of the scope —
so rank alone cannot say that nothing matched.  The legs' raw scores can:

* **dense** — the cosine of the best dense hit.  all-MiniLM-L6-v2 gives
  related sentence pairs cosines well above unrelated ones, whatever the
  collection holds.
* **lexical** — the IDF-weighted share of the query's distinct terms that
  the best-covering of the top ``COVERAGE_HITS`` BM25 hits contains
  (``BM25Index.term_coverage``).  A query whose
  rare words no passage holds covers little, however high its BM25 score on
  a common word.

``no_good_match`` fires only when *both* legs are weak: a keyword query the
embedder does not understand but BM25 matches word for word, or a
paraphrase with no shared words that the embedder places close, is a match.
The thresholds (``CAIRN_NO_MATCH_DENSE``, ``CAIRN_NO_MATCH_LEXICAL``) were
calibrated with ``benchmarks/no_match.py`` (see docs/retrieval.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kb.retrieval.hybrid import Retrieval
from kb.retrieval.lexical import BM25Index

COVERAGE_HITS = 5


@dataclass(frozen=True)
class Evidence:
    """How strong the best evidence of each leg is; None for a leg that did not run or found nothing."""

    dense_best: float | None
    lexical_coverage: float | None
    no_good_match: bool

    def as_dict(self) -> dict[str, float | bool | None]:
        return {
            "dense_best": None if self.dense_best is None else round(self.dense_best, 4),
            "lexical_coverage": None if self.lexical_coverage is None else round(self.lexical_coverage, 4),
            "no_good_match": self.no_good_match,
        }


def is_weak(dense_best: float | None, lexical_coverage: float | None, *, dense_threshold: float,
            lexical_threshold: float) -> bool:
    """True when no leg reaches its threshold (a leg that did not run counts as weak)."""
    dense_weak = dense_best is None or dense_best < dense_threshold
    lexical_weak = lexical_coverage is None or lexical_coverage < lexical_threshold
    return dense_weak and lexical_weak


def evidence_of(
    retrieval: Retrieval, lexical: BM25Index, query_tokens: Sequence[str], *, dense_threshold: float,
    lexical_threshold: float,
) -> Evidence:
    """The evidence of one retrieval: best dense cosine, coverage of the best BM25 hit, and the verdict."""
    dense_best = float(retrieval.dense.scores[0]) if len(retrieval.dense.scores) else None
    coverage = None
    if len(retrieval.lexical.ids):
        coverage = float(lexical.term_coverage(query_tokens, retrieval.lexical.ids[:COVERAGE_HITS]).max())
    return Evidence(
        dense_best=dense_best, lexical_coverage=coverage,
        no_good_match=is_weak(dense_best, coverage, dense_threshold=dense_threshold,
                              lexical_threshold=lexical_threshold),
    )
