"""The official ``openai`` Python client against a real ``cairn_serve`` process: ``/v1/`` as chat clients use it.

Personal shape, extractive backend (quotes with ``[n]`` markers, streamed
through the same generation pool as any model).  Users and API keys are made
with ``manage.py cairn_apikey`` as an administrator would; each key has its
own rate-limit budget, so the limit is set low and the test that spends it
uses a key of its own.
"""

from __future__ import annotations

import json

import openai
import pytest

from tests.e2e.processes import Http, Process, child_env, free_port, manage, run_manage

pytestmark = pytest.mark.slow

RATE = 40  # requests per minute and key on this server

HOLIDAYS = (b"# Holidays\n\nEmployees get 30 days of paid holiday per year. Unused holiday days can be carried over "
            b"until the end of March of the following year, after which they lapse.\n")
EXPENSES = (b"# Travel expenses\n\nTrain tickets in second class are reimbursed against the receipt. "
            b"Hotel costs are reimbursed up to 150 euros per night.\n")
SECRET = b"# Merger\n\nThe merger code name is bluefin; the holiday schedule of the board is confidential.\n"


def key(env, user: str, *extra: str) -> str:
    return run_manage(env, "cairn_apikey", "--user", user, "--create-user", *extra).strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    port = free_port()
    env = child_env(CAIRN_DATA_DIR=str(root / "data"), CAIRN_LLM_BACKEND="extractive", CAIRN_RATE_LIMIT=f"{RATE}/min")
    process = Process("cairn_serve", manage("cairn_serve", "--host", "127.0.0.1", "--port", str(port)), env, root)
    try:
        base = f"http://127.0.0.1:{port}"
        Http(base).wait_until_up(process)
        keys = {"alice_setup": key(env, "alice"), "alice": key(env, "alice"), "bob": key(env, "bob"),
                "carol": key(env, "carol")}
        alice, bob = Http(base, keys["alice_setup"]), Http(base, keys["bob"])
        ids = {}
        for http, name, files in ((alice, "Handbook", [("holidays.md", HOLIDAYS), ("expenses.md", EXPENSES)]),
                                  (alice, "Recipes", []), (bob, "Board", [("merger.md", SECRET)])):
            status, collection = http.post_json("/api/v1/collections", {"name": name})
            assert status == 201, collection
            ids[name] = collection["id"]
            for filename, data in files:
                status, document = http.upload(f"/api/v1/collections/{collection['id']}/documents", filename, data)
                assert status == 201, document
                assert http.wait_for_document(document["id"])["status"] == "INDEXED", process.log()
        keys["alice_read_only"] = key(env, "alice", "--read-only")
        keys["alice_handbook_only"] = key(env, "alice", "--collection", str(ids["Handbook"]))
        yield base, keys, ids, process
    finally:
        process.stop()


def client(server, who: str) -> openai.OpenAI:
    base, keys, _, _ = server
    return openai.OpenAI(base_url=f"{base}/v1", api_key=keys[who], max_retries=0, timeout=120)


def model(server, name: str) -> str:
    return f"cairn-{server[2][name]}"


QUESTION = [{"role": "user", "content": "How many days of paid holiday do employees get?"}]


def test_models_are_the_collections_the_caller_may_read_and_a_scoped_key_lists_only_its_own(server):
    listed = {m.id: m for m in client(server, "alice").models.list()}
    assert set(listed) == {model(server, "Handbook"), model(server, "Recipes")}
    assert listed[model(server, "Handbook")].owned_by == "cairn"
    assert listed[model(server, "Handbook")].model_extra["name"] == "Handbook"
    assert [m.id for m in client(server, "alice_handbook_only").models.list()] == [model(server, "Handbook")]
    assert [m.id for m in client(server, "bob").models.list()] == [model(server, "Board")]
    assert client(server, "alice").models.retrieve(model(server, "Recipes")).id == model(server, "Recipes")


