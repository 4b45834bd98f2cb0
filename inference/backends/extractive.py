"""The default backend when no language model is configured: quote, don't generate.

It picks the sentences of the passages that share the most (idf-weighted)
terms with the question and quotes them, each followed by its ``[n]``
marker, under a label that says plainly that these are extracts. It must
never read as generated prose: ``generated`` is False and the label is the
first line of every answer that quotes.

Invariants:
* deterministic: the same request gives the same answer (ties are broken by
  passage number, then position in the passage);
* every quote is a verbatim run of words of its passage: only whitespace is
  normalised (a line wrap inside a sentence becomes one space, since the
  quote is shown on one line) and an over-long sentence is cut at a word
  boundary and marked with "…";
* every marker names a passage of the request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from inference.types import GenerationRequest, Passage, StreamEvent

LABEL = "Extracts from your documents (no language model is configured):"
NO_PASSAGES_MESSAGE = "No passages in the documents you can read match this question."

MAX_QUOTE_CHARS = 400
# Fragments shorter than this ("1.", "Fig. 2.") say nothing on their own.
MIN_SENTENCE_CHARS = 12

# Sentence ends: terminal punctuation (plus closing quotes/brackets) before
# whitespace; CJK terminal punctuation, which needs no space after it; blank
# lines; a line break before a list bullet.
_BOUNDARY = re.compile(
    r"[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+[」』”’）]*|\n\s*\n|\n(?=\s*(?:[-*•·]|\d+[.)])\s)"
)
_WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")

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


def _terms(text: str) -> set[str]:
    """Lower-cased content words; CJK runs become single characters (no spaces to split on)."""
    terms: set[str] = set()
    for word in _WORD.findall(text.lower()):
        if _CJK.search(word):
            terms.update(ch for ch in word if not ch.isspace())
            continue
        if word in _STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        # Crude plural folding ("days" ~ "day"); a stemmer would be a dependency for little gain.
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        terms.add(word)
    return terms


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, each a stripped verbatim slice of it."""
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        end = match.start() if match.group(0).startswith("\n") else match.end()
        sentences.append(text[start:end])
        start = match.end()
    sentences.append(text[start:])
    kept = [s.strip() for s in sentences if len(s.strip()) >= MIN_SENTENCE_CHARS]
    # A passage that is all short fragments is still quotable as a whole.
    return kept or ([text.strip()] if text.strip() else [])


def _quote(sentence: str) -> str:
    words = " ".join(sentence.split())
    if len(words) <= MAX_QUOTE_CHARS:
        return words
    cut = words.rfind(" ", 0, MAX_QUOTE_CHARS)
    return words[: cut if cut > 0 else MAX_QUOTE_CHARS] + "…"


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
        """The sentences to quote, most relevant first."""
        sentences = [
            _Sentence(passage=p, position=i, text=s)
            for p in request.passages
            for i, s in enumerate(split_sentences(p.text))
        ]
        if not sentences:
            return []
        passage_terms = [_terms(p.text) for p in request.passages]
        n = len(passage_terms)

        def idf(term: str) -> float:
            df = sum(1 for terms in passage_terms if term in terms)
            # Stays positive even for a term in every passage: it still matches the question.
            return math.log((n + 1) / (df + 0.5))

        weights = {t: idf(t) for t in _terms(request.question)}
        scored = [
            (sum(weights[t] for t in weights.keys() & _terms(s.text)), s) for s in sentences
        ]
        ranked = sorted(
            ((score, s) for score, s in scored if score > 0),
            key=lambda item: (-item[0], item[1].passage.number, item[1].position),
        )
        if ranked:
            return [s for _, s in ranked[: self.max_quotes]]
        # No shared terms: the passages were still retrieved (perhaps by meaning,
        # not words), best first, so the opening of the best ones is the fairest quote.
        firsts = [s for s in sentences if s.position == 0]
        return firsts[: min(2, self.max_quotes)]

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        chosen = self.select(request)
        if not chosen:
            yield StreamEvent(channel="answer", text=NO_PASSAGES_MESSAGE)
            return
        yield StreamEvent(channel="answer", text=LABEL)
        for sentence in chosen:
            yield StreamEvent(
                channel="answer", text=f"\n\n“{_quote(sentence.text)}” [{sentence.passage.number}]"
            )
