from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from access.models import ApiKey, AuditEvent, User


@admin.register(User)
class CairnUserAdmin(UserAdmin):
    fieldsets = (*UserAdmin.fieldsets, ("Cairn", {"fields": ("role", "attributes")}))
    list_display = ("username", "email", "role", "is_active")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("id", "at", "actor_label", "action", "target_type", "target_id", "outcome")
    list_filter = ("action", "outcome")

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False
