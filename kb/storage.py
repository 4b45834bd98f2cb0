"""Content-addressed storage of uploaded bytes.

A file is stored at ``<storage dir>/ab/cd/<sha256>``: the path is derived
from the content's hash only, never from anything the client sent, so no
filename (``../../etc/passwd``, NUL bytes, device names) can steer a write.
Writes go to a temporary file in the same directory and are renamed into
place, so a crash never leaves a partial blob under a valid name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The file is larger than the {limit // (1024 * 1024)} MB limit.")
        self.limit = limit


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int


def _root() -> Path:
    return Path(settings.CAIRN_STORAGE_DIR)


def blob_path(sha256: str) -> Path:
    if not _SHA256.match(sha256):
        raise ValueError("not a sha256 hex digest")
    return _root() / sha256[:2] / sha256[2:4] / sha256


def blob_store(chunks: Iterable[bytes], *, limit: int) -> StoredBlob:
    """Stream bytes into storage, hashing as they come; refuse past ``limit`` bytes."""
    root = _root()
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=root)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        sha256 = digest.hexdigest()
        final = blob_path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.unlink(tmp_name)
        else:
            os.replace(tmp_name, final)
            os.chmod(final, 0o640)
        return StoredBlob(sha256=sha256, size=size)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def blob_read(sha256: str) -> bytes:
    return blob_path(sha256).read_bytes()


def blob_delete(sha256: str) -> None:
    try:
        blob_path(sha256).unlink()
    except FileNotFoundError:
        pass
