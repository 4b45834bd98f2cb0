"""Start-up checks of kb's configuration that need more than parsing a value (Django's system checks).

Run by ``manage.py check`` and before every management command, so a
server, a worker or the image's entrypoint stops with the message instead
of failing at the first search.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register


@register()
def dense_device_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``CAIRN_DENSE_DEVICE=cuda`` needs a GPU that torch or FAISS sees."""
    from kb.retrieval.dense_gpu import device_problem

    problem = device_problem(settings.CAIRN_DENSE_DEVICE)
    return [Error(problem, id="kb.E001")] if problem else []
