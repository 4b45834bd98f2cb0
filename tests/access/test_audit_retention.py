"""Retention removes old audit events without breaking the chain, and says so in the log."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from access.audit_review import audit_chain_check
from access.models import AuditEvent, User
from access.services import Actor, audit_record, audit_retention_purge, retention_cutoff

pytestmark = pytest.mark.django_db


def events(n: int) -> list[AuditEvent]:
    user = User.objects.create_user("rita")
    return [audit_record(actor=Actor(user=user), action="kb.search", target_id=i) for i in range(n)]


def years_after(moment: dt.datetime, years: int) -> dt.datetime:
    return moment.replace(year=moment.year + years) + dt.timedelta(microseconds=1)


def test_events_older_than_the_retention_are_removed_and_the_chain_still_verifies():
    made = events(6)
    # "now" is seven years after the third event: the first three are past retention.
    now = years_after(made[2].at, 7)

    result = audit_retention_purge(now=now, years=7)

    assert result.removed == 3 and result.through_id == made[2].pk
    remaining = list(AuditEvent.objects.order_by("id"))
    assert [e.pk for e in remaining[:3]] == [e.pk for e in made[3:]]
    retention = remaining[-1]
    assert retention.action == "audit.retention" and retention.actor_label == "system"
    assert retention.detail["removed"] == 3 and retention.detail["anchor_hash"] == made[2].hash
    assert retention.detail["cutoff"] == retention_cutoff(now, 7).isoformat()
    assert audit_chain_check().ok
    call_command("cairn_audit_verify")


def test_a_second_run_removes_nothing_more_and_still_verifies():
    made = events(4)
    now = years_after(made[1].at, 7)
    audit_retention_purge(now=now, years=7)

    again = audit_retention_purge(now=now, years=7)

    assert again.removed == 0
    assert AuditEvent.objects.filter(action="audit.retention").count() == 2
    assert audit_chain_check().ok


def test_purging_everything_leaves_the_retention_event_linked_to_the_last_removed_one():
    made = events(3)

    result = audit_retention_purge(now=years_after(made[-1].at, 1), years=1)

    assert result.removed == 3
    only = AuditEvent.objects.get()
    assert only.action == "audit.retention" and only.prev_hash == made[-1].hash
    assert audit_chain_check().ok


def test_zero_years_keeps_everything():
    made = events(3)

    result = audit_retention_purge(now=years_after(made[-1].at, 50), years=0)

    assert result.removed == 0 and result.event is None and AuditEvent.objects.count() == 3


def test_removing_more_old_rows_than_retention_did_is_still_detected():
    made = events(6)
    audit_retention_purge(now=years_after(made[1].at, 7), years=7)

    with connection.cursor() as cursor:  # someone deletes the next oldest row by hand
        cursor.execute("DELETE FROM access_auditevent WHERE id = %s", [made[2].pk])

    report = audit_chain_check()
    assert not report.ok and report.first_broken_id == made[3].pk
    with pytest.raises(CommandError, match=f"broken at event {made[3].pk}.*retention checkpoint"):
        call_command("cairn_audit_verify")


def test_a_prefix_removed_by_hand_without_retention_is_detected():
    made = events(4)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM access_auditevent WHERE id <= %s", [made[1].pk])

    # Running retention afterwards must not bless the gap.
    audit_retention_purge(now=years_after(made[0].at, 7) - dt.timedelta(days=400), years=7)

    with pytest.raises(CommandError, match=f"broken at event {made[2].pk}"):
        call_command("cairn_audit_verify")


def test_editing_the_retention_event_is_detected():
    made = events(4)
    result = audit_retention_purge(now=years_after(made[1].at, 7), years=7)
    assert result.event is not None
    with connection.cursor() as cursor:
        cursor.execute("UPDATE access_auditevent SET detail = %s WHERE id = %s",
                       ['{"removed": 0, "anchor_hash": ""}', result.event.pk])

    report = audit_chain_check()
    assert not report.ok


def test_the_orm_still_refuses_deletes_after_a_purge():
    made = events(3)
    audit_retention_purge(now=years_after(made[0].at, 7), years=7)

    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.first().delete()


def test_the_command_and_the_periodic_task_run_the_same_purge(settings):
    from config.celery import app
    from ingestion import tasks

    settings.CAIRN_AUDIT_RETENTION_YEARS = 7
    events(2)
    tasks.run(tasks.TASK_AUDIT_RETENTION)
    call_command("cairn_audit_retention", "--years", "7")

    assert AuditEvent.objects.filter(action="audit.retention").count() == 2
    assert all(e.detail["removed"] == 0 for e in AuditEvent.objects.filter(action="audit.retention"))
    assert "audit-retention" in app.conf.beat_schedule
    assert app.conf.beat_schedule["audit-retention"]["task"] == tasks.TASK_AUDIT_RETENTION


def test_the_cutoff_is_whole_calendar_years():
    leap = dt.datetime(2028, 2, 29, 12, tzinfo=dt.UTC)
    assert retention_cutoff(leap, 6) == dt.datetime(2022, 2, 28, 12, tzinfo=dt.UTC)
    assert retention_cutoff(dt.datetime(2030, 5, 1, tzinfo=dt.UTC), 7) == dt.datetime(2023, 5, 1, tzinfo=dt.UTC)
