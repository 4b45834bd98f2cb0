"""The audit chain survives the database's round trip, reports every broken link, can be keyed and anchored
outside the database, and cannot be truncated on PostgreSQL (issue 11, item 14)."""

from __future__ import annotations

import json
import secrets

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from access.audit import CANONICAL, KEYED, canonical_json, event_hash, hashed_fields
from access.audit_review import audit_chain_check
from access.models import AuditEvent
from access.services import SYSTEM, audit_anchor_write, audit_record
from tests.access.test_audit_postgres import pg_database  # noqa: F401 (a fixture)
from tests.e2e.processes import child_env, run_manage

HOSTILE_DETAIL = {"huge": 1e308, "tiny": 1e-7, "tenth": 0.1, "whole": 5.0, "big": 10**30, "neg": -0.0,
                  "nan": float("nan"), "nul": "a\x00b", "nested": {"z": [1.5, {"y": 2e20}], "a": None}}


def rewrite(event_id: int, **fields: object) -> None:
    """What someone with raw access to the table does (SQLite has no trigger; the ORM refuses)."""
    sets = ", ".join(f"{name} = %s" for name in fields)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE access_auditevent SET {sets} WHERE id = %s", [*fields.values(), event_id])


def test_numbers_are_hashed_by_value_whatever_text_carries_them():
    assert canonical_json(1e308) == canonical_json(10**308) == "1" + "0" * 308
    assert canonical_json({"b": 0.1, "a": 5.0}) == canonical_json({"a": 5, "b": 0.1}) == '{"a":5,"b":0.1}'
    assert canonical_json(1e-7) == "0.0000001" and canonical_json(-0.0) == "0"


@pytest.mark.django_db
def test_every_broken_link_is_reported_not_only_the_first():
    made = [audit_record(actor=SYSTEM, action="kb.search", target_id=i, detail=HOSTILE_DETAIL) for i in range(6)]
    assert audit_chain_check().ok  # the hostile detail round-trips (NaN and NUL stored as text)

    rewrite(made[1].pk, target_id="edited")
    rewrite(made[4].pk, detail=json.dumps({"removed": 0}))

    report = audit_chain_check()
    assert [b.id for b in report.broken] == [made[1].pk, made[4].pk]
    with pytest.raises(CommandError, match=rf"broken at event {made[1].pk}.*2 findings"):
        call_command("cairn_audit_verify")


@pytest.mark.django_db
def test_a_keyed_chain_cannot_be_rewritten_without_the_key(settings):
    settings.CAIRN_AUDIT_KEY = secrets.token_urlsafe(32)
    made = [audit_record(actor=SYSTEM, action="kb.search", target_id=i) for i in range(4)]
    assert {e.scheme for e in made} == {KEYED} and audit_chain_check().ok

    # Rewrite event 2 and re-hash it and everything after it — without the key, only as plain SHA-256.
    rewrite(made[2].pk, target_id="forged")
    previous = made[1].hash
    for event in AuditEvent.objects.filter(pk__gte=made[2].pk).order_by("id"):
        fresh = event_hash(previous, hashed_fields(event), scheme=CANONICAL)
        rewrite(event.pk, prev_hash=previous, hash=fresh, scheme=CANONICAL)
        previous = fresh

    assert [b.id for b in audit_chain_check().broken] == [made[2].pk, made[3].pk]  # a downgrade, both rows
    settings.CAIRN_AUDIT_KEY = None
    assert audit_chain_check().notes  # without the key the keyed rows are linked, not proven


