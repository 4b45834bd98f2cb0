"""Many processes and threads appending to the audit log at once still make one chain (PostgreSQL).

``audit_record`` takes no lock: each writer hashes onto the head it read,
and the unique constraint on ``prev_hash`` turns a lost race into a retry.
Real processes on a real PostgreSQL database, some writers inside a
transaction of their own (as services write events with their changes), one
retention purge in the middle of it all.
"""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from tests.access.test_audit_postgres import pg_database  # noqa: F401 (a fixture)
from tests.e2e.processes import ROOT, child_env, manage, run_manage

pytestmark = [pytest.mark.team]

WRITER = r"""
import threading
from django.db import connections, transaction
from access import services
from access.services import SYSTEM, audit_record

if GROUPING:  # as a web process does: events outside a transaction go through the appender thread
    services.audit_group_commit()

def write(thread):
    for i in range(EVENTS):
        if i % 5 == 0:
            with transaction.atomic():  # an event written with a change, inside the caller's transaction
                audit_record(actor=SYSTEM, action="kb.upload", target_id=f"{PROCESS}-{thread}-{i}")
        else:
            audit_record(actor=SYSTEM, action="kb.search", target_id=f"{PROCESS}-{thread}-{i}")
    connections.close_all()

threads = [threading.Thread(target=write, args=(t,)) for t in range(THREADS)]
for t in threads: t.start()
for t in threads: t.join()
if GROUPING:
    print("GROUPED", services._group_appender.batches, services._group_appender.events)
"""

CHECK = r"""
import json
from django.db.models import Count
from access.models import AuditEvent
from access.audit_review import audit_chain_check
forks = AuditEvent.objects.values("prev_hash").annotate(n=Count("id")).filter(n__gt=1).count()
report = audit_chain_check()
written = list(AuditEvent.objects.filter(action__in=["kb.search", "kb.upload"]).values_list("target_id", flat=True))
retention_events = AuditEvent.objects.filter(action="audit.retention").count()
print("RESULT " + json.dumps({"ok": report.ok, "report": str(report)[:2000], "forks": forks, "written": len(written),
                              "distinct": len(set(written)), "retention_events": retention_events}))
"""

PURGE = r"""
import datetime as dt, time
from django.utils import timezone
from access.services import audit_retention_purge
removed = 0
for _ in range(PURGES):
    removed += audit_retention_purge(now=timezone.now() + dt.timedelta(days=365 * 7 + 2), years=7).removed
    time.sleep(0.05)
print("RESULT", removed)
"""


def test_concurrent_appends_from_processes_and_threads_make_one_chain(pg_database, tmp_path):  # noqa: F811
    env = child_env(DATABASE_URL=pg_database, CAIRN_SECRET_KEY=secrets.token_urlsafe(40),
                    CAIRN_ALLOWED_HOSTS="127.0.0.1", CAIRN_TASKS="inline", CAIRN_DATA_DIR=str(tmp_path))
    processes, threads, events = 4, 6, 60
    # Half the processes append as the web does (one appender thread, events in groups), half lock-free.
    writers = [
        subprocess.Popen(manage("shell", "-c", WRITER.replace("PROCESS", str(p)).replace("THREADS", str(threads))
                                .replace("EVENTS", str(events)).replace("GROUPING", str(p % 2 == 0))),
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for p in range(processes)
    ]
    # Retention purges (each removes every event so far) while they write.
    purges = 15
    removed = int(run_manage(env, "shell", "-c", PURGE.replace("PURGES", str(purges))).split("RESULT")[-1])
    grouped = []
    for writer in writers:
        output, _ = writer.communicate(timeout=300)
        assert writer.returncode == 0, output
        grouped += [tuple(map(int, x.split()[1:])) for x in output.splitlines() if x.startswith("GROUPED ")]
    # The grouped processes wrote their events outside transactions (4 in 5) in fewer transactions than events.
    assert len(grouped) == processes // 2, grouped
    for batches, written in grouped:
        assert written == threads * events * 4 // 5 and batches < written, grouped
    line = next(x for x in run_manage(env, "shell", "-c", CHECK).splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["ok"] and result["forks"] == 0, result
    # Every event is in the chain exactly once, or was removed by the purge: none lost, none doubled.
    assert result["written"] == result["distinct"], result
    # Each purge removed every event before it, the earlier purges' own events among them.
    removed_writes = removed - (purges - result["retention_events"])
    assert result["written"] + removed_writes == processes * threads * events, (result, removed)


FORKS = r"""
import datetime as dt
from django.db import IntegrityError, transaction
from django.utils import timezone
from access.models import AuditEvent
from access.services import SYSTEM, audit_record, audit_retention_purge

def attempt(prev):
    fork = AuditEvent(at=timezone.now(), action="kb.search", target_id="fork", prev_hash=prev, hash=prev[::-1])
    try:
        with transaction.atomic():
            fork.save()
        return "saved"
    except IntegrityError:
        return "refused"

first = audit_record(actor=SYSTEM, action="kb.search", target_id="a")
second = audit_record(actor=SYSTEM, action="kb.search", target_id="b")
results = [attempt(first.hash)]  # a second successor of the first event
# A writer that read the head (second) before a purge removed it: its link vanished with the purge.
audit_retention_purge(now=timezone.now() + dt.timedelta(days=365 * 7 + 2), years=7)
results.append(attempt(second.hash))
results.append(attempt(first.hash))
print("RESULT", " ".join(results))
"""


def test_a_fork_is_refused_even_onto_an_event_a_purge_removed(pg_database, tmp_path):  # noqa: F811
    env = child_env(DATABASE_URL=pg_database, CAIRN_SECRET_KEY=secrets.token_urlsafe(40),
                    CAIRN_ALLOWED_HOSTS="127.0.0.1", CAIRN_TASKS="inline", CAIRN_DATA_DIR=str(tmp_path))
    assert "RESULT refused refused refused" in run_manage(env, "shell", "-c", FORKS)


@pytest.mark.django_db(transaction=True)
def test_on_sqlite_too_a_fork_is_refused():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(FORKS, {})
    assert "RESULT refused refused refused" in out.getvalue()
