"""SHA-256 manifests of model directories: written at install time, checked at load time.

A model directory is a few large files (weights) and many small ones
(config, tokenizer, template). Any of them being swapped, truncated by an
interrupted copy or corrupted on disk changes what the model says, usually
without an error. ``write_manifest`` records every file's size and SHA-256
in ``cairn-manifest.json`` inside the directory; ``verify_manifest`` refuses
a directory whose files differ, naming the first file that does.

Invariants:
* files are hashed in 8 MiB chunks, so a 15 GB shard never sits in memory;
* the manifest lists paths relative to the directory with ``/`` separators,
  sorted; it never lists itself, hidden files, or anything outside the directory
  (symlinks are followed only when they stay inside it, or inside the
  ``blobs/`` of a Hugging Face cache snapshot);
* sizes are compared before hashes, so a truncated copy is reported at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MANIFEST_NAME = "cairn-manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 8 * 1024 * 1024

ManifestPolicy = Literal["verify", "require", "off"]
MANIFEST_POLICIES: tuple[str, ...] = ("verify", "require", "off")


class ManifestError(Exception):
    """A model directory does not match its manifest, or has none where one is required."""


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int
    sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in the model's tree; a Hub cache snapshot's tree includes its blobs."""
    trees = [root]
    if root.parent.name == "snapshots":
        trees.append(root.parent.parent)  # models--org--name/, whose blobs/ the snapshot links to
    return any(path.is_relative_to(tree) for tree in trees)


def _model_files(model_dir: Path) -> Iterator[Path]:
    root = model_dir.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or (Path(dirpath) == root and name == MANIFEST_NAME):
                continue
            path = Path(dirpath) / name
            # The Hub cache's snapshots are symlinks into blobs/; follow those,
            # but never a link that leaves the model's own tree.
            target = path.resolve()
            if not target.is_file():
                continue
            if not _inside(target, root):
                continue
            yield path


def manifest_path(model_dir: Path) -> Path:
    return model_dir / MANIFEST_NAME


def build_manifest(model_dir: Path) -> list[ManifestEntry]:
    root = model_dir.resolve()
    return [
        ManifestEntry(
            path=path.relative_to(root).as_posix(),
            size=path.stat().st_size,
            sha256=file_sha256(path),
        )
        for path in _model_files(root)
    ]


def write_manifest(model_dir: str | Path) -> Path:
    """Hash every file of ``model_dir`` and write ``cairn-manifest.json`` into it (atomically)."""
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise ManifestError(f"{root} is not a directory.")
    entries = build_manifest(root)
    if not entries:
        raise ManifestError(f"{root} has no files to record.")
    data = {
        "version": MANIFEST_VERSION,
        "algorithm": "sha256",
        "files": [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in entries],
    }
    target = manifest_path(root)
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, target)
    except OSError as exc:
        raise ManifestError(f"Cannot write {target}: {exc.strerror or exc}") from exc
    return target


def read_manifest(model_dir: Path) -> list[ManifestEntry]:
    path = manifest_path(model_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("algorithm", "sha256") != "sha256":
            raise ManifestError(f"{path} uses {data['algorithm']!r}; only sha256 is supported.")
        return [
            ManifestEntry(path=str(f["path"]), size=int(f["size"]), sha256=str(f["sha256"]).lower())
            for f in data["files"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"The model manifest {path} cannot be read: {exc}") from exc


def verify_manifest(model_dir: str | Path, policy: ManifestPolicy = "verify") -> bool:
    """Check ``model_dir`` against its manifest; True when it was checked and matched.

    ``policy``: ``verify`` checks when a manifest is present and accepts a
    directory without one (returns False); ``require`` refuses a directory
    without one; ``off`` checks nothing. Files added after the manifest was
    written are ignored (a cache file a library drops next to the weights
    must not lock the model out); missing or changed files are refused.
    """
    if policy not in MANIFEST_POLICIES:
        raise ValueError(f"Unknown manifest policy {policy!r}; use one of {', '.join(MANIFEST_POLICIES)}.")
    if policy == "off":
        return False
    root = Path(model_dir).expanduser()
    if not manifest_path(root).is_file():
        if policy == "require":
            raise ManifestError(
                f"The model directory {root} has no {MANIFEST_NAME}, and a manifest is required "
                f"(CAIRN_LLM_MANIFEST=require). Create one when installing the model: "
                f"manage.py cairn_model_manifest {root}"
            )
        return False
    entries = read_manifest(root)
    resolved = root.resolve()
    for entry in entries:
        path = (resolved / entry.path).resolve()
        if not _inside(path, resolved):
            raise ManifestError(f"The model manifest of {root} names a path outside it: {entry.path}")
        if not path.is_file():
            raise ManifestError(f"Model file {entry.path} in {root} is missing (listed in {MANIFEST_NAME}).")
        size = path.stat().st_size
        if size != entry.size:
            raise ManifestError(
                f"Model file {entry.path} in {root} has {size} bytes, the manifest says {entry.size}: "
                "refusing to load a modified or partly copied model."
            )
    for entry in entries:
        if file_sha256(resolved / entry.path) != entry.sha256:
            raise ManifestError(
                f"Model file {entry.path} in {root} does not match its SHA-256 in {MANIFEST_NAME}: "
                "refusing to load a modified or corrupted model."
            )
    return True
