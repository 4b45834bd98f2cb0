"""Writes of the access app: audit events, API keys, the personal-mode user."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from access.audit import GENESIS, event_hash, hashed_fields
from access.models import ApiKey, AuditEvent, User

# Any constant works; it only has to be the same in every process.
_AUDIT_LOCK_KEY = 0x434149524E  # "CAIRN"

PERSONAL_USERNAME = "me"


@dataclass(frozen=True)
class Actor:
    """Who did something, as recorded in the audit log."""

    user: User | None
    api_key_prefix: str = ""
    ip: str | None = None
    request_id: str = ""

    @property
    def label(self) -> str:
        if self.user is None:
            return "system"
        return self.user.get_username()


SYSTEM = Actor(user=None)


def actor_from_request(request: Any) -> Actor:
    user = getattr(request, "user", None)
    auth = getattr(request, "auth", None)
    return Actor(
        user=user if getattr(user, "is_authenticated", False) else None,
        api_key_prefix=auth.prefix if isinstance(auth, ApiKey) else "",
        ip=request.META.get("REMOTE_ADDR") or None,
        request_id=getattr(request, "request_id", ""),
    )


def audit_record(
    *,
    actor: Actor,
    action: str,
    target_type: str = "",
    target_id: object = "",
    outcome: str = AuditEvent.Outcome.ALLOWED,
    rule: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the hash-chained audit log.

    Appends are serialised (a PostgreSQL advisory lock; SQLite's write lock)
    so two processes never chain onto the same predecessor.  Never put
    secrets in ``detail``: only ids.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_AUDIT_LOCK_KEY])
        previous = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS
        event = AuditEvent(
            at=timezone.now(),
            actor=actor.user,
            actor_label=actor.label[:200],
            api_key_prefix=actor.api_key_prefix,
            ip=actor.ip,
            request_id=actor.request_id[:64],
            action=action,
            target_type=target_type,
            target_id=str(target_id)[:64],
            outcome=outcome,
            rule=rule[:500],
            detail=detail or {},
            prev_hash=previous,
        )
        event.hash = event_hash(previous, hashed_fields(event))
        event.save()
    return event


KEY_PREFIX = "cairn_"


def _key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def api_key_create(*, user: User, name: str, actor: Actor) -> tuple[ApiKey, str]:
    """Create a key; returns it and the secret, which is shown once and never stored."""
    prefix = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(user=user, name=name[:100], prefix=prefix, key_hash=_key_hash(secret))
    audit_record(actor=actor, action="api_key.create", target_type="api_key", target_id=prefix,
                 detail={"user_id": user.pk, "name": key.name})
    return key, secret


def api_key_authenticate(secret: str) -> ApiKey | None:
    if not secret.startswith(KEY_PREFIX):
        return None
    key = (
        ApiKey.objects.select_related("user")
        .filter(key_hash=_key_hash(secret), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if key is not None:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    return key


def personal_user() -> User:
    """The one owner of a personal-mode installation (created on first use)."""
    user, created = User.objects.get_or_create(
        username=PERSONAL_USERNAME,
        defaults={"role": User.Role.ADMIN, "is_staff": True, "is_superuser": True},
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
