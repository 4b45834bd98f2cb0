"""Loaded (through PYTHONPATH) into the team shape's web process only, by tests/e2e/test_team.py.

The web process must never parse, chunk or embed a document: those are the
ingest workers' job (it only sniffs an upload's type and embeds queries).
Here every way of doing so fails in that process and is written to
``CAIRN_TEST_IMPORT_GUARD_LOG`` for the test to read:

* the format parsers and their libraries cannot be imported (``parse``
  imports them only when it parses a file of their kind);
* ``ingestion.parsers.parse``, ``ingestion.chunking.chunk_document`` and the
  passage embedder (``SentenceTransformerEmbedder.encode``) raise when called.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any

REFUSED = (
    "ingestion.parsers.pdf", "ingestion.parsers.docx", "ingestion.parsers.html", "ingestion.parsers.markdown",
    "ingestion.parsers.text", "pypdfium2", "docx",
)
# module -> the callables in it (``Class.method`` or a function) that must never run here
GUARDED = {
    "ingestion.parsers": ("parse",),
    "ingestion.chunking": ("chunk_document",),
    "kb.retrieval.embedding": ("SentenceTransformerEmbedder.encode",),
}


def _record(what: str) -> ImportError:
    with open(os.environ["CAIRN_TEST_IMPORT_GUARD_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{what}\n")
    return ImportError(f"{what} was used in the web process, which must never parse documents")


def _refuse(what: str) -> Any:
    def refused(*args: object, **kwargs: object) -> None:
        raise _record(what)

    return refused


def _guard(module: ModuleType, names: tuple[str, ...]) -> None:
    for name in names:
        owner: Any = module
        *path, attribute = name.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, attribute, _refuse(f"{module.__name__}.{name}"))


class ParseGuard(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name in REFUSED or name.startswith(tuple(f"{refused}." for refused in REFUSED)):
            raise _record(name)
        if name not in GUARDED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            _guard(module, GUARDED[name])

        loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, ParseGuard())
