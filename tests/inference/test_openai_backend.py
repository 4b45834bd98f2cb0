"""The openai backend against a real OpenAI-compatible HTTP server process on loopback."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.api import GenerationError, ModelLoadError, generate, load_generator, stream
from inference.backends.openai_backend import OpenAIGenerator, looks_like_reasoning_model
from inference.prompting import INSTRUCTIONS
from inference.types import GenerationRequest, Passage

pytestmark = pytest.mark.usefixtures("fresh_generators")

SERVER = Path(__file__).with_name("openai_server.py")


class Server:
    def __init__(self, port: int, log: Path) -> None:
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.log = log

    def entries(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def requests(self) -> list[dict]:
        return [e for e in self.entries() if "body" in e]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("openai") / "requests.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(SERVER), str(log)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("PORT "), line
        yield Server(int(line.split()[1]), log)
    finally:
        process.terminate()
        process.wait(timeout=10)


def question(n_passages: int = 1, text: str = "The capital of Zorbon is Quilltown.") -> GenerationRequest:
    return GenerationRequest(
        question="What is the capital of Zorbon?",
        passages=tuple(
            Passage(number=i + 1, chunk_id=i + 1, document_id=1, title="atlas.txt", page=None,
                    heading="", text=text)
            for i in range(n_passages)
        ),
        max_new_tokens=64,
        request_id="req-42",
    )


def generator_for(server: Server, model: str, **options: object) -> OpenAIGenerator:
    options.setdefault("api_key", "test-key")
    generator = load_generator("openai", None, base_url=server.base_url, model=model, **options)
    assert isinstance(generator, OpenAIGenerator)
    return generator


def test_streams_the_answer_incrementally_with_the_shared_prompt(server: Server) -> None:
    generator = generator_for(server, "plain-model")
    events = list(stream(generator, question()))
    assert [e.channel for e in events] == ["answer"] * 3
    answer = generate(generator, question())
    assert answer.answer == "Quilltown is the capital [1]."
    assert answer.cited_numbers == (1,) and answer.backend == "openai" and answer.reasoning == ""
    sent = server.requests()[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["authorization"] == "Bearer test-key"
    body = sent["body"]
    assert body["model"] == "plain-model" and body["stream"] is True
    assert body["max_tokens"] == 64 and body["temperature"] == 0.0 and body["user"] == "req-42"
    assert body["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    assert "[1] (atlas.txt)\nThe capital of Zorbon is Quilltown." in body["messages"][1]["content"]


@pytest.mark.parametrize("model", ["deepseek-reasoner", "think-inline", "deepseek-r1-noparser"])
def test_reasoning_is_a_separate_channel_in_every_server_shape(server: Server, model: str) -> None:
    generator = generator_for(server, model)
    events = list(stream(generator, question()))
    channels = [e.channel for e in events]
    assert "reasoning" in channels and channels.index("answer") > max(
        i for i, c in enumerate(channels) if c == "reasoning"
    )
    answer = generate(generator, question())
    assert answer.answer == "Quilltown [1]."
    assert answer.reasoning in ("The passage names the capital.", "Passage 1 says so.")
    assert "think>" not in answer.answer + answer.reasoning


def test_reasoner_names_put_instructions_in_the_user_turn(server: Server) -> None:
    generate(generator_for(server, "deepseek-reasoner"), question())
    messages = server.requests()[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"].startswith(INSTRUCTIONS)


def test_model_names_that_mean_reasoning() -> None:
    for name in ("deepseek-reasoner", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "Qwen/QwQ-32B", "r1-local"):
        assert looks_like_reasoning_model(name), name
    for name in ("deepseek-chat", "Qwen2.5-7B-Instruct", "gpt-4o", "llama3:r10"):
        assert not looks_like_reasoning_model(name), name


def test_a_wrong_key_is_a_clear_error_without_the_key(server: Server) -> None:
    generator = generator_for(server, "plain-model", api_key="wrong-secret")
    with pytest.raises(GenerationError, match="answered 401: Invalid API key") as caught:
        generate(generator, question())
    assert "wrong-secret" not in str(caught.value) and "wrong-secret" not in repr(generator)


def test_a_server_error_is_reported(server: Server) -> None:
    with pytest.raises(GenerationError, match="500: CUDA out of memory"):
        generate(generator_for(server, "broken-model"), question())


def test_an_unreachable_server_is_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    generator = load_generator("openai", None, base_url=f"http://127.0.0.1:{port}/v1", model="m")
    with pytest.raises(GenerationError, match="cannot be reached"):
        generate(generator, question())


def test_closing_the_stream_drops_the_connection_and_the_server_stops(server: Server) -> None:
    events = stream(generator_for(server, "slow-model"), question())
    first = next(events)
    assert first.channel == "answer"
    events.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = [e for e in server.entries() if e.get("model") == "slow-model"]
        if done:
            break
        time.sleep(0.05)
    assert done[-1].get("cancelled") is True and done[-1]["sent"] < 200


def test_window_comes_from_the_server_and_passages_are_packed_whole(server: Server) -> None:
    generator = generator_for(server, "plain-model")
    assert generator.context_window == 4096  # max_model_len from /v1/models
    long_text = "Quilltown is the capital of Zorbon. " * 60  # ~2,100 bytes, ~700 estimated tokens
    answer = generate(generator, question(n_passages=10, text=long_text))
    assert answer.passages_offered == 10
    assert 1 <= answer.passages_used < 10
    content = server.requests()[-1]["body"]["messages"][1]["content"]
    assert content.count(long_text.strip()) == answer.passages_used  # whole passages only
    assert f"[{answer.passages_used}] (atlas.txt)" in content
    assert f"[{answer.passages_used + 1}] (atlas.txt)" not in content


def test_configuration_errors_are_load_errors() -> None:
    with pytest.raises(ModelLoadError, match="base URL"):
        load_generator("openai", None, model="m")
    with pytest.raises(ModelLoadError, match="model name"):
        load_generator("openai", None, base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ModelLoadError, match="http"):
        load_generator("openai", None, base_url="ftp://x/v1", model="m")


def test_an_answer_cut_at_max_tokens_says_so_and_names_the_model(server: Server) -> None:
    generator = generator_for(server, "plain-model")
    whole = generate(generator, question())
    assert (whole.finish_reason, whole.model) == ("stop", "plain-model")
    cut = generate(generator, dataclasses.replace(question(), max_new_tokens=2))
    assert cut.finish_reason == "length"
    assert whole.answer.startswith(cut.answer) and len(cut.answer) < len(whole.answer)
