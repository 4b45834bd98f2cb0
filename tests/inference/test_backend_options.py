"""Backend selection by settings, and the transformers options that cannot work on this host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inference.api import ModelLoadError, load_generator
from inference.backends.transformers_backend import locate_model

pytestmark = pytest.mark.usefixtures("fresh_generators")
ROOT = Path(__file__).resolve().parents[2]


def settings_with(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Import config.settings in a fresh interpreter with ``env`` and print the generator options."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_LLM", "CAIRN_OPENAI", "CAIRN_GENERATOR"))}
    clean.update(CAIRN_DATA_DIR=str(tmp_path), **env)
    code = "import config.settings as s; print(s.CAIRN_LLM_BACKEND, sorted(s.CAIRN_LLM_OPTIONS.items()))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=60)


def test_openai_backend_from_settings_with_a_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-from-file\n")
    result = settings_with(
        tmp_path, CAIRN_LLM_BACKEND="openai", CAIRN_OPENAI_BASE_URL="http://vllm:8000/v1",
        CAIRN_OPENAI_MODEL="deepseek-reasoner", CAIRN_OPENAI_API_KEY_FILE=str(key),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("openai ")
    assert "('api_key', 'sk-from-file')" in result.stdout and "('base_url', 'http://vllm:8000/v1')" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CAIRN_LLM_BACKEND": "openai"}, "CAIRN_OPENAI_BASE_URL and CAIRN_OPENAI_MODEL"),
        ({"CAIRN_LLM_BACKEND": "vllm"}, "needs CAIRN_LLM_PATH"),
        ({"CAIRN_LLM_BACKEND": "llamacpp"}, "CAIRN_LLM_BACKEND must be one of"),
        ({"CAIRN_LLM_BACKEND": "transformers", "CAIRN_LLM_PATH": "/m", "CAIRN_LLM_QUANTIZATION": "3bit"},
         "CAIRN_LLM_QUANTIZATION must be one of"),
    ],
)
def test_bad_backend_settings_stop_start_up_naming_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = settings_with(tmp_path, **env)
    assert result.returncode != 0 and message in result.stderr


def test_the_old_name_is_an_alias_read_the_same_way_and_a_conflict_is_refused(tmp_path: Path) -> None:
    both = settings_with(tmp_path, CAIRN_LLM_BACKEND="extractive", CAIRN_GENERATOR="extractive")
    assert both.returncode == 0 and both.stdout.startswith("extractive "), both.stderr
    conflict = settings_with(tmp_path, CAIRN_LLM_BACKEND="extractive", CAIRN_GENERATOR="transformers",
                             CAIRN_LLM_PATH="/m")
    assert conflict.returncode != 0
    assert "CAIRN_LLM_BACKEND and its old name CAIRN_GENERATOR are set to different values" in conflict.stderr
    code = "import config.settings as s; print(hasattr(s, 'CAIRN_GENERATOR'))"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_LLM", "CAIRN_GENERATOR"))}
    one_name = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, "CAIRN_DATA_DIR": str(tmp_path)},
                              capture_output=True, text=True, timeout=60)
    assert one_name.stdout.strip() == "False", one_name.stderr  # one setting, one name in the code


def test_transformers_options_from_settings(tmp_path: Path) -> None:
    result = settings_with(
        tmp_path, CAIRN_GENERATOR="transformers", CAIRN_LLM_PATH="/m", CAIRN_LLM_QUANTIZATION="4bit",
        CAIRN_LLM_DEVICE_MAP="auto", CAIRN_LLM_CONTEXT_WINDOW="8192", CAIRN_LLM_MANIFEST="require",
    )
    assert result.returncode == 0, result.stderr
    for part in ("transformers ", "('quantization', '4bit')", "('device_map', 'auto')",
                 "('context_window', 8192)", "('manifest', 'require')", "('dtype', 'auto')"):
        assert part in result.stdout


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantization_on_a_cpu_is_refused_clearly(tiny_qwen2: str, quantization: str) -> None:
    with pytest.raises(ModelLoadError, match="needs a CUDA GPU"):
        load_generator("transformers", tiny_qwen2, device="cpu", quantization=quantization)


def test_unknown_quantization_and_dtype(tiny_qwen2: str) -> None:
    with pytest.raises(ModelLoadError, match="Unknown quantization '2bit'"):
        load_generator("transformers", tiny_qwen2, quantization="2bit")
    with pytest.raises(ModelLoadError, match="Unknown dtype"):
        load_generator("transformers", tiny_qwen2, dtype="int3")


def test_device_map_loads_through_accelerate(tiny_qwen2: str, request_two_passages) -> None:  # type: ignore[no-untyped-def]
    from inference.api import generate

    generator = load_generator("transformers", tiny_qwen2, device_map="auto")
    assert str(generator.device) == "cpu"  # type: ignore[attr-defined]  # no GPU: accelerate keeps it here
    plain = load_generator("transformers", tiny_qwen2)
    assert generate(generator, request_two_passages) == generate(plain, request_two_passages)


def test_gguf_locations(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    assert locate_model(tmp_path / "a.gguf") == (tmp_path, "a.gguf")
    assert locate_model(tmp_path) == (tmp_path, "a.gguf")  # the only .gguf, no config.json
    assert locate_model(tmp_path, "a.gguf") == (tmp_path, "a.gguf")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="several GGUF files"):
        locate_model(tmp_path)
    with pytest.raises(ModelLoadError, match="file name inside"):
        locate_model(tmp_path, "../b.gguf")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_generator("transformers", str(tmp_path / "missing.gguf"))


def test_a_hf_directory_is_not_mistaken_for_gguf(tiny_qwen2: str, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_qwen2, tmp_path / "m"))
    (copy / "stray.gguf").write_bytes(b"GGUF")
    assert locate_model(copy) == (copy, None)  # config.json present: the HF files win
