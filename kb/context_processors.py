from typing import Any

from django.conf import settings
from django.http import HttpRequest


def cairn(request: HttpRequest) -> dict[str, Any]:
    from access.audit_review import can_review_audit

    return {
        "cairn_mode": settings.CAIRN_MODE,
        "cairn_generator": settings.CAIRN_LLM_BACKEND,
        "cairn_audit_reviewer": can_review_audit(getattr(request, "user", None)),
    }
