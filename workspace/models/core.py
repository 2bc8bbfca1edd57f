"""Workspaces, members, directory ownership, versioned files and the event log."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    EDITOR = "editor", "Editor"
    VIEWER = "viewer", "Viewer"

    @property
    def rank(self) -> int:
        return _RANK[self.value]

    def at_least(self, other: Role) -> bool:
        return _RANK[self.value] >= _RANK[Role(other).value]


_RANK = {"viewer": 1, "editor": 2, "admin": 3, "owner": 4}


class Workspace(models.Model):
    id = models.CharField(primary_key=True, max_length=32, editable=False)
    name = models.CharField(max_length=200)
    intelligence = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Who handed this workspace over, for "where it came from" after an ownership transfer.
    transferred_from = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    transferred_at = models.DateTimeField(null=True, blank=True)
    # Counters advanced inside the transaction that uses them: gap-free because a rollback
    # rolls the counter back too.
    event_seq = models.BigIntegerField(default=0)
    lock_seq = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class Membership(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.workspace_id}: {self.role}"


class DirectoryRule(models.Model):
    """Under `prefix` only `writers` may write (the most specific rule decides)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="rules")
    prefix = models.CharField(max_length=1024)
    writers = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "prefix"], name="rule_unique")]
        ordering = ["prefix"]

    def __str__(self) -> str:
        return f"{self.workspace_id}:{self.prefix}"


class File(models.Model):
    """The head of a path: its newest version. Updated with a conditional UPDATE on `version`."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024)
    version = models.PositiveIntegerField()
    deleted = models.BooleanField(default=False)
    sha256 = models.CharField(max_length=64, blank=True)
    size = models.BigIntegerField(default=0)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "path"], name="file_path_unique")]
        indexes = [models.Index(fields=["workspace", "deleted", "path"], name="file_tree_idx")]

    def __str__(self) -> str:
        return f"{self.path}@{self.version}"


class FileVersion(models.Model):
    """One immutable version of a path. A tombstone (`deleted`) has no content."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="versions")
    path = models.CharField(max_length=1024)
    version = models.PositiveIntegerField()
    deleted = models.BooleanField(default=False)
    sha256 = models.CharField(max_length=64, blank=True)
    size = models.BigIntegerField(default=0)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    task_id = models.CharField(max_length=32, blank=True, default="")
    lock_token = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "path", "version"], name="version_unique"),
        ]
        indexes = [models.Index(fields=["sha256"], name="version_sha_idx")]
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"{self.path}@{self.version}"


class Event(models.Model):
    """The activity and audit log: one row per change, in the change's own transaction."""

    # No index of its own: event_seq_unique and event_type_idx both start with the workspace, and
    # every event written updates each index it has (one more page in every write's commit).
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="events", db_index=False)
    seq = models.BigIntegerField()
    type = models.CharField(max_length=64)
    # The users have no index either: the log is read by workspace (by sequence, or by type), and
    # the activity page's actor filter walks the workspace's sequence. Only deleting a user (never
    # done by the product) scans the table.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    target = models.CharField(max_length=1100, blank=True)
    data = models.JSONField(default=dict)
    at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "seq"], name="event_seq_unique")]
        indexes = [models.Index(fields=["workspace", "type", "seq"], name="event_type_idx")]
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"{self.workspace_id}#{self.seq} {self.type}"


class IdempotencyRecord(models.Model):
    """The first response to a mutating request sent with an `Idempotency-Key`."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(default=0)
    response = models.JSONField(null=True)
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_unique")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key}"
