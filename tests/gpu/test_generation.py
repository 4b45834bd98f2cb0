"""benchmarks/gpu/generation.py tiny on any CPU; the batching pool and the benchmark on a real GPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from inference.api import clear_generators, generate, load_generator
from inference.pool import GenerationPool
from inference.types import GenerationRequest, Passage
from tests.inference.tiny_models import build_tiny_deepseek_v3, build_tiny_qwen2

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "generation.py"


def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cairn_gpu_generation", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "gen.json"
    assert benchmark().main([*args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("arch", ["qwen2-7b", "deepseek-v3-small"])
def test_the_benchmark_runs_tiny_on_the_cpu_and_reports_each_level(tmp_path: Path, arch: str) -> None:
    report = run(tmp_path, "--arch", arch, "--tiny", "--device", "cpu", "--concurrency", "4,1",
                 "--new-tokens", "6", "--warmup-tokens", "2")
    assert report["arch"] == arch and report["tiny"] and report["dtype"] == "torch.float32"
    assert report["config"]["model_type"] == {"qwen2-7b": "qwen2", "deepseek-v3-small": "deepseek_v3"}[arch]
    rows = report["rows"]
    assert [r["concurrency"] for r in rows] == [1, 4]  # sorted, whatever order they ran in
    for row in rows:
        # Every request ran to exactly --new-tokens on both paths: the throughputs compare equal work.
        assert row["tokens"] == row["expected"] == 6 * row["concurrency"]
        assert row["pool_tok_s"] > 0 and row["bare_tok_s"] > 0 and row["pool_ttft_p50"] > 0
        assert row["pool_peak_gib"] is None  # no CUDA memory on a CPU
    assert rows[0]["pool_x_c1"] == 1.0
    targets = {t["target"]: t for t in report["targets"]}
    assert targets["pool_vs_bare_c1"]["verdict"] in ("PASS", "FAIL")
    assert targets["pool_c16_vs_c1"]["verdict"] == "not measured"  # no c=16 level in this run


def test_the_published_7b_shape_is_the_r1_distills(tmp_path: Path) -> None:
    module = benchmark()
    model_type, dims = module.ARCHS["qwen2-7b"]
    assert model_type == "qwen2"
    assert {k: dims[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                 "intermediate_size", "vocab_size")} == {
        "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "intermediate_size": 18944, "vocab_size": 152064}


def test_a_level_past_the_time_limit_is_skipped_not_run(tmp_path: Path) -> None:
    report = run(tmp_path, "--tiny", "--device", "cpu", "--concurrency", "1,4", "--new-tokens", "2",
                 "--max-seconds", "0.001")
    assert report["rows"] == [] and report["skipped"] == [1, 4]


# --- on a real GPU ---------------------------------------------------------------------

REQUESTS = [
    GenerationRequest(
        question=f"{q} ({i})", max_new_tokens=12, request_id=f"gpu-{i}",
        passages=(Passage(number=1, chunk_id=1, document_id=1, title="Handbook", page=1, heading="Leave",
                          text="Employees get twenty holiday days a year; managers approve leave."),),
    )
    for i, q in enumerate(["How many holiday days?", "Who approves leave?", "What does the handbook say?"] * 3)
]


def through_pool(generator: Any, requests: list[GenerationRequest]) -> tuple[list[str], GenerationPool]:
    pool = GenerationPool(generator, max_batch=8, max_wait=0.05)
    try:
        finals = [list(t.events(timeout=120))[-1] for t in [pool.submit(r) for r in requests]]
    finally:
        pool.close()
    assert all(f["event"] == "done" for f in finals), finals
    return [f["answer"]["answer"] for f in finals], pool  # type: ignore[typeddict-item]


@pytest.mark.gpu
@pytest.mark.parametrize("build", [build_tiny_qwen2, build_tiny_deepseek_v3], ids=["qwen2", "deepseek-v3"])
def test_the_pool_on_cuda_equals_one_at_a_time_greedy(tmp_path: Path, build: Any) -> None:
    clear_generators()
    # float32: greedy equality must not hinge on bf16 rounding, which batched and single kernels round apart.
    generator = load_generator("transformers", build(tmp_path / "DeepSeek-R1-tiny"), device="cuda:0",
                               dtype="float32")
    try:
        assert generator.device.type == "cuda"  # type: ignore[attr-defined]
        answers, pool = through_pool(generator, REQUESTS)
        assert max(pool.batch_sizes) > 1  # they ran batched
        assert answers == [generate(generator, r).answer for r in REQUESTS]
    finally:
        clear_generators()


@pytest.mark.gpu
def test_the_pool_runs_in_bf16_on_cuda(tmp_path: Path) -> None:
    import torch

    clear_generators()
    generator = load_generator("transformers", build_tiny_qwen2(tmp_path / "tiny"), device="cuda:0")
    try:
        if torch.cuda.get_device_capability(0)[0] >= 8:
            assert generator.dtype == torch.bfloat16  # type: ignore[attr-defined]
        answers, pool = through_pool(generator, REQUESTS)
        assert len(answers) == len(REQUESTS) and max(pool.batch_sizes) > 1
    finally:
        clear_generators()


@pytest.mark.gpu
def test_the_benchmark_runs_tiny_on_the_gpu(tmp_path: Path) -> None:
    import torch

    report = run(tmp_path, "--tiny", "--device", "cuda", "--concurrency", "1,4", "--new-tokens", "8",
                 "--warmup-tokens", "2")
    assert report["device"]["name"] == torch.cuda.get_device_name(0)
    assert report["dtype"] == ("torch.bfloat16" if torch.cuda.get_device_capability(0)[0] >= 8 else "torch.float16")
    for row in report["rows"]:
        assert row["tokens"] == row["expected"]
        assert row["pool_peak_gib"] > 0 and row["bare_peak_gib"] > 0
