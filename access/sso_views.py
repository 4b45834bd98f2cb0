"""Sign-in through the organisation's identity provider (OpenID Connect, authorization-code flow with PKCE).

Authlib's Django client does the protocol: discovery from the issuer URL,
``state`` kept in the session and checked on return, a ``nonce`` checked in
the ID token, PKCE (S256), the ID token's signature checked against the
provider's key set (fetched again when the provider rotates its keys).
What Cairn adds: the claims become a Cairn user, groups and attributes
(``access.identity``), and every sign-in — and every refused one, with the
IdP subject when there is one — goes to the audit log.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.django_client import DjangoOAuth2App, OAuth
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.forms import AuthenticationForm
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET

from access.identity import ClaimMapping, IdentityRefused, idp_user_sync
from access.models import AuditEvent
from access.services import Actor, audit_record

logger = logging.getLogger(__name__)

_NEXT = "cairn_oidc_next"


@functools.cache
def _client(issuer: str) -> DjangoOAuth2App:
    oauth = OAuth()
    oauth.register(
        name="idp",
        client_id=settings.CAIRN_OIDC_CLIENT_ID,
        client_secret=settings.CAIRN_OIDC_CLIENT_SECRET,
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256", "timeout": 10},
    )
    client = oauth.create_client("idp")
    assert isinstance(client, DjangoOAuth2App)
    return client


def _enabled() -> str:
    issuer = settings.CAIRN_OIDC_ISSUER
    if not issuer:
        raise Http404("Single sign-on is not configured.")
    return str(issuer)


def _actor(request: HttpRequest) -> Actor:
    return Actor(user=None, ip=request.META.get("REMOTE_ADDR") or None, request_id=getattr(request, "request_id", ""))


def _refused(request: HttpRequest, message: str, *, rule: str, subject: str = "", status: int = 403) -> HttpResponse:
    audit_record(actor=_actor(request), action="auth.login_failed", target_type="user", target_id=subject[:64],
                 outcome=AuditEvent.Outcome.DENIED, rule=rule[:500], detail={"via": "oidc", "subject": subject[:255]})
    return render(request, "access/login.html", {"sso_error": message, **login_context()}, status=status)


def login_context() -> dict[str, Any]:
    """What the login page shows: the "Sign in with …" button, the password form (unless switched off)."""
    return {"form": AuthenticationForm(), "sso_enabled": bool(settings.CAIRN_OIDC_ISSUER), "sso_name": settings.CAIRN_OIDC_PROVIDER_NAME,
            "password_login": settings.CAIRN_PASSWORD_LOGIN}


@require_GET
def oidc_start(request: HttpRequest) -> HttpResponse:
    """Send the browser to the provider; where to go afterwards (``next``) is kept in the session."""
    issuer = _enabled()
    target = request.GET.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        request.session[_NEXT] = target
    else:
        request.session.pop(_NEXT, None)
    callback = request.build_absolute_uri(reverse("oidc_callback"))
    try:
        response: HttpResponse = _client(issuer).authorize_redirect(request, callback)
    except (requests.RequestException, OAuthError, ValueError) as error:
        logger.warning("identity provider unreachable at sign-in: %s", type(error).__name__)
        return render(request, "access/login.html", {
            "sso_error": "The identity provider cannot be reached. Try again shortly.", **login_context()},
            status=503)
    return response


@require_GET
def oidc_callback(request: HttpRequest) -> HttpResponse:
    """The provider's answer: check it, map the claims to a user, sign them in."""
    issuer = _enabled()
    try:
        token = _client(issuer).authorize_access_token(request)
    except OAuthError as error:
        return _refused(request, "Sign-in through the identity provider did not complete. Please try again.",
                        rule=f"oidc: {error.error or 'error'}: {(error.description or '')[:200]}", status=400)
    except (requests.RequestException, ValueError, KeyError, TypeError) as error:
        return _refused(request, "Sign-in through the identity provider failed. Please try again.",
                        rule=f"oidc: {type(error).__name__}", status=400)
    claims = token.get("userinfo")
    if not claims:
        return _refused(request, "The identity provider sent no ID token.", rule="oidc: no id_token", status=400)
    claims = dict(claims)
    mapping = ClaimMapping.from_settings()
    if mapping.username_claim not in claims or mapping.groups_claim not in claims:
        claims = {**_userinfo(issuer, token), **claims}
    subject = str(claims.get("sub", ""))
    try:
        user = idp_user_sync(claims, mapping=mapping, actor=_actor(request))
    except IdentityRefused as error:
        return _refused(request, str(error), rule=f"oidc: {error}", subject=subject)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    audit_record(actor=Actor(user=user, ip=request.META.get("REMOTE_ADDR") or None,
                             request_id=getattr(request, "request_id", "")),
                 action="auth.login", target_type="user", target_id=user.pk,
                 detail={"via": "oidc", "subject": subject[:255]})
    return HttpResponseRedirect(request.session.pop(_NEXT, None) or reverse(settings.LOGIN_REDIRECT_URL))


def _userinfo(issuer: str, token: dict[str, Any]) -> dict[str, Any]:
    """Claims some providers send only from the userinfo endpoint (groups, often)."""
    try:
        info = _client(issuer).userinfo(token=token)
    except (requests.RequestException, OAuthError, ValueError):
        return {}
    return dict(info) if isinstance(info, dict) else {}
