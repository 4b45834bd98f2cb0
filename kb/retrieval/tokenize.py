"""Text → BM25 terms, for chunks at ingest and for queries, in any script.

The same function must run on both sides: a term the index holds and a
query cannot produce is a term nobody can find.  Changing anything here
(the stopword list, stemming, the CJK rule) therefore changes the terms of
every indexed chunk, and the lexical index has to be rebuilt from the chunks
in the database: bump ``TOKENIZER_VERSION`` when you do.  Each index version
records the tokenizer version that made it (``meta.json``); the index writer
rebuilds an index made by another one at its next pass
(``ingestion.indexing.index_pass``), and the reaper starts that pass.

Rules, in order:

1. NFKC-normalise, then casefold: full-width ``Ａ１`` becomes ``a1``,
   ligatures split (``ﬁ`` → ``fi``), half-width katakana become full-width,
   ``Straße`` and ``STRASSE`` meet as ``strasse``.  ASCII text is already
   NFKC, so it skips the normalisation call (most chunks are ASCII).
2. Runs of CJK characters (Han, Hiragana, Katakana, Hangul) become
   overlapping character bigrams, as Lucene's CJKBigramFilter does:
   ``向量数据库`` → ``向量 量数 数据 据库``; a one-character run is kept as a
   unigram.  Bigrams need no dictionary and recall what a user types as long
   as the query has two adjacent characters of the word.
3. Everything else splits into runs of letters and digits (Unicode-aware,
   combining marks stay inside the word so Devanagari or Arabic with
   diacritics is not shattered); ``_``, ``-``, ``.``, apostrophes and all
   punctuation separate tokens, so ``covid-19`` → ``covid 19`` and
   ``v2.0`` → ``v2 0``.
4. Word tokens in ``STOPWORDS`` are dropped; tokens longer than
   ``MAX_TOKEN_CHARS`` are dropped (base64 blobs, minified code).
5. Optional Porter stemming of ASCII word tokens (``stem=True``); the
   default, ``STEM``, was chosen by measuring nDCG@10 on BEIR SciFact with
   ``benchmarks/bm25.py --scifact`` (see that script and ``STEM`` below).

Known limits: scripts written without spaces that are not CJK (Thai, Lao,
Khmer, Myanmar) come out as one token per run; combining marks outside the
Basic Multilingual Plane are treated as separators.
"""

from __future__ import annotations

import re
import unicodedata

TOKENIZER_VERSION = 1

# Lucene's classic English stop set (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET,
# 33 words that carry no topic) plus "s" and "t": splitting on apostrophes
# turns "user's" and "don't" into a dangling "s" / "t" that would otherwise
# match half the corpus.  Kept short on purpose: BM25's idf already discounts
# common words, and the list only has to remove the ones so frequent that
# their postings dominate query cost.  It matches Lucene so our scores are
# comparable with published BM25 baselines ("no"/"not" included, as there).
STOPWORDS: frozenset[str] = frozenset(
    """a an and are as at be but by for if in into is it no not of on or
    such that the their then there these they this to was will with s t""".split()
)

# Longer tokens are blobs, not words anyone types; dropping them keeps the
# vocabulary (one dict entry each) from filling with unique garbage.
MAX_TOKEN_CHARS = 128

# Whether tokenize() stems by default.  Measured on BEIR SciFact (5,183
# abstracts, 300 test queries, title + text) with benchmarks/bm25.py:
# Porter stemming nDCG@10 0.6812 / Recall@100 0.9276, no stemming 0.6653 /
# 0.8859 (published BM25: 0.665-0.679).  It costs about 20% of tokenizer
# speed on English text, still several million tokens/s.
STEM = True

# Hangul Jamo, the iteration marks 々 〆 and the numeral 〇, Hiragana letters and
# (voiced) sound marks, Katakana letters and the prolonged-sound mark (not
# the ・ middle dot, which is punctuation), Hangul compatibility Jamo,
# Katakana extensions, CJK Ext A, CJK Unified, Hangul Jamo Ext A, Hangul
# syllables and Jamo Ext B, CJK compatibility ideographs, half-width
# katakana/hangul (NFKC usually removes them first), and the supplementary
# ideograph planes (Ext B–H, compatibility supplement).
_CJK_RANGES = (
    "\u1100-\u11ff"
    "\u3005-\u3007"
    "\u3041-\u3096\u3099\u309a\u309d-\u309f"
    "\u30a1-\u30fa\u30fc-\u30ff"
    "\u3131-\u318e"
    "\u31f0-\u31ff"
    "\u3400-\u4dbf"
    "\u4e00-\u9fff"
    "\ua960-\ua97f"
    "\uac00-\ud7af\ud7b0-\ud7ff"
    "\uf900-\ufaff"
    "\uff66-\uff9f\uffa0-\uffdc"
    "\U00020000-\U0003134f"
)


