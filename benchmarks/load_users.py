"""Locust users for ``benchmarks/load.py`` (run by it; not meant to be started by hand).

Each simulated user signs in with an API key of its own, waits 1 s between
requests and searches four times for every question it asks (80 % / 20 %).
A request counts as an error unless it answers 200 with the expected shape:
a search with a ``results`` list, an answer with a non-empty ``answer`` and
``citations``.  Every request's latency and outcome is written to
``CAIRN_LOAD_OUT`` when Locust quits, so that ``load.py`` computes exact
percentiles (Locust's own table rounds them).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task

_plan = json.loads(Path(os.environ["CAIRN_LOAD_PLAN"]).read_text())
_keys = itertools.cycle(_plan["keys"])
_keys_lock = threading.Lock()
_queries: list[str] = _plan["queries"]
_records: list[tuple[str, float, int, str, float]] = []


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, response_length: int,
            exception: BaseException | None = None, context: Any = None, response: Any = None, **kwargs: Any) -> None:
    status = int(getattr(response, "status_code", 0) or 0)
    # The time it ended, to see when in the run the slow ones fell.
    _records.append((name, float(response_time), status, "" if exception is None else str(exception)[:200],
                     time.time()))


@events.quitting.add_listener
def _write(environment: Any, **kwargs: Any) -> None:
    Path(os.environ["CAIRN_LOAD_OUT"]).write_text(json.dumps(_records))


class KnowledgeWorker(FastHttpUser):
    wait_time = constant(_plan.get("think_s", 1.0))

    def on_start(self) -> None:
        with _keys_lock:
            self.key = next(_keys)
        self.rng = random.Random()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @task(4)
    def search(self) -> None:
        query = self.rng.choice(_queries)
        with self.client.get("/api/v1/search", params={"q": query, "k": 10}, headers=self._headers(),
                             name="search", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            body = response.json()
            if not isinstance(body.get("results"), list):
                response.failure(f"no results list: {str(body)[:200]}")

    @task(1)
    def ask(self) -> None:
        question = self.rng.choice(_queries)
        with self.client.post("/api/v1/ask", json={"question": question}, headers=self._headers(),
                              name="ask", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            body = response.json()
            # A question nothing answers gets "no good match", said plainly and citing nothing: a right answer.
            if not body.get("answer") or not (body.get("citations") or body.get("no_good_match")):
                response.failure(f"answer without text or citations: {str(body)[:200]}")
