"""Reading the passage numbers an answer cites.

Models are asked for ``[n]`` markers but write several variants: ``[2, 3]``,
``[1][4]``, footnote style ``[^1]``, CJK brackets ``【1】`` (DeepSeek does this
in Chinese answers, sometimes in English ones) and ranges ``[1-3]``. All are
read; numbers outside ``1..n_passages`` are ignored because they cannot be
linked to a passage (a year in brackets, a hallucinated source).
"""

from __future__ import annotations

import re

# A marker: opening bracket, optional "^", numbers separated by , ; 、 or a
# range dash, closing bracket. Full-width commas appear in CJK answers.
_NUMBER_LIST = r"\^?\s*\d{1,4}(?:\s*(?:[,;，、]|[-–])\s*\^?\s*\d{1,4})*"
_MARKER = re.compile(r"(?:\[|【)\s*(" + _NUMBER_LIST + r")\s*(?:\]|】)")
_ITEM = re.compile(r"(\d+)(?:\s*[-–]\s*\^?\s*(\d+))?")
# Wider ranges are more likely a span of years or pages than a citation.
_MAX_RANGE = 20
# The form the web UI already links (static JS: /\[(\d+(?:\s*[,;]\s*\d+)*)\]/).
_PLAIN = re.compile(r"\[\d+(?:\s*[,;]\s*\d+)*\]")


def _numbers_in(marker_body: str) -> list[int]:
    numbers: list[int] = []
    for match in _ITEM.finditer(marker_body):
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if low <= high <= low + _MAX_RANGE:
            numbers.extend(range(low, high + 1))
    return numbers


def cited_numbers(answer_text: str, n_passages: int) -> tuple[int, ...]:
    """Passage numbers cited in ``answer_text``.

    Each number appears once, in order of first citation, and lies in 1..n_passages.
    """
    seen: dict[int, None] = {}
    for marker in _MARKER.finditer(answer_text):
        for number in _numbers_in(marker.group(1)):
            if 1 <= number <= n_passages:
                seen.setdefault(number, None)
    return tuple(seen)


def normalize_markers(answer_text: str, n_passages: int) -> str:
    """Rewrite citation markers that name a known passage as ``[n]`` / ``[n, m]``.

    The web UI links only that form; markers naming no known passage are left
    as the model wrote them (they are probably not citations), and so are
    markers already in the linked form.
    """

    def rewrite(marker: re.Match[str]) -> str:
        if _PLAIN.fullmatch(marker.group(0)):
            return marker.group(0)
        numbers = [n for n in dict.fromkeys(_numbers_in(marker.group(1))) if 1 <= n <= n_passages]
        if not numbers:
            return marker.group(0)
        return "[" + ", ".join(str(n) for n in numbers) + "]"

    return _MARKER.sub(rewrite, answer_text)


# What may stand around a marker without saying anything: punctuation, and a
# leading label some models copy from the prompt ("Answer: [1]").
_LABEL = re.compile(r"^\s*(?:answer|source|sources|答案|回答)\s*[:：]", re.IGNORECASE)
# A passage header copied after its marker: "[2] (handbook.pdf, p. 3 › Leave)" (``prompting.passage_header``).
_COPIED_HEADER = re.compile(r"(?:\[|【)\s*\d{1,4}\s*(?:\]|】)\s*\([^()]*\)")


def strip_markers(answer_text: str) -> str:
    """``answer_text`` without its citation markers (every form ``cited_numbers`` reads), whitespace tidied."""
    return " ".join(_MARKER.sub(" ", answer_text).split())


def is_bare_marker(answer_text: str) -> bool:
    """True when the answer says nothing once its citation markers are removed.

    "[1]", "[1][2].", "Answer: [1]", "[2] (handbook.pdf › Leave)" and an
    empty reply are bare: no letter or digit is left (of any script) after
    the markers, a copied passage header and a copied "Answer:" label go.
    """
    rest = _LABEL.sub("", strip_markers(_COPIED_HEADER.sub(" ", answer_text)))
    return not any(ch.isalnum() for ch in rest)
