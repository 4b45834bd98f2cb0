"""Generation on any OpenAI-compatible server: vLLM or SGLang clusters, Ollama, DeepSeek's API.

The chat completions endpoint is called with ``stream: true`` and its
server-sent events are read line by line with the standard library's
``http.client`` (no SDK, no event loop: this runs in a worker thread or a
Celery task, and one less dependency to pin). Prompts come from the same
``inference.prompting`` builder as the local backends.

Reasoning arrives in one of three shapes, all handled:
* DeepSeek's API and vLLM/SGLang with a reasoning parser send it in
  ``delta.reasoning_content`` (newer vLLM: ``delta.reasoning``), the answer
  in ``delta.content``;
* a server without a parser leaves ``<think>…</think>`` in ``content``;
* an R1 model served without a parser whose template opened ``<think>`` in
  the prompt sends only ``…</think>answer`` (``expect_reasoning``).

Invariants: the API key is sent only in the Authorization header and never
logged or put in an error message; closing the stream early closes the
connection, which makes vLLM and SGLang abort the request.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from inference.backends import GenerationError, ModelLoadError
from inference.prompting import build_messages, estimate_tokens, pack_passages
from inference.reasoning import ReasoningSplitter, _ChannelWriter
from inference.types import FinishReason, GenerationRequest, StreamEvents

logger = logging.getLogger(__name__)

# Chat markup around each message ("<|im_start|>user\n" … "<|im_end|>\n") when
# counting without the model's tokenizer; generous on purpose.
_MESSAGE_OVERHEAD = 8
_REASONING_MODEL = re.compile(r"deepseek.*(r1|reasoner)|qwq|(^|[-_/])r1([-_]|$)", re.IGNORECASE)


def looks_like_reasoning_model(model: str) -> bool:
    """Whether a served model name says DeepSeek-R1 / reasoner or QwQ (their output may hold only ``</think>``)."""
    return bool(_REASONING_MODEL.search(model))


def parse_sse_line(line: str) -> dict[str, Any] | None:
    """The JSON object of one ``data:`` line of a chat completion stream, or None.

    Comment lines (``: keep-alive``), ``event:``/``id:`` fields, blank lines
    and the final ``data: [DONE]`` all give None.
    """
    if not line.startswith("data:"):
        return None
    payload = line[len("data:"):].strip()
    if not payload or payload == "[DONE]":
        return None
    data = json.loads(payload)
    return data if isinstance(data, dict) else None


def chunk_deltas(chunk: dict[str, Any]) -> tuple[str, str]:
    """``(reasoning, content)`` text of one ``chat.completion.chunk`` (either may be empty)."""
    choices = chunk.get("choices") or []
    if not choices:
        return "", ""
    delta = choices[0].get("delta") or {}
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    content = delta.get("content") or ""
    return str(reasoning), str(content)


class OpenAIGenerator:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Options: ``base_url`` (e.g. ``http://vllm:8000/v1``), ``model`` (the
    served model name), ``api_key`` (optional), ``request_timeout`` (seconds without
    data before giving up), ``context_window`` (tokens; default: the
    server's ``max_model_len`` from ``/models`` when it tells, else no
    packing), ``tokenizer_path`` (a local tokenizer of the same model, for
    exact packing; without one, tokens are over-estimated from bytes),
    ``system_in_user`` and ``expect_reasoning`` (default: from the model name),
    ``temperature`` (default 0: greedy, reproducible where the server allows).
    """

    name = "openai"
    generated = True

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        request_timeout: float = 120.0,
        context_window: int | None = None,
        tokenizer_path: str | None = None,
        system_in_user: bool | None = None,
        expect_reasoning: bool | None = None,
        temperature: float = 0.0,
        top_p: float | None = None,
    ) -> None:
        if not base_url:
            raise ModelLoadError(
                "The openai backend needs the server's base URL (CAIRN_OPENAI_BASE_URL, "
                "e.g. http://127.0.0.1:8000/v1)."
            )
        if not model:
            raise ModelLoadError("The openai backend needs a model name (CAIRN_OPENAI_MODEL).")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelLoadError(f"CAIRN_OPENAI_BASE_URL must be an http(s) URL, got {base_url!r}.")
        self.base_url = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/")
        self.model = model
        self.model_name = model
        self._api_key = api_key or None
        # Not ``timeout``: that name is the generation pool's own option (inference.pool.get_pool).
        self.timeout = request_timeout
        self.temperature = temperature
        self.top_p = top_p
        is_reasoner = looks_like_reasoning_model(model)
        self.system_in_user = is_reasoner if system_in_user is None else system_in_user
        self.expect_reasoning = is_reasoner if expect_reasoning is None else expect_reasoning
        self.tokenizer = self._load_tokenizer(tokenizer_path) if tokenizer_path else None
        self.context_window = context_window or self._server_window()

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIGenerator(base_url={self.base_url!r}, model={self.model!r})"

    # --- HTTP -------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.timeout)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _server_window(self) -> int | None:
        """``max_model_len`` of the served model, as vLLM and SGLang list it under ``/models``."""
        connection = self._connection()
        try:
            connection.request("GET", f"{self._path}/models", headers=self._headers())
            response = connection.getresponse()
            if response.status != 200:
                return None
            for card in json.loads(response.read()).get("data", []):
                if card.get("id") == self.model and card.get("max_model_len"):
                    return int(card["max_model_len"])
        except (OSError, ValueError, http.client.HTTPException, AttributeError):
            # Optional information: an unreachable server fails the first request instead.
            return None
        finally:
            connection.close()
        return None

    @staticmethod
    def _load_tokenizer(path: str) -> Any:
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # any loading failure, one readable message
            raise ModelLoadError(f"Could not load the tokenizer in {path}: {type(exc).__name__}: {exc}") from exc

    # --- prompts ------------------------------------------------------------------

    def messages(self, request: GenerationRequest) -> list[dict[str, str]]:
        return build_messages(request, system_in_user=self.system_in_user)

    def prompt_tokens(self, request: GenerationRequest) -> int:
        messages = self.messages(request)
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return len(ids["input_ids"] if isinstance(ids, dict) else ids)
        return sum(estimate_tokens(m["content"]) + _MESSAGE_OVERHEAD for m in messages)

    def pack(self, request: GenerationRequest) -> GenerationRequest:
        if not self.context_window:
            return request
        return pack_passages(request, prompt_tokens=self.prompt_tokens, window=self.context_window)

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        """The JSON body of the chat completions call for ``request`` (already packed)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(request),
            "stream": True,
            "max_tokens": max(1, request.max_new_tokens),
            "temperature": self.temperature,
        }
        if self.top_p is not None:
            body["top_p"] = self.top_p
        if request.request_id:
            body["user"] = request.request_id[:64]  # lets server logs be matched to Cairn's
        return body

    # --- streaming ----------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> StreamEvents:
        request = self.pack(request)
        payload = json.dumps(self.body(request)).encode("utf-8")
        connection = self._connection()
        try:
            try:
                connection.request(
                    "POST", f"{self._path}/chat/completions", body=payload, headers=self._headers()
                )
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise GenerationError(
                    f"The model server at {self.base_url} cannot be reached: {type(exc).__name__}: {exc}"
                ) from exc
            if response.status != 200:
                raise GenerationError(
                    f"The model server at {self.base_url} answered {response.status}: "
                    f"{_error_text(response.read(4096))}"
                )
            return (yield from self._events(response))
        finally:
            # Early close (client went away) or the end: either way the
            # server sees the connection drop and stops generating.
            connection.close()

    def _events(self, response: http.client.HTTPResponse) -> StreamEvents:
        splitter = ReasoningSplitter(expect_reasoning=self.expect_reasoning)
        # Reasoning sent in its own field; stripped like the splitter's channels.
        separate = _ChannelWriter("reasoning")
        answer_started = separated = False
        finish_reason: FinishReason = "stop"
        while True:
            try:
                raw = response.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise GenerationError(
                    f"The model server at {self.base_url} stopped streaming: {type(exc).__name__}: {exc}"
                ) from exc
            if not raw:
                break
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if line == "data: [DONE]":
                break
            try:
                chunk = parse_sse_line(line)
            except ValueError as exc:
                raise GenerationError(
                    f"The model server at {self.base_url} sent malformed data: {line[:200]!r}"
                ) from exc
            if chunk is None:
                continue
            if "error" in chunk:
                raise GenerationError(
                    f"The model server at {self.base_url} failed mid-stream: "
                    f"{_error_text(json.dumps(chunk).encode())}"
                )
            if (chunk.get("choices") or [{}])[0].get("finish_reason") == "length":
                finish_reason = "length"  # the server cut it at max_tokens
            reasoning, content = chunk_deltas(chunk)
            if reasoning and answer_started:
                # A late reasoning piece would break the channel order the UI
                # relies on; servers do not do this.
                logger.warning("Dropping reasoning that arrived after the answer began")
            elif reasoning:
                if not separated:
                    separated = True
                    # The server parses the reasoning out: content is all answer.
                    splitter = ReasoningSplitter(expect_reasoning=False)
                yield from separate.write(reasoning)
            if content:
                for event in splitter.feed(content):
                    answer_started = True
                    yield event
        yield from splitter.close()
        return finish_reason


def _error_text(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, or the start of the body."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
        error = data.get("error", data)
        message = error.get("message") if isinstance(error, dict) else error
        return str(message or text)[:500]
    except (ValueError, AttributeError):
        return text[:500]
