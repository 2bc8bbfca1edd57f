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


# -- messages (issue 10) -----------------------------------------------------------------------
from workspace.models import ConsumerGroup, Message, Topic, Trigger, TriggerFiring  # noqa: E402


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = ("workspace", "name", "last_offset", "created_at")
    search_fields = ("name",)
    raw_id_fields = ("workspace",)
    readonly_fields = ("last_offset",)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("topic", "offset", "key", "publisher", "published_at")
    search_fields = ("key",)


@admin.register(ConsumerGroup)
class ConsumerGroupAdmin(admin.ModelAdmin):
    list_display = ("topic", "name", "cursor", "max_deliveries", "created_at")
    raw_id_fields = ("topic",)
    readonly_fields = ("cursor",)


@admin.register(Trigger)
class TriggerAdmin(admin.ModelAdmin):
    list_display = ("workspace", "name", "event_type", "prefix", "topic", "enabled", "cursor", "created_by")
    list_filter = ("enabled",)
    raw_id_fields = ("workspace", "created_by")
    readonly_fields = ("cursor",)


@admin.register(TriggerFiring)
class TriggerFiringAdmin(ReadOnlyAdmin):
    list_display = ("trigger", "source", "task_id", "error", "fired_at")


# -- tasks, worklog, approvals, transfers (issue 4) ---------------------------------------------
# Read-only: every change to these goes through workspace.services (rules, events, the worklog's
# hash chain), never through a form.
from workspace.models import Approval, Task, Transfer, WorklogEntry  # noqa: E402


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = ("id", "workspace", "number", "title", "queue", "kind", "status", "priority", "attempts",
                    "claimed_by", "lease_expires_at")
    list_filter = ("status",)
    search_fields = ("id", "title", "kind", "queue")


@admin.register(WorklogEntry)
class WorklogEntryAdmin(ReadOnlyAdmin):
    """Append-only for everyone, the admin included (the model refuses updates and deletes too)."""

    list_display = ("workspace", "seq", "author", "task", "message", "created_at", "hash")
    search_fields = ("message", "hash")


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ("id", "workspace", "title", "status", "task", "path", "version", "requested_by", "decided_by")
    list_filter = ("status",)
    search_fields = ("id", "title", "path")


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = ("id", "workspace", "from_user", "to", "status", "created_at", "expires_at")
    list_filter = ("status",)
    exclude = ("token_digest",)