@pytest.mark.django_db
def test_anchors_outside_the_database_catch_a_rewrite_of_every_later_row(settings, tmp_path):
    settings.CAIRN_AUDIT_ANCHOR_FILE = str(tmp_path / "anchors.jsonl")
    made = [audit_record(actor=SYSTEM, action="kb.search", target_id=i) for i in range(3)]
    assert audit_anchor_write().written and not audit_anchor_write().written  # the same head once
    made += [audit_record(actor=SYSTEM, action="kb.search", target_id=i) for i in range(3, 5)]
    assert audit_anchor_write().written and audit_chain_check().anchors_checked == 2

    # A database superuser rewrites event 1 and recomputes every later hash consistently.
    rewrite(made[1].pk, target_id="forged")
    previous = made[0].hash
    for event in AuditEvent.objects.filter(pk__gte=made[1].pk).order_by("id"):
        fresh = event_hash(previous, hashed_fields(event), scheme=event.scheme)
        rewrite(event.pk, prev_hash=previous, hash=fresh)
        previous = fresh

    report = audit_chain_check()
    assert [b.id for b in report.broken] == [made[2].pk, made[4].pk]  # both anchored heads differ
    assert "anchor" in report.broken[0].reason
    settings.CAIRN_AUDIT_ANCHOR_FILE = None
    assert audit_chain_check().ok  # the chain alone could not tell


PG_SCRIPT = r"""
import json
from django.db import connection
from access.audit_review import audit_chain_check
from access.models import AuditEvent
from access.services import SYSTEM, audit_record
detail = {"huge": 1e308, "tiny": 1e-7, "whole": 5.0, "nan": float("nan"), "nul": "a\x00b", "big": 10**30}
made = [audit_record(actor=SYSTEM, action="kb.search", target_id=i, detail=detail) for i in range(4)]
# Client addresses in forms PostgreSQL's inet writes back differently (a trusted proxy's header, through
# Python's ipaddress): the hash must cover the stored form.
from access.services import Actor
for ip in ["::ffff:102:304", "2001:DB8:0:0:0:0:0:1", "::102:304"]:
    audit_record(actor=Actor(user=None, ip=ip), action="kb.search", target_id="ip")
out = {"clean": audit_chain_check().ok}
with connection.cursor() as cursor:
    cursor.execute("SELECT detail::text FROM access_auditevent WHERE id = %s", [made[0].pk])
    out["stored"] = cursor.fetchone()[0]
    try:
        cursor.execute("TRUNCATE access_auditevent")
        out["truncate"] = None
    except Exception as exc:
        out["truncate"] = str(exc).splitlines()[0]
with connection.cursor() as cursor:  # a superuser edits event 2 behind the triggers' back
    cursor.execute("ALTER TABLE access_auditevent DISABLE TRIGGER USER")
    cursor.execute("UPDATE access_auditevent SET target_id = 'edited' WHERE id = %s", [made[2].pk])
    cursor.execute("ALTER TABLE access_auditevent ENABLE TRIGGER USER")
report = audit_chain_check()
out["broken"] = [b.id - made[0].pk for b in report.broken]
out["ips"] = list(AuditEvent.objects.filter(target_id="ip").order_by("id").values_list("ip", flat=True))
print("RESULT " + json.dumps(out))
"""


@pytest.mark.team
def test_on_postgresql_jsonb_numbers_do_not_break_the_chain_and_truncate_is_refused(pg_database, tmp_path):  # noqa: F811
    env = child_env(DATABASE_URL=pg_database, CAIRN_SECRET_KEY=secrets.token_urlsafe(40),
                    CAIRN_ALLOWED_HOSTS="127.0.0.1", CAIRN_TASKS="inline", CAIRN_DATA_DIR=str(tmp_path))
    out = json.loads(run_manage(env, "shell", "-c", PG_SCRIPT).split("RESULT ", 1)[1])

    assert out["clean"] is True  # 1e308 comes back from jsonb as a 309-digit integer: the same number
    assert "1" + "0" * 308 in out["stored"]
    assert out["truncate"] and "append-only" in out["truncate"]
    assert out["broken"] == [2]  # the real edit, and no false alarm before it
    assert out["ips"] == ["::ffff:1.2.3.4", "2001:db8::1", "::1.2.3.4"]