def test_a_completion_answers_from_the_collection_with_markers_and_citations(server):
    completion = client(server, "alice").chat.completions.create(model=model(server, "Handbook"), messages=QUESTION)

    message = completion.choices[0].message
    assert completion.object == "chat.completion" and completion.model == model(server, "Handbook")
    assert message.role == "assistant" and "30 days of paid holiday" in message.content and "[1]" in message.content
    citations = message.model_extra["citations"]
    assert citations[0]["number"] == 1 and citations[0]["title"] == "holidays.md"
    assert "30 days" in citations[0]["text"]
    assert completion.choices[0].finish_reason == "stop"


def test_a_streamed_completion_arrives_in_chunks_and_the_final_chunk_carries_the_citations(server):
    stream = client(server, "alice").chat.completions.create(model=model(server, "Handbook"), messages=QUESTION,
                                                             stream=True)
    chunks = list(stream)  # the SDK stops at "data: [DONE]"

    assert all(c.object == "chat.completion.chunk" for c in chunks) and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "30 days of paid holiday" in text and "[1]" in text
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.model_extra["citations"][0]["title"] == "holidays.md"


def test_the_raw_stream_ends_with_done(server):
    base, keys, _, _ = server
    import urllib.request

    request = urllib.request.Request(f"{base}/v1/chat/completions", method="POST", data=json.dumps(
        {"model": model(server, "Handbook"), "messages": QUESTION, "stream": True}).encode(),
        headers={"Authorization": f"Bearer {keys['alice']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in response.read().decode().split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"


def test_a_follow_up_question_is_understood_from_the_earlier_turns(server):
    conversation = [*QUESTION, {"role": "assistant", "content": "Employees get 30 days [1]."},
                    {"role": "user", "content": "Can they carry them over?"}]
    completion = client(server, "alice").chat.completions.create(model=model(server, "Handbook"),
                                                                 messages=conversation)
    message = completion.choices[0].message
    assert "carried over" in message.content
    assert message.model_extra["citations"][0]["title"] == "holidays.md"


def test_a_read_only_key_may_chat(server):
    completion = client(server, "alice_read_only").chat.completions.create(model=model(server, "Handbook"),
                                                                          messages=QUESTION)
    assert "30 days" in completion.choices[0].message.content


def test_a_collection_the_caller_cannot_read_is_a_model_that_does_not_exist(server):
    with pytest.raises(openai.NotFoundError) as foreign:
        client(server, "alice").chat.completions.create(model=model(server, "Board"), messages=QUESTION)
    assert foreign.value.status_code == 404 and foreign.value.code == "model_not_found"
    assert "bluefin" not in str(foreign.value.body)
    with pytest.raises(openai.NotFoundError):  # outside the key's collections
        client(server, "alice_handbook_only").chat.completions.create(model=model(server, "Recipes"),
                                                                      messages=QUESTION)
    with pytest.raises(openai.NotFoundError):
        client(server, "alice").chat.completions.create(model="gpt-4o", messages=QUESTION)
    with pytest.raises(openai.NotFoundError):
        client(server, "alice").models.retrieve(model(server, "Board"))


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "system", "content": "Only a system prompt."}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 4001}]}, "messages"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages"),
    ({"messages": QUESTION, "max_tokens": 0}, "max_tokens"),
])
def test_bad_bodies_are_400_in_openai_shape(server, body, param):
    with pytest.raises(openai.BadRequestError) as refused:
        client(server, "alice").chat.completions.create(model=model(server, "Handbook"), **body)
    assert refused.value.status_code == 400
    error = refused.value.body
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_raw_bad_requests_are_4xx_never_500(server):
    base, keys, _, _ = server
    http = Http(base, keys["alice"])
    status, body = http.request("POST", "/v1/chat/completions", body=b"{not json", content_type="application/json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = http.post_json("/v1/chat/completions", {"messages": QUESTION})  # no model
    assert status == 400 and body["error"]["param"] == "model"
    status, body = http.post_json("/v1/chat/completions", [1, 2])
    assert status == 400
    too_many = {"model": model(server, "Handbook"), "messages": QUESTION * 101}
    status, body = http.post_json("/v1/chat/completions", too_many)
    assert status == 400 and "CAIRN_CHAT_MAX_MESSAGES" in body["error"]["message"]


def test_a_body_over_the_size_limit_is_refused_before_it_is_read(server):
    import http.client
    from urllib.parse import urlsplit

    base, keys, _, _ = server
    connection = http.client.HTTPConnection(urlsplit(base).netloc, timeout=30)
    connection.putrequest("POST", "/v1/chat/completions")
    for name, value in (("Authorization", f"Bearer {keys['alice']}"), ("Content-Type", "application/json"),
                        ("Content-Length", str(600 * 1024))):
        connection.putheader(name, value)
    connection.endheaders()  # the 600 KB never follow: the server answers on the declared length
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 413 and body["error"]["code"] == "too_large" and "512 KB" in body["error"]["message"]


def test_a_wrong_key_is_401(server):
    base, _, _, _ = server
    wrong = openai.OpenAI(base_url=f"{base}/v1", api_key="cairn_" + "x" * 40, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.models.list()
    assert refused.value.status_code == 401 and refused.value.body["type"] == "authentication_error"


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(server):
    carol = client(server, "carol")
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(RATE + 1):
            carol.models.list()
    assert refused.value.status_code == 429
    assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 60
    assert refused.value.body["type"] == "rate_limit_error"


@pytest.fixture(scope="module")
def reasoning_server(tmp_path_factory):
    """Personal mode answering through a DeepSeek-style upstream (``reasoning_content`` pieces, then content).

    The upstream is the scripted OpenAI-compatible server of the inference
    tests, run as a process; Cairn's ``openai`` generation backend streams
    from it as it would from DeepSeek's API or a vLLM with a reasoning parser.
    """
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path_factory.mktemp("openai-reasoning")
    script = Path(__file__).resolve().parents[1] / "inference" / "openai_server.py"
    upstream = subprocess.Popen([sys.executable, str(script), str(root / "upstream.jsonl")], stdout=subprocess.PIPE,
                                text=True, start_new_session=True)
    process = None
    try:
        assert upstream.stdout is not None
        line = upstream.stdout.readline()
        assert line.startswith("PORT "), line
        port = free_port()
        env = child_env(CAIRN_DATA_DIR=str(root / "data"), CAIRN_LLM_BACKEND="openai",
                        CAIRN_OPENAI_BASE_URL=f"http://127.0.0.1:{line.split()[1]}/v1",
                        CAIRN_OPENAI_MODEL="deepseek-reasoner", CAIRN_OPENAI_API_KEY="test-key")
        process = Process("cairn_serve", manage("cairn_serve", "--host", "127.0.0.1", "--port", str(port)), env,
                          root)
        base = f"http://127.0.0.1:{port}"
        owner = Http(base)  # personal mode: the loopback client is the owner
        owner.wait_until_up(process)
        status, collection = owner.post_json("/api/v1/collections", {"name": "Handbook"})
        assert status == 201, collection
        status, document = owner.upload(f"/api/v1/collections/{collection['id']}/documents", "holidays.md", HOLIDAYS)
        assert status == 201 and owner.wait_for_document(document["id"])["status"] == "INDEXED", process.log()
        yield base, f"cairn-{collection['id']}", process
    finally:
        if process is not None:
            process.stop()
        upstream.terminate()
        upstream.wait(timeout=10)


def test_personal_mode_takes_any_bearer_and_reasoning_arrives_as_reasoning_content(reasoning_server):
    base, handbook, process = reasoning_server
    # Chat clients always send a key; on loopback in personal mode any value is the owner.
    any_key = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-anything", max_retries=0, timeout=120)
    assert [m.id for m in any_key.models.list()] == [handbook]

    chunks = list(any_key.chat.completions.create(model=handbook, messages=QUESTION, stream=True))
    reasoning = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert reasoning == "The passage names the capital.", process.log()
    assert content == "Quilltown [1]."  # the [n] marker intact
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["citations"][0]["title"] == "holidays.md"

    message = any_key.chat.completions.create(model=handbook, messages=QUESTION).choices[0].message
    assert message.content == "Quilltown [1]."
    assert message.model_extra["reasoning_content"] == "The passage names the capital."
    assert message.model_extra["citations"][0]["number"] == 1
