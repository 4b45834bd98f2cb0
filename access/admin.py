"""Django's admin, off unless ``CAIRN_DJANGO_ADMIN=1``; when on, every sign-in and change is audited.

Cairn's own pages and API are the way to manage it; the admin is for an
operator's emergencies.  It bypasses Cairn's services, so it gets its own
site (no autodiscovery: only what is registered here) whose sign-ins are
audited like the login page's, and whose saves, related-object changes,
deletions and password changes write audit events naming the fields changed
and their new values (a password only as "changed").
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db.models import Model, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse

from access.models import ApiKey, AuditEvent, User
from access.services import Actor, actor_from_request, audit_record

_SECRET_FIELDS = {"password", "key_hash"}


def _shown(value: Any) -> Any:
    """A field value as the audit log keeps it (JSON): models and querysets by their names."""
    if isinstance(value, QuerySet):
        return sorted(str(item) for item in value)
    if isinstance(value, Model):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str | dict | list):
        return value
    return str(value)


class AuditedSite(admin.AdminSite):
    site_header = "Cairn administration (audited)"

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().login(request, extra_context)
        if request.method == "POST":
            if request.user.is_authenticated:
                audit_record(actor=actor_from_request(request), action="auth.login", target_type="user",
                             target_id=request.user.pk, detail={"via": "admin"})
            else:
                audit_record(
                    actor=Actor(user=None, ip=request.META.get("REMOTE_ADDR"),
                                request_id=getattr(request, "request_id", "")),
                    action="auth.login_failed", target_type="user",
                    target_id=str(request.POST.get("username", ""))[:150],
                    outcome=AuditEvent.Outcome.DENIED, rule="bad credentials", detail={"via": "admin"},
                )
        return response


site = AuditedSite(name="admin")


class AuditedAdmin(admin.ModelAdmin):
    """Writes an audit event for every save, related-object change and deletion made in the admin."""

    def _record(self, request: HttpRequest, action: str, obj: Model, fields: dict[str, Any]) -> None:
        audit_record(actor=actor_from_request(request), action=f"admin.{action}",
                     target_type=obj._meta.label_lower, target_id=obj.pk, detail={"fields": fields})

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool) -> None:
        super().save_model(request, obj, form, change)
        many = {field.name for field in obj._meta.many_to_many}
        fields = {name: "(changed)" if name in _SECRET_FIELDS else _shown(getattr(obj, name, None))
                  for name in form.changed_data if name not in many}
        self._record(request, "change" if change else "add", obj, fields)

    def save_related(self, request: HttpRequest, form: ModelForm[Any], formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        obj = form.instance
        changed = [field.name for field in obj._meta.many_to_many if field.name in form.changed_data]
        if changed:
            self._record(request, "change_related", obj, {name: _shown(getattr(obj, name).all()) for name in changed})

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self._record(request, "delete", obj, {"deleted": str(obj)})
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            self._record(request, "delete", obj, {"deleted": str(obj)})
        super().delete_queryset(request, queryset)


@admin.register(User, site=site)
class CairnUserAdmin(AuditedAdmin, UserAdmin):
    # UserAdmin always sets fieldsets; the stubs type the attribute as optional, as it is on ModelAdmin.
    fieldsets = (*(UserAdmin.fieldsets or ()), ("Cairn", {"fields": ("role", "attributes")}))
    list_display = ("username", "email", "role", "is_active")

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:  # the form was valid and saved
            user = User.objects.get(pk=id)
            self._record(request, "password", user, {"password": "(changed)"})
        return response


@admin.register(Group, site=site)
class CairnGroupAdmin(AuditedAdmin, GroupAdmin):
    pass


@admin.register(ApiKey, site=site)
class ApiKeyAdmin(AuditedAdmin):
    list_display = ("name", "prefix", "user", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")


@admin.register(AuditEvent, site=site)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("id", "at", "actor_label", "action", "target_type", "target_id", "outcome")
    list_filter = ("action", "outcome")

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
