"""Reading a GGUF file once per model load, and faster (transformers' GGUF path).

Loading a ``.gguf`` model through transformers parses the file three times
(the tokenizer, the configuration, then the weights each call
``load_gguf_checkpoint``, which builds a ``gguf.GGUFReader``), and each parse
walks every metadata value — for SmolLM2-135M's 49k-token vocabulary about
150,000 small slices of a ``numpy.memmap``, whose ``__getitem__`` and
``__array_finalize__`` run in Python: ~5 s a parse on a 2.5 GHz core, 24 s
of a 32 s load.  Two changes, both leaving what is read unchanged:

* ``FastReader`` slices a plain ``ndarray`` view of the same mapping (no copy:
  the view keeps the memmap alive) instead of the memmap itself;
* inside ``reads_once()`` (a model load) a file is parsed once and the reader
  handed to every later ``GGUFReader(path)`` of that load, while the file's
  size and modification time stay the same; and the tensor-name map that
  transformers asks ``gguf.get_tensor_name_map`` for once per submodule of
  the model (397 times for SmolLM2, each rebuilding the same ~100k-entry
  table: 14.5 s) is built once.

``gguf.GGUFReader`` and ``gguf.get_tensor_name_map`` are replaced on first
use (transformers imports both from ``gguf`` at each call); readers and maps
are only read, and outside ``reads_once()`` every call builds afresh as before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

_local = threading.local()  # .readers: {(path, size, mtime): reader} while a load is open in this thread
_install_lock = threading.Lock()


def _fast_reader_class() -> type:
    import gguf

    original = gguf.GGUFReader
    if getattr(original, "_cairn_fast", False):
        return original

    class FastReader(original):  # type: ignore[misc, valid-type]
        """``gguf.GGUFReader`` slicing a plain view of its memory map (same bytes, same results)."""

        _cairn_fast = True

        def __new__(cls, path: Any, mode: str = "r") -> Any:
            readers = getattr(_local, "readers", None)
            if readers is None or mode != "r":
                return super().__new__(cls)
            stat = os.stat(path)
            key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
            reader = readers.get(key)
            if reader is None:
                reader = super().__new__(cls)
                reader.__init__(path, mode)
                reader._cairn_ready = True
                readers[key] = reader
            return reader

        def __init__(self, path: Any, mode: str = "r") -> None:
            if getattr(self, "_cairn_ready", False):
                return  # a reader this load already parsed (__new__ handed it back)
            super().__init__(path, mode)

        def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> Any:
            plain = self.__dict__.get("_cairn_plain")
            if plain is None or plain.base is not self.data:
                plain = self.__dict__["_cairn_plain"] = self.data.view(np.ndarray)
            count = int(count)
            itemsize = np.dtype(dtype).itemsize
            arr = plain[offset:offset + itemsize * count].view(dtype=dtype)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    FastReader.__name__ = FastReader.__qualname__ = "GGUFReader"
    FastReader.__module__ = original.__module__
    gguf.GGUFReader = FastReader  # type: ignore[misc]

    build_map = gguf.get_tensor_name_map

    def get_tensor_name_map(arch: Any, n_blocks: int) -> Any:
        """``gguf.get_tensor_name_map``, built once per (architecture, blocks) while a load is open."""
        maps = getattr(_local, "name_maps", None)
        if maps is None:
            return build_map(arch, n_blocks)
        key = (arch, int(n_blocks))
        if key not in maps:
            maps[key] = build_map(arch, n_blocks)
        return maps[key]

    gguf.get_tensor_name_map = get_tensor_name_map
    return FastReader


def install() -> bool:
    """Make ``gguf.GGUFReader`` the fast reader (idempotent); False when the gguf package is missing."""
    try:
        with _install_lock:
            _fast_reader_class()
    except ImportError:
        return False
    return True


@contextmanager
def reads_once() -> Iterator[None]:
    """Within this block (one model load, in this thread), each GGUF file is parsed at most once."""
    install()
    outer = getattr(_local, "readers", None)
    if outer is None:
        _local.readers, _local.name_maps = {}, {}
    try:
        yield
    finally:
        if outer is None:
            _local.readers = _local.name_maps = None
