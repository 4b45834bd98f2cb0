"""/v1/ in process: the audit trail of a chat, refusals in OpenAI's shape, IdP tokens, the chunk framing.

The official client against a real server is in tests/e2e/test_openai_client.py.
"""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from access.models import AuditEvent
from kb import answering
from kb.api.openai import ChunkFramer
from tests.access.test_sso import API_CALLBACK, bearer, finance_collection, idp, sso  # noqa: F401 (fixtures)
from tests.kb.conftest import upload

pytestmark = pytest.mark.django_db(transaction=True)  # uploads are indexed after commit

QUESTION = [{"role": "user", "content": "How many holiday days do employees get?"}]


@pytest.fixture
def handbook(api, collection_id) -> str:
    response = upload(api, collection_id, "holidays.md", b"# Holidays\n\nEmployees get 30 holiday days a year.\n")
    assert response.status_code == 201, response.content
    return f"cairn-{collection_id}"


def chat(api, **body):
    return api.post("/v1/chat/completions", body, format="json")


def test_a_chat_is_audited_as_an_ask_through_openai_with_what_was_served_and_cited(api, handbook):
    conversation = [*QUESTION, {"role": "assistant", "content": "30 [1]"}, {"role": "user", "content": "And then?"}]
    response = chat(api, model=handbook, messages=conversation)

    assert response.status_code == 200, response.content
    event = AuditEvent.objects.filter(action="kb.ask").latest("pk")
    assert event.target_id == handbook.removeprefix("cairn-") and event.detail["via"] == "openai"
    assert event.detail["chunks_cited"], (event.detail, response.json())
    assert set(event.detail["chunks_cited"]) <= set(event.detail["chunks_served"])
    # The standalone question (follow-up plus the earlier question) is what was asked.
    assert event.detail["question_chars"] == len("And then? (context: How many holiday days do employees get?)")


def test_a_streamed_chat_is_audited_when_it_starts(api, handbook):
    response = chat(api, model=handbook, messages=QUESTION, stream=True)
    body = b"".join(response.streaming_content).decode()
    assert body.endswith("data: [DONE]\n\n")
    event = AuditEvent.objects.filter(action="kb.ask").latest("pk")
    assert event.detail["via"] == "openai" and event.detail["streamed"] is True


def test_without_credentials_the_answer_is_401_in_openai_shape(isolated_storage):
    response = APIClient(REMOTE_ADDR="192.0.2.20").get("/v1/models")  # not loopback: nobody is signed in
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "authentication_error"


def test_an_unknown_v1_path_is_a_json_404(api):
    response = api.get("/v1/embeddings")
    assert response.status_code == 404 and response.json()["error"]["message"]


def test_a_full_generation_pool_is_503_with_retry_after_in_openai_shape(api, handbook, settings):
    settings.CAIRN_GEN_QUEUE_SIZE = 1
    answering.reset_admission()
    answering.admission().acquire("someone-else", "f" * 32)
    try:
        response = chat(api, model=handbook, messages=QUESTION)
    finally:
        answering.admission().release("someone-else", "f" * 32)
        answering.reset_admission()
    assert response.status_code == 503 and int(response["Retry-After"]) > 0
    assert response.json()["error"] == {"message": response.json()["error"]["message"], "type": "server_error",
                                        "code": "unavailable", "param": None}


def test_an_idp_access_token_lists_the_collections_of_its_groups_as_models(sso, finance_collection):  # noqa: F811
    token = sso.sign_in("alice", API_CALLBACK)["access_token"]
    response = bearer(token).get("/v1/models")
    assert response.status_code == 200, response.content
    assert [m["id"] for m in response.json()["data"]] == [f"cairn-{finance_collection.pk}"]
    assert bearer("not-a-token").get("/v1/models").status_code == 401


def frames(raw: bytes) -> list[object]:
    return [json.loads(line[6:]) if line != "data: [DONE]" else "[DONE]"
            for line in raw.decode().split("\n\n") if line.startswith("data: ")]


def test_reasoning_pieces_are_reasoning_content_deltas_and_an_error_ends_the_stream():
    framer = ChunkFramer(model="cairn-1", passages=())
    assert frames(framer.start())[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    reasoning = frames(framer.frames({"event": "reasoning", "text": "Passage 1 says"}))[0]
    assert reasoning["choices"][0]["delta"] == {"reasoning_content": "Passage 1 says"}
    assert framer.frames({"event": "keepalive"}) == b": keepalive\n\n"
    error, done = frames(framer.frames({"event": "error", "code": "timeout", "message": "No answer in time."}))
    assert error == {"error": {"message": "No answer in time.", "type": "server_error", "code": "timeout",
                               "param": None}}
    assert done == "[DONE]"


def test_a_model_the_caller_may_not_read_is_404_and_the_denial_is_audited(api, handbook):
    response = chat(api, model="cairn-999", messages=QUESTION)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    denial = AuditEvent.objects.filter(outcome="denied").latest("pk")
    assert denial.target_type == "collection" and denial.target_id == "cairn-999"


@pytest.mark.parametrize("body", [
    None, [], "text", 42, {"model": None, "messages": QUESTION}, {"model": "cairn-1", "messages": "hi"},
    {"model": "cairn-1", "messages": {"role": "user"}}, {"model": "cairn-1", "messages": [None]},
    {"model": "cairn-1", "messages": [["user", "hi"]]}, {"model": "cairn-1", "messages": [{"content": "hi"}]},
    {"model": "cairn-1", "messages": [{"role": "user", "content": [1, 2]}]},
    {"model": "cairn-1", "messages": [{"role": "user", "content": {"text": "hi"}}]},
    {"model": "cairn-1", "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
    {"model": "cairn-1", "messages": QUESTION, "stream": "sometimes"},
    {"model": "cairn-1", "messages": QUESTION, "max_tokens": "many"},
    {"model": "cairn-1", "messages": QUESTION, "n": 3},
    {"model": ["cairn-1"], "messages": QUESTION}, {"model": "cairn-" + "9" * 40, "messages": QUESTION},
    {"model": "cairn-0", "messages": QUESTION}, {"model": "", "messages": QUESTION},
])
def test_malformed_bodies_are_4xx_in_openai_shape_never_500(api, body):
    response = api.post("/v1/chat/completions", json.dumps(body), content_type="application/json")
    assert 400 <= response.status_code < 500, (body, response.status_code, response.content)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["message"]
