"""DRF authentication: API keys, personal mode, (sessions come from DRF)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from access.middleware import is_loopback
from access.services import (
    KEY_PREFIX,
    api_key_authenticate,
    api_key_rejected_record,
    api_key_use_record,
    personal_user,
)

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer cairn_…`` — an API key created by an admin or the user."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = get_authorization_header(request).split()
        if len(header) != 2 or header[0].lower() != b"bearer":
            return None
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed bearer token.") from None
        if not token.startswith(KEY_PREFIX):
            return None  # not ours: other bearer schemes (IdP JWTs) may follow
        key = api_key_authenticate(token)
        if key is None:
            api_key_rejected_record(token=token, request=request)
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        api_key_use_record(key=key, request=request)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="cairn"'


class PersonalModeAuthentication(BaseAuthentication):
    """Personal mode: a loopback client is the local owner, without a login.

    Without a session there is no CSRF token, so a web page in the owner's
    browser could otherwise post forms to 127.0.0.1.  Browsers label such
    requests (``Sec-Fetch-Site``, ``Origin``); unsafe requests that come
    from another site are refused.  Scripts (curl, requests) send neither
    header and pass.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        if settings.CAIRN_MODE != "personal" or not is_loopback(request._request):
            return None
        if request.method not in _SAFE_METHODS and _cross_site(request):
            raise exceptions.PermissionDenied("Cross-site requests are refused.")
        return personal_user(), None


def _cross_site(request: Request) -> bool:
    fetch_site = request.META.get("HTTP_SEC_FETCH_SITE", "")
    if fetch_site in {"cross-site", "same-site"}:
        return True
    origin = request.META.get("HTTP_ORIGIN")
    if origin:
        return urlsplit(origin).netloc.lower() != request.get_host().lower()
    return False
