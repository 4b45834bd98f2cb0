"""REST API v1 for the permission model: sharing, policies, attributes, groups.

Collection owners share and set the collection's policy; editors set
document attributes; platform admins manage user attributes, groups and the
platform policy.  Every change is written to the audit log by its service.
Objects the caller may not see are 404 (``kb.selectors``), like everywhere.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.utils.translation import gettext as _
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access import administration
from access import selectors as access_selectors
from access.models import Policy, User
from access.services import actor_from_request, signed_in_user
from kb import policy_preview, selectors, services
from kb.api.errors import error_body
from kb.exceptions import InvalidPolicy

ROLES = ("viewer", "editor", "owner")


def member_out(member: selectors.Member) -> dict[str, Any]:
    return {"kind": member.kind, "name": member.name, "role": member.role.value, "implicit": member.implicit}


def _principal(kind: str, name: str) -> User | Group:
    if kind == "user":
        return _user(name)
    if kind == "group":
        return _group(name)
    raise ValidationError({"kind": _("must be 'user' or 'group'")})


def _user(name: str) -> User:
    user = access_selectors.user_by_username(name)
    if user is None:
        raise ValidationError({"user": _("No such user: %(name)s.") % {"name": repr(name[:150])}})
    return user


def _group(name: str) -> Group:
    group = access_selectors.group_by_name(name)
    if group is None:
        raise ValidationError({"group": _("No such group: %(name)s.") % {"name": repr(name[:150])}})
    return group


def policy_error(exc: InvalidPolicy | administration.PolicyError) -> Response:
    position = exc.position
    reason = exc.reason if isinstance(exc, InvalidPolicy) else exc.message
    details = {"position": position, "column": None if position is None else position + 1, "reason": reason}
    return Response(error_body("invalid_policy", str(exc), details), status=status.HTTP_400_BAD_REQUEST)


class CollectionMembersView(APIView):
    """GET who may do what (owners only); POST ``{"user"|"group": name, "role"}`` shares."""

    class Input(serializers.Serializer):
        user = serializers.CharField(max_length=150, required=False)
        group = serializers.CharField(max_length=150, required=False)
        role = serializers.ChoiceField(choices=ROLES)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if ("user" in attrs) == ("group" in attrs):
                raise ValidationError(_("Give exactly one of 'user' or 'group'."))
            return attrs

    def get(self, request: Request, collection_id: str) -> Response:
        collection = selectors.collection_get(request.user, collection_id, for_owner=True)
        return Response({"results": [member_out(m) for m in selectors.collection_members(collection)]})

    def post(self, request: Request, collection_id: str) -> Response:
        collection = selectors.collection_get(request.user, collection_id, for_owner=True)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        kind = "user" if "user" in params else "group"
        principal = _principal(kind, params[kind])
        if kind == "user" and principal.pk == collection.owner_id:
            raise ValidationError({"user": _("The collection's owner already holds every right.")})
        services.collection_share(actor=actor_from_request(request), collection=collection,
                                  principal=principal, role=params["role"])
        return Response({"results": [member_out(m) for m in selectors.collection_members(collection)]},
                        status=status.HTTP_200_OK)


class CollectionMemberView(APIView):
    """DELETE ``/collections/<id>/members/<user|group>/<name>``: remove every grant of that principal."""

    def delete(self, request: Request, collection_id: str, kind: str, name: str) -> Response:
        collection = selectors.collection_get(request.user, collection_id, for_owner=True)
        principal = _principal(kind, name)
        services.collection_unshare(actor=actor_from_request(request), collection=collection, principal=principal)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CollectionPolicyView(APIView):
    """GET/PUT ``{"policy": "…"}`` (empty: none) — owners only; an invalid policy is a 400 with its position.

    A policy that would hide every document from the owner saving it is
    refused with 409 ``confirm_required`` (its preview in ``details``) unless
    the PUT says ``"confirm": true``.
    """

    class Input(serializers.Serializer):
        policy = serializers.CharField(max_length=4000, allow_blank=True, trim_whitespace=False)
        confirm = serializers.BooleanField(required=False, default=False)

    def get(self, request: Request, collection_id: str) -> Response:
        # Owners only: a policy names the attributes that decide access, which readers need not learn.
        collection = selectors.collection_get(request.user, collection_id, for_owner=True)
        return Response({"policy": access_selectors.policy_source(Policy.collection_scope(collection.pk))})

    def put(self, request: Request, collection_id: str) -> Response:
        collection = selectors.collection_get(request.user, collection_id, for_owner=True)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        source = data.validated_data["policy"]
        try:
            if source.strip() and not data.validated_data["confirm"]:
                preview = policy_preview.policy_preview(collection=collection, source=source,
                                                        saver=signed_in_user(request))
                if preview["hides_everything_from_you"]:
                    return Response(error_body("confirm_required", confirm_message(preview), preview),
                                    status=status.HTTP_409_CONFLICT)
            services.collection_policy_set(actor=actor_from_request(request), collection=collection, source=source)
        except InvalidPolicy as exc:
            return policy_error(exc)
        return Response({"policy": access_selectors.policy_source(Policy.collection_scope(collection.pk))})


class CollectionPolicyPreviewView(APIView):
    """POST ``{"policy"}``: who would see how many documents if it were saved (owners only; nothing is saved)."""

    def post(self, request: Request, collection_id: str) -> Response:
        collection = selectors.collection_get(request.user, collection_id, for_owner=True)
        data = CollectionPolicyView.Input(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            preview = policy_preview.policy_preview(collection=collection, source=data.validated_data["policy"],
                                                    saver=signed_in_user(request))
        except InvalidPolicy as exc:
            return policy_error(exc)
        return Response(preview)


class DocumentAttributesView(APIView):
    """GET/PUT ``{"attributes": {…}}`` of a document — editors may change them."""

    class Input(serializers.Serializer):
        attributes = serializers.JSONField()

    def get(self, request: Request, document_id: str) -> Response:
        try:
            document = selectors.document_get(request.user, document_id)
        except selectors.NotFound:
            document = selectors.document_get_managed(request.user, document_id)
        return Response({"id": document.pk, "attributes": document.attributes or {}})

    def put(self, request: Request, document_id: str) -> Response:
        # Editors label documents even while a policy hides them (labels are how they become visible).
        try:
            document = selectors.document_get(request.user, document_id, for_edit=True)
        except selectors.NotFound:
            document = selectors.document_get_managed(request.user, document_id)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        document = services.document_attributes_set(actor=actor_from_request(request), document=document,
                                                    attributes=data.validated_data["attributes"])
        return Response({"id": document.pk, "attributes": document.attributes})


# --- platform administration ------------------------------------------------------------


class AdminView(APIView):
    """Platform admins only (role ``admin`` or a superuser; the personal-mode owner is one)."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not getattr(request.user, "is_platform_admin", False):
            raise PermissionDenied(_("Only a platform admin may do this."))


