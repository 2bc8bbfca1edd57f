"""Locks, tasks, the worklog and approvals as MCP tools (API.md "Locks" to "Approvals")."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from django.conf import settings
from django.db.models.functions import Substr
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations
from pydantic import Field

from switchyard.mcp_server.core import WorkspaceId, call, server
from workspace.access import workspace_for
from workspace.api.approvals import approval_json
from workspace.api.tasks import dependencies_of, task_json
from workspace.api.worklog import entry_json
from workspace.errors import NotFound
from workspace.models import Lock, Role
from workspace.models.tasks import Approval, Task, WorklogEntry
from workspace.paths import validate_prefix
from workspace.services import approvals, locks, tasks, worklog

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)

LockId = Annotated[str, Field(description="The lock's `id` (from lock_acquire or lock_list), such as 'lk_...'.",
                              min_length=1, max_length=64)]
TaskIdArg = Annotated[str, Field(description="The task's `id`, such as 'task_...'.", min_length=1, max_length=32)]
LeaseId = Annotated[str | None, Field(
    description="The `lease_id` task_claim returned. With it the call is refused if the task has been "
                "claimed again since (your lease ran out), instead of acting on someone else's claim.",
    max_length=32)]
LeaseSeconds = Annotated[int | None, Field(description="Lease length in seconds; default: the task's.",
                                           ge=1, le=tasks.MAX_LEASE_SECONDS)]
TaskStatusArg = Literal["blocked", "queued", "claimed", "done", "failed", "cancelled"]


# -- locks -------------------------------------------------------------------------------------
@server.tool(annotations=WRITES)
async def lock_acquire(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    path: Annotated[str, Field(description="The file to lock, such as 'report.md'; a path ending in '/' "
                                           "locks that whole directory.", min_length=1, max_length=4096)],
    ttl_seconds: Annotated[int, Field(description="How long the lock lasts unless renewed (1-300 s). It ends "
                                                  "on its own then, even if you crash.",
                                      ge=1, le=settings.LOCK_MAX_TTL)] = settings.LOCK_DEFAULT_TTL,
    reason: Annotated[str, Field(description="Why you lock it, shown to others who find it locked.",
                                 max_length=locks.MAX_REASON)] = "",
    wait_seconds: Annotated[float, Field(description="If someone else holds it, wait in line up to this many "
                                                     "seconds (0-60) instead of failing at once.",
                                         ge=0, le=locks.MAX_WAIT_SECONDS)] = 0,
) -> dict[str, Any]:
    """Lock a file (or a directory) so that only you can write it until you release it or it expires.
    Returns the lock with its `id` and `token`: pass the token as `lock_token` on every file_write under it,
    renew with lock_renew before `expires_at`, and lock_release when done. Held by someone else: a 'locked'
    error naming the holder and when the lock ends (unless it frees up within `wait_seconds`)."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        granted = locks.lock_acquire_waiting(
            access=access, paths=[path], wait_seconds=wait_seconds,
            attempt=lambda ticket, join_queue: locks.lock_acquire(access=access, paths=[path],
                                                                  ttl_seconds=ttl_seconds, reason=reason,
                                                                  ticket=ticket, join_queue=join_queue),
        )
        return locks.lock_summary(granted[0])

    return await call(ctx, run)


