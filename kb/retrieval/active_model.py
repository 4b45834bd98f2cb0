"""Which embedding model serves searches: the ``ACTIVE_MODEL`` record in the index directory.

``<index dir>/ACTIVE_MODEL`` holds JSON ``{"model_id", "path"}``.  Searches
embed queries with that model and read its index; ingestion embeds new
chunks with it.  Changing the configured model does not change the record:
the blue-green switch (``ingestion.model_switch``) builds the new model's
index alongside and only then rewrites the record, atomically.

Plain Python: the caller says where the index directory is.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

ACTIVE_FILE = "ACTIVE_MODEL"


@dataclass(frozen=True)
class ActiveModel:
    model_id: str
    path: str | None  # None: the bundled model


_cache: dict[str, tuple[tuple[int, int], ActiveModel]] = {}
_cache_lock = threading.Lock()


def _record(index_dir: Path) -> Path:
    return Path(index_dir) / ACTIVE_FILE


def read_active(index_dir: Path) -> ActiveModel | None:
    """The recorded model, or None when nothing was recorded yet (one stat per call)."""
    path = _record(index_dir)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    key = (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        held = _cache.get(str(path))
        if held is not None and held[0] == key:
            return held[1]
        data = json.loads(path.read_text())
        model = ActiveModel(str(data["model_id"]), data.get("path") or None)
        _cache[str(path)] = (key, model)
        return model


def write_active(index_dir: Path, model: ActiveModel) -> None:
    """Atomically make ``model`` the one searches use (write, fsync, rename)."""
    path = _record(index_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        handle.write(json.dumps({"model_id": model.model_id, "path": model.path}))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    with _cache_lock:
        _cache.pop(str(path), None)


def pin_active(index_dir: Path, model: ActiveModel) -> ActiveModel:
    """Record ``model`` unless a model is recorded already; returns the recorded one.

    The first index write pins the configured model, so that a later change
    of configuration needs a switch instead of silently mixing two models.
    """
    if not _record(index_dir).exists():
        write_active(index_dir, model)
    recorded = read_active(index_dir)
    assert recorded is not None  # written just above
    return recorded
