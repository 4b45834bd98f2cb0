"""Feedback on answers: thumbs up/down with a comment, stored with the question and passages, owners' JSONL export."""

from __future__ import annotations

import json

import pytest

from access.models import AuditEvent
from kb.models import AnswerFeedback
from tests.kb.conftest import upload
from tests.kb.permission_corpus import one_torch_thread  # noqa: F401
from tests.kb.test_conversations import LEAVE, PARKING, client_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hr(settings, isolated_storage, one_torch_thread):  # noqa: F811 (a fixture)
    """Alice owns an HR collection (extractive answers) and shares it with Bob as a viewer; Carol has no access."""
    settings.CAIRN_MODE = "team"
    alice, bob, carol = client_for("alice"), client_for("bob"), client_for("carol")
    collection = alice.post("/api/v1/collections", {"name": "HR"}, format="json").json()["id"]
    for name, text in (("leave.txt", LEAVE), ("parking.txt", PARKING)):
        assert upload(alice, collection, name, text).json()["status"] == "INDEXED"
    alice.post(
        f"/api/v1/collections/{collection}/members",
        {"user": "bob", "role": "viewer"},
        format="json",
    )
    return alice, bob, carol, collection


def asked_turn(client, collection: int) -> tuple[int, dict]:
    conversation = client.post(
        "/api/v1/conversations", {"collection": collection}, format="json"
    ).json()["id"]
    body = client.post(
        f"/api/v1/conversations/{conversation}/messages",
        {"question": "How many days of annual leave do full-time employees get?"},
        format="json",
    ).json()
    assert body["citations"], body
    return body["turn"], body


def export(client, collection: int, **params):
    return client.get(f"/api/v1/collections/{collection}/feedback/export", params)


def test_a_reader_rates_a_conversation_answer_and_the_owner_exports_it_for_the_golden_set(hr):
    alice, bob, _, collection = hr
    # Given Bob asked in a conversation
    turn, answer = asked_turn(bob, collection)
    # When he gives it a thumbs up with a comment
    response = bob.post(
        "/api/v1/feedback",
        {"turn": turn, "rating": "up", "comment": "Exactly right"},
        format="json",
    )
    assert response.status_code == 201, response.content
    # Then it is stored with the question, answer, model and a snapshot of the cited passages
    row = AnswerFeedback.objects.get()
    assert (row.question, row.answer, row.model) == (
        "How many days of annual leave do full-time employees get?",
        answer["answer"],
        "extractive",
    )
    assert [p["chunk_id"] for p in row.passages] == [c["chunk_id"] for c in answer["citations"]]
    assert "25 days" in row.passages[0]["text"]
    event = AuditEvent.objects.get(action="feedback.create")
    assert (
        event.actor_id == bob.user.pk
        and event.detail["rating"] == "up"
        and event.detail["turn"] == turn
    )
    assert "Exactly right" not in json.dumps(event.detail)  # the comment's length, not its text

    # Rating the same answer again changes the rating rather than adding one
    assert (
        bob.post("/api/v1/feedback", {"turn": turn, "rating": "down"}, format="json").status_code
        == 201
    )
    assert AnswerFeedback.objects.get().rating == "down"
    bob.post(
        "/api/v1/feedback",
        {"turn": turn, "rating": "up", "comment": "Exactly right"},
        format="json",
    )

    # And the owner exports it as JSON lines the golden-set import takes
    exported = export(alice, collection)
    assert exported.status_code == 200 and exported["Content-Type"].startswith("application/jsonl")
    lines = [
        json.loads(line) for line in b"".join(exported.streaming_content).decode().splitlines()
    ]
    assert len(lines) == 1 and lines[0]["rating"] == "up" and lines[0]["comment"] == "Exactly right"
    expected = lines[0]["expected_documents"]
    assert expected == list(dict.fromkeys(c["document_id"] for c in answer["citations"]))
    assert "bob" not in json.dumps(lines)  # who rated is not exported
    golden = alice.post(
        f"/api/v1/collections/{collection}/golden",
        {"question": lines[0]["question"], "expected_documents": expected},
        format="json",
    )
    assert golden.status_code == 201, golden.content
    assert AuditEvent.objects.filter(action="feedback.export", actor_id=alice.user.pk).exists()
    assert [
        json.loads(x)
        for x in b"".join(export(alice, collection, rating="down").streaming_content)
        .decode()
        .splitlines()
    ] == []


def test_only_owners_export_and_others_get_403_or_404(hr):
    alice, bob, carol, collection = hr
    assert export(bob, collection).status_code == 403  # a reader: may read, may not export
    assert (
        export(carol, collection).status_code == 404
    )  # no access: the collection does not exist for her
    assert export(alice, collection, rating="sideways").status_code == 400
    assert not AuditEvent.objects.filter(action="feedback.export").exists()


def test_feedback_on_a_foreign_turn_or_collection_is_404(hr):
    alice, bob, carol, collection = hr
    turn, answer = asked_turn(bob, collection)
    # Alice owns the collection but the turn is Bob's conversation
    assert (
        alice.post("/api/v1/feedback", {"turn": turn, "rating": "up"}, format="json").status_code
        == 404
    )
    chunk = answer["citations"][0]["chunk_id"]
    foreign = carol.post(
        "/api/v1/feedback",
        {
            "collection": collection,
            "question": "Leave?",
            "answer": "25",
            "chunks": [chunk],
            "rating": "down",
        },
        format="json",
    )
    assert foreign.status_code == 404
    # Carol's own collection does not let her name Alice's chunks either
    own = carol.post("/api/v1/collections", {"name": "Mine"}, format="json").json()["id"]
    smuggled = carol.post(
        "/api/v1/feedback",
        {
            "collection": own,
            "question": "Leave?",
            "answer": "25",
            "chunks": [chunk],
            "rating": "down",
        },
        format="json",
    )
    assert smuggled.status_code == 404
    assert not AnswerFeedback.objects.exists()


def test_feedback_on_an_ask_answer_snapshots_the_cited_chunks_from_the_database(hr):
    _, bob, _, collection = hr
    answer = bob.post(
        "/api/v1/ask",
        {"question": "Where do visitors park?", "collection": collection},
        format="json",
    ).json()
    chunks = [c["chunk_id"] for c in answer["citations"]]
    response = bob.post(
        "/api/v1/feedback",
        {
            "collection": collection,
            "question": "Where do visitors park?",
            "answer": answer["answer"],
            "chunks": chunks,
            "rating": "down",
            "comment": "Wrong lot",
            "model": answer["model"],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    row = AnswerFeedback.objects.get()
    assert row.turn is None and row.comment == "Wrong lot" and "lot A" in json.dumps(row.passages)


@pytest.mark.parametrize(
    "body",
    [
        {"turn": 1, "rating": "sideways"},
        {"turn": 1},
        {"rating": "up"},
        {"turn": "x", "rating": "up"},
        {"turn": 1, "rating": "up", "comment": "x" * (AnswerFeedback.MAX_COMMENT + 1)},
        {"collection": 1, "question": "q", "rating": "up", "chunks": ["a"]},
    ],
)
def test_bad_feedback_is_a_400(hr, body):
    _, bob, _, _ = hr
    response = bob.post("/api/v1/feedback", body, format="json")
    assert response.status_code == 400, response.content
