"""Follow-up questions: one standalone question from a whole conversation, for retrieval and the answer.

Chat clients send every turn again with each request; the last user message
("and for part-time staff?") often only makes sense with an earlier one
("How many holiday days do employees get?").  ``standalone_question``
rewrites it without a language model, deterministically, so the same
conversation always retrieves the same passages and the rewrite costs
nothing: a question that stands on its own is returned as it is; one that
leans on earlier turns (a pronoun, an opening "and"/"what about", too few
words of its own) gets the earlier user questions it leans on appended as
context.  Assistant turns are not used: an answer's wording (and its [n]
markers) would pull retrieval towards what was already found.

Plain Python on plain data (role/content mappings), so the web UI's
conversations and the OpenAI-compatible endpoint share it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from inference.types import FOLLOW_UP_CONTEXT

# Longest standalone question produced (characters): the ask API's question limit.
MAX_CHARS = 4000
# Earlier user turns looked at, most recent first.
MAX_CONTEXT_TURNS = 3

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")

# Words that point back at something said before.
_REFERRING = frozenset("""
it its it's itself they them their theirs themselves this that these those he him his she her hers
there then former latter above same such one ones other others also too else again instead
""".split())
# Openings of a question that continues the previous one.
_CONTINUING = (
    "and ", "or ", "but ", "so ", "also ", "then ", "what about", "how about", "what if", "why not",
    "why?", "how so", "and?", "same for", "what else", "any other", "anything else", "more on", "more about",
)
# Words that carry no topic of their own.
_FUNCTION = frozenset("""
a an the of to in on at for from by with about and or but so is are was were be been being do does did
can could will would should shall may might must have has had what which who whom whose when where why
how i me my we us our you your please tell explain more some any all much many there here not no yes
ok okay thanks thank give show list describe
""".split()) | _REFERRING
# Chinese / Japanese / Korean words that refer back (它 "it", 这 "this", 那 "that", 其 "its", 该 "the said").
_CJK_REFERRING = re.compile(r"[它他她其该這这那]|それ|これ|あれ|그것|이것")
_CJK_CONTINUING = ("那", "还有", "而", "另外", "那么", "それで", "では", "그럼")


def message_text(content: object) -> str:
    """A message's text: a string, or OpenAI's list of parts (the text parts, joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [part.get("text", "") for part in content
                 if isinstance(part, Mapping) and part.get("type", "text") == "text"]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _clean(text: str) -> str:
    return " ".join(text.split())


def leans_on_context(question: str) -> bool:
    """Whether a question needs earlier turns to be understood (deterministic, language-light heuristics)."""
    lowered = _clean(question).lower()
    if not lowered:
        return True
    if _CJK.search(lowered):
        content = _CJK.findall(lowered)
        return (len(content) <= 4 or bool(_CJK_REFERRING.search(lowered))
                or lowered.startswith(_CJK_CONTINUING))
    if lowered.startswith(_CONTINUING):
        return True
    words = [w.lower() for w in _WORD.findall(lowered)]
    if any(w in _REFERRING for w in words):
        return True
    topical = [w for w in words if w not in _FUNCTION]
    return len(topical) <= 1


def standalone_question(messages: Sequence[Mapping[str, object]]) -> str:
    """The last user message, with the earlier user questions it leans on as context.

    ``messages`` are ``{"role", "content"}`` mappings in conversation order
    (content: a string or OpenAI's list of text parts); ``system`` and
    ``assistant`` turns are ignored.  Deterministic; at most ``MAX_CHARS``
    characters, the last question kept whole before any context.  Raises
    ``ValueError`` when there is no non-empty user message.
    """
    questions = [_clean(message_text(m.get("content"))) for m in messages if m.get("role") == "user"]
    questions = [q for q in questions if q]
    if not questions:
        raise ValueError("The conversation has no user message.")
    last = questions[-1][:MAX_CHARS]
    if len(questions) == 1 or not leans_on_context(last):
        return last
    context: list[str] = []
    for earlier in reversed(questions[:-1][-MAX_CONTEXT_TURNS:]):
        if earlier in context or earlier == last:
            continue
        context.insert(0, earlier)
        if not leans_on_context(earlier):
            break  # the turn that gave the topic: nothing before it is needed
    if not context:
        return last
    standalone = f"{last}{FOLLOW_UP_CONTEXT}{' / '.join(context)})"
    return standalone if len(standalone) <= MAX_CHARS else standalone[: MAX_CHARS - 1].rstrip() + "…"
