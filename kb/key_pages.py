"""The API keys page (``/settings/keys/``): create a key, see it once, list and revoke keys.

Plain forms (CSRF-protected POSTs, no script).  Everyone manages their own
keys; a platform admin also sees every user's and may revoke any.  The
writes go through the same checks as ``/api/v1/keys`` (``kb.api.keys``).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from rest_framework.exceptions import APIException

from access import selectors as access_selectors
from access.services import actor_from_request, api_key_revoke, signed_in_user
from kb import selectors
from kb.api.keys import MAX_EXPIRY_DAYS, KeyInput, key_create_checked, key_out


def _messages(error: APIException) -> list[str]:
    detail = error.detail
    if isinstance(detail, dict):
        return [f"{field}: {' '.join(str(m) for m in (msgs if isinstance(msgs, list) else [msgs]))}"
                for field, msgs in detail.items()]
    if isinstance(detail, list):
        return [str(item) for item in detail]
    return [str(detail)]


@login_required
def keys_page(request: HttpRequest) -> HttpResponse:
    user = signed_in_user(request)
    errors: list[str] = []
    created = None
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create":
            form = KeyInput(data={
                "name": request.POST.get("name", ""), "read_only": request.POST.get("read_only") == "on",
                "collections": [value for value in request.POST.getlist("collections") if value] or None,
                "expires_in_days": request.POST.get("expires_in_days") or None,
            })
            try:
                form.is_valid(raise_exception=True)
                key, secret = key_create_checked(request, dict(form.validated_data))
                created = {**key_out(key), "secret": secret}
                status = 201
            except APIException as error:
                errors, status = _messages(error), 400
        elif action == "revoke":
            target = access_selectors.api_keys_visible(user, everyone=True).filter(
                prefix=str(request.POST.get("prefix", ""))[:16]).first()
            if target is None:
                errors, status = [_("No such key.")], 404
            else:
                api_key_revoke(actor=actor_from_request(request), key=target)
        else:
            errors, status = [_("Unknown action.")], 400
    everyone = user.is_platform_admin
    keys = [key_out(key) for key in access_selectors.api_keys_visible(user, everyone=everyone)[:500]]
    return render(request, "kb/keys.html", {
        "keys": keys, "created": created, "errors": errors, "everyone": everyone,
        "collections": selectors.readable_collections(user).order_by("name")[:500],
        "max_days": MAX_EXPIRY_DAYS,
    }, status=status)


__all__ = ["keys_page"]
