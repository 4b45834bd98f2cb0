"""Rendered PDF pages kept on disk for the citation viewer, bounded in size.

A page image is named by what it shows: the blob's sha256 (the stored bytes
are content-addressed, so a new version is a new name and nothing goes
stale), the page and the width.  The cache never decides who may see a
page — the view checks the document first — and past ``CAIRN_PAGE_CACHE_MB``
the least recently written images are dropped.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from django.conf import settings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _root() -> Path:
    return Path(settings.CAIRN_PAGE_CACHE_DIR)


def _path(sha256: str, page: int, width: int) -> Path:
    if not _SHA256.match(sha256):
        raise ValueError("not a sha256 hex digest")
    return _root() / sha256[:2] / f"{sha256}-p{int(page)}-w{int(width)}.png"


def page_cached(sha256: str, page: int, width: int) -> bytes | None:
    try:
        return _path(sha256, page, width).read_bytes()
    except OSError:
        return None


def page_cache_store(sha256: str, page: int, width: int, png: bytes) -> None:
    """Keep ``png``, written atomically; then trim the cache to its size limit (best effort)."""
    path = _path(sha256, page, width)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".page-", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(png)
        os.replace(tmp, path)
    except OSError:
        return  # a full or read-only disk costs only the cache
    _trim(settings.CAIRN_PAGE_CACHE_MB << 20)


def _trim(limit: int) -> None:
    files: list[tuple[float, int, Path]] = []
    for path in _root().glob("*/*.png"):
        try:
            stat = path.stat()
        except OSError:
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files):
        if total <= limit:
            break
        path.unlink(missing_ok=True)
        total -= size
