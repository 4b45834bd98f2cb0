"""Generation metrics of one process, as JSON-able snapshots (this leaf app imports no Cairn module).

One ``Registry`` per process holds counters, gauges and histograms. A
registry turns into a JSON-able ``snapshot()`` so that an inference worker
can publish its numbers (through Redis) to the web process, whose
``GET /metrics`` turns its own snapshot and every worker's into
``prometheus_client`` metric families (``kb.metrics.generation_families``).
``render()`` writes the same snapshots as Prometheus text directly (the
pool's own tests use it).

Invariants: metric names and help texts are declared once in ``METRICS``;
label values are escaped on output; histogram buckets are cumulative.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_RATE = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
_BATCH = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

# name: (type, help, histogram buckets)
METRICS: dict[str, tuple[str, str, tuple[float, ...]]] = {
    "cairn_generation_requests_total": ("counter", "Generations finished, by outcome (ok, cancelled, timeout, error).", ()),
    "cairn_generation_tokens_total": ("counter", "Tokens generated.", ()),
    "cairn_generation_queue_wait_seconds": ("histogram", "Time from submission to the start of prefill.", _LATENCY),
    "cairn_generation_time_to_first_token_seconds": ("histogram", "Time from submission to the first generated token.", _LATENCY),
    "cairn_generation_tokens_per_second": ("histogram", "Decode speed of one request (its tokens over its run time).", _RATE),
    "cairn_generation_request_batch_size": ("histogram", "Largest batch a request ran in.", _BATCH),
    "cairn_generation_batch_size": ("histogram", "Rows in each forward pass the worker ran.", _BATCH),
    "cairn_generation_queue_depth": ("gauge", "Requests waiting for a batch slot.", ()),
    "cairn_generation_running": ("gauge", "Requests being generated now.", ()),
    "cairn_generation_gpu_memory_bytes": ("gauge", "GPU memory held by torch on the worker's device (allocated, reserved).", ()),
    "cairn_generation_pools": ("gauge", "Generation pools (loaded models) in this process.", ()),
    "cairn_language_models_loaded": ("gauge", "Language models loaded in this process (the team web process must show 0).", ()),
    "cairn_ask_refused_total": ("counter", "Ask requests refused by admission control (user: 429, pool: 503).", ()),
}

LabelKey = tuple[tuple[str, str], ...]


def _key(labels: Mapping[str, object]) -> LabelKey:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


class Registry:
    """Thread-safe metric values of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[LabelKey, float]] = {}
        self._histograms: dict[str, dict[LabelKey, list[float]]] = {}  # bucket counts..., sum, count

    def inc(self, name: str, value: float = 1.0, **labels: object) -> None:
        with self._lock:
            series = self._values.setdefault(name, {})
            key = _key(labels)
            series[key] = series.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: object) -> None:
        with self._lock:
            self._values.setdefault(name, {})[_key(labels)] = float(value)

    def observe(self, name: str, value: float, **labels: object) -> None:
        buckets = METRICS[name][2]
        with self._lock:
            series = self._histograms.setdefault(name, {})
            row = series.setdefault(_key(labels), [0.0] * (len(buckets) + 2))
            index = bisect.bisect_left(buckets, value)
            if index < len(buckets):
                row[index] += 1
            row[-2] += value
            row[-1] += 1

    def value(self, name: str, **labels: object) -> float:
        with self._lock:
            return self._values.get(name, {}).get(_key(labels), 0.0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "values": {n: [[list(map(list, k)), v] for k, v in s.items()] for n, s in self._values.items()},
                "histograms": {n: [[list(map(list, k)), list(r)] for k, r in s.items()] for n, s in self._histograms.items()},
            }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    items = [f'{k}="{_escape(v)}"' for k, v in pairs]
    return "{" + ",".join(items) + "}" if items else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(sources: Iterable[tuple[Mapping[str, str], Mapping[str, Any]]]) -> str:
    """Prometheus text for ``(extra labels, snapshot)`` pairs (one per process)."""
    sources = list(sources)
    lines: list[str] = []
    for name, (kind, help_text, buckets) in METRICS.items():
        samples: list[str] = []
        for extra, snap in sources:
            if kind == "histogram":
                for key, row in snap.get("histograms", {}).get(name, []):
                    base = [*map(tuple, key), *extra.items()]
                    cumulative = 0.0
                    for bound, count in zip(buckets, row[: len(buckets)], strict=True):
                        cumulative += count
                        samples.append(f"{name}_bucket{_labels([*base, ('le', _number(bound))])} {_number(cumulative)}")
                    samples.append(f"{name}_bucket{_labels([*base, ('le', '+Inf')])} {_number(row[-1])}")
                    samples.append(f"{name}_sum{_labels(base)} {_number(row[-2])}")
                    samples.append(f"{name}_count{_labels(base)} {_number(row[-1])}")
            else:
                for key, value in snap.get("values", {}).get(name, []):
                    samples.append(f"{name}{_labels([*map(tuple, key), *extra.items()])} {_number(value)}")
        if samples:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n"


registry = Registry()
"""This process's metrics."""
