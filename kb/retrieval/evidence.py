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

import bisect
import functools
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import pdtrc

from kb.retrieval.hybrid import Retrieval
from kb.retrieval.lexical import BM25Index

COVERAGE_HITS = 5
# The collection's null: this many random queries of its own words, and the share of them an incoherent
# query's best cosine must beat.
NULL_QUERIES = 200
NULL_QUANTILE = 0.95
NULL_MIN_WORDS = 20
_WORD = re.compile(r"[^\W\d_]{4,}")
# Scripts written without spaces between words (Han, kana, Hangul): a "word" there is a whole phrase.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


@dataclass(frozen=True)
class Null:
    """The collection's null: the best cosines of random queries made of its own words, ascending."""

    cosines: tuple[float, ...]

    @functools.cached_property
    def threshold(self) -> float:
        """What ``NULL_QUANTILE`` of the null queries stay below (``null_threshold``); computed once."""
        return float(np.quantile(np.asarray(self.cosines, dtype=np.float64), NULL_QUANTILE))

    def p_value(self, cosine: float) -> float:
        """The share of the null's queries whose best cosine is at least ``cosine`` (an empirical p-value,
        counting the query itself, so never 0)."""
        at_least = len(self.cosines) - bisect.bisect_left(self.cosines, cosine)
        return (at_least + 1) / (len(self.cosines) + 1)

    def __str__(self) -> str:  # for the log line that records its computation
        return f"threshold {self.threshold:.4f} ({len(self.cosines)} queries)"


def fisher(*p_values: float) -> float:
    """Fisher's combination of independent p-values: P(χ²(2k) ≥ −2 Σ ln p).

    For an even number of degrees of freedom the χ² tail has a closed form,
    e^(−x/2) Σ_{i<k} (x/2)^i / i!, with x/2 = −Σ ln p.
    """
    half = -sum(math.log(max(p, 1e-300)) for p in p_values)
    term = total = 1.0
    for i in range(1, len(p_values)):
        term *= half / i
        total += term
    return min(1.0, math.exp(-half) * total)


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
    # The significance level of the co-occurrence test: a query whose terms occur together no more often
    # than chance would have them (p above this) is incoherent. 0: the test is off.
    coherence: float = 0.05
    # The best cosine an incoherent query needs: the collection's own null (``null_threshold``), which the
    # search layer fills in per index; None until it is known (then ``dense`` alone applies).
    null_dense: float | None = None
    # The collection's null itself (``Null``): with it, a query the co-occurrence test alone cannot call
    # coherent is still one when that test and the null's p-value of its best cosine together reject a bag
    # of words (Fisher's method, at ``coherence``). None: the test alone decides.
    null: Null | None = None


@dataclass(frozen=True)
class Evidence:
    """How strong the best evidence of each leg is; None for a leg that did not run or found nothing."""

    dense_best: float | None
    lexical_coverage: float | None
    no_good_match: bool
    dense_margin: float | None = None
    lexical_agreement: float | None = None
    coherence: float | None = None  # the co-occurrence test's p-value; None where it cannot decide

    def as_dict(self) -> dict[str, float | bool | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "dense_best": rounded(self.dense_best),
            "dense_margin": rounded(self.dense_margin),
            "lexical_coverage": rounded(self.lexical_coverage),
            "lexical_agreement": rounded(self.lexical_agreement),
            "coherence": None if self.coherence is None else float(f"{self.coherence:.3g}"),
            "no_good_match": self.no_good_match,
        }


def is_weak(
    dense_best: float | None,
    dense_margin: float | None,
    lexical_coverage: float | None,
    lexical_agreement: float | None,
    *,
    thresholds: Thresholds,
    coherence: float | None = None,
) -> bool:
    """True when neither leg vouches for a match (a leg that did not run does not vouch)."""
    # A query whose terms this collection never puts together more often than chance is a bag of words:
    # the passage holding several of them holds them by accident, and an embedder's closeness to one of
    # them is no better than what the collection's own random words reach.
    incoherent = _incoherent(coherence, dense_best, thresholds)
    # When the lexical leg ran and no passage holds a single query term (a keyboard mash, another language),
    # the embedder alone has to be surer: its cosines for strings it cannot read are not small.
    dense_needed = max(thresholds.dense_unseen if lexical_coverage == 0.0 else thresholds.dense, thresholds.dense)
    if incoherent and thresholds.null_dense is not None:
        dense_needed = max(dense_needed, thresholds.null_dense)
    dense_vouches = (
        dense_best is not None
        and dense_margin is not None
        and dense_best >= dense_needed
        and dense_margin >= thresholds.margin
    )
    lexical_vouches = (
        not incoherent
        and lexical_coverage is not None
        and lexical_coverage >= thresholds.lexical
        and (
            lexical_agreement is None
            or dense_best is None
            or lexical_agreement >= thresholds.agreement
            or lexical_coverage >= thresholds.coverage_alone
        )
    )
    return not (dense_vouches or lexical_vouches)