@server.tool(annotations=WRITES)
async def lock_renew(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    lock_id: LockId,
    ttl_seconds: Annotated[int | None, Field(description="New lifetime from now (1-300 s); default: the "
                                                         "lock's own TTL.", ge=1, le=settings.LOCK_MAX_TTL)] = None,
) -> dict[str, Any]:
    """Extend your lock before it expires. A lock that already ended is not revived ('lock_gone')."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        return locks.lock_summary(locks.lock_renew(access=access, lock_id=lock_id, ttl_seconds=ttl_seconds))

    return await call(ctx, run)


@server.tool(annotations=WRITES)
async def lock_release(ctx: Context, *, workspace: WorkspaceId, lock_id: LockId) -> dict[str, Any]:
    """Release your lock so others can write (admins may release anyone's lock)."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace)
        return locks.lock_summary(locks.lock_release(access=access, lock_id=lock_id))

    return await call(ctx, run)


@server.tool(annotations=READ_ONLY)
async def lock_list(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    prefix: Annotated[str, Field(description="Only locks under this directory (empty: all).",
                                 max_length=1100)] = "",
    holder: Annotated[str | None, Field(description="Only locks held by this username (yours: your own "
                                                    "username).", max_length=150)] = None,
) -> dict[str, Any]:
    """The active locks of a workspace: path, holder, reason, token and when each expires."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace)
        qs = Lock.objects.filter(workspace=access.workspace, state=Lock.State.ACTIVE,
                                 expires_at__gt=locks.db_now()).select_related("holder", "on_behalf_of")
        clean = validate_prefix(prefix)
        if clean:
            qs = qs.annotate(head=Substr("path", 1, len(clean))).filter(head=clean)
        if holder:
            qs = qs.filter(holder__username=holder)
        return {"locks": [locks.lock_summary(lock) for lock in qs.order_by("path")[:1000]]}

    return await call(ctx, run)


# -- tasks -------------------------------------------------------------------------------------
def _task(task: Any, user: Any | None = None) -> dict[str, Any]:
    if user is not None:
        task.claimed_by = user  # the service returns it without the claimant loaded
    return task_json(task)


@server.tool(annotations=WRITES)
async def task_create(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    title: Annotated[str, Field(description="What needs doing, for people and agents.", min_length=1,
                                max_length=tasks.MAX_TITLE)],
    kind: Annotated[str, Field(description="A kind, so claimers can pick what they can do, such as "
                                           "'summarise'.", max_length=tasks.MAX_NAME)] = "",
    queue: Annotated[str, Field(description="The queue it goes to.", min_length=1,
                                max_length=tasks.MAX_NAME)] = "default",
    payload: Annotated[dict[str, Any] | None, Field(description="Input data for whoever claims it (a JSON "
                                                                "object).")] = None,
    depends_on: Annotated[list[str] | None, Field(description="Ids of tasks that must be done first; until "
                                                              "then this one is 'blocked'.",
                                                  max_length=tasks.MAX_DEPENDENCIES)] = None,
    priority: Annotated[int, Field(description="Higher is claimed first.", ge=-tasks.PRIORITY_LIMIT,
                                     le=tasks.PRIORITY_LIMIT)] = 0,
    max_attempts: Annotated[int, Field(description="Attempts before it is 'failed' for good.", ge=1,
                                       le=tasks.MAX_ATTEMPTS_LIMIT)] = 3,
    lease_seconds: Annotated[int, Field(description="How long a claim lasts without a heartbeat.", ge=1,
                                        le=tasks.MAX_LEASE_SECONDS)] = 60,
    requires_approval: Annotated[bool, Field(description="A human must approve its result before the tasks "
                                                         "that depend on it run.")] = False,
) -> dict[str, Any]:
    """Create a task for yourself or other agents to claim. Returns it with its `id` and `status`
    ('queued', or 'blocked' while it waits on dependencies)."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        return _task(tasks.task_create(
            access=access, title=title, kind=kind, queue=queue, payload=payload or {},
            depends_on=depends_on or [], priority=priority, max_attempts=max_attempts,
            lease_seconds=lease_seconds, requires_approval=requires_approval))

    return await call(ctx, run)


@server.tool(annotations=WRITES)
async def task_claim(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    queue: Annotated[str, Field(description="The queue to claim from.", min_length=1,
                                max_length=100)] = "default",
    kinds: Annotated[list[str] | None, Field(description="Only tasks of these kinds (default: any).",
                                             max_length=100)] = None,
    lease_seconds: LeaseSeconds = None,
) -> dict[str, Any]:
    """Claim the next ready task (highest priority, then oldest). Returns {"task": ...} with its `lease_id`
    and `lease_expires_at`, or {"task": null} when nothing is ready. While you work, call task_heartbeat
    before the lease expires, or the task goes back to the queue for someone else."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        task = tasks.task_claim(access=access, queue=queue, kinds=kinds or [], lease_seconds=lease_seconds)
        return {"task": _task(task) if task is not None else None}

    return await call(ctx, run)


@server.tool(annotations=WRITES)
async def task_heartbeat(
    ctx: Context, *, workspace: WorkspaceId, task_id: TaskIdArg, lease_seconds: LeaseSeconds = None,
    lease_id: LeaseId = None,
) -> dict[str, Any]:
    """Extend the lease of a task you claimed (you are still working on it)."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        return _task(tasks.task_heartbeat(access=access, task_id=task_id, lease_seconds=lease_seconds,
                                          lease_id=lease_id), user)

    return await call(ctx, run)


@server.tool(annotations=WRITES)
async def task_complete(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    task_id: TaskIdArg,
    result: Annotated[Any, Field(description="The result, any JSON value (keep it small; put large output "
                                             "in files and list them in `outputs`).")] = None,
    outputs: Annotated[list[str] | None, Field(description="Paths of the files you produced.",
                                               max_length=tasks.MAX_OUTPUTS)] = None,
    accept_stale: Annotated[bool, Field(description="Complete even though files you read have changed "
                                                    "since.")] = False,
    lease_id: LeaseId = None,
) -> dict[str, Any]:
    """Finish a task you claimed. Tasks waiting on it become ready (or, if it requires approval, an
    approval is requested first). Refused with 'stale_inputs' when a file you read for it has changed."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        return _task(tasks.task_complete(access=access, task_id=task_id, result=result, outputs=outputs or [],
                                         accept_stale=accept_stale, lease_id=lease_id))

    return await call(ctx, run)


@server.tool(annotations=WRITES)
async def task_fail(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    task_id: TaskIdArg,
    error: Annotated[str, Field(description="What went wrong, for whoever tries next.", max_length=tasks.MAX_ERROR_CHARS)] = "",
    retry: Annotated[bool, Field(description="Put it back in the queue for another attempt (while attempts "
                                             "remain); false fails it for good.")] = True,
    lease_id: LeaseId = None,
) -> dict[str, Any]:
    """Give up on a task you claimed: it goes back to the queue after a back-off, or is 'failed' with its
    error log written under failed/."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        return _task(tasks.task_fail(access=access, task_id=task_id, error=error, retry=retry, lease_id=lease_id))

    return await call(ctx, run)


