"""A team web worker's start (config/asgi.py): what it loads before its first request, and what it exempts."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.processes import team_process_report

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
    report = team_process_report(_REPORT, tmp_path)
    assert not report["views_walked"], report
    assert report["walked"] < report["frozen"] / 10, report  # what stays to walk is what requests make
