"""A team web worker's start (config/asgi.py): what it loads before its first request, and what it exempts."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_REPORT = """
import gc, json
import config.asgi
from kb.api import views
young = {id(o) for o in gc.get_objects()}  # what the cyclic collector still walks (not the frozen)
print("REPORT " + json.dumps({
    "views_walked": id(views.SearchView) in young or id(views.__dict__) in young,
    "frozen": gc.get_freeze_count(),
    "walked": len(young),
}))
"""


def test_a_team_worker_exempts_its_views_and_modules_from_the_cyclic_collector(tmp_path: Path) -> None:
    """Every module a request imports (the URLs, views, serializers) lives as long as the process; left to the
    collector, each full collection under load walked them again (70–130 ms in which every request of the worker
    stood still).  The warm-up loads the URLs and then freezes what is alive — even when the model or the index
    cannot load (here: no database), since the modules are there either way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", CAIRN_DATA_DIR=str(tmp_path),
               DATABASE_URL="postgres://cairn@127.0.0.1:9/unused", CAIRN_REDIS_URL="redis://127.0.0.1:9/0",
               CAIRN_SECRET_KEY=secrets.token_urlsafe(50), CAIRN_ALLOWED_HOSTS="localhost", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", _REPORT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(lines[-1].removeprefix("REPORT "))
    assert not report["views_walked"], report
    assert report["walked"] < report["frozen"] / 10, report  # what stays to walk is what requests make
