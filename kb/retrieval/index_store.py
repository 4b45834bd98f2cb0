"""Versioned index files on disk: one writer, many readers, atomic swaps.

Layout, one directory per embedding model::

    <index dir>/<model id>/
        CURRENT            "7"  — the version readers should use
        v00000007/         dense-base-<id>.faiss (hard-linked while unchanged), dense-delta.faiss,
                           dense-deleted.npy, dense.json, lexical.npz, meta.json
        writer.lock        held by the single writer while it works

A new version is written into a temporary directory, fsynced, renamed into
place, and only then is ``CURRENT`` replaced (write + fsync + rename), so a
reader sees either the old version or the new one, never a half-written
file.  Readers check ``CURRENT`` on every search (one small read) and load a
new version when it changes; queries in flight keep the snapshot they hold.
Index files are derived data: they can always be rebuilt from the chunks in
the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kb.retrieval.dense import DenseConfig, DenseIndex
from kb.retrieval.lexical import BM25Index
from kb.retrieval.tokenize import TOKENIZER_VERSION

KEEP_VERSIONS = 3
_VERSION_DIR = re.compile(r"^v(\d{8})$")


@dataclass
class IndexSnapshot:
    """One loaded version of the index: both legs, always consistent with each other."""

    version: int
    model_id: str
    dense: DenseIndex
    lexical: BM25Index
    # The tokenizer that made the BM25 terms; another than ``TOKENIZER_VERSION`` means a rebuild is due.
    tokenizer_version: int = TOKENIZER_VERSION

    @property
    def size(self) -> int:
        return len(self.dense)


def model_dir_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-.") or "model"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


class IndexStore:
    """The files of one embedding model's index."""

    def __init__(self, root: Path, model_id: str, *, dense_config: DenseConfig | None = None) -> None:
        self.model_id = model_id
        self.dense_config = dense_config or DenseConfig()
        self.dir = Path(root) / model_dir_name(model_id)
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def current_file(self) -> Path:
        return self.dir / "CURRENT"

    def current_version(self) -> int:
        try:
            return int(self.current_file.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            return 0

    def version_dir(self, version: int) -> Path:
        return self.dir / f"v{version:08d}"

    def tokenizer_stale(self) -> bool:
        """Whether the current version's BM25 terms come from another tokenizer than this code's.

        Versions written before the tokenizer version was recorded were made
        by version 1.  No index yet is not stale.
        """
        version = self.current_version()
        if version == 0:
            return False
        try:
            meta = json.loads((self.version_dir(version) / "meta.json").read_text())
        except FileNotFoundError:
            return False
        return int(meta.get("tokenizer_version", 1)) != TOKENIZER_VERSION

    def load(
        self, version: int | None = None, *, reuse: IndexSnapshot | None = None, lazy_dense: bool = False
    ) -> IndexSnapshot | None:
        """Load a version (default: the current one); None when nothing was written yet.

        ``reuse``: a snapshot this process holds; an unchanged dense base is
        shared with it instead of read again.  ``lazy_dense``: the writer,
        which only appends, reads the dense base only if it has to merge
        (and skips the BM25 weights, which only searches use).
        """
        version = self.current_version() if version is None else version
        if version == 0:
            return None
        path = self.version_dir(version)
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("model_id") != self.model_id:
            raise ValueError(f"{path} was built for model {meta.get('model_id')!r}, not {self.model_id!r}")
        dense = DenseIndex.load_dir(
            path, config=self.dense_config, reuse=reuse.dense if reuse is not None else None, lazy=lazy_dense
        )
        lexical = BM25Index.load(path / "lexical.npz", weights=not lazy_dense)
        return IndexSnapshot(version=version, model_id=self.model_id, dense=dense, lexical=lexical,
                             tokenizer_version=int(meta.get("tokenizer_version", 1)))

    def empty(self, dim: int) -> IndexSnapshot:
        return IndexSnapshot(
            version=0, model_id=self.model_id, dense=DenseIndex(dim, config=self.dense_config), lexical=BM25Index()
        )

    @contextlib.contextmanager
    def writer_lock(self, timeout: float = 600.0) -> Iterator[None]:
        """Exclusive across processes: there is one index writer at a time, whatever the shape."""
        with open(self.dir / "writer.lock", "a+") as handle:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError("another index writer has held the lock too long") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def write(self, snapshot: IndexSnapshot) -> int:
        """Write ``snapshot`` as a new version and make it current; returns the version.

        Call with ``writer_lock`` held.
        """
        version = self.current_version() + 1
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.dir))
        try:
            written = snapshot.dense.save_dir(tmp)
            snapshot.lexical.save(tmp / "lexical.npz")
            (tmp / "meta.json").write_text(json.dumps({
                "version": version,
                "model_id": self.model_id,
                "dim": snapshot.dense.dim,
                "chunks": len(snapshot.dense),
                "dense_kind": snapshot.dense.kind,
                "tokenizer_version": snapshot.tokenizer_version,
                "written_at": time.time(),
            }))
            for path in [*written, tmp / "lexical.npz", tmp / "meta.json"]:
                _fsync_file(path)
            final = self.version_dir(version)
            if final.exists():  # left over from a crash between rename and CURRENT
                shutil.rmtree(final)
            os.rename(tmp, final)
            snapshot.dense.mark_saved(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.dir)
        pointer = self.dir / "CURRENT.tmp"
        pointer.write_text(f"{version}\n")
        _fsync_file(pointer)
        os.replace(pointer, self.current_file)
        _fsync_dir(self.dir)
        snapshot.version = version
        self._prune(version)
        return version

    def _prune(self, current: int) -> None:
        """Drop old versions; readers hold loaded copies in memory, not open files."""
        for entry in self.dir.iterdir():
            match = _VERSION_DIR.match(entry.name)
            if match and int(match.group(1)) <= current - KEEP_VERSIONS:
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith(".tmp-") and time.time() - entry.stat().st_mtime > 3600:
                shutil.rmtree(entry, ignore_errors=True)


class IndexReader:
    """A process-wide cache of the current snapshot, reloaded when the version changes."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store
        self._snapshot: IndexSnapshot | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> IndexSnapshot | None:
        """The current version; while another thread is loading a newer one, the one held.

        The search that first sees a new version loads it (so a search
        right after an index pass sees that pass: read-your-writes in one
        thread); searches arriving meanwhile are answered from the held
        snapshot instead of queueing behind a load of seconds at 1M chunks.
        """
        version = self.store.current_version()
        held = self._snapshot
        if held is not None and held.version == version:
            return held
        if held is not None and not self._lock.acquire(blocking=False):
            return held
        if held is None:
            self._lock.acquire()
        try:
            if self._snapshot is not None and self._snapshot.version == self.store.current_version():
                return self._snapshot
            for _ in range(3):
                try:
                    self._snapshot = self.store.load(reuse=self._snapshot)
                    break
                except FileNotFoundError:
                    # The writer pruned the version between our read of CURRENT and the load.
                    time.sleep(0.05)
            return self._snapshot
        finally:
            self._lock.release()
