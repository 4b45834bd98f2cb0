from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import translation


def html_lang(language_code: str | None) -> str:
    """The BCP 47 tag for ``<html lang>``: Django's ``zh-hans`` becomes ``zh-Hans``, ``en`` stays ``en``."""
    return translation.to_locale(language_code or settings.LANGUAGE_CODE).replace("_", "-")


def cairn(request: HttpRequest) -> dict[str, Any]:
    from access.audit_review import can_review_audit

    return {
        "cairn_mode": settings.CAIRN_MODE,
        "cairn_generator": settings.CAIRN_LLM_BACKEND,
        "cairn_audit_reviewer": can_review_audit(getattr(request, "user", None)),
        "cairn_html_lang": html_lang(translation.get_language()),
    }
