"""The processing messages ingestion stores (job ``error`` / ``detail``, parser errors), in the reader's language.

The database keeps the stable English text the worker wrote (a worker has no
reader and no language; an export, the audit log and the CLI stay English).
Pages and the API translate it when they show it: each known message is a
pattern here with its translatable template, and a message nobody listed is
shown as it was stored.  Keep the patterns in step with the texts in
``ingestion/pipeline.py``, ``ingestion/parsing.py``, ``ingestion/parsers/``
and ``ingestion/services.py``; ``tests/kb/test_i18n.py`` checks the ones the
UI meets most.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy, pgettext_lazy

_ = gettext_lazy

# Whole messages, without parameters (parsers' texts appear with and without a final full stop).
_EXACT: dict[str, Promise] = {
    "Reading the file": _("Reading the file"),
    "Splitting into passages": _("Splitting into passages"),
    "Waiting for the index writer": _("Waiting for the index writer"),
    "Waiting to retry": _("Waiting to retry"),
    "Re-queued after a lost worker": _("Re-queued after a lost worker"),
    "Queued again": _("Queued again"),
    "Imported": _("Imported"),
    "The previous attempt did not finish; retrying.": _(
        "The previous attempt did not finish; retrying."
    ),
    "The document contains no text to index.": _("The document contains no text to index."),
    "The file is empty": _("The file is empty."),
    "The file is empty.": _("The file is empty."),
    "The file looks like binary data of an unsupported type": _(
        "The file looks like binary data of an unsupported type."
    ),
    "The DOCX file is damaged or is not a valid Word document": _(
        "The DOCX file is damaged or is not a valid Word document."
    ),
    "The DOCX file is damaged or truncated": _("The DOCX file is damaged or truncated."),
    "The DOCX file is too large once unpacked": _("The DOCX file is too large once unpacked."),
    "The file looks like a damaged ZIP archive, which is not supported": _(
        "The file looks like a damaged ZIP archive, which is not supported."
    ),
    "ZIP archives other than DOCX are not supported": _(
        "ZIP archives other than DOCX are not supported."
    ),
    "The file is nested too deeply to read": _("The file is nested too deeply to read."),
    "The PDF is password-protected": _("The PDF is password-protected."),
    "The PDF has no extractable text (scanned images need OCR, which is not enabled)": _(
        "The PDF has no extractable text (scanned images need OCR, which is not enabled)."
    ),
    "The PDF uses an unsupported kind of encryption": _(
        "The PDF uses an unsupported kind of encryption."
    ),
    "The PDF is damaged or truncated": _("The PDF is damaged or truncated."),
    "The file could not be read (the parser answered something else).": _(
        "The file could not be read (the parser answered something else)."
    ),
}

# Messages with parameters: a regular expression over the stored English, and the template its groups fill.
# A group named ``message`` holds another stored message and is translated in turn.
_PATTERNS: tuple[tuple[re.Pattern[str], Promise], ...] = tuple(
    (re.compile(pattern, re.DOTALL), template)
    for pattern, template in (
        (
            r"Embedding (?P<done>[\d,]+) of (?P<total>[\d,]+) passages",
            _("Embedding %(done)s of %(total)s passages"),
        ),
        (r"Gave up after (?P<attempts>\d+) attempts\.", _("Gave up after %(attempts)s attempts.")),
        (
            r"Processing failed after (?P<attempts>\d+) attempts\. Last error: (?P<message>.*)",
            _("Processing failed after %(attempts)s attempts. Last error: %(message)s"),
        ),
        (
            r"Attempt (?P<attempt>\d+) failed, will retry: (?P<message>.*)",
            _("Attempt %(attempt)s failed, will retry: %(message)s"),
        ),
        (
            r"Processing did not finish after (?P<attempts>\d+) attempts \(the worker was lost or ran out of time\)\.",
            _(
                "Processing did not finish after %(attempts)s attempts (the worker was lost or ran out of time)."
            ),
        ),
        (
            r"The document would make at least (?P<count>[\d,]+) passages, more than the limit of (?P<limit>[\d,]+) "
            r"per document \(CAIRN_MAX_PASSAGES_PER_DOCUMENT\)\.",
            _(
                "The document would make at least %(count)s passages, more than the limit of %(limit)s per document "
                "(CAIRN_MAX_PASSAGES_PER_DOCUMENT)."
            ),
        ),
        (
            r"The document makes (?P<count>[\d,]+) passages, more than the limit of (?P<limit>[\d,]+) per document "
            r"\(CAIRN_MAX_PASSAGES_PER_DOCUMENT\)\.",
            _(
                "The document makes %(count)s passages, more than the limit of %(limit)s per document "
                "(CAIRN_MAX_PASSAGES_PER_DOCUMENT)."
            ),
        ),
        (
            r"The PDF is damaged or truncated: none of its (?P<pages>\d+) pages could be read",
            _("The PDF is damaged or truncated: none of its %(pages)s pages could be read."),
        ),
        (
            r"The PDF is damaged or truncated: (?P<reason>.*)",
            _("The PDF is damaged or truncated: %(reason)s"),
        ),
        (
            r"The DOCX file is damaged or is not a valid Word document \((?P<reason>\w+)\)",
            _("The DOCX file is damaged or is not a valid Word document (%(reason)s)."),
        ),
        (
            r"The file could not be read \((?P<reason>\w+)\)",
            _("The file could not be read (%(reason)s)."),
        ),
        (
            r"The file could not be read: the parser stopped \((?P<reason>.*)\)\.",
            _("The file could not be read: the parser stopped (%(reason)s)."),
        ),
        (
            r"Reading the file needed more than its (?P<mb>\d+) MB memory budget \(CAIRN_PARSE_MAX_MB\)\.",
            _(
                "Reading the file needed more than its %(mb)s MB memory budget (CAIRN_PARSE_MAX_MB)."
            ),
        ),
        (
            r"Reading the file took longer than its (?P<seconds>[\d.]+)-second budget(?P<rest>.*)",
            _("Reading the file took longer than its %(seconds)s-second budget%(rest)s"),
        ),
    )
)

# The processing states a document goes through, as shown on badges (the code stays in data-status).
_STATUS: dict[str, Promise] = {
    "PENDING": pgettext_lazy("document status", "PENDING"),
    "PARSING": pgettext_lazy("document status", "PARSING"),
    "CHUNKING": pgettext_lazy("document status", "CHUNKING"),
    "EMBEDDING": pgettext_lazy("document status", "EMBEDDING"),
    "INDEXED": pgettext_lazy("document status", "INDEXED"),
    "FAILED": pgettext_lazy("document status", "FAILED"),
}


def processing_message(text: str | None, *, _depth: int = 0) -> str:
    """``text`` (a stored job error/detail or a parser message) in the active language; unknown text unchanged."""
    if not text:
        return ""
    exact = _EXACT.get(text)
    if exact is not None:
        return str(exact)
    if _depth > 2:
        return text
    for pattern, template in _PATTERNS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        values = match.groupdict()
        if "message" in values:
            values["message"] = _inner(values["message"], _depth)
        return str(template) % values
    return text


def _inner(message: str, depth: int) -> str:
    # "ParseError: The file is empty" — the exception's name stays, its message is translated.
    name, sep, rest = message.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z_][\w.]*", name):
        return f"{name}: {processing_message(rest, _depth=depth + 1)}"
    return processing_message(message, _depth=depth + 1)


def status_label(status: str | None) -> str:
    """A document's processing state as a reader sees it (``INDEXED`` → 已索引 in Chinese)."""
    label = _STATUS.get(status or "")
    return str(label) if label is not None else (status or "")


# Roles and key states, shown in tables; the stored and sent values stay the English codes.
_ROLE: dict[str, Promise] = {
    "viewer": pgettext_lazy("collection role", "viewer"),
    "editor": pgettext_lazy("collection role", "editor"),
    "owner": pgettext_lazy("collection role", "owner"),
}
_KEY_STATE: dict[str, Promise] = {
    "active": pgettext_lazy("API key state", "active"),
    "expired": pgettext_lazy("API key state", "expired"),
    "revoked": pgettext_lazy("API key state", "revoked"),
}
_OUTCOME: dict[str, Promise] = {
    "allowed": pgettext_lazy("audit outcome", "allowed"),
    "denied": pgettext_lazy("audit outcome", "denied"),
    "error": pgettext_lazy("audit outcome", "error"),
}


def _labeller(table: dict[str, Promise]) -> Callable[[str | None], str]:
    def label(value: str | None) -> str:
        found = table.get(value or "")
        return str(found) if found is not None else (value or "")

    return label


role_label = _labeller(_ROLE)
key_state_label = _labeller(_KEY_STATE)
outcome_label = _labeller(_OUTCOME)

__all__ = ["key_state_label", "outcome_label", "processing_message", "role_label", "status_label"]
