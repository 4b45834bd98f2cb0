from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest

from access.models import ApiKey, AuditEvent, User


@admin.register(User)
class CairnUserAdmin(UserAdmin):
    # UserAdmin always sets fieldsets; the stubs type the attribute as optional, as it is on ModelAdmin.
    fieldsets = (*(UserAdmin.fieldsets or ()), ("Cairn", {"fields": ("role", "attributes")}))
    list_display = ("username", "email", "role", "is_active")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("id", "at", "actor_label", "action", "target_type", "target_id", "outcome")
    list_filter = ("action", "outcome")

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
