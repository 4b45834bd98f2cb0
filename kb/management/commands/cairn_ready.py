"""Readiness of a worker container: the checks of ``GET /readyz``, and for an inference worker its model.

Celery workers serve no HTTP, so their probes run this inside the container
(Compose ``healthcheck``, Kubernetes ``readinessProbe``). It prints the same
JSON body as ``/readyz`` and exits 0 when ready, 1 when not.

``--pool inference`` adds the check that matters most there: an inference
worker on this host has loaded its model and beats (it starts beating only
once the model is in memory, and stops when the process dies or hangs), so a
pod whose model is still loading, or failed to load, takes no traffic.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from kb.readiness import readiness

POOLS = ("web", "ingest", "index", "inference", "beat")


def inference_model_check(host: str) -> str | None:
    """None when an inference worker of ``host`` has its model loaded; else what is wrong."""
    if settings.CAIRN_TASKS != "celery":
        return None  # personal mode: the model loads in the serving process on first use
    import redis

    from inference.transport import inference_workers_alive_on

    client = redis.Redis.from_url(settings.CAIRN_REDIS_URL or "", socket_timeout=2, socket_connect_timeout=2)
    try:
        alive = inference_workers_alive_on(client, host)
    except Exception as exc:
        return f"the inference workers' heartbeats cannot be read ({type(exc).__name__})"
    finally:
        client.close()
    if not alive:
        return ("no inference worker on this host has its model loaded (still loading, failed to load, "
                "or not running: see the worker's log)")
    return None


class Command(BaseCommand):
    help = "Exit 0 when this worker is ready (database, migrations, Redis, index; inference: model loaded)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pool", choices=POOLS, default=os.environ.get("CAIRN_POOL") or "web",
                            help="which process this probe is for (default: $CAIRN_POOL, else web)")
        parser.add_argument("--host", default=None, help="the host whose inference worker to check "
                                                         "(default: this one)")

    def handle(self, *args: object, **options: Any) -> None:
        if options["pool"] not in POOLS:  # $CAIRN_POOL bypasses argparse's choices
            self.stderr.write(f"unknown pool {options['pool']!r}; choose from {', '.join(POOLS)}")
            sys.exit(2)
        checks = readiness()
        if options["pool"] == "inference":
            checks["model"] = inference_model_check(options["host"] or socket.gethostname()) or "ok"
        failing = sorted(name for name, state in checks.items() if state != "ok")
        body = {"status": "not ready" if failing else "ready", "pool": options["pool"], "checks": checks}
        if failing:
            body["failing"] = failing
        self.stdout.write(json.dumps(body))
        if failing:
            sys.exit(1)