def _combining_mark_ranges() -> str:
    """Character-class ranges of the BMP's combining marks (categories Mn, Mc, Me).

    Python's ``\\w`` excludes marks, so without them ``हिन्दी`` would split
    at every vowel sign.  Computed once at import (about 10 ms) rather than
    hard-coding a table that goes stale with the Unicode version.
    """
    spans: list[tuple[int, int]] = []
    for cp in range(0x10000):
        if unicodedata.category(chr(cp))[0] == "M":
            if spans and spans[-1][1] == cp - 1:
                spans[-1] = (spans[-1][0], cp)
            else:
                spans.append((cp, cp))
    return "".join(
        re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
        for lo, hi in spans
    )


_MARKS = _combining_mark_ranges()
# A word: a letter or digit that is not CJK, followed by more of them or by
# combining marks.  A mark with no base letter before it is a separator.
_WORD_PATTERN = rf"(?:[^\W_{_CJK_RANGES}][{_MARKS}]*)+"
_CJK_RUN_PATTERN = rf"[{_CJK_RANGES}]+"

_ASCII_WORD = re.compile(r"[a-z0-9]+")
_HAS_CJK = re.compile(f"[{_CJK_RANGES}]")
_WORD = re.compile(_WORD_PATTERN)
_WORD_OR_CJK = re.compile(f"{_CJK_RUN_PATTERN}|{_WORD_PATTERN}")
_CJK_START = re.compile(f"[{_CJK_RANGES}]")


def tokenize(text: str, *, stem: bool | None = None) -> list[str]:
    """Terms of ``text`` in reading order (see the module docstring for the rules).

    ``stem`` defaults to the module's ``STEM`` decision; pass it explicitly
    only to evaluate the alternative, never for one side of the index alone.
    Invariant: every returned term is non-empty, casefolded, NFKC, at most
    ``MAX_TOKEN_CHARS`` long, and never in ``STOPWORDS``.
    """
    if stem is None:
        stem = STEM
    if text.isascii():
        # lower() equals casefold() on ASCII and ASCII is NFKC already.
        words = _ASCII_WORD.findall(text.lower())
        terms = [w for w in words if w not in STOPWORDS and len(w) <= MAX_TOKEN_CHARS]
        return _stem_all(terms) if stem else terms
    text = unicodedata.normalize("NFKC", text).casefold()
    if _HAS_CJK.search(text) is None:
        terms = [w for w in _WORD.findall(text) if w not in STOPWORDS and len(w) <= MAX_TOKEN_CHARS]
        return _stem_all(terms) if stem else terms
    terms = []
    append = terms.append
    is_cjk = _CJK_START.match
    for run in _WORD_OR_CJK.findall(text):
        if is_cjk(run) is not None:
            if len(run) == 1:
                append(run)
            else:
                terms.extend([run[i : i + 2] for i in range(len(run) - 1)])
        elif run not in STOPWORDS and len(run) <= MAX_TOKEN_CHARS:
            append(stem_word(run) if stem else run)
    return terms


# ---------------------------------------------------------------------------
# Porter stemmer (M.F. Porter, 1980, with the two departures of his reference
# C implementation that Lucene's PorterStemFilter also makes: "bli" → "ble"
# and "logi" → "log" in step 2).  Applied only to ASCII letter tokens: it is
# an English algorithm and would mangle other languages.  Results are cached
# because term frequencies are Zipfian: a few thousand words are most of the
# tokens, and a dict hit costs far less than re-running five steps.
# ---------------------------------------------------------------------------

_STEM_CACHE: dict[str, str] = {}
_STEM_CACHE_LIMIT = 1 << 19
_ASCII_LETTERS = re.compile(r"[a-z]+")


def _stem_all(words: list[str]) -> list[str]:
    cache = _STEM_CACHE
    get = cache.get
    return [get(w) or stem_word(w) for w in words]


