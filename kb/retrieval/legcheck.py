"""Does each leg read this collection? A check without a golden set, and the default fusion it adjusts.

The default fusion (convex, min-max, w = 0.5) assumes both legs are useful.
One can be close to noise: the bundled English embedder on Chinese
documents finds almost nothing (dense nDCG@10 0.25 against BM25's 0.98 on
CMRC 2018), and fusing it at half weight costs 0.07 below BM25 alone. Such a
leg shows itself without any labelled question: take a span of a passage's
own text as a query (``pseudo_query``: eight words, or sixteen characters of
a script written without spaces) and see whether the leg finds the passage
it came from in its top 10. Both legs find nearly all of them where they read
the text (SQuAD paragraphs: dense 0.93, BM25 1.0; SciFact abstracts: 0.68,
1.0); an embedder that cannot read the language finds few (CMRC 2018: 0.22
against 0.97). Templated text — sixty near-identical rules — is hard for
both (BM25 0.85, dense 0.47 in a test): the bar is a third of the other
leg's success, so only a leg that reads almost nothing is left out.

``checked_fusion``: when one leg's success is below ``FAILING_SHARE`` of the
other's, the default leaves that leg out — the search is the other leg
alone, so it is never below it (CMRC 2018: 0.987, BM25's figure, where the
unchecked default gave 0.916; scaling the weight by the success ratio
instead, w ≈ 0.17, gave 0.9855, still 0.0014 under BM25); otherwise the
default stands, unchanged. A span is an easy
query for BM25 (every word is there), so the check asks only whether the
embedder can read the collection at all, which is why the bar is a share of
BM25's success and not a comparison of the two. Tuning from a golden set
(``cairn_tune``) replaces all of this for its collection.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kb.retrieval.fusion import FusionConfig

FAILING_SHARE = 1 / 3  # a leg finding under a third as many source passages as the other does not read the text
SPAN_WORDS = 8
SPAN_CHARS = 16
CHECK_PASSAGES = 100
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


@dataclass(frozen=True)
class LegCheck:
    """Shares of pseudo-queries whose source passage each leg found in its top 10."""

    dense: float
    lexical: float
    queries: int


def pseudo_query(text: str, rng: random.Random) -> str:
    """A span of ``text`` to search for it with: ``SPAN_WORDS`` words, or ``SPAN_CHARS`` characters of an
    unspaced script (Chinese, Japanese, Korean make up over a quarter of the text)."""
    if len(_UNSPACED.findall(text)) * 4 > len(text):
        run = re.sub(r"\s+", "", text)
        if len(run) <= SPAN_CHARS:
            return run
        start = rng.randrange(0, len(run) - SPAN_CHARS)
        return run[start:start + SPAN_CHARS]
    words = text.split()
    if len(words) <= SPAN_WORDS:
        return " ".join(words)
    start = rng.randrange(0, len(words) - SPAN_WORDS)
    return " ".join(words[start:start + SPAN_WORDS])


def pseudo_queries(texts: Sequence[str], *, seed: int = 0) -> list[str]:
    """One pseudo-query per passage text, seeded (the same passages give the same queries)."""
    rng = random.Random(seed)
    return [pseudo_query(text, rng) for text in texts]


def checked_fusion(default: FusionConfig, check: LegCheck | None) -> FusionConfig:
    """``default`` without a leg that fails the check (see the module docstring), else unchanged."""
    if check is None or check.queries == 0 or not 0 < default.weight < 1:
        return default
    if check.lexical > 0 and check.dense < FAILING_SHARE * check.lexical:
        weight = 0.0  # BM25 alone
    elif check.dense > 0 and check.lexical < FAILING_SHARE * check.dense:
        weight = 1.0  # dense alone
    else:
        return default
    return dataclasses.replace(default, method="convex", weight=weight, checked=True)
