"""Which words of a passage to highlight for a query, by the same terms the lexical index uses.

A client cannot highlight by the query's raw words: the index matches
``带薪年假多少天`` to a passage through its character bigrams (带薪 薪年 年假 …),
``Policies`` to ``policy`` through the Porter stem, and full-width ``ＡＢＣ`` to
``abc`` through NFKC.  ``highlight_spans`` runs the index's own tokenizer over
the passage, piece by piece, and returns the exact pieces of the passage
(as written there) whose terms are among the query's: the client marks every
occurrence of them.  Plain Python, no Django (index layer).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from kb.retrieval.tokenize import _CJK_RANGES, _MARKS, tokenize

# The tokenizer's two kinds of run, over the passage as written (not normalised): a run of CJK characters,
# or a word of letters/digits with its combining marks.  Full-width letters are letters here too.
_PIECE = re.compile(rf"(?P<cjk>[{_CJK_RANGES}]+)|(?P<word>(?:[^\W_{_CJK_RANGES}][{_MARKS}]*)+)")

MAX_HIGHLIGHTS = 50


@functools.lru_cache(maxsize=1 << 16)
def _terms(piece: str) -> tuple[str, ...]:
    """``tokenize(piece)``, memoised: a search highlights ten passages, word by word, and words are Zipfian
    (the same few thousand make up most of any text), so most pieces were tokenized by an earlier search."""
    return tuple(tokenize(piece))


def highlight_terms(query: str) -> list[str]:
    """The query's terms as the index tokenizes them, without repeats, in order."""
    return list(dict.fromkeys(tokenize(query)))


def highlight_spans(terms: Iterable[str], text: str) -> list[str]:
    """Distinct substrings of ``text`` to mark: each CJK run covered by the query's bigrams/unigrams and each
    word whose index term is one of ``terms``.  Longest first, so a client's alternation prefers them."""
    wanted = set(terms)
    if not wanted or not text:
        return []
    found: dict[str, None] = {}
    checked: set[str] = set()  # words already decided: a passage repeats its words
    for run, word in _PIECE.findall(text):  # (cjk, word): one of the two is empty
        if word:
            if word not in checked:
                checked.add(word)
                if not wanted.isdisjoint(_terms(word)):
                    found[word] = None
            continue
        if len(run) == 1:
            if _terms(run) and _terms(run)[0] in wanted:
                found[run] = None
            continue
        # Mark the characters covered by a matching bigram; adjacent covered characters form one piece,
        # so 带薪年假 in a passage is one highlight when the query holds 带薪, 薪年 and 年假.
        covered = [False] * len(run)
        for i in range(len(run) - 1):
            bigram = _terms(run[i : i + 2])
            if bigram and bigram[0] in wanted:
                covered[i] = covered[i + 1] = True
        start = None
        for i, hit in enumerate([*covered, False]):
            if hit and start is None:
                start = i
            elif not hit and start is not None:
                found[run[start:i]] = None
                start = None
        if len(found) >= MAX_HIGHLIGHTS:
            break
    return sorted(found, key=len, reverse=True)[:MAX_HIGHLIGHTS]


__all__ = ["MAX_HIGHLIGHTS", "highlight_spans", "highlight_terms"]
