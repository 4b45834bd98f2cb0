"""What an audit reviewer sees of the knowledge base: the chunks an audit event says were served."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from access.audit_review import can_review_audit
from access.models import AnyUser
from kb.exceptions import NotFound
from kb.models import Chunk


@dataclass(frozen=True)
class AuditedChunk:
    """What an audit reviewer sees of a chunk an audit event says was served."""

    chunk_id: int
    found: bool            # False: purged since (compaction removed the row)
    document_id: int | None = None
    title: str = ""
    page: int | None = None
    snippet: str = ""
    document_deleted: bool = False


AUDIT_SNIPPET_CHARS = 240


def audited_chunks(reviewer: AnyUser, chunk_ids: Sequence[int]) -> list[AuditedChunk]:
    """The chunks an audit event served, for an audit reviewer (admin/auditor) only.

    Reviewers see what was served to someone else, so this is deliberately
    not scoped by the reviewer's own grants; it is scoped by the reviewer's
    role instead and shows only chunk id, document title, page and a short
    snippet.  Chunks purged since are reported as such.
    """
    if not can_review_audit(reviewer):
        raise NotFound("audit event")
    wanted = [int(c) for c in chunk_ids][:1000]
    rows = (Chunk.objects.unrestricted("an audit reviewer sees what was served to someone else")
            .filter(pk__in=wanted).select_related("document"))
    by_id = {chunk.pk: chunk for chunk in rows}
    out: list[AuditedChunk] = []
    for chunk_id in wanted:
        chunk = by_id.get(chunk_id)
        if chunk is None:
            out.append(AuditedChunk(chunk_id=chunk_id, found=False))
            continue
        text = " ".join(chunk.text.split())
        out.append(AuditedChunk(
            chunk_id=chunk_id, found=True, document_id=chunk.document_id, title=chunk.document.title,
            page=chunk.page,
            snippet=text if len(text) <= AUDIT_SNIPPET_CHARS else text[:AUDIT_SNIPPET_CHARS].rstrip() + "…",
            document_deleted=chunk.document.deleted_at is not None,
        ))
    return out
