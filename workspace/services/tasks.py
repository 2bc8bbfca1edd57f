"""Tasks: queues, claims with leases, dependencies, retries and the stale-input check.

Life of a task: `blocked` (dependencies not done) -> `queued` -> `claimed` (one claimant, a lease
on the database clock) -> `done`; or back to `queued` with `attempts + 1` and a jittered back-off
when the lease runs out or the claimant fails it, until `max_attempts`, then `failed`. A task
with `requires_approval` that completes waits in `blocked` on its approval; approved it is `done`,
rejected it is `queued` again with the reviewer's comment. A task whose dependency ends without
being done (failed or cancelled) can never run, so it is cancelled too.

Every change takes the workspace row lock first (one lock order for every writer), records its
event in the same transaction, and releases dependents in the transaction that completes.
"""
from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.db.models.functions import Now
from django.utils import timezone

from workspace.access import Access
from workspace.errors import Conflict, Forbidden, Invalid, NotFound, ServiceError
from workspace.ids import new_id
from workspace.models import File, FileVersion, Role, Workspace
from workspace.models.tasks import (
    FINAL_TASK_STATUSES,
    Approval,
    ApprovalStatus,
    Task,
    TaskDependency,
    TaskRead,
    TaskStatus,
)
from workspace.paths import validate_path
from workspace.services.clock import db_now
from workspace.services.events import event_record
from workspace.services.workspaces import lock_workspace, locked_workspace

log = logging.getLogger(__name__)

MAX_TITLE = 500
MAX_NAME = 100
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_RESULT_BYTES = 256 * 1024
MAX_ERROR_CHARS = 64 * 1024
MAX_DEPENDENCIES = 1000
MAX_BATCH = 1000
MAX_OUTPUTS = 1000
MAX_READS = 1000
MAX_ATTEMPTS_LIMIT = 100
MAX_LEASE_SECONDS = 3600
PRIORITY_LIMIT = 1_000_000
MAX_HISTORY = 50
BACKOFF_CAP_SECONDS = 300.0
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/-")


# -- shared helpers (also used by worklog, approvals and transfers) ---------------------------
def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def clean_text(value: Any, name: str, *, max_length: int, allow_empty: bool = False) -> str:
    """A string the database can store as is: no NUL, no lone surrogates, within its length."""
    if not isinstance(value, str):
        raise Invalid("invalid_field", f"'{name}' must be a string.", field=name)
    if not allow_empty and not value.strip():
        raise Invalid("invalid_field", f"'{name}' must not be empty.", field=name)
    if len(value) > max_length:
        raise Invalid("invalid_field", f"'{name}' is at most {max_length} characters.", field=name)
    _check_string(value, name)
    return value


