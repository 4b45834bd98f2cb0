"""What a collection policy would do before it is saved: who would see how many documents.

The candidate policy is saved inside a transaction, each person with access
is counted through the real read path (``selectors.readable_documents``, the
one search and every page use), and the transaction is rolled back — so the
preview is exactly what saving would do, audit record included (and undone
with it).  People with access: the owner, users the collection is shared
with, and the members of groups it is shared with (at most ``MAX_PEOPLE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction

from access.models import User
from access.services import SYSTEM
from kb import selectors, services
from kb.models import Collection, Document

MAX_PEOPLE = 200


@dataclass(frozen=True)
class Person:
    user: User
    via: str  # "owner", "user", or "group <name>"


def people_with_access(collection: Collection) -> list[Person]:
    people: dict[int, Person] = {collection.owner_id: Person(collection.owner, "owner")}
    for member in selectors.collection_members(collection):
        if len(people) >= MAX_PEOPLE:
            break
        if member.kind == "user":
            user = User.objects.filter(username=member.name, is_active=True).first()
            if user is not None and user.pk not in people:
                people[user.pk] = Person(user, "user")
        else:
            group = Group.objects.filter(name=member.name).first()
            if group is None:
                continue
            for user in group.user_set.filter(is_active=True).order_by("username")[:MAX_PEOPLE]:
                if user.pk not in people and len(people) < MAX_PEOPLE:
                    people[user.pk] = Person(user, f"group {group.name}")
    return list(people.values())


def _counts(collection: Collection, people: list[Person]) -> dict[int, int]:
    return {p.user.pk: selectors.readable_documents(p.user, collection=collection).count() for p in people}


def policy_preview(*, collection: Collection, source: str, saver: User) -> dict[str, Any]:
    """The effect of saving ``source`` as the collection's policy; ``InvalidPolicy`` if it does not parse."""
    people = people_with_access(collection)
    if saver.pk not in {p.user.pk for p in people}:
        people.append(Person(saver, "you"))
    total = Document.objects.unrestricted("how many documents a policy could hide, for its owner").live().filter(
        collection=collection).count()
    before = _counts(collection, people)
    with transaction.atomic():
        services.collection_policy_set(actor=SYSTEM, collection=collection, source=source)
        after = _counts(collection, people)
        transaction.set_rollback(True)
    return _effect(people, saver, total, before, after)


def _effect(people: list[Person], saver: User, total: int, before: dict[int, int],
            after: dict[int, int]) -> dict[str, Any]:
    """A preview's answer: each person's readable documents before and after, and who loses or gains."""
    rows: list[dict[str, Any]] = [
        {"user": p.user.get_username(), "via": p.via, "before": before[p.user.pk], "after": after[p.user.pk]}
        for p in people]
    you = next(row for row, p in zip(rows, people, strict=True) if p.user.pk == saver.pk)
    return {
        "total": total,
        "you": {"before": you["before"], "after": you["after"]},
        "hides_everything_from_you": total > 0 and you["after"] == 0,
        "people": rows,
        "losing": [row for row in rows if row["after"] < row["before"]],
        "gaining": [row for row in rows if row["after"] > row["before"]],
    }


def hidden_from(user: User, collection: Collection) -> int:
    """Live documents of the collection that the policies hide from ``user`` (for truthful empty states)."""
    total = Document.objects.unrestricted("how many documents a policy hides, told to who cannot see them").live(
    ).filter(collection=collection).count()
    return max(0, total - selectors.readable_documents(user, collection=collection).count())


def platform_policy_preview(*, source: str, saver: User) -> dict[str, Any]:
    """The effect of saving ``source`` as the platform policy, the same way as ``policy_preview``.

    People: every active user (at most ``MAX_PEOPLE``, the saver always
    among them); counts: the documents each may read in every collection.
    ``total`` is the live documents of the collections the saver may open
    (what the policy could hide from them).  ``PolicyError`` if it does not parse.
    """
    from access.administration import policy_set
    from access.models import Policy as PolicyRow

    users = list(User.objects.filter(is_active=True).exclude(pk=saver.pk).order_by("username")[:MAX_PEOPLE - 1])
    people = [Person(saver, "you"), *(Person(user, "user") for user in users)]
    total = Document.objects.unrestricted("how many documents the platform policy could hide from its saver").live(
    ).filter(collection__in=selectors.readable_collections(saver)).count()

    def counts() -> dict[int, int]:
        return {p.user.pk: selectors.readable_documents(p.user).count() for p in people}

    before = counts()
    with transaction.atomic():
        policy_set(actor=SYSTEM, scope=PolicyRow.PLATFORM, source=source)
        after = counts()
        transaction.set_rollback(True)
    return {**_effect(people, saver, total, before, after), "people_counted": len(people)}
