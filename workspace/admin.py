from __future__ import annotations

from django.contrib import admin

from workspace.models import DirectoryRule, Event, File, FileVersion, Membership, Workspace


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "intelligence", "created_by", "created_at")
    search_fields = ("id", "name")
    inlines = [MembershipInline]
    readonly_fields = ("event_seq", "lock_seq")


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ("workspace", "path", "version", "deleted", "size", "author", "updated_at")
    list_filter = ("deleted",)
    search_fields = ("path",)
    raw_id_fields = ("workspace", "author")


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is append-only: operators may look, never edit."""

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(FileVersion)
class FileVersionAdmin(ReadOnlyAdmin):
    list_display = ("workspace", "path", "version", "deleted", "size", "author", "created_at")
    search_fields = ("path", "sha256")


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("workspace", "seq", "type", "actor", "target", "at")
    list_filter = ("type",)
    search_fields = ("target",)


@admin.register(DirectoryRule)
class DirectoryRuleAdmin(admin.ModelAdmin):
    list_display = ("workspace", "prefix")
    filter_horizontal = ("writers",)
