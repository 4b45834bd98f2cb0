"""Permission pages: platform admins set the platform policy, user attributes and groups; editors label documents.

Plain forms (CSRF-protected POSTs, then a redirect), no script.  Every write
goes through the audited services of ``access.administration`` and
``kb.services``, exactly as ``/api/v1/admin/…`` and
``/api/v1/documents/<id>/attributes`` do.  Anyone who is not a platform admin
gets the ordinary 404 page for the admin pages, and the attempt is logged.
In personal mode there are no other users or groups: the admin page shows
the platform policy and your own attributes only.

Saving the platform policy first previews its effect (``kb.policy_preview``);
one that would hide every document from the admin saving it is not saved
until they confirm, with the preview in front of them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext

from access import administration
from access import selectors as access_selectors
from access.models import Policy, User
from access.services import access_denied_record, actor_from_request, signed_in_user
from kb import attribute_forms, policy_preview, selectors, services
from kb.exceptions import Forbidden, InvalidInput, NotFound

MAX_POLICY = 4000


def _admin_or_404(request: HttpRequest, target_id: object = "") -> User:
    user = signed_in_user(request)
    if not user.is_platform_admin:
        access_denied_record(
            actor=actor_from_request(request),
            target_type="admin_page",
            target_id=target_id,
            rule="permission administration is for platform admins",
        )
        raise Http404("No such page")
    return user


def _team() -> bool:
    return bool(settings.CAIRN_MODE == "team")


def _rows(request: HttpRequest) -> dict[str, Any]:
    return attribute_forms.attributes_from_rows(
        request.POST.getlist("attr_name"),
        request.POST.getlist("attr_type"),
        request.POST.getlist("attr_value"),
    )


def _back(name: str, *args: object, anchor: str = "") -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse(name, args=args) + (f"#{anchor}" if anchor else ""))


# --- the platform administration page -------------------------------------------------------------------------


@login_required
def access_admin(request: HttpRequest) -> HttpResponse:
    """``/settings/access/``: the platform policy; in team mode also users and groups."""
    user = _admin_or_404(request)
    context: dict[str, Any] = {
        "policy": access_selectors.policy_source(Policy.PLATFORM),
        "errors": [],
    }
    status = 200
    if request.method == "POST":
        action = str(request.POST.get("action", ""))
        try:
            response = _admin_action(request, user, action, context)
        except (InvalidInput, administration.InvalidAttributes, administration.GroupManaged) as exc:
            context["errors"].append(str(exc))
            response, status = None, 400
        except NotFound as exc:
            context["errors"].append(str(exc))
            response, status = None, 404
        if response is not None:
            return response
        status = max(status, int(context.pop("status", 200)))
    if _team():
        context["users"] = access_selectors.users_for_admin()
        context["groups"] = [
            {
                "group": group,
                "members": access_selectors.group_memberships(group),
                "scim": administration.group_scim_managed(group),
            }
            for group, _ in access_selectors.groups_with_members()
        ]
    else:
        context["me"] = user
        context["my_rows"] = attribute_forms.rows_from_attributes(
            user.attributes, user.attribute_sources
        )
    context["team"] = _team()
    context["user_limit"] = access_selectors.ADMIN_USER_LIST_LIMIT
    return render(request, "kb/access_admin.html", context, status=status)


def _admin_action(
    request: HttpRequest, user: User, action: str, context: dict[str, Any]
) -> HttpResponse | None:
    actor = actor_from_request(request)
    if action in ("policy-preview", "policy-save"):
        return _policy_action(request, user, action, context)
    if not _team():
        raise InvalidInput(gettext("Personal mode has no other users or groups."))
    if action == "group-create":
        created = administration.group_create(
            actor=actor, name=str(request.POST.get("name", ""))[:150]
        )
        messages.success(request, gettext("Group %(name)s created.") % {"name": created.name})
        return _back("access-admin", anchor="groups")
    group = access_selectors.group_by_name(str(request.POST.get("group", ""))[:150])
    if group is None:
        raise NotFound(gettext("No such group."))
    if action == "group-delete":
        administration.group_delete(actor=actor, group=group)
        messages.success(request, gettext("Group %(name)s deleted.") % {"name": group.name})
        return _back("access-admin", anchor="groups")
    member = access_selectors.user_by_username(str(request.POST.get("user", "")).strip()[:150])
    if member is None:
        raise InvalidInput(
            gettext("No such user: %(name)s.") % {"name": str(request.POST.get("user", ""))[:150]}
        )
    if action == "member-add":
        administration.group_member_add(actor=actor, group=group, user=member)
    elif action == "member-remove":
        administration.group_member_remove(actor=actor, group=group, user=member)
    else:
        raise InvalidInput(gettext("Unknown action."))
    return _back("access-admin", anchor="groups")


def _policy_action(
    request: HttpRequest, user: User, action: str, context: dict[str, Any]
) -> HttpResponse | None:
    source = str(request.POST.get("policy", ""))
    if len(source) > MAX_POLICY:
        raise InvalidInput(
            gettext("A policy can be at most %(count)d characters.") % {"count": MAX_POLICY}
        )
    context["policy"] = source
    try:
        effect = (
            policy_preview.platform_policy_preview(source=source, saver=user)
            if source.strip()
            else None
        )
    except administration.PolicyError as exc:
        context["errors"].append(
            gettext("The policy is not valid: %(reason)s") % {"reason": exc.describe()}
        )
        context["status"] = 400
        return None
    context["effect"] = effect
    if action == "policy-preview":
        return None
    if (
        effect is not None
        and effect["hides_everything_from_you"]
        and request.POST.get("confirm") != "yes"
    ):
        context["confirm_required"] = (
            True  # shown with the preview; saving needs a second, explicit click
        )
        context["status"] = 409
        return None
    administration.policy_set(
        actor=actor_from_request(request), scope=Policy.PLATFORM, source=source
    )
    messages.success(
        request,
        gettext("Platform policy saved.")
        if source.strip()
        else gettext("Platform policy removed."),
    )
    return _back("access-admin", anchor="policy")


# --- one user's attributes -------------------------------------------------------------------------------------


@login_required
def user_attributes_page(request: HttpRequest, username: str) -> HttpResponse:
    """``/settings/access/users/<name>/``: an admin edits a user's attributes (the channel of each is shown)."""
    _admin_or_404(request, username[:64])
    person = access_selectors.user_by_username(username)
    if person is None or (not _team() and person.pk != signed_in_user(request).pk):
        raise Http404("No such user")
    errors: list[str] = []
    rows = attribute_forms.rows_from_attributes(person.attributes, person.attribute_sources)
    status = 200
    if request.method == "POST":
        try:
            attributes = _rows(request)
            administration.user_attributes_set(
                actor=actor_from_request(request), user=person, attributes=attributes
            )
        except (InvalidInput, administration.InvalidAttributes) as exc:
            errors, status = [str(exc)], 400
            rows = _posted_rows(request)
        else:
            messages.success(
                request, gettext("Attributes of %(name)s saved.") % {"name": person.get_username()}
            )
            return _back("access-user", person.get_username())
    return render(
        request,
        "kb/access_user.html",
        {
            "person": person,
            "rows": rows,
            "types": attribute_forms.TYPES,
            "errors": errors,
            "groups": sorted(person.groups.values_list("name", flat=True)),
            "team": _team(),
            "has_synced": any(row.source in ("scim", "idp") for row in rows),
        },
        status=status,
    )


