"""A tiny OpenAI-compatible chat completions server, run as a real process by the tests.

    python tests/inference/openai_server.py LOG_PATH

It listens on a free loopback port, prints ``PORT <n>`` on stdout, appends
every request it receives to LOG_PATH (one JSON line: path, headers, body)
and streams ``chat.completion.chunk`` events as vLLM and DeepSeek's API do.
What it streams is chosen by the requested model name:

* ``plain-model``: the answer in ``content`` pieces;
* ``deepseek-reasoner``: ``reasoning_content`` pieces, then ``content`` ones;
* ``think-inline``: ``<think>…</think>answer`` inside ``content``, tags split;
* ``deepseek-r1-noparser``: ``…</think>answer`` (no opening tag) in ``content``;
* ``slow-model``: 200 pieces, 20 ms apart; a dropped connection is logged
  as ``{"cancelled": true, "sent": n}``;
* ``broken-model``: a 500 with an OpenAI-style error body.

Requests without ``Authorization: Bearer test-key`` get a 401.
``GET /v1/models`` lists every model with ``max_model_len`` 4096.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY = "test-key"
MODELS = ("plain-model", "deepseek-reasoner", "think-inline", "deepseek-r1-noparser", "slow-model", "broken-model")

SCRIPTS: dict[str, list[tuple[str, str]]] = {
    "plain-model": [("content", "Quilltown is "), ("content", "the capital "), ("content", "[1].")],
    "deepseek-reasoner": [
        ("reasoning_content", "The passage "),
        ("reasoning_content", "names the capital."),
        ("content", "\n\nQuilltown "),
        ("content", "[1]."),
    ],
    "think-inline": [
        ("content", "<thi"),
        ("content", "nk>\nPassage 1 "),
        ("content", "says so.</th"),
        ("content", "ink>\n\nQuilltown [1]."),
    ],
    "deepseek-r1-noparser": [
        ("content", "Passage 1 says "),
        ("content", "so.\n</think>"),
        ("content", "\n\nQuilltown [1]."),
    ],
}


class Handler(BaseHTTPRequestHandler):
    log_path = ""

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _log(self, entry: dict[str, Any]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def _json(self, status: int, data: dict[str, Any]) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {KEY}":
            return True
        self._json(401, {"error": {"message": "Invalid API key", "type": "invalid_request_error"}})
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "max_model_len": 4096} for m in MODELS
            ]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        self._log({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
        if not self._authorized():
            return
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": "not found"}})
            return
        model = body.get("model")
        if model == "broken-model":
            self._json(500, {"error": {"message": "CUDA out of memory", "type": "server_error"}})
            return
        if model == "slow-model":
            script = [("content", f"w{i} ") for i in range(200)]
        elif model in SCRIPTS:
            script = SCRIPTS[model]
        else:
            self._json(404, {"error": {"message": f"The model {model} does not exist."}})
            return
        # Each scripted piece counts as one token: a script longer than max_tokens is cut, as a server cuts.
        limit = int(body.get("max_tokens") or len(script))
        finish = "length" if len(script) > limit else "stop"
        script = script[:limit]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        sent = 0
        try:
            self._event({"role": "assistant", "content": ""}, model)
            self.wfile.write(b": keep-alive\n\n")
            for field, text in script:
                self._event({field: text}, model)
                sent += 1
                if model == "slow-model":
                    time.sleep(0.02)
            self._event({}, model, finish=finish)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self._log({"model": model, "cancelled": True, "sent": sent})
            return
        self._log({"model": model, "finished": True, "sent": sent})

    def _event(self, delta: dict[str, Any], model: str, finish: str | None = None) -> None:
        chunk = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.flush()


def main() -> None:
    Handler.log_path = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