class UserAttributesView(AdminView):
    class Input(serializers.Serializer):
        attributes = serializers.JSONField()

    def _user(self, username: str) -> Any:
        user = access_selectors.user_by_username(username)
        if user is None:
            raise selectors.NotFound("user")
        return user

    def get(self, request: Request, username: str) -> Response:
        user = self._user(username)
        return Response({"username": user.get_username(), "role": user.role, "attributes": user.attributes or {},
                         "groups": sorted(user.groups.values_list("name", flat=True))})

    def put(self, request: Request, username: str) -> Response:
        user = self._user(username)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            administration.user_attributes_set(actor=actor_from_request(request), user=user,
                                               attributes=data.validated_data["attributes"])
        except administration.InvalidAttributes as exc:
            raise ValidationError({"attributes": str(exc)}) from None
        return Response({"username": user.get_username(), "attributes": user.attributes})


class GroupsView(AdminView):
    class Input(serializers.Serializer):
        name = serializers.CharField(max_length=150)

    def get(self, request: Request) -> Response:
        return Response({"results": [{"name": g.name, "members": members}
                                     for g, members in access_selectors.groups_with_members()]})

    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            group = administration.group_create(actor=actor_from_request(request), name=data.validated_data["name"])
        except administration.InvalidAttributes as exc:
            raise ValidationError({"name": str(exc)}) from None
        return Response({"name": group.name, "members": []}, status=status.HTTP_201_CREATED)


class GroupMembersView(AdminView):
    """POST ``{"user": name}`` adds a member (effective at once)."""

    class Input(serializers.Serializer):
        user = serializers.CharField(max_length=150)

    def post(self, request: Request, name: str) -> Response:
        group = _group(name)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        user = _user(data.validated_data["user"])
        administration.group_member_add(actor=actor_from_request(request), group=group, user=user)
        return Response({"name": group.name, "members": sorted(group.user_set.values_list("username", flat=True))})


class GroupMemberView(AdminView):
    """DELETE ``…/members/<user>`` removes the admin's membership (effective at once)."""

    def delete(self, request: Request, name: str, username: str) -> Response:
        group = _group(name)
        user = _user(username)
        administration.group_member_remove(actor=actor_from_request(request), group=group, user=user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class GroupView(AdminView):
    """DELETE ``/admin/groups/<name>``: the group, its memberships and its collection grants (not SCIM's)."""

    def delete(self, request: Request, name: str) -> Response:
        group = _group(name)
        try:
            administration.group_delete(actor=actor_from_request(request), group=group)
        except administration.GroupManaged as exc:
            return Response(error_body("scim_managed", str(exc)), status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PlatformPolicyView(AdminView):
    """GET/PUT ``{"policy": "…"}``: the policy every document read must also pass (empty: none).

    Like a collection's: a policy that would hide every document from the
    admin saving it is refused with 409 ``confirm_required`` (its preview in
    ``details``) unless the PUT says ``"confirm": true``.
    """

    class Input(serializers.Serializer):
        policy = serializers.CharField(max_length=4000, allow_blank=True, trim_whitespace=False)
        confirm = serializers.BooleanField(required=False, default=False)

    def get(self, request: Request) -> Response:
        return Response({"policy": access_selectors.policy_source(Policy.PLATFORM)})

    def put(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        source = data.validated_data["policy"]
        try:
            if source.strip() and not data.validated_data["confirm"]:
                preview = policy_preview.platform_policy_preview(source=source, saver=signed_in_user(request))
                if preview["hides_everything_from_you"]:
                    return Response(error_body("confirm_required", confirm_message(preview), preview),
                                    status=status.HTTP_409_CONFLICT)
            administration.policy_set(actor=actor_from_request(request), scope=Policy.PLATFORM, source=source)
        except administration.PolicyError as exc:
            return policy_error(exc)
        return Response({"policy": access_selectors.policy_source(Policy.PLATFORM)})


class PlatformPolicyPreviewView(AdminView):
    """POST ``{"policy"}``: who would read how many documents under it (nothing is saved)."""

    def post(self, request: Request) -> Response:
        data = PlatformPolicyView.Input(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            preview = policy_preview.platform_policy_preview(source=data.validated_data["policy"],
                                                             saver=signed_in_user(request))
        except administration.PolicyError as exc:
            return policy_error(exc)
        return Response(preview)


def confirm_message(preview: dict[str, Any]) -> str:
    return _(
        "This policy would hide all %(total)d documents from you. "
        "Label the documents first, or send \"confirm\": true to save it anyway."
    ) % {"total": preview["total"]}
