from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from agents.models import ApiToken, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "kind", "email", "created_by", "is_staff", "is_active")
    list_filter = ("kind", "is_staff", "is_active")
    fieldsets = (*BaseUserAdmin.fieldsets, ("Switchyard", {"fields": ("kind", "created_by")}))


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("id", "prefix", "digest", "created_at", "last_used_at")
    search_fields = ("prefix", "user__username")
