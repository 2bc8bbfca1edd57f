"""Approvals: a question for the workspace's admins, optionally about a task or a file version.

An approval tied to `path@version` goes `stale` as soon as that file changes: an event listener
marks it promptly, a sweep catches anything a listener missed, and `approval_decide` checks
again under the workspace lock, so a stale approval can never be approved.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import OuterRef, Subquery

from workspace.access import Access
from workspace.errors import Conflict, Forbidden, Invalid, NotFound
from workspace.ids import new_id
from workspace.models import File, Role
from workspace.models.tasks import Approval, ApprovalStatus, Task
from workspace.paths import validate_path
from workspace.services.events import event_record
from workspace.services.tasks import (
    clean_text,
    db_now,
    next_number,
    task_apply_decision,
    task_decision_effects,
)
from workspace.services.workspaces import lock_workspace

log = logging.getLogger(__name__)

MAX_DESCRIPTION = 20000
MAX_COMMENT = 20000
FILE_EVENTS = ("file.written", "file.deleted", "file.moved")
_STALE_SWEEP_EVERY = 5.0
_last_stale_sweep = 0.0


def _get_approval(workspace_id: str, approval_id: Any, *, for_update: bool = False) -> Approval:
    if not isinstance(approval_id, str) or not approval_id or len(approval_id) > 32:
        raise NotFound("approval")
    qs = Approval.objects.filter(workspace_id=workspace_id, pk=approval_id)
    if for_update:
        qs = qs.select_for_update()
    approval = qs.first()
    if approval is None:
        raise NotFound("approval")
    return approval


def approval_request(*, access: Access, title: str, description: str = "", task_id: str | None = None,
                     path: str | None = None, version: int | None = None) -> Approval:
    """Ask the admins for a decision. Tied to `path`, it is about the file's current version
    (or `version`, which must be the current one)."""
    if not access.at_least(Role.EDITOR):
        raise Forbidden("forbidden", "Requesting approvals needs the editor role.", required_role="editor")
    title = clean_text(title, "title", max_length=500)
    description = clean_text(description, "description", max_length=MAX_DESCRIPTION, allow_empty=True)
    if version is not None and path is None:
        raise Invalid("invalid_field", "'version' needs a 'path'.", field="version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise Invalid("invalid_field", "'version' is a version number.", field="version")
    if path is not None:
        path = validate_path(path)
    ws_id = access.workspace_id
    with transaction.atomic():
        lock_workspace(ws_id)
        task = None
        if task_id is not None:
            task = Task.objects.filter(workspace_id=ws_id, pk=task_id).first() if isinstance(task_id, str) else None
            if task is None:
                raise Invalid("unknown_task", "No such task in this workspace.", field="task")
        if path is not None:
            head = File.objects.filter(workspace_id=ws_id, path=path).first()
            if head is None or head.deleted:
                raise NotFound("file", f"No file at {path}.")
            if version is None:
                version = head.version
            elif version != head.version:
                raise Conflict("stale_version", f"{path} is at version {head.version}, not {version}.",
                               path=path, current_version=head.version)
        now = db_now()
        approval = Approval.objects.create(
            id=new_id("apr"), workspace_id=ws_id, number=next_number(Approval, ws_id), title=title,
            description=description, task=task, path=path or "", version=version, requested_by=access.user,
            created_at=now)
        event_record(workspace_id=ws_id, type="approval.requested", actor=access.user, target=approval.pk, data={
            "approval": approval.pk, "title": title, "task": task.pk if task else None, "path": path,
            "version": version, "automatic": False})
    return approval


def _file_changed(approval: Approval) -> dict[str, Any] | None:
    """How the file an approval is tied to has moved on since, or None if it has not."""
    if not approval.path:
        return None
    head = File.objects.filter(workspace_id=approval.workspace_id, path=approval.path).first()
    if head is not None and not head.deleted and head.version == approval.version:
        return None
    return {"path": approval.path, "version": approval.version,
            "current_version": head.version if head else None, "deleted": bool(head is None or head.deleted)}


def _mark_stale(approval: Approval, change: dict[str, Any]) -> None:
    Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(status=ApprovalStatus.STALE)
    approval.status = ApprovalStatus.STALE
    event_record(workspace_id=approval.workspace_id, type="approval.stale", target=approval.pk,
                 data={"approval": approval.pk, **change})


def approval_decide(*, access: Access, approval_id: str, decision: str, comment: str = "") -> Approval:
    """Approve or reject (admins and owners only). A stale approval can no longer be approved."""
    if not access.at_least(Role.ADMIN):
        raise Forbidden("forbidden", "Only admins and the owner decide approvals.", required_role="admin",
                        role=access.role.value)
    if decision not in ("approve", "reject"):
        raise Invalid("invalid_field", "'decision' is 'approve' or 'reject'.", field="decision")
    comment = clean_text(comment, "comment", max_length=MAX_COMMENT, allow_empty=True)
    ws_id = access.workspace_id
    # Staleness found here is recorded in its own transaction, so it stays recorded even though the
    # decision that found it is refused.
    approval = _get_approval(ws_id, approval_id)
    if approval.status == ApprovalStatus.PENDING and approval.path:
        _stale_check(approval.pk, ws_id)
    with transaction.atomic():
        lock_workspace(ws_id)
        approval = _get_approval(ws_id, approval_id, for_update=True)
        if approval.status == ApprovalStatus.STALE:
            raise Conflict("approval_stale", f"{approval.path} has changed since version {approval.version}; "
                           "this approval can no longer be decided.", status=approval.status)
        if approval.status != ApprovalStatus.PENDING:
            raise Conflict("already_decided", f"This approval is already {approval.status}.", status=approval.status)
        change = _file_changed(approval)
        if change is not None:  # changed between the check above and the lock: still refuse
            raise Conflict("approval_stale", f"{approval.path} has changed since version {approval.version}.",
                           status=ApprovalStatus.STALE, **change)
        now = db_now()
        approved = decision == "approve"
        approval.status = ApprovalStatus.APPROVED if approved else ApprovalStatus.REJECTED
        approval.decision = decision
        approval.comment = comment
        approval.decided_by = access.user
        approval.decided_at = now
        approval.save(update_fields=["status", "decision", "comment", "decided_by", "decided_at"])
        outcome = task_apply_decision(approval=approval, approved=approved, comment=comment, actor=access.user,
                                      now=now)
        event_record(workspace_id=ws_id, type="approval.decided", actor=access.user, target=approval.pk, data={
            "approval": approval.pk, "decision": decision, "comment": comment, "old": ApprovalStatus.PENDING,
            "new": approval.status, "task": outcome.as_data() if outcome else None})
        task_decision_effects(outcome=outcome, approval=approval, comment=comment, actor=access.user)
    return approval


def _stale_check(approval_id: str, workspace_id: str) -> bool:
    with transaction.atomic():
        lock_workspace(workspace_id)
        approval = Approval.objects.select_for_update().filter(pk=approval_id, status=ApprovalStatus.PENDING).first()
        if approval is None:
            return False
        change = _file_changed(approval)
        if change is None:
            return False
        _mark_stale(approval, change)
        return True


def approvals_mark_stale(*, workspace_id: str, paths: Iterable[str]) -> int:
    """Mark stale the pending approvals tied to any of `paths` whose file has changed."""
    paths = [p for p in paths if isinstance(p, str) and p]
    if not paths:
        return 0
    ids = list(Approval.objects.filter(workspace_id=workspace_id, status=ApprovalStatus.PENDING, path__in=paths)
               .values_list("id", flat=True))
    return sum(_stale_check(approval_id, workspace_id) for approval_id in ids)


def on_file_event(event: dict[str, Any]) -> None:
    """The `workspace.hooks` listener: a write, delete or move may make approvals stale.
    The common case (no pending approval on that path) costs one indexed query."""
    if event.get("type") not in FILE_EVENTS:
        return
    data = event.get("data") or {}
    paths = [data.get("from"), data.get("to")] if event["type"] == "file.moved" else [data.get("path")]
    approvals_mark_stale(workspace_id=event["workspace"], paths=paths)


def approvals_sweep_stale() -> int:
    """The `approvals.stale` sweep: catches a change whose listener never ran (a process that
    died right after its commit). Scans pending file approvals at most every few seconds."""
    global _last_stale_sweep
    if time.monotonic() - _last_stale_sweep < _STALE_SWEEP_EVERY:
        return 0
    _last_stale_sweep = time.monotonic()
    heads = File.objects.filter(workspace_id=OuterRef("workspace_id"), path=OuterRef("path"))
    candidates = (Approval.objects.filter(status=ApprovalStatus.PENDING).exclude(path="")
                  .annotate(head_version=Subquery(heads.values("version")[:1]),
                            head_deleted=Subquery(heads.values("deleted")[:1]))
                  .values_list("id", "workspace_id", "version", "head_version", "head_deleted"))
    marked = 0
    for approval_id, ws_id, version, head_version, head_deleted in candidates.iterator():
        if head_version != version or head_deleted:
            marked += int(_stale_check(approval_id, ws_id))
    return marked

