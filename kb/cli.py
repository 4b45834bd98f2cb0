"""What the management commands share: who is acting (``--user``) and on which collection."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import CommandError

from access.models import User
from access.services import Actor, personal_user
from kb.exceptions import NotFound
from kb.models import Collection
from kb.selectors import collection_get, readable_collections
from kb.services import collection_create


def resolve_user(username: str | None) -> User:
    """The named user; in personal mode the single local user when none is named."""
    if username:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}")
        return user
    if settings.CAIRN_MODE == "personal":
        return personal_user()
    raise CommandError("--user is required in team mode")


def resolve_collection(user: User, value: str, *, create: bool) -> Collection:
    """A collection ``user`` may read, by id or name; with ``create``, a missing name is created."""
    if value.isdigit():
        try:
            return collection_get(user, value)
        except NotFound:
            raise CommandError(f"No collection {value} that {user} may read") from None
    found = readable_collections(user).filter(name=value).first()
    if found is None:
        if not create:
            raise CommandError(f"No collection named {value!r}")
        found = collection_create(actor=Actor(user=user), owner=user, name=value)
    return found
