"""Every read of documents, versions, chunks or collections goes through kb.selectors.

A view, API endpoint, command or orchestration module that queried these
tables directly could skip the permission scope; this test fails the build
when one appears.  Writers (services, the ingestion workers) and the
selectors themselves are the only places allowed to touch the managers.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANAGER = re.compile(r"\b(Document|DocumentVersion|Chunk|Collection)\.objects\b")
ALLOWED = {
    "kb/selectors.py",      # the chokepoint itself
    "kb/search.py",         # materialises hits that the scope's chunk-id mask let through
    "kb/audit_review.py",   # what an auditor sees of served chunks: scoped by the reviewer's role
    "kb/services.py",       # writes, after a selector resolved the target
    "kb/models.py",
}
ALLOWED_DIRS = ("ingestion/", "kb/migrations/")  # workers act on job ids, not on behalf of a reader


def test_no_read_path_queries_kb_tables_directly():
    offenders = []
    for path in sorted([*ROOT.glob("kb/**/*.py"), *ROOT.glob("access/**/*.py"), *ROOT.glob("inference/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED or rel.startswith(ALLOWED_DIRS):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if MANAGER.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == [], "read these through kb.selectors:\n" + "\n".join(offenders)


def test_the_pattern_would_catch_a_bypass():
    assert MANAGER.search("chunks = Chunk.objects.filter(pk=1)")
    assert not MANAGER.search("chunks = selectors.chunk_get(user, 1)")