def _untested(coherence: float | None, thresholds: Thresholds) -> bool:
    """Whether the co-occurrence test ran and did not, on its own, find the query coherent."""
    return coherence is not None and thresholds.coherence > 0 and coherence > thresholds.coherence


def _incoherent(coherence: float | None, dense_best: float | None, thresholds: Thresholds) -> bool:
    """Whether the query reads as a bag of the collection's words (see ``is_weak``).

    The co-occurrence test alone calls a query coherent at ``p ≤ coherence``.
    Its power is low when a query term is rare: a question naming a thing
    six passages mention, next to a word five passages use, cannot show
    better than chance from the one passage that holds both ("Who was the
    Norse leader?": p = 0.055 on 173 paragraphs). The embedder is a second
    witness against the same null hypothesis — "random words of
    this collection" — through the collection's null: the share of its
    random-word queries whose best cosine reaches the query's. Together
    (Fisher's method) they reject the bag at the same level, so a query that
    is nearly significant on both counts is coherent. A bag whose words never
    meet (p = 1) gains nothing: Fisher's method would need its best cosine
    above all but about one null query in a hundred, and it is judged by the
    null's 95th percentile (``null_dense``) in any case.
    """
    if coherence is None or not _untested(coherence, thresholds):
        return False
    if thresholds.null is not None and dense_best is not None:
        return fisher(coherence, thresholds.null.p_value(dense_best)) > thresholds.coherence
    return True


def coherence_of(lexical: BM25Index, query_tokens: Sequence[str], chunk_id: int, *, level: float) -> float | None:
    """The co-occurrence test's p-value for the query terms ``chunk_id`` (the covering passage) holds.

    Null hypothesis: the terms fall into passages independently, so the number
    of passages holding a set of them is Poisson with mean N · Π df/N.  Tested:
    all the held terms together, and each pair of them (a question naming a
    rare entity next to words that always go together is still a question);
    the p-value is the smallest chance of at least as many as the index has,
    times the number of sets tested (Bonferroni).  None where the test cannot
    decide: fewer than two query terms in the index, or too few passages for
    even a perfect co-occurrence (every passage of the rarest term holding the
    others) to reach ``level`` — a small collection.
    """
    if level <= 0:
        return None
    found = lexical.cooccurrence(query_tokens, chunk_id)
    tests = list(dict.fromkeys(found.tests))
    m = len(tests)
    if found.known < 2 or min(_poisson_at_least(possible, expected) for _, expected, possible in tests) * m > level:
        return None
    return min(1.0, m * min(_poisson_at_least(together, expected) for together, expected, _ in tests))


