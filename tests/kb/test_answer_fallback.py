"""Through /api/v1/ask: a model reply that is only a citation marker never comes back as the answer.

The model is asked again with the plain prompt; only when that says nothing either are extracts returned.

The generator is a real backend object of the generating kind, placed where
the process's generator cache would put a loaded model; everything around
it — view, scoped retrieval, the in-process pool, answer assembly, JSON and
SSE framing — is the code users run.
"""

from __future__ import annotations

import pytest

from inference import api as inference_api
from inference.fallback import FALLBACK_LABEL
from inference.pool import close_pools
from kb import answering
from tests.inference.test_fallback import CitationOnlyModel, ScriptedGenerator
from tests.kb.conftest import upload
from tests.kb.test_ask_stream import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

DOCUMENT = b"Leave policy\n\nEmployees get twenty holiday days a year. Unused holiday days expire in March.\n"


def _placed(settings, tmp_path, generator):
    settings.CAIRN_LLM_BACKEND = "transformers"
    settings.CAIRN_LLM_PATH = str(tmp_path / "citation-only-model")
    settings.CAIRN_LLM_OPTIONS = {}
    close_pools()
    inference_api.clear_generators()
    answering.reset_admission()
    key = inference_api._cache_key(settings.CAIRN_LLM_BACKEND, settings.CAIRN_LLM_PATH, {})
    inference_api._generators[key] = generator
    yield generator
    close_pools()
    inference_api.clear_generators()
    answering.reset_admission()


@pytest.fixture
def citation_only_model(settings, tmp_path):
    """Replies "[1]" to every prompt, the plain re-ask included."""
    yield from _placed(settings, tmp_path, ScriptedGenerator("[", "1", "]"))


@pytest.fixture
def answers_when_asked_plainly(settings, tmp_path):
    """Replies "[1]" to the cited prompt and in words to the plain one."""
    yield from _placed(
        settings, tmp_path, CitationOnlyModel("Unused holiday days expire in March.")
    )


def test_a_bare_marker_reply_is_asked_again_and_the_plain_answer_cites_its_passage(
    api, collection_id, answers_when_asked_plainly
):
    assert upload(api, collection_id, "leave.txt", DOCUMENT).status_code == 201

    response = api.post(
        "/api/v1/ask",
        {"question": "When do unused holiday days expire?", "collection": collection_id},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["fallback"] == "plain" and body["generated"] is True
    assert body["answer"] == "Unused holiday days expire in March [1]."
    assert body["citation_mode"] == "marked" and "expire in March" in body["citations"][0]["text"]
    assert [r.prompt for r in answers_when_asked_plainly.requests] == ["", "plain"]


def test_a_bare_marker_reply_twice_is_answered_with_labelled_extracts(
    api, collection_id, citation_only_model
):
    assert upload(api, collection_id, "leave.txt", DOCUMENT).status_code == 201

    response = api.post(
        "/api/v1/ask",
        {"question": "How many holiday days do employees get?", "collection": collection_id},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["fallback"] == "extractive" and body["generated"] is True
    assert body["answer"] != "[1]" and body["answer"].startswith(FALLBACK_LABEL)
    assert "“Employees get twenty holiday days a year.” [1]" in body["answer"]
    assert (
        body["citation_mode"] == "marked" and "twenty holiday days" in body["citations"][0]["text"]
    )


def test_a_streamed_bare_marker_reply_ends_with_the_fallback_answer(
    api, collection_id, citation_only_model
):
    assert upload(api, collection_id, "leave.txt", DOCUMENT).status_code == 201

    response = api.post(
        "/api/v1/ask",
        {
            "question": "How many holiday days do employees get?",
            "collection": collection_id,
            "stream": True,
        },
        format="json",
    )

    assert response.status_code == 200
    events = sse_events(b"".join(response.streaming_content))
    name, done = events[-1]
    assert name == "done" and done["fallback"] == "extractive"
    assert done["answer"].startswith(FALLBACK_LABEL) and "twenty holiday days" in done["answer"]
