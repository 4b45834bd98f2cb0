"""A team web process gives each request ``CAIRN_QUERY_THREADS`` native threads (kb.serving.limit_query_threads)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.processes import team_process_report

# Runs ``manage.py cairn_web`` through Django's command line — system checks included, which import the URLs
# and with them FAISS — with ``handle`` replaced by a report of the thread pools a new thread (as each request
# runs in) would get.
_REPORT = """
import json, sys, threading
from kb.management.commands import cairn_web

def handle(self, *args, **options):
    loaded_by_checks = "faiss" in sys.modules
    import faiss, threadpoolctl
    seen = {}
    def look():
        seen["faiss_openmp"] = faiss.omp_get_max_threads()
        seen["openmp"] = sorted({i["num_threads"] for i in threadpoolctl.threadpool_info()
                                 if i["internal_api"] == "openmp"})
    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    print("REPORT " + json.dumps({"loaded_by_checks": loaded_by_checks, **seen}))

cairn_web.Command.handle = handle
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", "cairn_web"])
"""


def test_cairn_web_sets_the_thread_pools_before_its_checks_load_faiss(tmp_path: Path) -> None:
    """FAISS's OpenMP reads its thread count once, as it loads, and gives it to every new thread.  cairn_web's
    system checks load it before config/asgi.py ran: a single-worker team web process searched with one OpenMP
    thread per core in every request (29 ms of CPU per search instead of 15).  3 is no core count of a test host
    here, so the figure can only come from CAIRN_QUERY_THREADS.  (torch, loaded later by the warm-up, is set by
    config/asgi.py; it caps its own pool at the cores.)"""
    report = team_process_report(_REPORT, tmp_path, CAIRN_QUERY_THREADS="3")
    assert report["loaded_by_checks"], report  # the order this test is about
    assert report["faiss_openmp"] == 3, report
    assert report["openmp"] == [3], report  # every OpenMP runtime loaded so far
