"""The default backend when no language model is configured: quote, don't generate.

It picks the sentences of the passages that share the most (idf-weighted)
terms with the question and quotes them, most relevant first, each followed
by its ``[n]`` marker, under a label that says plainly that these are
extracts. It must never read as generated prose: ``generated`` is False and
the label is the first line of every answer that quotes.

Invariants:
* deterministic: the same request gives the same answer (ties are broken by
  passage number, then position in the passage);
* every quote is a verbatim run of words of its passage: only whitespace is
  normalised (a line wrap inside a sentence becomes one space, since the
  quote is shown on one line) and an over-long sentence is cut at a word
  boundary and marked with "…";
* every marker names a passage of the request;
* no sentence is quoted twice (overlapping chunks repeat sentences; a
  near-copy — the same words, or one sentence inside another — counts as the same);
* a heading is never part of a quote: Markdown heading lines, and short
  unpunctuated lines that open a paragraph and are followed by a capitalised
  line, end the sentence before them and are not quoted themselves;
* the answer is bounded: at most ``max_quotes`` quotes of at most
  ``MAX_QUOTE_CHARS`` each, ``MAX_ANSWER_CHARS`` of quotes in all, and a quote
  after the first only when it scores at least ``RELATIVE_FLOOR`` of the best.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from inference.types import GenerationRequest, Passage, StreamEvent, question_and_context

LABEL = "Extracts from your documents (no language model is configured):"
NO_PASSAGES_MESSAGE = "No passages in the documents you can read match this question."

MAX_QUOTE_CHARS = 400
MAX_ANSWER_CHARS = 900
# A further quote must earn its place: a sentence sharing one common word with the
# question after one that answers it only makes the answer longer to read.
RELATIVE_FLOOR = 0.5
# Fragments shorter than this ("1.", "Fig. 2.") say nothing on their own (a CJK character counts 3).
MIN_SENTENCE_CHARS = 12
# A line this short, unpunctuated, opening a paragraph and followed by a capitalised line is a heading.
MAX_HEADING_WORDS = 12

# Sentence ends: terminal punctuation (plus closing quotes/brackets) before
# whitespace; CJK terminal punctuation, which needs no space after it; blank
# lines; a line break before a list bullet.
_BOUNDARY = re.compile(
    r"[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+[」』”’）]*|\n\s*\n|\n(?=\s*(?:[-*•·]|\d+[.)])\s)"
)
_WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_MARKDOWN_HEADING = re.compile(r"^ {0,3}#{1,6}(?:\s|$)")
# A line ending like this continues or ends a sentence; a heading ends with none of it.
_SENTENCE_END = re.compile(r"[.!?…:;,、。！？：；，\-–—(\[\"'“‘]$")

# Function words carry no topic; idf over a handful of passages is too coarse
# to push them down on its own.
_STOPWORDS = frozenset(
    """a an the of to in on at for with from by about as into over under and or but not no nor
    is are was were be been being am do does did done has have had having can could shall should
    will would may might must it its this that these those there here what which who whom whose
    when where why how i you he she we they me him her us them my your his our their
    if then than so such any all some each every more most other also just only very too
    please tell say give show find explain describe""".split()
)


@dataclass(frozen=True)
class _Sentence:
    passage: Passage
    position: int  # index of the sentence within its passage
    text: str  # verbatim slice of passage.text, stripped


def _fold(word: str) -> str:
    """Light English suffix folding, so that a question's "carry" finds "carried" and "days" finds "day".

    A full stemmer would be a dependency for little gain; these few rules (plural and past forms,
    -ing, a final e) fold the inflections questions and documents differ by most often.
    """
    if not word.isascii() or not word.isalpha():
        return word
    if len(word) > 4 and word.endswith(("ies", "ied")):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    elif len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed") and not word.endswith("eed"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("e") and not word.endswith("ee"):
        word = word[:-1]
    return word


def _term_list(text: str) -> list[str]:
    """Lower-cased content words in order; CJK runs become single characters (no spaces to split on)."""
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        if _CJK.search(word):
            terms.extend(ch for ch in word if not ch.isspace())
            continue
        if word in _STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        terms.append(_fold(word))
    return terms


def _terms(text: str) -> set[str]:
    return set(_term_list(text))


def content_terms(text: str) -> set[str]:
    """The content words of ``text`` as this backend matches them (folded, no stopwords, CJK by character)."""
    return _terms(text)


def _bigrams(text: str) -> set[tuple[str, str]]:
    terms = _term_list(text)
    return set(zip(terms, terms[1:], strict=False))


def _is_heading(line: str, after: str | None, opens_paragraph: bool) -> bool:
    """A Markdown heading, or a short unpunctuated line opening a paragraph before a capitalised line.

    ``after`` is the next line that is not blank (None at the end of the text).
    """
    if _MARKDOWN_HEADING.match(line):
        return True
    stripped = line.strip()
    if not stripped or not opens_paragraph or after is None or _SENTENCE_END.search(stripped):
        return False
    nxt = after.lstrip()  # the next line that is not blank
    if not nxt or len(stripped.split()) > MAX_HEADING_WORDS:
        return False
    first = nxt[0]
    return first.isupper() or first.isdigit() or bool(_CJK.match(first))


def _runs(text: str, heading: str = "") -> list[str]:
    """``text`` cut at its heading lines (which are dropped): the runs of body text between them.

    ``heading`` is the passage's own heading (the chunker's); a line that repeats it is a heading too.
    """
    lines = text.splitlines(keepends=True)
    known = " ".join(heading.lower().split())
    runs: list[str] = []
    current: list[str] = []
    opens_paragraph = True  # the first line, or the line after a blank line or a finished sentence
    for index, line in enumerate(lines):
        after = next((later for later in lines[index + 1 :] if later.strip()), None)
        bare = " ".join(line.strip().lstrip("#").lower().split())
        if (known and bare == known) or _is_heading(line, after, opens_paragraph):
            runs.append("".join(current))
            current = []
            opens_paragraph = True
            continue
        current.append(line)
        stripped = line.strip()
        opens_paragraph = not stripped or bool(re.search(r"[.!?…。！？:：]$", stripped))
    runs.append("".join(current))
    return [run for run in runs if run.strip()]


def _weight(sentence: str) -> int:
    """Length in Latin-character equivalents: a CJK character says about as much as a short word."""
    return len(sentence) + 2 * len(_CJK.findall(sentence))


def split_sentences(text: str, heading: str = "") -> list[str]:
    """The sentences of ``text``, each a stripped verbatim slice of it; headings are left out."""
    sentences: list[str] = []
    runs = _runs(text, heading)
    for run in runs:
        start = 0
        for match in _BOUNDARY.finditer(run):
            end = match.start() if match.group(0).startswith("\n") else match.end()
            sentences.append(run[start:end])
            start = match.end()
        sentences.append(run[start:])
    kept = [s.strip() for s in sentences if _weight(s.strip()) >= MIN_SENTENCE_CHARS]
    # A passage that is all short fragments is still quotable as a whole.
    if kept:
        return kept
    whole = " ".join(run.strip() for run in runs)
    return [whole] if whole else []


def _quote(sentence: str) -> str:
    words = " ".join(sentence.split())
    if len(words) <= MAX_QUOTE_CHARS:
        return words
    cut = words.rfind(" ", 0, MAX_QUOTE_CHARS)
    return words[: cut if cut > 0 else MAX_QUOTE_CHARS] + "…"


@dataclass(frozen=True)
class _Likeness:
    """What ``_same`` compares of a sentence, computed once per candidate (not once per pair)."""

    words: str       # its words, lower-cased, single-spaced
    terms: frozenset[str]

    @classmethod
    def of(cls, text: str) -> _Likeness:
        return cls(" ".join(_WORD.findall(text.lower())), frozenset(_terms(text)))


def _same(a: _Likeness, b: _Likeness) -> bool:
    """The same sentence, or near enough that quoting both would repeat it."""
    x, y = a.words, b.words
    if x == y:
        return True
    short, long = sorted((x, y), key=len)
    # One inside the other is a repeat only when it is most of it (a cut-off copy), not a phrase of it.
    if short and short in long and len(short) >= 0.6 * len(long):
        return True
    tx, ty = a.terms, b.terms
    return bool(tx and ty) and len(tx & ty) / len(tx | ty) >= 0.8


class ExtractiveGenerator:
    """Quotes the most relevant sentences; see the module docstring."""

    name = "extractive"
    model_name = "extractive"
    generated = False

    def __init__(self, max_quotes: int = 3) -> None:
        if max_quotes < 1:
            raise ValueError("max_quotes must be at least 1")
        self.max_quotes = max_quotes

    def select(self, request: GenerationRequest) -> list[_Sentence]:
        """The sentences to quote, most relevant to the question first (not in passage order)."""
        sentences: list[_Sentence] = []
        kept: list[_Likeness] = []  # of each sentence kept: tokenized once, compared with every later one
        for p in request.passages:
            for i, s in enumerate(split_sentences(p.text, p.heading)):
                likeness = _Likeness.of(s)
                if not any(_same(likeness, seen) for seen in kept):
                    sentences.append(_Sentence(passage=p, position=i, text=s))
                    kept.append(likeness)
        if not sentences:
            return []
        sentence_terms = [likeness.terms for likeness in kept]
        n = len(sentence_terms)

        def idf(term: str) -> float:
            # Over sentences, not passages: the rarer a question term among the candidates,
            # the better it points at the one sentence that answers.
            df = sum(1 for terms in sentence_terms if term in terms)
            # Stays positive even for a term in every sentence: it still matches the question.
            return math.log((n + 1) / (df + 0.5))

        # A follow-up's own words count fully, the earlier turns' words it was given as context half.
        asked, context = question_and_context(request.question)
        weights = {t: 0.5 * idf(t) for t in _terms(context)}
        weights.update({t: idf(t) for t in _terms(asked)})
        question_pairs = _bigrams(asked) | _bigrams(context)

        def score(index: int) -> float:
            shared = weights.keys() & sentence_terms[index]
            if not shared:
                return 0.0
            total = sum(weights[t] for t in shared)
            # Question words in the question's order ("paid leave") count once more, half weight.
            pairs = question_pairs & _bigrams(sentences[index].text)
            total += 0.5 * sum(weights.get(a, 0.0) + weights.get(b, 0.0) for a, b in pairs) / 2
            return total

        scored = [(score(i), s) for i, s in enumerate(sentences)]
        ranked = sorted(
            ((value, s) for value, s in scored if value > 0),
            key=lambda item: (-item[0], item[1].passage.number, item[1].position),
        )
        if ranked:
            best = ranked[0][0]
            chosen: list[_Sentence] = []
            used = 0
            for value, sentence in ranked:
                if len(chosen) >= self.max_quotes or (chosen and value < RELATIVE_FLOOR * best):
                    break
                length = len(_quote(sentence.text))
                if chosen and used + length > MAX_ANSWER_CHARS:
                    continue
                chosen.append(sentence)
                used += length
            return chosen
        # No shared terms: the passages were still retrieved (perhaps by meaning,
        # not words), best first, so the opening of the best ones is the fairest quote.
        firsts = [s for s in sentences if s.position == 0]
        return firsts[: min(2, self.max_quotes)]

    def quotes(self, request: GenerationRequest) -> list[str]:
        """The chosen sentences as quoted, each with its marker: ``“…” [n]``."""
        return [f"“{_quote(s.text)}” [{s.passage.number}]" for s in self.select(request)]

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        quotes = self.quotes(request)
        if not quotes:
            yield StreamEvent(channel="answer", text=NO_PASSAGES_MESSAGE)
            return
        yield StreamEvent(channel="answer", text=LABEL)
        for quote in quotes:
            yield StreamEvent(channel="answer", text=f"\n\n{quote}")
