"""``make test PYTEST_WORKERS=2`` keeps each xdist group on one worker (config/pytest_plugin.py).

The team-shape modules share the machine's Redis at fixed database numbers
and start module-scoped servers; split over two workers, two stacks ran at
once on one database and took each other's Celery messages (pytest 9.2 with
pytest-xdist 3.8 silently ignored every group).  This runs a small suite in
two real xdist workers, with the project's plugin, and reads who ran what.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GROUPED = '''
import pytest
pytestmark = pytest.mark.xdist_group("shared")
def test_one(): pass
def test_two(): pass
'''
PLAIN = '''
def test_one(): pass
def test_two(): pass
def test_three(): pass
'''


def test_a_group_and_a_module_each_run_on_one_worker(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"test_grouped_{name}.py").write_text(GROUPED)
    for name in ("d", "e", "f", "g"):
        (tmp_path / f"test_plain_{name}.py").write_text(PLAIN)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "config.pytest_plugin", "-p", "no:cacheprovider", "-n", "2",
         "--dist", "loadgroup", "-v", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    ran = re.findall(r"\[(gw\d)\] .*?PASSED (\S+)", done.stdout)
    assert len(ran) == 3 * 2 + 4 * 3, done.stdout[-3000:]
    workers: dict[str, set[str]] = {}
    for worker, nodeid in ran:
        group = "shared" if "test_grouped_" in nodeid else nodeid.split("::", 1)[0]
        workers.setdefault(group, set()).add(worker)
    assert all(len(on) == 1 for on in workers.values()), workers
    assert len({w for on in workers.values() for w in on}) == 2  # and both workers did work