def stem_word(word: str) -> str:
    """Porter stem of an ASCII lowercase word; any other token is returned unchanged."""
    cached = _STEM_CACHE.get(word)
    if cached is not None:
        return cached
    stemmed = _porter(word) if len(word) > 2 and _ASCII_LETTERS.fullmatch(word) else word
    if len(_STEM_CACHE) >= _STEM_CACHE_LIMIT:
        # A crude bound is enough: the hot words come back within a few chunks.
        _STEM_CACHE.clear()
    _STEM_CACHE[word] = stemmed
    return stemmed


def _is_consonant(w: str, i: int) -> bool:
    c = w[i]
    if c in "aeiou":
        return False
    if c == "y":
        return i == 0 or not _is_consonant(w, i - 1)
    return True


def _measure(stem: str) -> int:
    """Porter's m: the number of vowel-consonant sequences in [C](VC)^m[V]."""
    m = 0
    prev_vowel = False
    for i in range(len(stem)):
        vowel = not _is_consonant(stem, i)
        if prev_vowel and not vowel:
            m += 1
        prev_vowel = vowel
    return m


def _has_vowel(stem: str) -> bool:
    return any(not _is_consonant(stem, i) for i in range(len(stem)))


def _double_consonant(w: str) -> bool:
    return len(w) >= 2 and w[-1] == w[-2] and _is_consonant(w, len(w) - 1)


def _cvc(w: str) -> bool:
    """*o: ends consonant-vowel-consonant, the last not w, x or y (e.g. -hop, -fil)."""
    n = len(w)
    return (
        n >= 3
        and _is_consonant(w, n - 3)
        and not _is_consonant(w, n - 2)
        and _is_consonant(w, n - 1)
        and w[-1] not in "wxy"
    )


_STEP2 = (
    ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"),
    ("izer", "ize"), ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"),
    ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"), ("ator", "ate"),
    ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"),
    ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"), ("logi", "log"),
)
_STEP3 = (
    ("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"),
    ("ical", "ic"), ("ful", ""), ("ness", ""),
)
_STEP4 = (
    "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment",
    "ent", "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize",
)


def _longest_first(rules: tuple) -> tuple:
    # Porter applies only the longest matching suffix of a step, even when its
    # condition then fails; sorting by length makes "first match" mean that.
    return tuple(sorted(rules, key=lambda r: -len(r[0] if isinstance(r, tuple) else r)))


_STEP2_SORTED = _longest_first(_STEP2)
_STEP3_SORTED = _longest_first(_STEP3)
_STEP4_SORTED = _longest_first(_STEP4)


def _porter(w: str) -> str:
    # Step 1a: plurals.
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies"):
        w = w[:-2]
    elif w.endswith("ss"):
        pass
    elif w.endswith("s"):
        w = w[:-1]
    # Step 1b: -eed, -ed, -ing.
    if w.endswith("eed"):
        if _measure(w[:-3]) > 0:
            w = w[:-1]
    else:
        for suffix in ("ed", "ing"):
            if w.endswith(suffix) and _has_vowel(w[: -len(suffix)]):
                w = w[: -len(suffix)]
                if w.endswith(("at", "bl", "iz")):
                    w += "e"
                elif _double_consonant(w) and w[-1] not in "lsz":
                    w = w[:-1]
                elif _measure(w) == 1 and _cvc(w):
                    w += "e"
                break
    # Step 1c: terminal y → i when the stem has a vowel.
    if w.endswith("y") and _has_vowel(w[:-1]):
        w = w[:-1] + "i"
    # Step 2: double suffixes → single ones, when m > 0.
    for suffix, repl in _STEP2_SORTED:
        if w.endswith(suffix):
            stem = w[: -len(suffix)]
            if _measure(stem) > 0:
                w = stem + repl
            break
    # Step 3: -ic-, -full, -ness etc., when m > 0.
    for suffix, repl in _STEP3_SORTED:
        if w.endswith(suffix):
            stem = w[: -len(suffix)]
            if _measure(stem) > 0:
                w = stem + repl
            break
    # Step 4: strip suffixes when m > 1 (-ion only after s or t).
    for suffix in _STEP4_SORTED:
        if w.endswith(suffix):
            stem = w[: -len(suffix)]
            if _measure(stem) > 1 and (suffix != "ion" or stem.endswith(("s", "t"))):
                w = stem
            break
    # Step 5a: final e.
    if w.endswith("e"):
        stem = w[:-1]
        m = _measure(stem)
        if m > 1 or (m == 1 and not _cvc(stem)):
            w = stem
    # Step 5b: -ll → -l when m > 1.
    if w.endswith("ll") and _measure(w) > 1:
        w = w[:-1]
    return w
