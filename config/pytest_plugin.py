"""Test-wide environment, set before Django reads its settings (loaded with -p).

Loaded as a plugin from pyproject's addopts, so it runs before pytest-django
imports the settings module.

Each test session gets its own data directory; services are exercised
synchronously ("inline" tasks) except in the end-to-end tests, which start
real server and worker processes of their own.
"""

import os
import tempfile

import pytest

_data = tempfile.mkdtemp(prefix="cairn-test-")
os.environ["CAIRN_DATA_DIR"] = _data
os.environ.setdefault("CAIRN_TASKS", "inline")
os.environ.pop("DATABASE_URL", None)
# Opt-in: run (part of) the suite against PostgreSQL, still in personal mode
# (tests/access/test_postgres.py does this for the permission tests).
if os.environ.get("CAIRN_TEST_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["CAIRN_TEST_DATABASE_URL"]
os.environ.pop("CAIRN_REDIS_URL", None)
os.environ.pop("REDIS_URL", None)
os.environ["CAIRN_MODE"] = "personal"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One BLAS/OpenMP thread per process: the end-to-end tests run several
# processes (server, workers, the test itself) on few cores, and torch's
# thread pools oversubscribed that way were ~20x slower per small batch.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (its own modifyitems hook)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each module one pytest-xdist group unless it names one; ``gpu`` tests skipped without CUDA.

    ``make test PYTEST_WORKERS=2`` runs the suite in two pytest-xdist workers
    with ``--dist loadgroup``: a module stays on one worker, so its
    module-scoped servers and browsers start once, and modules that use the
    machine's Redis at fixed database numbers name the group ``redis-6379``
    and run one after another.  (Without ``-n`` the groups change nothing.)
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.device_count() > 0:  # NVML: does not initialise CUDA before tests that fork
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch sees none)")
    for item in gpu_items:
        item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse a ``--dist loadgroup`` run in which pytest-xdist could not group the tests.

    pytest-xdist marks an item's group by appending ``@group`` to its node id;
    where pytest ignores that (pytest 9.2 with pytest-xdist 3.8) every test is
    scheduled on its own, a module's module-scoped servers start in both
    workers and the modules sharing the machine's Redis run at the same time,
    taking each other's Celery messages.  Better no run than that one.
    """
    config = session.config
    if not hasattr(config, "workerinput") or not config.getvalue("loadgroup"):
        return
    ungrouped = [item.nodeid for item in session.items
                 if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist's --dist loadgroup did not group {len(ungrouped)} tests (e.g. {ungrouped[0]}): this "
            "pytest and pytest-xdist do not work together; install the versions in requirements.lock."
        )
