""" "No good match": whether the legs found anything relevant, from their raw scores (not the fused rank).

Fusion always returns *something* — the least bad passages of the scope —
so rank alone cannot say that nothing matched.  The legs' raw scores can,
read against what the same query scores on the rest of its candidates
(query performance prediction, e.g. Shtok et al. 2012 "Predicting query
performance by query-drift estimation", which compares the top scores with
the scores of the candidate list):

* **dense** — ``dense_best``, the cosine of the best dense hit, and
  ``dense_margin``, how far it stands above the *median* cosine of the
  query's dense candidates (``CAIRN_SEARCH_CANDIDATES``, 100).  The median
  is the query's own background: an embedder that puts every text at a
  cosine of 0.7 from every other shifts both, and the margin does not move.
  A question whose answer is in the collection stands out from the rest
  of the candidates; a string of unrelated words resembles them all alike.
* **lexical** — ``lexical_coverage``, the IDF-weighted share of the query's
  distinct terms that the best-covering of the top ``COVERAGE_HITS`` BM25
  hits contains (``BM25Index.term_coverage``; a term the index has never
  seen counts with the highest IDF, so a keyboard mash covers nothing), and
  ``lexical_agreement``, the dense margin *of that covering passage* (its
  cosine minus the dense candidates' median).  Random words of the corpus's
  own vocabulary are the hard case: each word is in some passage, and two
  of them often share one — but a passage that holds the words without
  being about them sits at the dense background, while a passage that
  answers a keyword query also reads as related to it.

The verdict (``is_weak``): **a match** when the dense leg vouches
(``dense_best ≥ dense`` *and* ``dense_margin ≥ margin``) or the lexical
leg does (``lexical_coverage ≥ lexical`` *and* ``lexical_agreement ≥
agreement``, or ``lexical_coverage ≥ coverage_alone``: every query term in
one passage, for an embedder that does not read the language; with no
dense leg — lexical-only search — coverage alone).  When the lexical leg
ran and no passage holds any query term (coverage 0: a keyboard mash, a
query in a language the collection is not written in), the dense leg must
reach ``dense_unseen`` instead of ``dense``.  Otherwise "no good match".
Nothing here calls a model: everything is read
from the two legs search has already run (one binary search per query term
and covering candidate).  The thresholds are settings
(``CAIRN_NO_MATCH_*``), calibrated with ``benchmarks/no_match.py`` (see
docs/retrieval.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kb.retrieval.hybrid import Retrieval
from kb.retrieval.lexical import BM25Index

COVERAGE_HITS = 5


@dataclass(frozen=True)
class Thresholds:
    """Below these the legs do not vouch for a match (see the module docstring)."""

    dense: float = 0.35  # best cosine
    margin: float = (
        -1.0
    )  # best cosine minus the dense candidates' median (-1: off, the calibrated default)
    lexical: float = 0.5  # IDF-weighted query-term coverage of the best-covering BM25 hit
    agreement: float = 0.1  # that hit's cosine minus the dense candidates' median
    coverage_alone: float = (
        0.999  # coverage at which the lexical leg vouches without the embedder's agreement
    )
    dense_unseen: float = (
        0.6  # best cosine needed when no passage holds any query term (coverage 0)
    )


@dataclass(frozen=True)
class Evidence:
    """How strong the best evidence of each leg is; None for a leg that did not run or found nothing."""

    dense_best: float | None
    lexical_coverage: float | None
    no_good_match: bool
    dense_margin: float | None = None
    lexical_agreement: float | None = None

    def as_dict(self) -> dict[str, float | bool | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "dense_best": rounded(self.dense_best),
            "dense_margin": rounded(self.dense_margin),
            "lexical_coverage": rounded(self.lexical_coverage),
            "lexical_agreement": rounded(self.lexical_agreement),
            "no_good_match": self.no_good_match,
        }


def is_weak(
    dense_best: float | None,
    dense_margin: float | None,
    lexical_coverage: float | None,
    lexical_agreement: float | None,
    *,
    thresholds: Thresholds,
) -> bool:
    """True when neither leg vouches for a match (a leg that did not run does not vouch)."""
    # When the lexical leg ran and no passage holds a single query term (a keyboard mash, another language),
    # the embedder alone has to be surer: its cosines for strings it cannot read are not small.
    dense_needed = thresholds.dense_unseen if lexical_coverage == 0.0 else thresholds.dense
    dense_vouches = (
        dense_best is not None
        and dense_margin is not None
        and dense_best >= max(dense_needed, thresholds.dense)
        and dense_margin >= thresholds.margin
    )
    lexical_vouches = (
        lexical_coverage is not None
        and lexical_coverage >= thresholds.lexical
        and (
            lexical_agreement is None
            or dense_best is None
            or lexical_agreement >= thresholds.agreement
            or lexical_coverage >= thresholds.coverage_alone
        )
    )
    return not (dense_vouches or lexical_vouches)


def evidence_of(
    retrieval: Retrieval,
    lexical: BM25Index,
    query_tokens: Sequence[str],
    *,
    thresholds: Thresholds,
    lexical_ran: bool = True,
) -> Evidence:
    """The evidence of one retrieval: the legs' best scores against the query's own candidates, and the verdict.

    ``lexical_ran``: whether the BM25 leg searched (hybrid or lexical mode, a query with terms); when it
    did and found nothing, the coverage is 0 (no passage holds any query term), not None.
    """
    dense_scores = retrieval.dense.scores
    dense_best = dense_margin = background = None
    if len(dense_scores):
        dense_best = float(dense_scores[0])
        # The leg's scores are sorted best first: the median is its middle, no sort needed.
        middle = len(dense_scores) // 2
        background = float(dense_scores[middle] + dense_scores[(len(dense_scores) - 1) // 2]) / 2
        dense_margin = dense_best - background
    coverage = agreement = None
    if len(retrieval.lexical.ids):
        hits = retrieval.lexical.ids[:COVERAGE_HITS]
        shares = lexical.term_coverage(query_tokens, hits)
        best = int(np.argmax(shares))
        coverage = float(shares[best])
        if background is not None:
            # The covering passage's cosine: from the dense candidates, or — not among them — at most the
            # last candidate's (an upper bound, so a passage just past the dense list is not held against it).
            where = np.flatnonzero(retrieval.dense.ids == hits[best])
            cosine = float(dense_scores[where[0]]) if len(where) else float(dense_scores[-1])
            agreement = cosine - background
    elif lexical_ran and query_tokens:
        coverage = 0.0
    return Evidence(
        dense_best=dense_best,
        dense_margin=dense_margin,
        lexical_coverage=coverage,
        lexical_agreement=agreement,
        no_good_match=is_weak(dense_best, dense_margin, coverage, agreement, thresholds=thresholds),
    )
