"""Locks and fencing tokens (see workspace/services/locks.py).

A `Lock` row is one grant: it stays after the lock ends (released, expired, force-released), so
the history of grants per path is what remembers the newest fencing token of every path.
`LockWaiter` rows are the queue of requests waiting for a path, in ticket (id) order; each has
one `LockWaiterPath` per path it waits for, so overlap with other waiters is an indexed query.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models

__all__ = ["Lock", "LockWaiter", "LockWaiterPath"]


class Lock(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Expired"
        FORCE_RELEASED = "force_released", "Force released"

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    # No index of its own: lock_path_token_idx starts with the workspace.
    workspace = models.ForeignKey("workspace.Workspace", on_delete=models.CASCADE, related_name="locks",
                                  db_index=False)
    # A file path, or a subtree when it ends in '/'.
    path = models.CharField(max_length=1024)
    # The users have no index here: every grant inserts a row and every release updates one, and
    # each index is one more page in that commit. Nothing looks locks up by user across
    # workspaces; only deleting a user (never done by the product) scans the table.
    holder = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # The fencing token: every grant in a workspace gets a larger one than every earlier grant
    # (the locks of one batch are one grant and share it).
    token = models.BigIntegerField()
    reason = models.CharField(max_length=500, blank=True)
    ttl_seconds = models.PositiveIntegerField()
    # Times on the database's clock.
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    renewals = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )

    class Meta:
        constraints = [
            # The backstop for "one holder at a time" on one path; overlap between a subtree and
            # the paths inside it is checked under the workspace row lock.
            # It is also the only index of the active locks: the sweep's questions (which active
            # locks are due, in all workspaces or in one) scan it and read each one's expiry. An
            # index by expiry as well cost every grant and every release one more page in its
            # commit, for a scan of the live locks only, never the history.
            models.UniqueConstraint(fields=["workspace", "path"], condition=models.Q(state="active"),
                                    name="lock_active_path_unique"),
        ]
        indexes = [
            # The newest grant per path, and a write's token among the grants on its paths. (No
            # index by token alone: every grant wrote it, one more page in its commit, for one
            # question that the paths answer as well.)
            models.Index(fields=["workspace", "path", "token"], name="lock_path_token_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.path} #{self.token} ({self.state})"

    @property
    def subtree(self) -> bool:
        return self.path.endswith("/")


class LockWaiter(models.Model):
    """A request waiting for its paths; its id is its ticket (served lowest first)."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey("workspace.Workspace", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # Refreshed by the waiting request while it waits (database clock); a waiter whose process
    # died stops refreshing and no longer holds back the requests behind it.
    alive_until = models.DateTimeField()
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["alive_until"], name="lockwaiter_alive_idx")]

    def __str__(self) -> str:
        return f"waiter #{self.pk}"


class LockWaiterPath(models.Model):
    waiter = models.ForeignKey(LockWaiter, on_delete=models.CASCADE, related_name="paths")
    workspace = models.ForeignKey("workspace.Workspace", on_delete=models.CASCADE, related_name="+")
    path = models.CharField(max_length=1024)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["waiter", "path"], name="lockwaiter_path_unique")]
        indexes = [models.Index(fields=["workspace", "path"], name="lockwaiter_ws_path_idx")]

    def __str__(self) -> str:
        return f"{self.path} (waiter #{self.waiter_id})"
