"""The audit log is append-only and its hash chain exposes any edit."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from access.models import AuditEvent, User
from access.services import SYSTEM, Actor, api_key_authenticate, api_key_create, audit_record

pytestmark = pytest.mark.django_db


def _events(n: int) -> list[AuditEvent]:
    user = User.objects.create_user("alice")
    return [
        audit_record(actor=Actor(user=user, ip="127.0.0.1"), action="kb.search", target_type="collection",
                     target_id=i, detail={"chunks_served": [i, i + 1]})
        for i in range(n)
    ]


def test_each_event_links_to_the_previous_one():
    events = _events(3)
    assert events[1].prev_hash == events[0].hash and events[2].prev_hash == events[1].hash
    call_command("cairn_audit_verify")


def test_the_orm_refuses_to_change_or_delete_audit_rows():
    event = _events(1)[0]
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()


def test_editing_a_row_directly_in_the_database_is_detected_at_that_row():
    events = _events(4)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE access_auditevent SET target_id = %s WHERE id = %s", ["999", events[2].pk])
    with pytest.raises(CommandError, match=f"broken at event {events[2].pk}.*edited"):
        call_command("cairn_audit_verify")


def test_removing_a_row_directly_in_the_database_is_detected_after_the_gap():
    events = _events(4)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM access_auditevent WHERE id = %s", [events[1].pk])
    with pytest.raises(CommandError, match=f"broken at event {events[2].pk}.*removed or inserted"):
        call_command("cairn_audit_verify")


def test_api_keys_store_only_a_hash_and_log_only_the_prefix():
    user = User.objects.create_user("bob")
    key, secret = api_key_create(user=user, name="ci", actor=SYSTEM)
    assert secret not in key.key_hash and secret.startswith("cairn_")
    assert api_key_authenticate(secret) == key
    assert api_key_authenticate(secret + "x") is None
    logged = AuditEvent.objects.get(action="api_key.create")
    assert logged.target_id == key.prefix and secret not in str(logged.detail)


def test_api_key_last_use_is_kept_to_the_minute_without_a_write_per_request():
    import datetime as dt

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from access.models import ApiKey

    key, secret = api_key_create(user=User.objects.create_user("carol"), name="ci", actor=SYSTEM)
    assert key.last_used_at is None
    api_key_authenticate(secret)
    first = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first is not None and timezone.now() - first < dt.timedelta(seconds=5)
    with CaptureQueriesContext(connection) as queries:
        api_key_authenticate(secret)
    assert not [q for q in queries if q["sql"].startswith("UPDATE")]
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=first - dt.timedelta(minutes=2))
    api_key_authenticate(secret)
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first - dt.timedelta(seconds=1)


def test_the_group_appender_hands_each_request_its_error_and_goes_on(monkeypatch):
    """The web process's appender thread (access.services._GroupAppender), its database write replaced."""
    import threading
    import time

    from django.db import OperationalError

    from access.services import _GroupAppender

    appender = _GroupAppender()
    written: list[list[str]] = []
    failing = threading.Event()

    def write(events):  # type: ignore[no-untyped-def]
        time.sleep(0.02)  # a round trip: appends that arrive meanwhile wait for the next group
        if failing.is_set():
            raise OperationalError("the database is away")
        written.append([e.target_id for e in events])

    monkeypatch.setattr(appender, "_write", write)
    failing.set()
    with pytest.raises(OperationalError, match="away"):  # the same class, so the API still answers 503
        appender.append(AuditEvent(target_id="lost"))
    failing.clear()
    # The thread survived the error; twenty requests at once are written in fewer groups, each exactly once.
    threads = [threading.Thread(target=appender.append, args=(AuditEvent(target_id=str(i)),)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(sum(written, []), key=int) == [str(i) for i in range(20)]
    assert len(written) < 20, written


def test_an_event_the_database_refuses_fails_only_its_own_request(monkeypatch):
    import threading
    import time

    from django.db import DataError

    from access.services import _GroupAppender

    appender = _GroupAppender()
    written: list[str] = []

    def write(events):  # type: ignore[no-untyped-def]
        time.sleep(0.02)
        if any(e.target_id == "bad" for e in events):
            raise DataError("value too long")  # the whole statement is refused
        written.extend(e.target_id for e in events)

    monkeypatch.setattr(appender, "_write", write)
    outcomes: dict[str, str] = {}

    def request(target: str) -> None:
        try:
            appender.append(AuditEvent(target_id=target))
            outcomes[target] = "written"
        except DataError:
            outcomes[target] = "refused"

    threads = [threading.Thread(target=request, args=(t,)) for t in ["a", "b", "bad", "c", "d", "e"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert outcomes == {"a": "written", "b": "written", "bad": "refused", "c": "written", "d": "written",
                        "e": "written"}
    assert sorted(written) == ["a", "b", "c", "d", "e"]