def _poisson_at_least(k: int, mean: float) -> float:
    """P(X ≥ k) for X ~ Poisson(mean)."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    return float(pdtrc(k - 1, mean))


def evidence_of(
    retrieval: Retrieval,
    lexical: BM25Index,
    query_tokens: Sequence[str],
    *,
    thresholds: Thresholds,
    lexical_ran: bool = True,
    null: Callable[[], Null | None] | None = None,
) -> Evidence:
    """The evidence of one retrieval: the legs' best scores against the query's own candidates, and the verdict.

    ``lexical_ran``: whether the BM25 leg searched (hybrid or lexical mode, a query with terms); when it
    did and found nothing, the coverage is 0 (no passage holds any query term), not None.  ``null``: the
    collection's ``Null``, asked for only when the verdict turns on it — a query the legs would vouch for
    were it coherent, which the co-occurrence test alone does not show — and ``thresholds`` has none.
    """
    dense_scores = retrieval.dense.scores
    dense_best = dense_margin = background = None
    if len(dense_scores):
        dense_best = float(dense_scores[0])
        # The leg's scores are sorted best first: the median is its middle, no sort needed.
        middle = len(dense_scores) // 2
        background = float(dense_scores[middle] + dense_scores[(len(dense_scores) - 1) // 2]) / 2
        dense_margin = dense_best - background
    coverage = agreement = coherence = None
    if len(retrieval.lexical.ids):
        hits = retrieval.lexical.ids[:COVERAGE_HITS]
        shares = lexical.term_coverage(query_tokens, hits)
        best = int(np.argmax(shares))
        coverage = float(shares[best])
        coherence = coherence_of(lexical, query_tokens, int(hits[best]), level=thresholds.coherence)
        if background is not None:
            # The covering passage's cosine: from the dense candidates, or — not among them — at most the
            # last candidate's (an upper bound, so a passage just past the dense list is not held against it).
            where = np.flatnonzero(retrieval.dense.ids == hits[best])
            cosine = float(dense_scores[where[0]]) if len(where) else float(dense_scores[-1])
            agreement = cosine - background
    elif lexical_ran and query_tokens:
        coverage = 0.0
    if (_untested(coherence, thresholds) and null is not None and thresholds.null_dense is None and thresholds.null is None
            and not is_weak(dense_best, dense_margin, coverage, agreement, thresholds=thresholds)):
        # A match were the query coherent, which the co-occurrence test alone did not show: the collection's
        # null decides with it (``_incoherent``), and an incoherent query's best cosine must beat the null.
        found = null()
        if found is not None:
            thresholds = replace(thresholds, null=found, null_dense=found.threshold)
    weak = is_weak(dense_best, dense_margin, coverage, agreement, thresholds=thresholds, coherence=coherence)
    return Evidence(
        dense_best=dense_best,
        dense_margin=dense_margin,
        lexical_coverage=coverage,
        lexical_agreement=agreement,
        coherence=coherence,
        no_good_match=weak,
    )


def null_queries(texts: Sequence[str], *, count: int = NULL_QUERIES, seed: int = 0) -> list[str]:
    """Random 2–4-word queries of a collection's own words: its null, what a bag of its words scores.

    Words: 4+ letters, found in at least two of ``texts`` (a sample of the
    collection's passages), lower-cased; words of unspaced scripts (Chinese,
    Japanese, Korean) are left out — a run of Han characters is a phrase,
    not a word.  Empty when the sample has fewer than ``NULL_MIN_WORDS``.
    """
    df: Counter[str] = Counter()
    for text in texts:
        df.update({w.lower() for w in _WORD.findall(text) if not _UNSPACED.search(w)})
    words = sorted(w for w, n in df.items() if n >= 2)
    if len(words) < NULL_MIN_WORDS:
        return []
    rng = random.Random(seed)
    return [" ".join(rng.sample(words, rng.randint(2, 4))) for _ in range(count)]


def null_threshold(best_cosines: Sequence[float] | np.ndarray) -> float | None:
    """The best cosine an incoherent query needs: the ``NULL_QUANTILE`` of the null queries' best cosines."""
    values = np.asarray(best_cosines, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < NULL_QUERIES // 4:
        return None
    return float(np.quantile(values, NULL_QUANTILE))


def null_sample(ids: np.ndarray, size: int) -> np.ndarray:
    """The passages whose words make the null: ``size`` of ``ids`` at random (seeded: the same each time)."""
    return np.random.default_rng(0).choice(ids, size=min(size, len(ids)), replace=False)


def null_of(
    texts: Sequence[str],
    encode: Callable[[list[str]], np.ndarray],
    best_cosine: Callable[[np.ndarray], float | None],
) -> Null | None:
    """The collection's ``Null`` from a sample of its passages' ``texts``; None when too few to say.

    ``encode`` embeds the null queries as search embeds a query; ``best_cosine``
    is the dense leg's best score for one vector over the whole index.
    """
    queries = null_queries(texts)
    if not queries:
        return None
    best = [b for b in (best_cosine(v) for v in encode(queries)) if b is not None]
    return null_from(best)


def null_from(best_cosines: Sequence[float] | np.ndarray) -> Null | None:
    """The null of these best cosines (finite ones, ascending); None with fewer than ``null_threshold`` needs."""
    values = np.asarray(best_cosines, dtype=np.float64)
    values = np.sort(values[np.isfinite(values)])
    if null_threshold(values) is None:
        return None
    return Null(tuple(float(v) for v in values))
