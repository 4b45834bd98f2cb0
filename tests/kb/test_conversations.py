"""Conversations: kept per user, follow-ups understood through earlier turns, streamed turns kept, stale citations withheld."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from access.models import AuditEvent, User
from access.services import SYSTEM, api_key_create
from kb.models import ConversationTurn
from tests.kb.conftest import upload
from tests.kb.permission_corpus import one_torch_thread  # noqa: F401
from tests.kb.test_ask_stream import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

LEAVE = (b"Annual leave policy. Full-time employees receive 25 days of paid annual leave each year. "
         b"Part-time employees receive annual leave in proportion to their contracted hours.")
PARKING = b"Parking rules. Staff park in lot B behind the warehouse; visitors use lot A at the gate."


def client_for(username: str) -> APIClient:
    user = User.objects.create(username=username)
    _, secret = api_key_create(user=user, name="tests", actor=SYSTEM)
    client = APIClient(REMOTE_ADDR="192.0.2.70")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    client.user = user  # type: ignore[attr-defined]
    return client


@pytest.fixture
def team(settings, isolated_storage, one_torch_thread):  # noqa: F811 (a fixture)
    settings.CAIRN_MODE = "team"
    alice = client_for("alice")
    collection = alice.post("/api/v1/collections", {"name": "HR"}, format="json").json()["id"]
    for name, text in (("leave.txt", LEAVE), ("parking.txt", PARKING)):
        assert upload(alice, collection, name, text).json()["status"] == "INDEXED"
    return alice, collection


def cited_titles(body: dict) -> set[str]:
    return {c["title"] for c in body["citations"]}


def test_a_follow_up_is_answered_through_the_earlier_question(team):
    alice, collection = team
    conversation = alice.post("/api/v1/conversations", {"collection": collection}, format="json")
    assert conversation.status_code == 201, conversation.content
    cid = conversation.json()["id"]

    first = alice.post(f"/api/v1/conversations/{cid}/messages",
                       {"question": "How many days of annual leave do full-time employees get?"}, format="json")
    assert first.status_code == 200, first.content
    assert first.json()["standalone_question"].startswith("How many days")
    assert "leave.txt" in cited_titles(first.json())

    follow = alice.post(f"/api/v1/conversations/{cid}/messages", {"question": "And part-time?"}, format="json")
    body = follow.json()
    assert follow.status_code == 200 and "annual leave" in body["standalone_question"], body
    assert body["citations"][0]["title"] == "leave.txt", body["citations"]

    kept = alice.get(f"/api/v1/conversations/{cid}").json()
    assert [t["question"] for t in kept["turns"]] == ["How many days of annual leave do full-time employees get?",
                                                      "And part-time?"]
    assert kept["title"].startswith("How many days") and all(t["state"] == "answered" for t in kept["turns"])
    assert kept["turns"][1]["answer"]["citations"][0]["title"] == "leave.txt"
    asks = AuditEvent.objects.filter(action="kb.ask", actor_id=alice.user.pk)
    assert asks.count() == 2 and all(e.detail.get("via") == "conversation" for e in asks)


def test_conversations_are_private_listed_renamed_and_deleted(team):
    alice, collection = team
    bob = client_for("bob")
    cid = alice.post("/api/v1/conversations", {"title": "Leave questions"}, format="json").json()["id"]
    assert [c["title"] for c in alice.get("/api/v1/conversations").json()["results"]] == ["Leave questions"]
    assert bob.get("/api/v1/conversations").json()["results"] == []
    for method, body in (("get", None), ("patch", {"title": "mine now"}), ("delete", None)):
        assert getattr(bob, method)(f"/api/v1/conversations/{cid}", body, format="json").status_code == 404
    assert bob.post(f"/api/v1/conversations/{cid}/messages", {"question": "x?"}, format="json").status_code == 404
    assert bob.post("/api/v1/conversations", {"collection": collection}, format="json").status_code == 404

    assert alice.patch(f"/api/v1/conversations/{cid}", {"title": "Holidays"}, format="json").json()["title"] == \
        "Holidays"
    assert alice.patch(f"/api/v1/conversations/{cid}", {"title": ""}, format="json").status_code == 400
    assert alice.post(f"/api/v1/conversations/{cid}/messages", {"question": ""}, format="json").status_code == 400
    assert alice.delete(f"/api/v1/conversations/{cid}").status_code == 204
    assert alice.get(f"/api/v1/conversations/{cid}").status_code == 404
    actions = [e.action for e in AuditEvent.objects.filter(target_type="conversation")]
    assert {a for a in actions if a.startswith("conversation.")} == {
        "conversation.create", "conversation.rename", "conversation.delete"}
    assert actions.count("access.denied") >= 4  # bob's attempts


def test_a_streamed_turn_is_kept_when_the_stream_ends(team):
    alice, collection = team
    cid = alice.post("/api/v1/conversations", {"collection": collection}, format="json").json()["id"]
    response = alice.post(f"/api/v1/conversations/{cid}/messages",
                          {"question": "Where do visitors park?", "stream": True}, format="json")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    events = sse_events(b"".join(response.streaming_content))
    response.close()
    assert events[0][0] == "start" and events[0][1]["standalone_question"] == "Where do visitors park?"
    assert [name for name, _ in events][-2:] == ["citations", "done"]
    turn = ConversationTurn.objects.get(conversation_id=cid)
    assert turn.state == "answered" and turn.answer["citations"][0]["title"] == "parking.txt"
    assert turn.answer["answer"] == events[-1][1]["answer"]


def test_an_answer_citing_what_you_can_no_longer_read_is_withheld(team):
    alice, collection = team
    bob = client_for("bob")
    assert alice.post(f"/api/v1/collections/{collection}/members", {"user": "bob", "role": "viewer"},
                      format="json").status_code == 200
    cid = bob.post("/api/v1/conversations", {"collection": collection}, format="json").json()["id"]
    answer = bob.post(f"/api/v1/conversations/{cid}/messages", {"question": "Where do staff park?"}, format="json")
    assert answer.status_code == 200 and answer.json()["answer"]
    assert alice.delete(f"/api/v1/collections/{collection}/members/user/bob").status_code == 204

    turn = bob.get(f"/api/v1/conversations/{cid}").json()["turns"][0]
    assert turn["withheld"] >= 1 and turn["answer"]["answer"] == "" and turn["answer"]["citations"] == []
    assert "lot B" not in str(turn)
    # Asking on in the conversation now: the collection is no longer theirs (404, as for anything unseen).
    assert bob.post(f"/api/v1/conversations/{cid}/messages", {"question": "And visitors?"},
                    format="json").status_code == 404


def test_nothing_relevant_is_said_plainly_streamed_or_not_and_kept(team):
    alice, collection = team
    cid = alice.post("/api/v1/conversations", {"collection": collection}, format="json").json()["id"]
    plain = alice.post(f"/api/v1/conversations/{cid}/messages", {"question": "xylophone quantum zebra"},
                       format="json").json()
    assert plain["no_good_match"] is True and plain["citations"] == [] and "No good match" in plain["answer"]
    response = alice.post(f"/api/v1/conversations/{cid}/messages",
                          {"question": "zeppelin marmalade tensor", "stream": True}, format="json")
    events = sse_events(b"".join(response.streaming_content))
    response.close()
    assert [name for name, _ in events] == ["start", "token", "citations", "done"]
    assert "No good match" in events[-1][1]["answer"]
    turns = alice.get(f"/api/v1/conversations/{cid}").json()["turns"]
    assert [t["state"] for t in turns] == ["answered", "answered"] and all(not t["answer"]["citations"] for t in turns)
