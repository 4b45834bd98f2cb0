"""Model integrity: a manifest written by the management command guards every load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from inference.api import ModelLoadError, load_generator
from inference.manifest import MANIFEST_NAME, ManifestError, file_sha256, verify_manifest

pytestmark = pytest.mark.usefixtures("fresh_generators")


@pytest.fixture
def model_copy(tiny_qwen2: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_qwen2, tmp_path / "model"))


def test_command_writes_every_file_with_size_and_hash(model_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    call_command("cairn_model_manifest", str(model_copy))
    data = json.loads((model_copy / MANIFEST_NAME).read_text())
    listed = {f["path"]: f for f in data["files"]}
    on_disk = {p.name for p in model_copy.iterdir() if p.name != MANIFEST_NAME}
    assert set(listed) == on_disk and "model.safetensors" in listed
    weights = model_copy / "model.safetensors"
    assert listed["model.safetensors"]["size"] == weights.stat().st_size
    assert listed["model.safetensors"]["sha256"] == file_sha256(weights)
    assert "files" in capsys.readouterr().out
    call_command("cairn_model_manifest", str(model_copy), "--verify")


def test_an_intact_model_loads_and_says_it_was_verified(model_copy: Path) -> None:
    call_command("cairn_model_manifest", str(model_copy))
    generator = load_generator("transformers", str(model_copy), manifest="require")
    assert generator.manifest_verified is True  # type: ignore[attr-defined]


def test_a_changed_file_is_refused_naming_it(model_copy: Path) -> None:
    call_command("cairn_model_manifest", str(model_copy))
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors .*does not match its SHA-256"):
        load_generator("transformers", str(model_copy))
    with pytest.raises(CommandError, match="model.safetensors"):
        call_command("cairn_model_manifest", str(model_copy), "--verify")


def test_a_truncated_or_missing_file_is_refused(model_copy: Path) -> None:
    call_command("cairn_model_manifest", str(model_copy))
    (model_copy / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"tokenizer_config\.json .*bytes, the manifest says"):
        load_generator("transformers", str(model_copy))
    (model_copy / "tokenizer_config.json").unlink()
    with pytest.raises(ManifestError, match="tokenizer_config.json .*missing"):
        verify_manifest(model_copy)


def test_without_a_manifest_verify_loads_and_require_refuses(model_copy: Path) -> None:
    generator = load_generator("transformers", str(model_copy))
    assert generator.manifest_verified is False  # type: ignore[attr-defined]
    with pytest.raises(ModelLoadError, match="cairn_model_manifest"):
        load_generator("transformers", str(model_copy), manifest="require")
    assert verify_manifest(model_copy, "off") is False


def test_files_added_later_do_not_lock_the_model_out(model_copy: Path) -> None:
    call_command("cairn_model_manifest", str(model_copy))
    (model_copy / "notes.txt").write_text("added by an operator")
    assert verify_manifest(model_copy, "require") is True


def test_hashing_streams_large_files(tmp_path: Path) -> None:
    import hashlib

    big = tmp_path / "big.bin"
    block = bytes(range(256)) * 4096  # 1 MiB
    with big.open("wb") as handle:
        for _ in range(20):
            handle.write(block)
    assert file_sha256(big) == hashlib.sha256(block * 20).hexdigest()


def test_an_unwritable_manifest_path_is_a_clear_command_error(model_copy: Path) -> None:
    # A non-empty directory where the manifest must go: the rename fails for
    # every user, root included (a read-only directory would not stop root,
    # and the test would have to be skipped in CI).
    obstacle = model_copy / "cairn-manifest.json"
    obstacle.mkdir()
    (obstacle / "keep").write_text("x")
    with pytest.raises(CommandError, match="Cannot write"):
        call_command("cairn_model_manifest", str(model_copy))
