"""On PostgreSQL the trigger refuses raw UPDATE/DELETE of audit rows except the retention purge's own.

Runs the real migrations on a temporary database and the real services in
a child process (the rest of the suite runs on SQLite).
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.e2e.pg import create_migrated_database, drop_database
from tests.e2e.processes import child_env, run_manage

pytestmark = [pytest.mark.team]

PG = "postgres://postgres@127.0.0.1:5432"

SCRIPT = r"""
import datetime as dt, json
from django.db import connection, transaction
from access.models import AuditEvent
from access.services import SYSTEM, audit_record, audit_retention_purge
from access.audit_review import audit_chain_check

def refused(*statements):
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)
    except Exception as exc:
        return str(exc).splitlines()[0]
    return None

made = [audit_record(actor=SYSTEM, action="kb.search", target_id=i) for i in range(5)]
out = {
    "update": refused(("UPDATE access_auditevent SET target_id = 'x' WHERE id = %s", [made[0].pk])),
    "delete": refused(("DELETE FROM access_auditevent WHERE id = %s", [made[0].pk])),
    "old_switch": refused(("SET LOCAL cairn.audit_retention = 'on'", []),
                          ("DELETE FROM access_auditevent WHERE id = %s", [made[0].pk])),
    "beyond_through": refused(("SELECT set_config('cairn.audit_purge_through', %s, true)", [str(made[0].pk)]),
                              ("DELETE FROM access_auditevent WHERE id = %s", [made[3].pk])),
}
now = made[1].at.replace(year=made[1].at.year + 7) + dt.timedelta(microseconds=1)
result = audit_retention_purge(now=now, years=7)
with connection.cursor() as cursor:
    cursor.execute("SELECT current_setting('cairn.audit_purge_through', true)")
    out["setting_after"] = cursor.fetchone()[0]
out["removed"] = result.removed
out["remaining"] = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
out["chain_ok"] = audit_chain_check().ok
out["delete_after_purge"] = refused(("DELETE FROM access_auditevent WHERE id = %s", [made[2].pk]))
print("RESULT " + json.dumps(out))
"""


@pytest.fixture
def pg_database():
    """The URL of a PostgreSQL database of this test's own, migrated (tests/e2e/pg.py)."""
    import psycopg

    name = f"cairn_audit_{secrets.token_hex(4)}"
    try:
        url = create_migrated_database(name)
    except psycopg.OperationalError as exc:
        pytest.fail(f"this test needs PostgreSQL on 127.0.0.1:5432: {exc}")
    try:
        yield url
    finally:
        drop_database(name)


def test_the_trigger_lets_only_the_retention_purge_delete(pg_database, tmp_path):
    env = child_env(DATABASE_URL=pg_database, CAIRN_SECRET_KEY=secrets.token_urlsafe(40),
                    CAIRN_ALLOWED_HOSTS="127.0.0.1", CAIRN_TASKS="inline", CAIRN_DATA_DIR=str(tmp_path))

    output = run_manage(env, "shell", "-c", SCRIPT)
    out = json.loads(output.split("RESULT ", 1)[1])

    for key in ("update", "delete", "old_switch", "beyond_through", "delete_after_purge"):
        assert out[key] and "append-only" in out[key], (key, out[key])
    assert out["removed"] == 2 and out["chain_ok"] is True
    assert out["remaining"] == ["kb.search"] * 3 + ["audit.retention"]
    assert not out["setting_after"]  # the permission ended with the purge's transaction
    run_manage(env, "cairn_audit_verify")
