"""The generation task of the team shape, consumed only by the ``inference`` pool.

Design (how several Celery tasks reach one batcher): an inference worker is
one process per GPU started with Celery's **threads** pool
(``manage.py cairn_worker inference`` does this), so up to ``--concurrency``
tasks run at once in the same process. The model is loaded once when the
worker starts (``worker_ready``; or on the first task) into a process-wide
``GenerationPool``. A task only *enqueues* its request into that pool and
then relays the request's events into the Redis stream the web process reads
(``inference.transport.relay``); the pool's scheduler thread batches
whatever the task threads have enqueued. Celery's own prefetch gives the
worker at most ``concurrency`` requests; the rest wait in Redis for another
worker.

Under the default prefork pool the same task still works (one request at a
time per child process, no batching).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from inference.api import Generator, load_generator
from inference.metrics import registry
from inference.pool import GenerationPool, PoolFull, get_pool, record_gpu_memory
from inference.transport import (
    ALIVE_EVERY,
    STREAM_TTL,
    inference_worker_beat,
    publish,
    relay,
    valid_generation_id,
    worker_key,
)
from inference.wire import request_from_dict

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

TASK_GENERATE = "cairn.inference.generate"
METRICS_KEY = "cairn:metrics:worker:"
METRICS_TTL = 300


def configured_generator() -> Generator:
    return load_generator(
        settings.CAIRN_LLM_BACKEND, settings.CAIRN_LLM_PATH, **getattr(settings, "CAIRN_LLM_OPTIONS", {})
    )


def configured_pool() -> GenerationPool:
    """This process's generation pool for the configured backend, loading the model on first use."""
    return get_pool(
        settings.CAIRN_LLM_BACKEND, settings.CAIRN_LLM_PATH,
        max_batch=settings.CAIRN_GEN_MAX_BATCH, max_wait=settings.CAIRN_GEN_BATCH_WAIT_MS / 1000,
        max_queue=settings.CAIRN_GEN_QUEUE_SIZE, timeout=settings.CAIRN_GEN_TIMEOUT,
        **getattr(settings, "CAIRN_LLM_OPTIONS", {}),
    )


_redis: redis.Redis | None = None
_redis_lock = threading.Lock()


def _client() -> redis.Redis:
    global _redis
    with _redis_lock:
        if _redis is None:
            import redis

            url = settings.CAIRN_REDIS_URL
            if url is None:  # settings refuse CAIRN_TASKS=celery without it; a worker started otherwise ends here
                raise ImproperlyConfigured("The inference worker needs CAIRN_REDIS_URL (redis://host:6379/0).")
            _redis = redis.Redis.from_url(url)
        return _redis


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def publish_alive() -> None:
    """Say that this worker has its model loaded and consumes the ``inference`` queue (for ``ALIVE_TTL`` s)."""
    try:
        inference_worker_beat(_client(), worker_name())
    except Exception:  # the next beat tries again
        logger.warning("could not publish the inference worker's heartbeat", exc_info=True)


def publish_metrics() -> None:
    """This worker's metrics snapshot into Redis, where the web's GET /metrics collects it."""
    import json

    record_gpu_memory(registry)
    from inference.pool import language_models_loaded

    registry.set("cairn_language_models_loaded", language_models_loaded())
    try:
        _client().set(METRICS_KEY + worker_name(), json.dumps(registry.snapshot()), ex=METRICS_TTL)
    except Exception:  # metrics must never fail a generation
        logger.warning("could not publish worker metrics", exc_info=True)


@worker_ready.connect
def _load_model_at_start(sender: Any = None, **kwargs: Any) -> None:
    """Load the model when an inference worker starts, not on its first request."""
    # ``sender`` is Celery's worker consumer; Celery ships no types, and any sender without ``app`` is skipped.
    try:
        queues = set(sender.app.amqp.queues.consume_from or {})
    except AttributeError:
        return
    if "inference" not in queues:
        return
    started = time.monotonic()
    try:
        pool = configured_pool()
    except Exception:
        logger.exception("could not load the generation model at worker start; tasks will retry the load")
        return
    logger.info("inference worker %s ready in %.1fs (backend %s, batching %s)", worker_name(),
                time.monotonic() - started, settings.CAIRN_LLM_BACKEND, pool.batching)
    publish_alive()
    publish_metrics()
    threading.Thread(target=_publish_periodically, name="cairn-metrics", daemon=True).start()


def _publish_periodically(interval: float = ALIVE_EVERY) -> None:
    """Keep the heartbeat and the worker's gauges (queue depth, running, GPU memory) fresh in Redis."""
    while True:
        time.sleep(interval)
        publish_alive()
        publish_metrics()


@shared_task(name=TASK_GENERATE, ignore_result=True)
def generate_answer(payload: dict[str, Any]) -> None:
    """Enqueue one request into this process's pool and relay its events to Redis.

    Not idempotent (a second run would generate again into the same stream),
    so no ``acks_late``: a worker lost mid-generation loses the request, and
    the web process reports a timeout.
    """
    request = request_from_dict(payload)
    generation_id = request.request_id
    if not valid_generation_id(generation_id):
        logger.error("generation task with an invalid id %r dropped", generation_id[:80])
        return
    client = _client()
    # Which worker answers: the web watches its heartbeat while it waits (RedisSource).
    client.set(worker_key(generation_id), worker_name(), ex=STREAM_TTL)
    try:
        ticket = configured_pool().submit(request)
    except PoolFull as exc:
        publish(client, generation_id, {"event": "error", "code": "pool_full", "message": str(exc)})
        return
    except Exception:
        logger.exception("generation %s could not start", generation_id)
        publish(client, generation_id, {"event": "error", "code": "internal",
                                        "message": "The inference worker could not load its model."})
        return
    final = relay(ticket, client, generation_id)
    logger.info("generation %s: %s %s", generation_id, final["event"], final.get("metrics", {}))
    publish_metrics()
