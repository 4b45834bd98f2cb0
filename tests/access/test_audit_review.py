"""Audit review: who may see it, filters, pagination, exports (CSV/JSONL), the REST endpoint."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from django.test import Client
from django.utils import timezone

from access.models import AuditEvent, User
from access.services import Actor, api_key_create, audit_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return {
        "admin": User.objects.create_user("ada", role=User.Role.ADMIN),
        "auditor": User.objects.create_user("aud", role=User.Role.AUDITOR),
        "member": User.objects.create_user("mem", role=User.Role.MEMBER),
    }


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def seed(people) -> None:
    alice = Actor(user=people["member"], ip="10.0.0.7", request_id="req-seed-0001")
    audit_record(actor=alice, action="auth.login", target_type="user", target_id=people["member"].pk)
    audit_record(actor=alice, action="kb.search", target_type="collection", target_id="3",
                 detail={"chunks_served": [11, 12]})
    audit_record(actor=alice, action="access.denied", target_type="document", target_id="99",
                 outcome=AuditEvent.Outcome.DENIED, rule="not readable")
    audit_record(actor=Actor(user=people["admin"]), action="document.upload", target_type="document",
                 target_id="5", detail={"version": 1})


def denied_events(target_type: str = "audit_log") -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="access.denied", target_type=target_type))


# --- who may review ---------------------------------------------------------------------


def test_a_member_gets_the_404_page_and_the_attempt_is_logged_as_denied(people):
    member = client_for(people["member"])

    for url in ("/audit/", "/audit/1/", "/audit/export.csv"):
        response = member.get(url)
        assert response.status_code == 404
        assert b"Not found" in response.content and b"Audit log" not in response.content

    denials = denied_events()
    assert len(denials) == 3
    assert all(e.actor_id == people["member"].pk and e.outcome == "denied" and e.rule for e in denials)


def test_an_auditor_sees_the_list_and_the_nav_link_while_a_member_sees_no_link(people):
    seed(people)

    page = client_for(people["auditor"]).get("/audit/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-role="nav-audit"' in body and "kb.search" in body and "document.upload" in body
    assert b'data-role="nav-audit"' not in client_for(people["member"]).get("/").content


def test_an_admin_may_review_too(people):
    seed(people)
    assert client_for(people["admin"]).get("/audit/").status_code == 200


def test_the_rest_endpoint_is_for_reviewers_only(people):
    seed(people)
    _, member_secret = api_key_create(user=people["member"], name="m", actor=Actor(user=people["member"]))
    _, auditor_secret = api_key_create(user=people["auditor"], name="a", actor=Actor(user=people["auditor"]))

    refused = Client().get("/api/v1/audit", HTTP_AUTHORIZATION=f"Bearer {member_secret}")
    allowed = Client().get("/api/v1/audit", HTTP_AUTHORIZATION=f"Bearer {auditor_secret}")

    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert len(denied_events()) == 1
    assert allowed.status_code == 200
    assert {"kb.search", "document.upload"} <= {e["action"] for e in allowed.json()["results"]}


# --- filters and pages ------------------------------------------------------------------


def listed_ids(client: Client, **params) -> list[int]:
    response = client.get("/audit/", params)
    assert response.status_code == 200, response.content
    return [e.pk for e in response.context["page"]]


def test_filters_by_actor_action_target_outcome_and_time(people):
    seed(people)
    auditor = client_for(people["auditor"])
    by_action = {e.action: e.pk for e in AuditEvent.objects.all()}

    assert listed_ids(auditor, actor="ada") == [by_action["document.upload"]]
    assert listed_ids(auditor, actor=str(people["admin"].pk)) == [by_action["document.upload"]]
    assert listed_ids(auditor, action="kb.search") == [by_action["kb.search"]]
    assert set(listed_ids(auditor, action="kb.*")) == {by_action["kb.search"]}
    assert listed_ids(auditor, target="document:99") == [by_action["access.denied"]]
    assert listed_ids(auditor, outcome="denied") == [by_action["access.denied"]]
    tomorrow = (timezone.localdate() + dt.timedelta(days=1)).isoformat()
    assert listed_ids(auditor, since=tomorrow) == []
    assert len(listed_ids(auditor, until=timezone.localdate().isoformat())) == AuditEvent.objects.count()


def test_a_malformed_filter_is_a_400_with_a_message_not_a_500(people):
    auditor = client_for(people["auditor"])

    response = auditor.get("/audit/", {"since": "last tuesday"})

    assert response.status_code == 400 and b"since: use a date" in response.content
    api = Client(REMOTE_ADDR="10.1.2.3")
    api.force_login(people["auditor"])
    body = api.get("/api/v1/audit", {"outcome": "maybe"})
    assert body.status_code == 400 and body.json()["error"]["code"] == "invalid"


def test_the_list_is_paginated_newest_first(people):
    actor = Actor(user=people["member"])
    for i in range(120):
        audit_record(actor=actor, action="kb.search", target_id=i)
    auditor = client_for(people["auditor"])

    first = auditor.get("/audit/").context["page"]
    third = auditor.get("/audit/", {"page": 3}).context["page"]

    assert first.paginator.num_pages == 3 and len(first) == 50 and len(third) == 20
    assert list(first)[0].target_id == "119" and list(third)[-1].target_id == "0"


def test_the_rest_endpoint_pages_with_a_cursor(people):
    actor = Actor(user=people["member"])
    for i in range(7):
        audit_record(actor=actor, action="kb.ask", target_id=i)
    api = Client(REMOTE_ADDR="10.1.2.3")
    api.force_login(people["auditor"])

    seen: list[str] = []
    url = "/api/v1/audit?action=kb.ask&page_size=3"
    while url:
        body = api.get(url).json()
        seen += [e["target_id"] for e in body["results"]]
        url = body["next"]
    assert seen == [str(i) for i in reversed(range(7))]


# --- the event page ---------------------------------------------------------------------


def test_an_answer_event_shows_the_chunks_it_served_and_says_when_one_was_purged(people):
    from kb.models import Chunk, Collection, Document, DocumentVersion

    owner = people["member"]
    collection = Collection.objects.create(name="Policies", owner=owner)
    document = Document.objects.create(collection=collection, title="Leave policy.pdf", created_by=owner)
    version = DocumentVersion.objects.create(document=document, number=1, sha256="0" * 64, size=1, created_by=owner)
    Chunk.objects.create(id=501, version=version, document=document, ordinal=0, page=4,
                         text="Parental leave is sixteen weeks at full pay.", char_start=0, char_end=44,
                         token_count=9)
    event = audit_record(actor=Actor(user=owner), action="kb.ask", target_id="*",
                         detail={"chunks_served": [501, 777], "chunks_cited": [501]})

    page = client_for(people["auditor"]).get(f"/audit/{event.pk}/")

    assert page.status_code == 200
    body = page.content.decode()
    assert "Leave policy.pdf" in body and "Page 4" in body and "sixteen weeks" in body
    assert 'data-chunk-id="777"' in body and "Purged since" in body
    assert AuditEvent.objects.filter(action="audit.view", target_id=str(event.pk)).exists()


# --- export -----------------------------------------------------------------------------


def streamed(response) -> str:
    assert response.status_code == 200 and response.streaming
    return b"".join(response.streaming_content).decode("utf-8")


def test_csv_export_parses_back_to_the_filtered_events_and_is_itself_audited(people):
    seed(people)
    auditor = client_for(people["auditor"])

    response = auditor.get("/audit/export.csv", {"outcome": "allowed"})

    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(streamed(response))))
    expected = AuditEvent.objects.filter(outcome="allowed", action__in=["auth.login", "kb.search", "document.upload"])
    assert [int(r["id"]) for r in rows] == sorted(expected.values_list("id", flat=True))
    search = next(r for r in rows if r["action"] == "kb.search")
    assert json.loads(search["detail"]) == {"chunks_served": [11, 12]} and search["ip"] == "10.0.0.7"
    export = AuditEvent.objects.get(action="audit.export")
    assert export.actor_id == people["auditor"].pk
    assert export.detail["format"] == "csv" and export.detail["rows"] == 3
    assert export.detail["filters"] == {"outcome": "allowed"}


def test_jsonl_export_has_one_event_per_line_with_its_hashes(people, monkeypatch):
    from access import audit_review

    monkeypatch.setattr(audit_review, "EXPORT_BATCH", 3)  # several keyset batches
    seed(people)

    text = streamed(client_for(people["admin"]).get("/audit/export.jsonl"))

    events = [json.loads(line) for line in text.splitlines()]
    stored = list(AuditEvent.objects.exclude(action="audit.export").order_by("id"))
    assert [e["id"] for e in events] == [e.pk for e in stored]
    assert [e["hash"] for e in events] == [e.hash for e in stored]
    assert events[0]["at"] == stored[0].at.isoformat()


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_quoted(people):
    actor = Actor(user=people["member"])
    for payload in ("=HYPERLINK(\"http://evil\")", "+1+1", "-2", "@SUM(A1)"):
        audit_record(actor=actor, action="auth.login_failed", target_type="user", target_id=payload,
                     outcome=AuditEvent.Outcome.DENIED, rule=payload)

    rows = list(csv.DictReader(io.StringIO(streamed(client_for(people["auditor"]).get("/audit/export.csv")))))

    failed = [r for r in rows if r["action"] == "auth.login_failed"]
    assert len(failed) == 4
    for row in failed:
        assert row["target_id"].startswith("'") and row["rule"].startswith("'")
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row.values())


def test_an_unknown_export_format_is_a_404(people):
    assert client_for(people["auditor"]).get("/audit/export.xlsx").status_code == 404


def test_under_asgi_the_export_is_streamed_by_an_async_iterator(people, monkeypatch):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    from access import audit_review

    monkeypatch.setattr(audit_review, "EXPORT_BATCH", 2)  # several keyset batches
    seed(people)
    client = AsyncClient()
    client.force_login(people["auditor"])

    async def fetch() -> tuple[bool, bytes]:
        response = await client.get("/audit/export.jsonl")
        assert response.status_code == 200
        return response.is_async, b"".join([part async for part in response.streaming_content])

    is_async, body = async_to_sync(fetch)()

    assert is_async
    ids = [json.loads(line)["id"] for line in body.decode().splitlines()]
    assert ids == list(AuditEvent.objects.exclude(action="audit.export").order_by("id").values_list("id", flat=True))
