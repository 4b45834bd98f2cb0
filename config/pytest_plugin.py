"""Test-wide environment, set before Django reads its settings (loaded with -p).

Loaded as a plugin from pyproject's addopts, so it runs before pytest-django
imports the settings module.

Each test session gets its own data directory; services are exercised
synchronously ("inline" tasks) except in the end-to-end tests, which start
real server and worker processes of their own.
"""

import os
import tempfile

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
