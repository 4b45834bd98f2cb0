"""The generation task of the team shape, consumed only by the ``inference`` pool.

The model is loaded on the first task and stays resident in the worker
process (``load_generator`` caches it), so a GPU worker pays the load once.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from inference.api import generate, load_generator
from inference.wire import answer_to_dict, request_from_dict

TASK_GENERATE = "cairn.inference.generate"


def configured_generator():  # type: ignore[no-untyped-def]
    return load_generator(settings.CAIRN_GENERATOR, settings.CAIRN_LLM_PATH)


@shared_task(name=TASK_GENERATE, soft_time_limit=600, time_limit=660)
def generate_answer(payload: dict[str, Any]) -> dict[str, Any]:
    return answer_to_dict(generate(configured_generator(), request_from_dict(payload)))
