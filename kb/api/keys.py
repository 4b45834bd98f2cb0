"""REST API v1 for API keys: list, create and revoke (``/api/v1/keys``).

A user manages their own keys; a platform admin may list every user's
(``?all=1``) and revoke any.  A key is named by its public ``prefix``; its
secret is in the answer to the POST that creates it and nowhere else.  A key
that is itself read-only or limited to some collections cannot create keys
(it could otherwise mint a broader one).  A key someone else owns is a 404
to anyone but an admin.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access import selectors as access_selectors
from access.models import ApiKey
from access.services import actor_from_request, api_key_create, api_key_revoke, signed_in_user
from kb import selectors

MAX_KEYS_PER_USER = 100
MAX_EXPIRY_DAYS = 3650


def key_out(key: ApiKey) -> dict[str, Any]:
    now = timezone.now()
    state = ("revoked" if key.revoked_at else "expired" if key.expires_at and key.expires_at <= now else "active")
    return {
        "prefix": key.prefix, "name": key.name, "user": key.user.get_username(), "state": state,
        "read_only": key.read_only, "collections": key.collection_ids,
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


class KeyInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, min_length=1)
    read_only = serializers.BooleanField(default=False)  # type: ignore[assignment]  # the field, not DRF's flag
    collections = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), max_length=200,
                                        allow_null=True, required=False, default=None)
    expires_in_days = serializers.IntegerField(min_value=1, max_value=MAX_EXPIRY_DAYS, allow_null=True,
                                               required=False, default=None)


def key_create_checked(request: Any, data: dict[str, Any]) -> tuple[ApiKey, str]:
    """Create a key for the signed-in user from validated ``KeyInput`` data (API and settings page)."""
    user = signed_in_user(request)
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey) and (auth.read_only or auth.collection_ids is not None):
        raise PermissionDenied(_("A read-only or collection-limited key cannot create keys."))
    if ApiKey.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_KEYS_PER_USER:
        raise ValidationError({"name": _("At most %(limit)s active keys per user; revoke one first.") % {"limit": MAX_KEYS_PER_USER}})
    collections = data.get("collections")
    if collections is not None:
        collections = sorted(set(collections))
        readable = set(selectors.readable_collections(user).filter(pk__in=collections).values_list("pk", flat=True))
        if not collections or readable != set(collections):
            raise ValidationError({"collections": _("Each collection must exist and be readable by you.")})
    days = data.get("expires_in_days")
    expires_at = timezone.now() + dt.timedelta(days=days) if days else None
    return api_key_create(actor=actor_from_request(request), user=user, name=data["name"].strip() or "key",
                          read_only=bool(data.get("read_only")), collection_ids=collections, expires_at=expires_at)


class KeysView(APIView):
    """GET the caller's keys (``?all=1``: everyone's, for admins); POST creates one."""

    def get(self, request: Request) -> Response:
        user = signed_in_user(request)
        everyone = request.query_params.get("all") in ("1", "true")
        if everyone and not user.is_platform_admin:
            raise PermissionDenied(_("Only a platform admin can list every user's keys."))
        keys = access_selectors.api_keys_visible(user, everyone=everyone)[:1000]
        return Response({"results": [key_out(key) for key in keys]})

    def post(self, request: Request) -> Response:
        data = KeyInput(data=request.data)
        data.is_valid(raise_exception=True)
        key, secret = key_create_checked(request, dict(data.validated_data))
        return Response({**key_out(key), "secret": secret}, status=status.HTTP_201_CREATED)


class KeyView(APIView):
    """DELETE revokes (the owner, or a platform admin); anyone else gets a 404."""

    def delete(self, request: Request, prefix: str) -> Response:
        user = signed_in_user(request)
        key = access_selectors.api_keys_visible(user, everyone=True).filter(prefix=prefix[:16]).first()
        if key is None:
            raise NotFound(_("No such key."))
        api_key_revoke(actor=actor_from_request(request), key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)
