from typing import Any

from django.conf import settings
from django.http import HttpRequest


def cairn(request: HttpRequest) -> dict[str, Any]:
    return {"cairn_mode": settings.CAIRN_MODE, "cairn_generator": settings.CAIRN_GENERATOR}
