"""Tasks, worklog, approvals and ownership transfers.

State changes live in workspace/services/{tasks,worklog,approvals,transfers}.py; these classes
hold data, constraints and the one rule that belongs to the data itself: a worklog entry, once
written, is never updated or deleted through the ORM.
"""
from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models

from workspace.models.core import Workspace

__all__ = [
    "AppendOnlyViolation",
    "Approval",
    "ApprovalStatus",
    "Task",
    "TaskDependency",
    "TaskRead",
    "TaskStatus",
    "Transfer",
    "TransferStatus",
    "WorklogEntry",
]


class TaskStatus(models.TextChoices):
    BLOCKED = "blocked", "Blocked"  # waiting on dependencies, or (after completion) on its approval
    QUEUED = "queued", "Queued"
    CLAIMED = "claimed", "Claimed"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_TASK_STATUSES = (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED)


class Task(models.Model):
    id = models.CharField(primary_key=True, max_length=32, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="tasks")
    # Per-workspace creation order: "oldest first" among equal priorities, and the list order.
    number = models.PositiveIntegerField()
    title = models.CharField(max_length=500)
    kind = models.CharField(max_length=100, blank=True, default="")
    queue = models.CharField(max_length=100, default="default")
    payload = models.JSONField(default=dict)
    priority = models.IntegerField(default=0)
    status = models.CharField(max_length=10, choices=TaskStatus.choices)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    # Attempts that ended without completing (a lease ran out, or the claimant failed it).
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_seconds = models.PositiveIntegerField(default=60)
    requires_approval = models.BooleanField(default=False)
    dependencies = models.ManyToManyField("self", symmetrical=False, through="TaskDependency",
                                          related_name="dependents")
    # The same edges as TaskDependency, in the order given, for rendering without a join: a task's
    # dependencies never change after it is created.
    depends_on = models.JSONField(default=list, blank=True)
    # The current claim. `lease_id` names one claim, so a claimant whose lease was taken over
    # (even by its own account, from another process) cannot act on the new claim.
    claimed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_id = models.CharField(max_length=32, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claim_lease_seconds = models.PositiveIntegerField(null=True, blank=True)
    # Back-off after a failed attempt: not claimable before this (database clock).
    not_before = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    outputs = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")
    # One entry per ended attempt: {"attempt", "by", "claimed_at", "ended_at", "reason", "error"}.
    history = models.JSONField(default=list, blank=True)
    # The last approval decision about this task: {"approval", "decision", "comment", "by", "at"}.
    review = models.JSONField(null=True, blank=True)
    # The approval this task waits on after completing (requires_approval).
    approval = models.ForeignKey("Approval", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    cancel_reason = models.CharField(max_length=500, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "number"], name="task_number_unique"),
            models.CheckConstraint(condition=models.Q(max_attempts__gte=1), name="task_max_attempts_positive"),
        ]
        indexes = [
            # The claim: ready tasks of one queue, highest priority first, then oldest.
            models.Index(fields=["workspace", "queue", "status", "-priority", "number"], name="task_claim_idx"),
            # The lease sweep: claimed tasks whose lease ran out, across workspaces.
            models.Index(fields=["status", "lease_expires_at"], name="task_lease_idx"),
        ]
        ordering = ["number"]

    def __str__(self) -> str:
        return f"{self.id} {self.title!r} ({self.status})"


class TaskDependency(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="dependency_links")
    depends_on = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="dependent_links")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "depends_on"], name="task_dependency_unique"),
            models.CheckConstraint(condition=~models.Q(task=models.F("depends_on")), name="task_dependency_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} -> {self.depends_on_id}"


class TaskRead(models.Model):
    """A file version the claimant read during one claim (for the stale-input check)."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="reads")
    lease_id = models.CharField(max_length=32)
    path = models.CharField(max_length=1024)
    version = models.PositiveIntegerField()
    recorded_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "lease_id", "path"], name="task_read_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} read {self.path}@{self.version}"


# -- worklog ------------------------------------------------------------------------------------
class AppendOnlyViolation(Exception):
    """Raised on any attempt to update or delete a worklog entry through the ORM."""


def _refuse(what: str) -> NoReturn:
    raise AppendOnlyViolation(f"The worklog is append-only: {what} is not allowed.")


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> NoReturn:
        _refuse("update")

    def _update(self, values: Any) -> NoReturn:
        _refuse("update")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> NoReturn:
        _refuse("bulk_update")

    def update_or_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("update_or_create")

    def delete(self) -> NoReturn:
        _refuse("delete")

    def _raw_delete(self, using: Any) -> NoReturn:
        _refuse("delete")


class WorklogEntry(models.Model):
    """One append-only, hash-chained worklog entry.

    `hash` = sha256(`prev_hash` + canonical JSON of the entry), see workspace/services/worklog.py.
    Every foreign key PROTECTs, so no cascade can silently remove or rewrite an entry.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="worklog")
    seq = models.BigIntegerField()
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.PROTECT, related_name="worklog")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    on_behalf_of = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    message = models.TextField()
    # The canonical JSON of `data`, byte for byte what the hash covers ("" for none): stored as
    # text so that no database-side JSON normalisation can change what was hashed.
    data_json = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "seq"], name="worklog_seq_unique")]
        indexes = [models.Index(fields=["workspace", "author", "seq"], name="worklog_author_idx"),
                   models.Index(fields=["workspace", "task", "seq"], name="worklog_task_idx")]
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"{self.workspace_id}#{self.seq}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            _refuse("update")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("delete")


# -- approvals ----------------------------------------------------------------------------------
class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    STALE = "stale", "Stale"  # tied to path@version, and the file changed before a decision
    CANCELLED = "cancelled", "Cancelled"  # its task was cancelled before a decision


class Approval(models.Model):
    id = models.CharField(primary_key=True, max_length=32, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="approvals")
    number = models.PositiveIntegerField()
    title = models.CharField(max_length=500)
    description = models.TextField(blank=True, default="")
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.CASCADE, related_name="approvals")
    path = models.CharField(max_length=1024, blank=True, default="")
    version = models.PositiveIntegerField(null=True, blank=True)
    # Requested by the task's completion (its gate), rather than by someone's request.
    automatic = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    decision = models.CharField(max_length=8, blank=True, default="")
    comment = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "number"], name="approval_number_unique")]
        indexes = [models.Index(fields=["workspace", "status", "path"], name="approval_path_idx")]
        ordering = ["number"]

    def __str__(self) -> str:
        return f"{self.id} {self.title!r} ({self.status})"


# -- ownership transfers ------------------------------------------------------------------------
class TransferStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"


class Transfer(models.Model):
    """An offer of a workspace's ownership. Only the sha256 of the one-time token is stored."""

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="transfers")
    from_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    to = models.CharField(max_length=254)
    # Set when `to` named an existing account; otherwise the offer is to whoever signs up with `to_email`.
    to_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="+")
    to_email = models.CharField(max_length=254, blank=True, default="")
    message = models.TextField(blank=True, default="")
    token_digest = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=10, choices=TransferStatus.choices, default=TransferStatus.PENDING)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    finished_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")

    class Meta:
        indexes = [models.Index(fields=["status", "expires_at"], name="transfer_expiry_idx")]
        constraints = [
            # One open offer per workspace at a time.
            models.UniqueConstraint(fields=["workspace"], condition=models.Q(status="pending"),
                                    name="transfer_one_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.workspace_id} -> {self.to} ({self.status})"
