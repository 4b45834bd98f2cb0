"""The faster GGUF reading of a model load (inference.backends.gguf_read) reads exactly what gguf-py reads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from inference.backends import gguf_read  # noqa: E402


def _write_gguf(path: Path) -> Path:
    """A small GGUF of gguf-py's own writing with every kind of value a model file holds."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(2048)
    writer.add_rope_freq_base(10000.5)
    writer.add_bool("general.flag", True)
    writer.add_token_list([f"token{i}" for i in range(500)] + ["中文", "\u00e9"])
    writer.add_token_scores([float(i) / 7 for i in range(502)])
    writer.add_token_types([i % 3 for i in range(502)])
    writer.add_token_merges([f"a{i} b{i}" for i in range(300)])
    writer.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(8, 8))
    writer.add_tensor("output_norm.weight", np.linspace(-1, 1, 32, dtype=np.float16))
    quantized = gguf.quants.quantize(np.linspace(-2, 2, 256, dtype=np.float32).reshape(4, 64), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _plain_reader() -> type:
    """gguf-py's own reader class, whatever ``gguf.GGUFReader`` is now."""
    return gguf.gguf_reader.GGUFReader if not getattr(gguf.gguf_reader.GGUFReader, "_cairn_fast", False) \
        else gguf.gguf_reader.GGUFReader.__mro__[1]


def test_the_fast_reader_reads_every_field_and_tensor_exactly_as_gguf_py(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _write_gguf(tmp_path / "model.gguf")
    assert gguf_read.install()
    plain, fast = _plain_reader()(str(path)), gguf.GGUFReader(str(path))
    assert type(fast) is not type(plain) and getattr(type(fast), "_cairn_fast", False)
    assert list(plain.fields) == list(fast.fields) and len(plain.fields) > 10
    for name, field in plain.fields.items():
        other = fast.fields[name]
        assert (field.offset, field.name, field.types, field.data) == (other.offset, other.name, other.types, other.data)
        assert len(field.parts) == len(other.parts)
        assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(field.parts, other.parts, strict=True)), name
        assert field.contents() == other.contents(), name
    assert len(plain.tensors) == len(fast.tensors) == 3
    for a, b in zip(plain.tensors, fast.tensors, strict=True):
        assert (a.name, a.tensor_type, a.data_offset, a.n_elements) == (b.name, b.tensor_type, b.data_offset, b.n_elements)
        assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape and np.array_equal(a.data, b.data)


def test_a_file_is_parsed_once_per_load_and_afresh_when_it_changes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _write_gguf(tmp_path / "model.gguf")
    gguf_read.install()
    outside = gguf.GGUFReader(str(path)), gguf.GGUFReader(str(path))
    assert outside[0] is not outside[1]  # no load open: every call parses, as gguf-py does
    with gguf_read.reads_once():
        first = gguf.GGUFReader(str(path))
        assert gguf.GGUFReader(path) is first  # the tokenizer, the config and the weights share one parse
        seen: list[object] = []
        thread = threading.Thread(target=lambda: seen.append(gguf.GGUFReader(str(path))))
        thread.start()
        thread.join()
        assert seen[0] is not first  # another thread's reads are not this load's
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert gguf.GGUFReader(str(path)) is not first  # the file changed on disk: parsed again
        first_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is first_map
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 3) is not first_map
    assert gguf.GGUFReader(str(path)) is not first
    assert gguf.GGUFReader(str(path)).fields["tokenizer.ggml.tokens"].contents()[499] == "token499"
    assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is not first_map
    assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2).mapping == first_map.mapping
