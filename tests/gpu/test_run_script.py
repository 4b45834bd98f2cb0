"""benchmarks/gpu/run.sh and wheels.sh, tried on this machine's CPU (the accelerator machine runs them for real)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "gpu" / "run.sh"


def run_tiny(out: Path, **env: str) -> str:
    """run.sh with every step tiny, on this CPU; returns its run.log."""
    result = subprocess.run(
        ["bash", str(RUN)], cwd=ROOT, capture_output=True, text=True, timeout=280,
        env={**os.environ, "CAIRN_GPU_RUN_TINY": "1", "OUT": str(out), "PYTHON": sys.executable, **env},
    )
    assert result.returncode == 0, result.stderr
    return (out / "run.log").read_text()


def test_every_wheel_is_pinned_by_the_lock_file() -> None:
    listed = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "wheels.sh"), "--list"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable},
                            check=True).stdout.split()
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    assert "Django==" + next(line.split("==")[1] for line in lock if line.startswith("Django==")) in listed
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.+-]*", pin) for pin in listed)
    assert any(pin.startswith("faiss-cpu==") for pin in listed)


def test_steps_that_the_budget_cannot_hold_are_skipped(tmp_path: Path) -> None:
    log = run_tiny(tmp_path, CAIRN_GPU_RUN_BUDGET="20")
    assert "== generation-7b: SKIPPED" in log and "== generation-deepseek-v3: SKIPPED" in log
    assert not (tmp_path / "gen.json").exists()


@pytest.mark.slow
def test_the_tiny_run_writes_every_file_generation_first(tmp_path: Path) -> None:
    log = run_tiny(tmp_path)
    order = [m.group(1) for m in re.finditer(r"^== ([\w-]+) \(limit", log, flags=re.MULTILINE)]
    assert order[:4] == ["generation-7b", "generation-deepseek-v3", "doctor", "cairn_doctor"]
    assert "gpu-tests" in order
    assert order[-2:] == ["dense", "embed"]
    for name in ("generation-7b", "generation-deepseek-v3", "doctor", "gpu-tests", "dense", "embed"):
        assert f"== {name}: rc=0" in log
    gen = json.loads((tmp_path / "gen.json").read_text())
    assert gen["arch"] == "qwen2-7b" and [r["concurrency"] for r in gen["rows"]] == [1, 4]
    v3 = json.loads((tmp_path / "deepseekv3.json").read_text())
    assert v3["config"]["model_type"] == "deepseek_v3" and all(r["tokens"] == r["expected"] for r in v3["rows"])
    doctor = json.loads((tmp_path / "doctor.json").read_text())
    assert doctor["model"]["parameters"] == 7_615_616_512 and len(doctor["reference_fits"]) == 9
    assert "skipped" in (tmp_path / "gpu-tests.txt").read_text()  # no CUDA here
    assert json.loads((tmp_path / "dense.json").read_text()) and json.loads((tmp_path / "embed.json").read_text())
    # At most 8 files come back from the accelerator machine; this run writes 7.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "deepseekv3.json", "dense.json", "doctor.json", "embed.json", "gen.json", "gpu-tests.txt", "run.log"]
