"""Personal shape with a real `cairn_serve` process (ASGI): the in-process generation worker streams
over SSE as tokens are written, and a client that hangs up cancels its generation.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.processes import Http, Process, child_env, free_port, manage
from tests.e2e.test_team_generation import (
    HANG_UP_BUDGET,
    LONG_QUESTION,
    QUESTION,
    hang_up_and_wait_for_cancel,
    metrics,
    sample,
    sse_ask,
)
from tests.inference.tiny_models import build_tiny_qwen2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def personal_llm(tmp_path_factory):
    root = tmp_path_factory.mktemp("personal-gen")
    model = build_tiny_qwen2(root / "tiny-qwen2", max_positions=HANG_UP_BUDGET + 512, endless=True)
    port = free_port()
    env = child_env(CAIRN_DATA_DIR=str(root / "data"), CAIRN_GENERATOR="transformers", CAIRN_LLM_PATH=model,
                    CAIRN_MAX_NEW_TOKENS=str(HANG_UP_BUDGET))
    process = Process("cairn_serve", manage("cairn_serve", "--host", "127.0.0.1", "--port", str(port)), env, root)
    try:
        Http(f"http://127.0.0.1:{port}").wait_until_up(process)
        yield port, process
    finally:
        process.stop()


def test_tokens_reach_the_client_while_the_answer_is_being_written(personal_llm):
    port, process = personal_llm
    # Warm up first (the model loads in the background at start-up), so the timed request measures streaming.
    warm = sse_ask(port, None, {"question": QUESTION, "stream": True, "max_new_tokens": 4})
    assert warm[-1][0] == "done", process.log()
    sent = time.monotonic()
    events = sse_ask(port, None, {"question": LONG_QUESTION, "stream": True, "max_new_tokens": 1000})
    names = [e[0] for e in events]
    assert names[0] == "start" and names[-2:] == ["citations", "done"], process.log()
    tokens = [e for e in events if e[0] == "token"]
    assert events[-1][1]["metrics"]["tokens"] >= 500, events[-1][1]["metrics"]  # long enough to tell
    assert len(tokens) >= 100, len(tokens)  # many pieces, not one or two
    assert "".join(e[1]["text"] for e in tokens) == events[-1][1]["answer"]
    # Incremental, as the client sees it: the first piece arrived early, the rest while it was written.
    # Were the answer buffered and sent at the end, first and last would arrive together (ratio ~1);
    # streamed, the ratio is a few percent. 0.25 leaves room for a loaded machine delaying the first piece.
    time_to_first, total = tokens[0][2] - sent, tokens[-1][2] - sent
    assert time_to_first <= 0.25 * total, (time_to_first, total, events[-1][1]["metrics"])
    text = metrics(port)
    assert sample(text, "cairn_language_models_loaded", process="personal") == [1.0]


def test_hanging_up_cancels_the_generation(personal_llm):
    port, _ = personal_llm
    hang_up_and_wait_for_cancel(port, None)
    assert sample(metrics(port), "cairn_generation_running", process="personal") == [0.0]
