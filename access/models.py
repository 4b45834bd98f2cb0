"""Users, API keys and the tamper-evident audit log."""

from __future__ import annotations

from typing import Any, NoReturn

from django.contrib.auth.models import AbstractUser, AnonymousUser
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """A person (or service account) who signs in to Cairn.

    ``attributes`` are the user's ABAC attributes (department, clearance, …),
    set by an admin or taken from the identity provider's claims.
    """

    class Role(models.TextChoices):
        ADMIN = "admin", _("Admin")
        AUDITOR = "auditor", _("Auditor")
        MEMBER = "member", _("Member")

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    attributes = models.JSONField(default=dict, blank=True)
    # Which channel set each attribute (attribute name → a ``Source`` value); a channel changes only its own.
    attribute_sources = models.JSONField(default=dict, blank=True)
    # The identity provider's subject (``iss`` + `` `` + ``sub``) once the user has signed in through it.
    idp_subject = models.CharField(max_length=400, null=True, blank=True, unique=True)
    # SCIM ``externalId`` (the provisioning client's own id for the user).
    external_id = models.CharField(max_length=255, blank=True)
    # What SCIM sent that no column holds (displayName, the formatted name, the e-mail list) and when it last did.
    scim_profile = models.JSONField(default=dict, blank=True)
    # When SCIM deleted the user: the row stays (their documents and audit trail refer to it), deactivated,
    # without memberships or keys, and SCIM answers 404 for it; a later SCIM create of the same userName reuses it.
    deprovisioned_at = models.DateTimeField(null=True, blank=True)

    @property
    def is_platform_admin(self) -> bool:
        return self.is_superuser or self.role == self.Role.ADMIN


class Source(models.TextChoices):
    """Who set a group membership or a user attribute; each channel changes only what it set."""

    ADMIN = "admin", "an administrator"
    IDP = "idp", "identity provider claims"
    SCIM = "scim", "SCIM provisioning"


class GroupMembership(models.Model):
    """One channel's reason for a user being in a group.

    The user is in the group (``user.groups``, what permission checks read)
    while at least one row exists; a channel adds and removes only its own
    rows, so a sign-in never undoes a membership an admin or SCIM set.
    """

    user = models.ForeignKey("access.User", on_delete=models.CASCADE, related_name="memberships")
    group = models.ForeignKey("auth.Group", on_delete=models.CASCADE, related_name="memberships")
    source = models.CharField(max_length=8, choices=Source.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "group", "source"], name="membership_once_per_source")]


class GroupRecord(models.Model):
    """What Cairn keeps about a group beyond Django's name: SCIM's ``externalId`` and timestamps."""

    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, primary_key=True, related_name="record")
    external_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    modified_at = models.DateTimeField(default=timezone.now)


# Whoever a request or a caller acts as: a user, an anonymous visitor, or nobody.
# Read decisions take any of them and deny all but an active user.
AnyUser = User | AnonymousUser | None


class ApiKey(models.Model):
    """A bearer credential for scripts and integrations.

    Only a SHA-256 of the secret is stored; ``prefix`` identifies the key in
    lists and audit events without revealing it.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Scope: a read-only key cannot change anything; ``collection_ids`` (a list) limits it to those
    # collections (None: every collection its user may read); past ``expires_at`` it is refused.
    read_only = models.BooleanField(default=False)
    collection_ids = models.JSONField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Policy(models.Model):
    """An ABAC rule (``access.policy`` grammar): platform-wide, or for one collection.

    ``scope`` is ``platform`` or ``collection:<id>`` (one policy per scope;
    combine conditions with and/or).  A document is readable when RBAC
    grants its collection AND every applicable policy (the platform's and
    its collection's) allows it.  The source is validated when saved
    (``access.services.policy_set``); it is parsed again on every request,
    so a change takes effect on the next one.
    """

    PLATFORM = "platform"

    scope = models.CharField(max_length=40, unique=True)
    collection_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    source = models.TextField()
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self) -> str:
        return f"{self.scope}: {self.source[:60]}"

    @staticmethod
    def collection_scope(collection_id: int) -> str:
        return f"collection:{collection_id}"


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise PermissionError("audit events are append-only")

    def delete(self) -> NoReturn:
        raise PermissionError("audit events are append-only")


class AuditEvent(models.Model):
    """One append-only entry of the audit log.

    Invariant: ``hash = sha256(prev_hash + canonical(fields))`` and
    ``prev_hash`` equals the ``hash`` of the row before it (by id), so editing,
    deleting or inserting a row anywhere breaks the chain at that point
    (``manage.py cairn_audit_verify``).  Written only by
    ``access.services.audit_record``; never from signals.
    """

    class Outcome(models.TextChoices):
        ALLOWED = "allowed"
        DENIED = "denied"
        ERROR = "error"

    at = models.DateTimeField(db_index=True)
    # No FK constraint: deleting a user must never rewrite audit rows.
    actor = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    actor_label = models.CharField(max_length=200, blank=True)
    api_key_prefix = models.CharField(max_length=16, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.ALLOWED)
    rule = models.CharField(max_length=500, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # How ``hash`` was computed (access.audit: sha256, sha256-c14n, hmac-sha256-c14n); older rows are sha256.
    scheme = models.CharField(max_length=24, default="sha256")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]
        # At most one successor per event (and, by a trigger of migration 0006, only onto the newest one):
        # what makes the lock-free append (audit_record) a single chain.
        constraints = [models.UniqueConstraint(fields=["prev_hash"], name="audit_one_successor")]

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError("audit events are append-only")
