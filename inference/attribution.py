"""Citations for an answer written without markers: the passage whose text carries its words.

The plain prompt (``inference.prompting``) asks for no citations, so its
answers come back unmarked. A marker is added afterwards, post hoc, to the
passage that shares the most content words with the answer — counting first
the words the question does not already contain ("Robert Guiscard" in "The
count of Apulia was Robert Guiscard", not "count" or "Apulia", which every
passage about the question has). Ties go to the better-ranked passage.

Invariants: an answer that already cites a known passage is returned
unchanged; a marker is added only for a passage sharing at least one
content word with the answer (an answer the passages do not support stays
uncited, and the API then lists the passages as context); only whitespace
before the final punctuation moves, the answer's words never change.
"""

from __future__ import annotations

import re

from inference.backends.extractive import content_terms
from inference.citations import cited_numbers, strip_markers
from inference.types import GenerationRequest, question_and_context

# The answer's closing punctuation: the marker goes before it, as the cited prompt's example has it.
_TAIL = re.compile(r"([.!?。！？…]*)\s*$")


def supporting_passage(request: GenerationRequest, answer: str) -> int | None:
    """The number of the passage that best supports ``answer``, or None when none shares a word with it."""
    words = content_terms(strip_markers(answer))
    question, _ = question_and_context(request.question)
    own = words - content_terms(question)
    best: tuple[int, int, int] | None = None  # (own words, all words, -number)
    for passage in request.passages:
        terms = content_terms(passage.text)
        score = (len(own & terms), len(words & terms), -passage.number)
        if score[1] and (best is None or score > best):
            best = score
    return -best[2] if best is not None else None


def with_attributed_citation(request: GenerationRequest, answer: str) -> str:
    """``answer`` with a ``[n]`` marker for its supporting passage (see the module docstring)."""
    if cited_numbers(answer, max((p.number for p in request.passages), default=0)):
        return answer
    number = supporting_passage(request, answer)
    if number is None:
        return answer
    tail = _TAIL.search(answer)
    start = tail.start() if tail else len(answer)
    return f"{answer[:start].rstrip()} [{number}]{tail.group(1) if tail else ''}"
