"""deploy/systemd: `systemd-analyze verify` passes on every unit (the test creates the interpreter path the
units name, and removes it after), and each service runs as the dedicated user with the hardening options."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.processes import ROOT

UNITS = ROOT / "deploy" / "systemd"
PYTHON = Path("/opt/cairn/venv/bin/python")
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
             "CapabilityBoundingSet": "", "User": "cairn"}


def _units() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".target"))


@pytest.fixture
def interpreter_path():
    """/opt/cairn/venv/bin/python, which the units start, for the duration of the test."""
    if PYTHON.exists():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip(f"{PYTHON} is missing and only root may create it")
    created = [p for p in (Path("/opt/cairn"), Path("/opt/cairn/venv"), Path("/opt/cairn/venv/bin")) if not p.exists()]
    PYTHON.parent.mkdir(parents=True, exist_ok=True)
    PYTHON.symlink_to(sys.executable)
    try:
        yield
    finally:
        PYTHON.unlink()
        for path in reversed(created):
            path.rmdir()


def test_systemd_analyze_verify_passes(interpreter_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    done = subprocess.run([tool, "verify", *map(str, _units())], capture_output=True, text=True, cwd=UNITS)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_services_are_hardened_and_take_secrets_as_credentials():
    services = [p for p in _units() if p.suffix == ".service"]
    assert {p.name for p in services} == {"cairn-web.service", "cairn-worker@.service", "cairn-beat.service",
                                          "cairn-migrate.service"}
    for path in services:
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
        unit.read_string(path.read_text())
        service = unit["Service"]
        for key, value in HARDENING.items():
            assert service.get(key) == value, (path.name, key)
        assert "/opt/cairn/app/manage.py" in service["ExecStart"]
        assert "CAIRN_SECRET_KEY_FILE=%d/secret_key" in path.read_text()
        assert "CAIRN_SECRET_KEY=" not in path.read_text().replace("CAIRN_SECRET_KEY_FILE=", "")
    env = (UNITS / "cairn.env.example").read_text()
    assert "SECRET" not in env and "PASSWORD" not in env and "DATABASE_URL" not in env