@server.tool(annotations=READ_ONLY)
async def task_list(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    status: Annotated[TaskStatusArg | None, Field(description="Only tasks in this status.")] = None,
    queue: Annotated[str | None, Field(description="Only tasks of this queue.", max_length=100)] = None,
    limit: Annotated[int, Field(description="At most this many tasks, oldest first.", ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """The tasks of a workspace with their status, claimant and lease (the task board)."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace)
        qs = Task.objects.filter(workspace=access.workspace).select_related("claimed_by", "created_by", "approval")
        if status:
            qs = qs.filter(status=status)
        if queue:
            qs = qs.filter(queue=queue)
        rows = list(qs.order_by("number")[:limit])
        deps = dependencies_of(t.pk for t in rows)
        return {"tasks": [task_json(t, deps.get(t.pk, [])) for t in rows]}

    return await call(ctx, run)


# -- worklog -----------------------------------------------------------------------------------
@server.tool(annotations=WRITES)
async def worklog_append(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    message: Annotated[str, Field(description="What you did, decided or found, in a sentence or a few.",
                                  min_length=1, max_length=worklog.MAX_MESSAGE)],
    task: Annotated[str | None, Field(description="The id of the task this is about, if any.",
                                      max_length=64)] = None,
    data: Annotated[Any, Field(description="Optional structured detail (any JSON value).")] = None,
) -> dict[str, Any]:
    """Record an entry in the workspace's worklog: append-only and tamper-evident, read by people and
    agents to follow what happened."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        entry = worklog.worklog_append(access=access, message=message, task_id=task, data=data)
        entry.author = user
        return entry_json(entry)

    return await call(ctx, run)


@server.tool(annotations=READ_ONLY)
async def worklog_read(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    task: Annotated[str | None, Field(description="Only entries about this task.", max_length=64)] = None,
    author: Annotated[str | None, Field(description="Only entries by this username.", max_length=150)] = None,
    after: Annotated[int, Field(description="Only entries with a larger `seq` (pass the last seq you saw).",
                                ge=0)] = 0,
    limit: Annotated[int, Field(description="At most this many entries, oldest first.", ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Read the worklog in order. Continue with after = the last entry's `seq`."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace)
        qs = WorklogEntry.objects.filter(workspace=access.workspace, seq__gt=after).select_related(
            "author", "on_behalf_of")
        if task:
            qs = qs.filter(task_id=task)
        if author:
            qs = qs.filter(author__username=author)
        return {"entries": [entry_json(e) for e in qs.order_by("seq")[:limit]]}

    return await call(ctx, run)


# -- approvals ---------------------------------------------------------------------------------
@server.tool(annotations=WRITES)
async def approval_request(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    title: Annotated[str, Field(description="What you want approved, in one line.", min_length=1,
                                max_length=500)],
    description: Annotated[str, Field(description="Context for the person deciding.",
                                       max_length=approvals.MAX_DESCRIPTION)] = "",
    task: Annotated[str | None, Field(description="The task this is about, if any.", max_length=64)] = None,
    path: Annotated[str | None, Field(description="The file this is about, if any (its current version is "
                                                  "what gets approved).", max_length=4096)] = None,
    version: Annotated[int | None, Field(description="The version of `path` you mean; it must be the current "
                                                     "one.", ge=1)] = None,
) -> dict[str, Any]:
    """Ask a human (an admin or the owner) to approve something. Returns the approval with its `id` and
    status 'pending'; check it later with approval_status."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        approval = approvals.approval_request(access=access, title=title, description=description, task_id=task, path=path,
                           version=version)
        return approval_json(approval)

    return await call(ctx, run)


@server.tool(annotations=READ_ONLY)
async def approval_status(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    approval_id: Annotated[str, Field(description="The approval's `id`, such as 'apr_...'.", min_length=1,
                                      max_length=32)],
) -> dict[str, Any]:
    """An approval's status ('pending', 'approved', 'rejected', 'stale' when its file changed, or
    'cancelled'), with the decision, the comment and who decided."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace)
        approval = Approval.objects.select_related("requested_by", "decided_by").filter(
            workspace=access.workspace, pk=approval_id).first()
        if approval is None:
            raise NotFound("approval", f"No approval {approval_id} in this workspace.")
        return approval_json(approval)

    return await call(ctx, run)
