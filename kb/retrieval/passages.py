"""What of a passage the index holds: the text both legs see for a chunk."""

from __future__ import annotations


def index_text(text: str, heading: str, title: str) -> str:
    """What gets embedded and keyword-indexed: the passage with its context.

    The document title and heading path travel with each chunk, so a
    passage that never names its subject can still be found by it.  The
    ingest pipeline, the index writer and the model switch all call this, so
    a chunk is indexed the same way whichever of them reads it.
    """
    return "\n".join(part for part in (title, heading, text) if part)
