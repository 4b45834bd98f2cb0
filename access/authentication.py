"""DRF authentication: API keys, personal mode, (sessions come from DRF)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from access import oidc
from access.identity import ClaimMapping, IdentityRefused, idp_user_sync
from access.middleware import is_loopback
from access.models import AuditEvent, User
from access.selectors import key_collection_limit_set
from access.services import (
    KEY_PREFIX,
    Actor,
    api_key_authenticate,
    api_key_rejected_record,
    api_key_use_record,
    audit_record,
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
        if key.read_only and request.method not in _SAFE_METHODS and not _reads_only(request):
            raise exceptions.PermissionDenied(_("This API key is read-only: it can search and ask, not change anything."))
        if key.collection_ids is not None:
            key_collection_limit_set(key.user, key.collection_ids)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="cairn"'


def _reads_only(request: Request) -> bool:
    """Whether the view answers a POST without changing anything (``reads_only = True``: ask, chat)."""
    view = (request.parser_context or {}).get("view")
    return bool(getattr(view, "reads_only", False))


class ProviderUnreachable(exceptions.APIException):
    status_code = 503
    default_detail = "The identity provider cannot be reached to check this token; try again shortly."
    default_code = "idp_unavailable"


@dataclass(frozen=True)
class IdpToken:
    """``request.auth`` for a request signed in by the identity provider's access token."""

    subject: str
    claims: dict[str, Any]
    prefix = ""  # not an API key: nothing to show in key lists


# subject → (digest of the claims that drive synchronisation, user id): a token whose groups and
# attributes are as last time needs no synchronisation writes, only the user's row (is_active).
_synced: dict[str, tuple[str, int]] = {}
_SYNCED_MAX = 10_000


class IdpTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <JWT>`` issued by the configured identity provider (``CAIRN_OIDC_ISSUER``).

    The claims map to a Cairn user exactly as at an OIDC sign-in
    (``access.identity``): created on first sight, groups and attributes
    synchronised.  A refused token is answered 401 and written to the audit log.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        idp = oidc.provider()
        if idp is None:
            return None
        header = get_authorization_header(request).split()
        if len(header) != 2 or header[0].lower() != b"bearer":
            return None
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed bearer token.") from None
        if token.startswith(KEY_PREFIX):
            return None
        underlying = request._request
        actor = Actor(user=None, ip=underlying.META.get("REMOTE_ADDR") or None,
                      request_id=getattr(underlying, "request_id", ""))
        try:
            claims = idp.verify(token)
            user = _token_user(claims, actor)
        except (oidc.TokenRejected, IdentityRefused) as error:
            audit_record(actor=actor, action="auth.token", target_type="user",
                         target_id=_subject_of(token), outcome=AuditEvent.Outcome.DENIED, rule=str(error)[:500],
                         detail={"method": underlying.method, "path": underlying.path[:300]})
            raise exceptions.AuthenticationFailed(f"Bearer token refused: {error}.") from None
        except oidc.ProviderUnavailable:
            raise ProviderUnreachable() from None
        if getattr(underlying, "_cairn_token_logged", None) != user.pk:
            underlying._cairn_token_logged = user.pk  # type: ignore[attr-defined]
            audit_record(actor=Actor(user=user, ip=actor.ip, request_id=actor.request_id),
                         action="auth.token", target_type="user", target_id=user.pk,
                         detail={"method": underlying.method, "path": underlying.path[:300],
                                 "subject": str(claims.get("sub", ""))[:255]})
        return user, IdpToken(subject=str(claims["sub"]), claims=claims)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="cairn"'


def _token_user(claims: dict[str, Any], actor: Actor) -> User:
    mapping = ClaimMapping.from_settings()
    subject = mapping.subject(claims)
    digest = oidc.claims_digest(claims, (mapping.username_claim, mapping.groups_claim,
                                         *mapping.attribute_claims.values()))
    seen = _synced.get(subject)
    if seen is not None and seen[0] == digest:
        user = User.objects.filter(pk=seen[1], idp_subject=subject).first()
        if user is not None:
            if not user.is_active:
                raise IdentityRefused("This account is deactivated.")
            return user
    user = idp_user_sync(claims, mapping=mapping, actor=actor)
    if len(_synced) >= _SYNCED_MAX:
        _synced.clear()
    _synced[subject] = (digest, user.pk)
    return user


def _subject_of(token: str) -> str:
    """The unverified ``sub`` of a refused token, for the audit log only (never trusted, never the token)."""
    try:
        payload = token.split(".")[1]
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(body.get("sub", ""))[:64] if isinstance(body, dict) else ""
    except (IndexError, ValueError, TypeError, UnicodeDecodeError):
        return ""


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
            raise exceptions.PermissionDenied(_("Cross-site requests are refused."))
        return personal_user(), None


def _cross_site(request: Request) -> bool:
    fetch_site = request.META.get("HTTP_SEC_FETCH_SITE", "")
    if fetch_site in {"cross-site", "same-site"}:
        return True
    origin = request.META.get("HTTP_ORIGIN")
    if origin:
        return urlsplit(origin).netloc.lower() != request.get_host().lower()
    return False