def _check_string(value: str, name: str) -> None:
    if "\x00" in value:
        raise Invalid("invalid_field", f"'{name}' must not contain NUL characters.", field=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Invalid("invalid_field", f"'{name}' must be valid Unicode text.", field=name) from exc


def clean_json(value: Any, name: str, *, max_bytes: int, object_only: bool = False) -> Any:
    """A JSON value that every database stores faithfully, within `max_bytes` once encoded."""
    if object_only and not isinstance(value, dict):
        raise Invalid("invalid_field", f"'{name}' must be a JSON object.", field=name)

    def walk(item: Any, depth: int) -> None:
        if depth > 64:
            raise Invalid("invalid_field", f"'{name}' is nested too deeply.", field=name)
        if isinstance(item, str):
            _check_string(item, name)
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise Invalid("invalid_field", f"'{name}' keys must be strings.", field=name)
                _check_string(key, name)
                walk(child, depth + 1)
        elif isinstance(item, list):
            for child in item:
                walk(child, depth + 1)
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise Invalid("invalid_field", f"'{name}' must not contain NaN or infinities.", field=name)
        elif not (item is None or isinstance(item, bool | int)):
            raise Invalid("invalid_field", f"'{name}' must be JSON.", field=name)

    walk(value, 0)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > max_bytes:
        raise Invalid("too_large", f"'{name}' is at most {max_bytes} bytes of JSON.", field=name, limit=max_bytes)
    return value


def clean_int(value: Any, name: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise Invalid("invalid_field", f"'{name}' is a whole number from {minimum} to {maximum}.", field=name)
    return value


def _clean_name(value: Any, name: str, *, allow_empty: bool) -> str:
    if not isinstance(value, str) or (not value and not allow_empty) or len(value) > MAX_NAME \
            or any(ch not in _NAME_CHARS for ch in value):
        raise Invalid("invalid_field", f"'{name}' is {'0' if allow_empty else '1'}-{MAX_NAME} characters of "
                      "letters, digits, '.', '_', ':', '/' or '-'.", field=name)
    return value


def next_number(model: type, workspace_id: str) -> int:
    """The next per-workspace number of `model`; the caller holds the workspace row lock."""
    return int(model.objects.filter(workspace_id=workspace_id).aggregate(m=Max("number"))["m"] or 0) + 1


def _require_editor(access: Access, what: str) -> None:
    if not access.at_least(Role.EDITOR):
        raise Forbidden("forbidden", f"{what} needs the editor role.", required_role="editor",
                        role=access.role.value)


def _get_task(workspace_id: str, task_id: Any, *, for_update: bool = False) -> tuple[Task, datetime]:
    """The task, and the database's clock read in the same query."""
    if not isinstance(task_id, str) or not task_id or len(task_id) > 32:
        raise NotFound("task")
    qs = Task.objects.filter(workspace_id=workspace_id, pk=task_id).select_related(
        "claimed_by", "created_by").annotate(
        db_now=Now(),
        # What completing will have to look at, known from this one query: reads recorded by the
        # current claim, and dependents to release (edges never change after creation).
        has_reads=Exists(TaskRead.objects.filter(task_id=OuterRef("pk"), lease_id=OuterRef("lease_id"))),
        has_dependents=Exists(TaskDependency.objects.filter(depends_on_id=OuterRef("pk"))))
    if for_update:
        qs = qs.select_for_update(of=("self",))
    task = qs.first()
    if task is None:
        raise NotFound("task")
    return task, task.db_now  # type: ignore[attr-defined]


# -- creation -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSpec:
    """One task of a batch. `ref` names it inside the batch, so that `depends_on` may list refs of
    other tasks of the same batch as well as ids of existing tasks."""

    title: str
    kind: str = ""
    queue: str = "default"
    payload: dict[str, Any] | None = None
    depends_on: Sequence[str] = field(default_factory=tuple)
    priority: int = 0
    max_attempts: int = 3
    lease_seconds: int = 60
    requires_approval: bool = False
    ref: str | None = None


def task_create(*, access: Access, title: str, kind: str = "", queue: str = "default",
                payload: dict[str, Any] | None = None, depends_on: Sequence[str] = (), priority: int = 0,
                max_attempts: int = 3, lease_seconds: int = 60, requires_approval: bool = False) -> Task:
    """Create one task: `queued` if every dependency is done, else `blocked`."""
    spec = TaskSpec(title=title, kind=kind, queue=queue, payload=payload, depends_on=tuple(depends_on),
                    priority=priority, max_attempts=max_attempts, lease_seconds=lease_seconds,
                    requires_approval=requires_approval)
    return task_create_many(access=access, specs=[spec])[0]


def _clean_spec(spec: TaskSpec, index: int | None) -> TaskSpec:
    where = "" if index is None else f"tasks[{index}]."
    if not isinstance(spec.depends_on, list | tuple) or len(spec.depends_on) > MAX_DEPENDENCIES \
            or not all(isinstance(d, str) and 0 < len(d) <= 64 for d in spec.depends_on):
        raise Invalid("invalid_field", f"'{where}depends_on' is a list of at most {MAX_DEPENDENCIES} task ids.",
                      field=f"{where}depends_on")
    if not isinstance(spec.requires_approval, bool):
        raise Invalid("invalid_field", f"'{where}requires_approval' is true or false.")
    return TaskSpec(
        title=clean_text(spec.title, f"{where}title", max_length=MAX_TITLE),
        kind=_clean_name(spec.kind, f"{where}kind", allow_empty=True),
        queue=_clean_name(spec.queue, f"{where}queue", allow_empty=False),
        payload=clean_json({} if spec.payload is None else spec.payload, f"{where}payload",
                           max_bytes=MAX_PAYLOAD_BYTES, object_only=True),
        depends_on=tuple(dict.fromkeys(spec.depends_on)),
        priority=clean_int(spec.priority, f"{where}priority", minimum=-PRIORITY_LIMIT, maximum=PRIORITY_LIMIT),
        max_attempts=clean_int(spec.max_attempts, f"{where}max_attempts", minimum=1, maximum=MAX_ATTEMPTS_LIMIT),
        lease_seconds=clean_int(spec.lease_seconds, f"{where}lease_seconds", minimum=1, maximum=MAX_LEASE_SECONDS),
        requires_approval=spec.requires_approval,
        ref=spec.ref,
    )


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle among the batch's refs (as a path that returns to its start), or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    for start in edges:
        if colour[start] != white:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        colour[start] = grey
        while stack:
            node, i = stack[-1]
            children = edges[node]
            if i < len(children):
                stack[-1] = (node, i + 1)
                child = children[i]
                if colour[child] == grey:
                    return path[path.index(child):] + [child]
                if colour[child] == white:
                    colour[child] = grey
                    stack.append((child, 0))
                    path.append(child)
            else:
                colour[node] = black
                stack.pop()
                path.pop()
    return None


def task_create_many(*, access: Access, specs: Sequence[TaskSpec]) -> list[Task]:
    """Create a batch of tasks, all or nothing. A dependency cycle among them is a 400."""
    _require_editor(access, "Creating tasks")
    if not isinstance(specs, list | tuple) or not 1 <= len(specs) <= MAX_BATCH:
        raise Invalid("invalid_field", f"A batch has 1 to {MAX_BATCH} tasks.", field="tasks")
    batch = len(specs) > 1 or specs[0].ref is not None
    cleaned = [_clean_spec(spec, i if batch else None) for i, spec in enumerate(specs)]
    refs: dict[str, int] = {}
    for i, spec in enumerate(cleaned):
        if spec.ref is None:
            continue
        if not isinstance(spec.ref, str) or not 0 < len(spec.ref) <= 64:
            raise Invalid("invalid_field", f"'tasks[{i}].ref' is a string of 1-64 characters.", field=f"tasks[{i}].ref")
        if spec.ref in refs:
            raise Invalid("duplicate_ref", f"The ref {spec.ref!r} names two tasks of the batch.", ref=spec.ref)
        refs[spec.ref] = i
    # Inside a batch a dependency names a ref when one matches, else an existing task's id.
    edges = {str(i): [str(refs[d]) for d in spec.depends_on if d in refs] for i, spec in enumerate(cleaned)}
    cycle = _find_cycle(edges)
    if cycle is not None:
        names = [cleaned[int(i)].ref or f"tasks[{i}]" for i in cycle]
        raise Invalid("dependency_cycle", f"The dependencies form a cycle: {' -> '.join(names)}.", cycle=names)
    external = {d for spec in cleaned for d in spec.depends_on if d not in refs}
    ws_id = access.workspace_id
    with transaction.atomic():
        lock_workspace(ws_id)
        existing = dict(Task.objects.filter(workspace_id=ws_id, pk__in=external).values_list("id", "status"))
        missing = sorted(external - existing.keys())
        if missing:
            raise Invalid("unknown_dependency", f"No such task in this workspace: {', '.join(missing[:20])}.",
                          dependencies=missing)
        ended = sorted(d for d, s in existing.items() if s in (TaskStatus.FAILED, TaskStatus.CANCELLED))
        if ended:
            raise Conflict("dependency_ended", "A dependency has failed or was cancelled, so this task could "
                           "never run.", dependencies=[{"id": d, "status": existing[d]} for d in ended])
        now = timezone.now()
        number = next_number(Task, ws_id)
        ids = [new_id("task") for _ in cleaned]
        tasks: list[Task] = []
        links: list[TaskDependency] = []
        for i, spec in enumerate(cleaned):
            dep_ids = [ids[refs[d]] if d in refs else d for d in spec.depends_on]
            ready = all(d not in refs and existing[d] == TaskStatus.DONE for d in spec.depends_on)
            tasks.append(Task(
                id=ids[i], workspace_id=ws_id, number=number + i, title=spec.title, kind=spec.kind,
                queue=spec.queue, payload=spec.payload, priority=spec.priority,
                status=TaskStatus.QUEUED if ready else TaskStatus.BLOCKED, max_attempts=spec.max_attempts,
                lease_seconds=spec.lease_seconds, requires_approval=spec.requires_approval,
                depends_on=dep_ids, created_by=access.user, created_at=now, updated_at=now,
            ))
            links.extend(TaskDependency(task_id=ids[i], depends_on_id=d) for d in dep_ids)
        Task.objects.bulk_create(tasks)
        TaskDependency.objects.bulk_create(links)
        for task in tasks:
            event_record(workspace_id=ws_id, type="task.created", actor=access.user, target=task.id, data={
                "task": task.id, "title": task.title, "kind": task.kind, "queue": task.queue,
                "status": task.status, "priority": task.priority,
                "depends_on": task.depends_on,
            })
    return tasks


# -- claiming and leases ------------------------------------------------------------------------
def _clean_kinds(kinds: Iterable[str]) -> list[str]:
    kinds = list(kinds)
    if len(kinds) > 100:
        raise Invalid("invalid_field", "'kinds' lists at most 100 kinds.", field="kinds")
    return [_clean_name(k, "kinds", allow_empty=True) for k in dict.fromkeys(kinds)]


def task_claim(*, access: Access, queue: str = "default", kinds: Iterable[str] = (),
               lease_seconds: int | None = None, task_id: str | None = None) -> Task | None:
    """Claim the oldest ready task of the highest priority in `queue` (of one of `kinds`, if given),
    or, with `task_id`, that one task if it is ready (the pipeline engine's jobs claim their own step).

    Of racing claimers each task goes to exactly one: on PostgreSQL the candidate row is taken
    with FOR UPDATE SKIP LOCKED; on SQLite the immediate transaction serialises claimers.
    """
    _require_editor(access, "Claiming tasks")
    queue = _clean_name(queue, "queue", allow_empty=False)
    kind_list = _clean_kinds(kinds)
    if lease_seconds is not None:
        clean_int(lease_seconds, "lease_seconds", minimum=1, maximum=MAX_LEASE_SECONDS)
    ws_id = access.workspace_id
    ready = Task.objects.filter(workspace_id=ws_id, queue=queue, status=TaskStatus.QUEUED).filter(
        Q(not_before__isnull=True) | Q(not_before__lte=Now()))
    if kind_list:
        ready = ready.filter(kind__in=kind_list)
    if task_id is not None:
        ready = ready.filter(pk=task_id)
    # An idle poll must not queue up behind the workspace lock: look before locking.
    if not ready.exists():
        return None
    with transaction.atomic():
        lock_workspace(ws_id)
        task = (ready.select_for_update(skip_locked=True, of=("self",)).select_related("created_by")
                .annotate(db_now=Now()).order_by("-priority", "number").first())
        if task is None:
            return None
        now: datetime = task.db_now  # type: ignore[attr-defined]
        seconds = lease_seconds or task.lease_seconds
        task.status = TaskStatus.CLAIMED
        task.claimed_by = access.user
        task.claimed_at = now
        task.lease_id = new_id("lease")
        task.lease_expires_at = now + timedelta(seconds=seconds)
        task.claim_lease_seconds = seconds
        task.not_before = None
        task.updated_at = now
        updated = Task.objects.filter(pk=task.pk, status=TaskStatus.QUEUED).update(
            status=task.status, claimed_by=access.user, claimed_at=now, lease_id=task.lease_id,
            lease_expires_at=task.lease_expires_at, claim_lease_seconds=seconds, not_before=None, updated_at=now)
        if updated != 1:  # unreachable under the row locks; the conditional UPDATE is the backstop
            raise Conflict("claim_race", "The task was taken by another claimer; retry.")
        event_record(workspace_id=ws_id, type="task.claimed", actor=access.user, target=task.id, data={
            "task": task.id, "lease_id": task.lease_id, "attempt": task.attempts + 1,
            "lease_expires_at": iso(task.lease_expires_at), "queue": task.queue, "kind": task.kind,
        })
    return task


def _check_claimant(task: Task, user: Any, lease_id: str | None, now: datetime) -> None:
    if task.status != TaskStatus.CLAIMED or task.claimed_by_id != user.pk:
        raise Conflict("not_claimant", "Only the task's current claimant may do this.",
                       status=task.status, reason="not_claimant")
    if lease_id and lease_id != task.lease_id:
        raise Conflict("not_claimant", "That lease was taken over: the task has been claimed again since.",
                       status=task.status, reason="lease_replaced")
    if task.lease_expires_at is None or task.lease_expires_at <= now:
        raise Conflict("not_claimant", f"Your lease ran out at {iso(task.lease_expires_at)}; the task goes "
                       "back to the queue.", status=task.status, reason="lease_expired")


def task_heartbeat(*, access: Access, task_id: str, lease_seconds: int | None = None,
                   lease_id: str | None = None) -> Task:
    """Extend the caller's lease by `lease_seconds` (default: the claim's lease length)."""
    _require_editor(access, "Heartbeats")
    if lease_seconds is not None:
        clean_int(lease_seconds, "lease_seconds", minimum=1, maximum=MAX_LEASE_SECONDS)
    task, now = _get_task(access.workspace_id, task_id)
    _check_claimant(task, access.user, lease_id, now)
    seconds = lease_seconds or task.claim_lease_seconds or task.lease_seconds
    expires = now + timedelta(seconds=seconds)
    # A conditional UPDATE, decided on the database clock: no workspace lock and no event, so
    # heartbeats stay cheap; a sweep or a new claim that got there first makes it match nothing.
    updated = Task.objects.filter(pk=task.pk, status=TaskStatus.CLAIMED, claimed_by=access.user,
                                  lease_id=task.lease_id, lease_expires_at__gt=now).update(
        lease_expires_at=expires, claim_lease_seconds=seconds, updated_at=now)
    if updated != 1:
        current, at = _get_task(access.workspace_id, task_id)
        _check_claimant(current, access.user, task.lease_id, at)
        raise Conflict("not_claimant", "Your lease ended before the heartbeat.", reason="lease_expired")
    task.lease_expires_at = expires
    task.claim_lease_seconds = seconds
    task.updated_at = now
    return task


# -- stale inputs ---------------------------------------------------------------------------------
def task_record_reads(*, access: Access, task_id: str, files: list[dict[str, Any]]) -> list[TaskRead]:
    """Record that the claimant of `task_id` read these file versions (for stale-input checks).

    Only the current claimant records; a later read of a path replaces the earlier one. Reads
    belong to one claim (lease): a new claim starts with none.
    """
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_READS:
        raise Invalid("invalid_field", f"'files' lists 1 to {MAX_READS} files.", field="files")
    wanted: dict[str, int] = {}
    for i, item in enumerate(files):
        if not isinstance(item, dict):
            raise Invalid("invalid_field", f"'files[{i}]' is an object {{path, version}}.", field=f"files[{i}]")
        path = validate_path(item.get("path"))  # type: ignore[arg-type]
        wanted[path] = clean_int(item.get("version"), f"files[{i}].version", minimum=1, maximum=2**31 - 1)
    ws_id = access.workspace_id
    task, now = _get_task(ws_id, task_id)
    _check_claimant(task, access.user, None, now)
    match = Q()
    for path, version in wanted.items():
        match |= Q(path=path, version=version)
    found = set(FileVersion.objects.filter(match, workspace_id=ws_id, deleted=False).values_list("path", "version"))
    unknown = [{"path": p, "version": v} for p, v in wanted.items() if (p, v) not in found]
    if unknown:
        raise Invalid("unknown_version", "These file versions do not exist (or are deletions).", files=unknown[:50])
    now = timezone.now()
    rows = [TaskRead(task_id=task.pk, lease_id=task.lease_id, path=p, version=v, recorded_at=now)
            for p, v in wanted.items()]
    TaskRead.objects.bulk_create(rows, update_conflicts=True, unique_fields=["task", "lease_id", "path"],
                                 update_fields=["version", "recorded_at"])
    return rows


def stale_reads(task: Task) -> list[dict[str, Any]]:
    """The files this claim read that have a newer version (or were deleted) since."""
    reads = dict(TaskRead.objects.filter(task_id=task.pk, lease_id=task.lease_id).values_list("path", "version"))
    if not reads:
        return []
    heads = {f.path: f for f in File.objects.filter(workspace_id=task.workspace_id, path__in=list(reads))}
    changed = []
    for path, version in sorted(reads.items()):
        head = heads.get(path)
        if head is not None and (head.version > version or head.deleted):
            changed.append({"path": path, "read_version": version, "current_version": head.version,
                            "deleted": head.deleted})
    return changed


# -- finishing ------------------------------------------------------------------------------------
def _clear_claim(task: Task) -> None:
    task.claimed_by = None
    task.claimed_at = None
    task.lease_id = ""
    task.lease_expires_at = None
    task.claim_lease_seconds = None


def release_dependents(*, workspace_id: str, done_ids: Sequence[str], actor: Any) -> list[str]:
    """Move to `queued` the blocked dependents of `done_ids` whose every dependency is now done.
    Runs inside the transaction that made them done."""
    candidates = set(Task.objects.filter(
        workspace_id=workspace_id, status=TaskStatus.BLOCKED, completed_at__isnull=True,
        dependency_links__depends_on_id__in=list(done_ids)).values_list("id", flat=True))
    if not candidates:
        return []
    waiting = set(TaskDependency.objects.filter(task_id__in=candidates).exclude(
        depends_on__status=TaskStatus.DONE).values_list("task_id", flat=True))
    ready = sorted(candidates - waiting)
    if ready:
        Task.objects.filter(pk__in=ready, status=TaskStatus.BLOCKED).update(
            status=TaskStatus.QUEUED, updated_at=timezone.now())
        for task_id in ready:
            event_record(workspace_id=workspace_id, type="task.ready", actor=actor, target=task_id,
                         data={"task": task_id, "old": TaskStatus.BLOCKED, "new": TaskStatus.QUEUED,
                               "released_by": list(done_ids)})
    return ready


def _cancel_dependents(*, workspace_id: str, root_ids: Sequence[str], actor: Any, now: datetime) -> list[str]:
    """Cancel, transitively, the unfinished tasks that depend on tasks that ended without being
    done: they could never become ready."""
    cancelled: list[str] = []
    frontier = list(root_ids)
    while frontier:
        dependents = list(Task.objects.filter(
            workspace_id=workspace_id, dependency_links__depends_on_id__in=frontier,
        ).exclude(status__in=FINAL_TASK_STATUSES).distinct())
        frontier = []
        for task in dependents:
            dead = TaskDependency.objects.filter(task_id=task.pk, depends_on_id__in=list(root_ids) + cancelled) \
                .values_list("depends_on_id", flat=True).first()
            old = task.status
            task.status = TaskStatus.CANCELLED
            task.cancel_reason = f"dependency {dead} ended without being done"
            task.updated_at = now
            _clear_claim(task)
            task.save(update_fields=["status", "cancel_reason", "updated_at", "claimed_by", "claimed_at",
                                     "lease_id", "lease_expires_at", "claim_lease_seconds"])
            approvals = _cancel_pending_approvals(task)
            event_record(workspace_id=workspace_id, type="task.cancelled", actor=actor, target=task.pk, data={
                "task": task.pk, "old": old, "new": TaskStatus.CANCELLED, "reason": "dependency_ended",
                "dependency": dead, "approvals_cancelled": approvals})
            cancelled.append(task.pk)
            frontier.append(task.pk)
    return cancelled


def _cancel_pending_approvals(task: Task) -> list[str]:
    """A cancelled task's pending approvals can no longer be decided; returns their ids."""
    pending = Approval.objects.filter(task_id=task.pk, status=ApprovalStatus.PENDING)
    ids = list(pending.values_list("id", flat=True))
    if ids:
        pending.update(status=ApprovalStatus.CANCELLED, decided_at=timezone.now())
    return ids


def task_complete(*, access: Access, task_id: str, result: Any = None, outputs: Sequence[str] = (),
                  accept_stale: bool = False, lease_id: str | None = None) -> Task:
    """Finish the caller's claim. Refused (409 stale_inputs) when a file it read has changed,
    unless `accept_stale`. Releases dependents in the same transaction, or, with
    `requires_approval`, requests the approval they wait on."""
    _require_editor(access, "Completing tasks")
    result = clean_json(result, "result", max_bytes=MAX_RESULT_BYTES)
    if not isinstance(outputs, list | tuple) or len(outputs) > MAX_OUTPUTS:
        raise Invalid("invalid_field", f"'outputs' is a list of at most {MAX_OUTPUTS} paths.", field="outputs")
    outputs = list(dict.fromkeys(validate_path(p) for p in outputs))
    ws_id = access.workspace_id
    with transaction.atomic():
        lock_workspace(ws_id)
        task, now = _get_task(ws_id, task_id, for_update=True)
        _check_claimant(task, access.user, lease_id, now)
        stale = stale_reads(task) if task.has_reads else []  # type: ignore[attr-defined]
        if stale and not accept_stale:
            raise Conflict("stale_inputs", f"{len(stale)} file(s) this task read have changed since; re-read "
                           "them, or complete with accept_stale.", files=stale)
        task.result = result
        task.outputs = outputs
        task.completed_at = now
        task.lease_expires_at = None
        task.updated_at = now
        task.error = ""
        data: dict[str, Any] = {"task": task.pk, "lease_id": task.lease_id, "attempt": task.attempts + 1,
                                "outputs": outputs, "stale_inputs_accepted": stale}
        if task.requires_approval:
            approval = Approval.objects.create(
                id=new_id("apr"), workspace_id=ws_id, number=next_number(Approval, ws_id),
                title=f"Approve the result of task: {task.title}"[:500],
                description=json.dumps({"result": result, "outputs": outputs}, ensure_ascii=False)[:20000],
                task=task, automatic=True, requested_by=access.user, created_at=now)
            task.status = TaskStatus.BLOCKED
            task.approval = approval
            data.update(status=TaskStatus.BLOCKED, approval=approval.pk)
        else:
            task.status = TaskStatus.DONE
            data.update(status=TaskStatus.DONE)
        task.save(update_fields=["result", "outputs", "completed_at", "lease_expires_at", "updated_at", "error",
                                 "status", "approval"])
        event_record(workspace_id=ws_id, type="task.completed", actor=access.user, target=task.pk, data=data)
        if task.requires_approval:
            event_record(workspace_id=ws_id, type="approval.requested", actor=access.user, target=task.approval.pk,
                         data={"approval": task.approval.pk, "title": task.approval.title, "task": task.pk,
                               "automatic": True})
        elif task.has_dependents:  # type: ignore[attr-defined]
            release_dependents(workspace_id=ws_id, done_ids=[task.pk], actor=access.user)
    return task


def _backoff(attempts: int) -> float:
    """Seconds before a failed task may be claimed again: exponential, capped, full jitter in its
    upper half so that a crowd of failures does not come back at once."""
    base = min(BACKOFF_CAP_SECONDS, 2.0 ** max(0, attempts - 1))
    return base * random.uniform(0.5, 1.0)  # noqa: S311 - scheduling jitter, not a secret


def _end_attempt(*, ws: Workspace, task: Task, now: datetime, reason: str, error: str, retry: bool,
                 actor: Any) -> None:
    """An attempt ended without completing: back to the queue after a back-off, or `failed`."""
    claimant = task.claimed_by
    task.attempts += 1
    task.error = error
    task.history = (list(task.history or []) + [{
        "attempt": task.attempts, "by": claimant.username if claimant else None, "lease_id": task.lease_id,
        "claimed_at": iso(task.claimed_at), "ended_at": iso(now), "reason": reason, "error": error[:4000],
    }])[-MAX_HISTORY:]
    base = {"task": task.pk, "attempt": task.attempts, "max_attempts": task.max_attempts, "reason": reason,
            "error": error[:4000], "claimant": claimant.username if claimant else None}
    if retry and task.attempts < task.max_attempts:
        task.status = TaskStatus.QUEUED
        task.not_before = now + timedelta(seconds=_backoff(task.attempts))
        _clear_claim(task)
        task.updated_at = now
        task.save()
        event_record(workspace_id=ws.id, type="task.requeued", actor=actor, target=task.pk,
                     data={**base, "old": TaskStatus.CLAIMED, "new": TaskStatus.QUEUED,
                           "not_before": iso(task.not_before)})
        return
    task.status = TaskStatus.FAILED
    task.completed_at = now
    task.updated_at = now
    _clear_claim(task)
    task.save()
    written = _write_failed_log(ws=ws, task=task, author=claimant or task.created_by)
    event_record(workspace_id=ws.id, type="task.failed", actor=actor, target=task.pk,
                 data={**base, "old": TaskStatus.CLAIMED, "new": TaskStatus.FAILED, **written})
    _cancel_dependents(workspace_id=ws.id, root_ids=[task.pk], actor=actor, now=now)


def failed_log_text(task: Task) -> str:
    lines = [f"task {task.pk}: {task.title}", f"kind: {task.kind or '-'}   queue: {task.queue}",
             f"attempts: {task.attempts} of {task.max_attempts}", f"failed at: {iso(task.completed_at)}", ""]
    for entry in task.history or []:
        lines.append(f"attempt {entry['attempt']} by {entry['by'] or '-'} "
                     f"({entry['claimed_at'] or '-'} -> {entry['ended_at']}): {entry['reason']}")
        if entry.get("error"):
            lines.extend(f"    {line}" for line in str(entry["error"]).splitlines() or [""])
    if task.error:
        lines += ["", "last error:", task.error]
    return "\n".join(lines) + "\n"


def _write_failed_log(*, ws: Workspace, task: Task, author: Any) -> dict[str, Any]:
    """Write `failed/<task-id>.log` as the last claimant. A refusal (a directory rule or a lock on
    failed/) must not undo the failure itself, so it is reported in the event instead."""
    from workspace.services.files import file_write

    path = f"failed/{task.pk}.log"
    try:
        with transaction.atomic():
            written = file_write(access=Access(workspace=ws, user=author, role=Role.EDITOR), path=path,
                                 content=failed_log_text(task).encode("utf-8"), task_id=task.pk)
    except ServiceError as exc:
        log.warning("could not write %s: %s", path, exc.message)
        return {"log": None, "log_error": exc.message}
    return {"log": path, "log_version": written.version.version}


def task_fail(*, access: Access, task_id: str, error: str = "", retry: bool = True,
              lease_id: str | None = None) -> Task:
    """The claimant gives up this attempt: back to the queue (with `retry`, while attempts remain)
    or `failed`, with its error log written under failed/."""
    _require_editor(access, "Failing tasks")
    error = clean_text(error, "error", max_length=MAX_ERROR_CHARS, allow_empty=True)
    ws_id = access.workspace_id
    with transaction.atomic():
        ws = locked_workspace(ws_id)
        task, now = _get_task(ws_id, task_id, for_update=True)
        _check_claimant(task, access.user, lease_id, now)
        _end_attempt(ws=ws, task=task, now=now, reason="failed", error=error or "failed by its claimant",
                     retry=retry, actor=access.user)
    return task


def task_cancel(*, access: Access, task_id: str, reason: str = "") -> Task:
    """Cancel an unfinished task (its creator, or an admin); its dependents are cancelled too."""
    _require_editor(access, "Cancelling tasks")
    reason = clean_text(reason, "reason", max_length=MAX_TITLE, allow_empty=True)
    ws_id = access.workspace_id
    with transaction.atomic():
        lock_workspace(ws_id)
        task, now = _get_task(ws_id, task_id, for_update=True)
        if task.created_by_id != access.user.pk and not access.at_least(Role.ADMIN):
            raise Forbidden("forbidden", "Only the task's creator or an admin may cancel it.")
        if task.status in FINAL_TASK_STATUSES:
            raise Conflict("not_cancellable", f"The task is already {task.status}.", status=task.status)
        old = task.status
        claimant = task.claimed_by.username if task.claimed_by_id else None
        task.status = TaskStatus.CANCELLED
        task.cancel_reason = reason or f"cancelled by {access.user.username}"
        task.updated_at = now
        _clear_claim(task)
        task.save()
        approvals = _cancel_pending_approvals(task)
        event_record(workspace_id=ws_id, type="task.cancelled", actor=access.user, target=task.pk, data={
            "task": task.pk, "old": old, "new": TaskStatus.CANCELLED, "reason": reason or "cancelled",
            "claimant": claimant, "approvals_cancelled": approvals})
        _cancel_dependents(workspace_id=ws_id, root_ids=[task.pk], actor=access.user, now=now)
    return task


# -- approval outcomes (called by workspace.services.approvals inside its transaction) ----------
@dataclass(frozen=True)
class DecisionOutcome:
    task: Task
    old: str
    gate: bool

    def as_data(self) -> dict[str, Any]:
        return {"task": self.task.pk, "old": self.old, "new": self.task.status, "gate": self.gate}


def task_apply_decision(*, approval: Approval, approved: bool, comment: str, actor: Any,
                        now: datetime) -> DecisionOutcome | None:
    """What an approval decision does to its task row. The gate (the approval the task's completion
    requested) makes it `done`, or puts it back to `queued` with the comment. Any decision about a
    task is attached to it as its `review`. `task_decision_effects` then records what follows, after
    the caller has recorded the decision itself."""
    if approval.task_id is None:
        return None
    task = Task.objects.select_for_update().get(pk=approval.task_id)
    task.review = {"approval": approval.pk, "decision": "approve" if approved else "reject", "comment": comment,
                   "by": actor.username, "at": iso(now)}
    old = task.status
    gate = task.approval_id == approval.pk and task.status == TaskStatus.BLOCKED and task.completed_at is not None
    if gate and approved:
        task.status = TaskStatus.DONE
    elif gate:
        task.status = TaskStatus.QUEUED
        task.completed_at = None
        _clear_claim(task)
    task.updated_at = now
    task.save()
    return DecisionOutcome(task=task, old=old, gate=gate)


def task_decision_effects(*, outcome: DecisionOutcome | None, approval: Approval, comment: str, actor: Any) -> None:
    """An approved gate releases the task's dependents; a rejected one records the task's requeue."""
    if outcome is None or not outcome.gate:
        return
    task = outcome.task
    if task.status == TaskStatus.DONE:
        release_dependents(workspace_id=task.workspace_id, done_ids=[task.pk], actor=actor)
    else:
        event_record(workspace_id=task.workspace_id, type="task.requeued", actor=actor, target=task.pk, data={
            "task": task.pk, "old": outcome.old, "new": task.status, "reason": "rejected", "comment": comment,
            "approval": approval.pk})


# -- the lease sweep --------------------------------------------------------------------------------
def task_expire_leases(*, limit: int = 500) -> int:
    """Return to the queue (or fail) every claimed task whose lease ran out on the database clock.

    Registered as the `tasks.leases` sweep. Safe to run from any number of sweepers: each
    workspace is handled under its row lock, and only rows still claimed and expired change.
    """
    now = db_now()
    due = set(Task.objects.filter(status=TaskStatus.CLAIMED, lease_expires_at__lte=now)
              .values_list("workspace_id", flat=True)[:limit])
    handled = 0
    for ws_id in due:
        with transaction.atomic():
            try:
                ws = locked_workspace(ws_id)
            except Workspace.DoesNotExist:
                continue
            now = db_now()
            expired = list(Task.objects.select_for_update(skip_locked=True, of=("self",))
                           .select_related("claimed_by", "created_by")
                           .filter(workspace_id=ws_id, status=TaskStatus.CLAIMED, lease_expires_at__lte=now)
                           .order_by("number")[:limit])
            for task in expired:
                event_record(workspace_id=ws_id, type="task.heartbeat-lost", target=task.pk, data={
                    "task": task.pk, "claimant": task.claimed_by.username if task.claimed_by_id else None,
                    "lease_id": task.lease_id, "lease_expires_at": iso(task.lease_expires_at)})
                _end_attempt(ws=ws, task=task, now=now, reason="lease_expired", retry=True, actor=None,
                             error=f"the lease ran out at {iso(task.lease_expires_at)} without a heartbeat")
                handled += 1
    return handled