def _posted_rows(request: HttpRequest) -> list[attribute_forms.Row]:
    """What the person typed, shown again with the error (so nothing they entered is lost)."""
    names, types, values = (
        request.POST.getlist(k) for k in ("attr_name", "attr_type", "attr_value")
    )
    return [
        attribute_forms.Row(n[:64], t[:16], v[:500])
        for n, t, v in zip(names, types, values, strict=False)
    ]


# --- a document's attributes -----------------------------------------------------------------------------------


@login_required
def document_attributes_page(request: HttpRequest, document_id: int) -> HttpResponse:
    """POST ``/documents/<id>/attributes/``: an editor replaces the document's attributes, then back to its page."""
    if request.method != "POST":
        return _back("document", document_id, anchor="attributes")
    from kb.views import document_context, readable_or_404

    hidden = False
    try:
        document = selectors.document_get(request.user, document_id, for_edit=True)
    except Forbidden as exc:  # a reader, not an editor
        raise PermissionDenied(str(exc.detail)) from None
    except NotFound:
        # Labelling a document a policy hides from its editor is how it becomes readable; else 404, audited.
        document = readable_or_404(request, "document", document_id, selectors.document_get_managed)
        hidden = True
    try:
        attributes = _rows(request)
        services.document_attributes_set(
            actor=actor_from_request(request), document=document, attributes=attributes
        )
    except InvalidInput as exc:
        context = document_context(request, document, hidden=hidden)
        context.update(attribute_errors=[str(exc)], attribute_rows=_posted_rows(request))
        return render(request, "kb/document.html", context, status=400)
    messages.success(
        request, gettext("Attributes saved. Searches and answers use them from now on.")
    )
    return _back("document", document.pk, anchor="attributes")


__all__ = ["access_admin", "document_attributes_page", "user_attributes_page"]
