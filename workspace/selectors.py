"""Reads for the browser pages that are more than a one-line queryset (STYLE rule 2).

Every function takes ids the caller has already cleared with `workspace_for`, and answers in a
fixed, small number of queries whatever the size of the workspace: the pages that use them are
measured with 1,000 files and 10,000 events.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Q

from workspace.models import DirectoryRule, Event, File, FileVersion, Lock, Membership
from workspace.models.tasks import (
    Approval,
    ApprovalStatus,
    Task,
    TaskDependency,
    TaskStatus,
    Transfer,
    TransferStatus,
    WorklogEntry,
)
from workspace.services.locks import covering_paths

BOARD_COLUMNS = (TaskStatus.BLOCKED, TaskStatus.QUEUED, TaskStatus.CLAIMED, TaskStatus.DONE, TaskStatus.FAILED,
                 TaskStatus.CANCELLED)


# -- files and locks ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TreeEntry:
    path: str
    version: int
    size: int
    author: str


def tree_entries(*, workspace_id: str, prefix: str = "") -> list[TreeEntry]:
    """The live files by path, as light rows rather than models: a tree shows thousands."""
    qs = File.objects.filter(workspace_id=workspace_id, deleted=False).order_by("path")
    if prefix:
        qs = qs.filter(path__startswith=prefix)
    rows = qs.values_list("path", "version", "size", "author__username")
    # startswith is LIKE on SQLite (ASCII case-insensitive): keep the exact prefix only.
    return [TreeEntry(*row) for row in rows if row[0].startswith(prefix)]


def active_locks(*, workspace_id: str, now: datetime) -> list[Lock]:
    """Locks that hold at `now` (database clock): a lock past its expiry is gone even before the
    sweep records it."""
    return list(Lock.objects.filter(workspace_id=workspace_id, state=Lock.State.ACTIVE, expires_at__gt=now)
                .select_related("holder", "on_behalf_of").order_by("path"))


def lock_covering(path: str, locks_by_path: dict[str, Lock]) -> Lock | None:
    """The lock on `path` itself or on a subtree above it."""
    for candidate in covering_paths(path):
        lock = locks_by_path.get(candidate)
        if lock is not None:
            return lock
    return None


def file_head(*, workspace_id: str, path: str) -> File | None:
    return File.objects.filter(workspace_id=workspace_id, path=path).select_related("author").first()


def file_versions(*, workspace_id: str, path: str, before: int | None = None, limit: int = 200) -> list[FileVersion]:
    """Versions of `path`, newest first (below `before` when given)."""
    qs = FileVersion.objects.filter(workspace_id=workspace_id, path=path).select_related("author", "on_behalf_of")
    if before is not None:
        qs = qs.filter(version__lt=before)
    return list(qs.order_by("-version")[:limit])


def task_versions(*, workspace_id: str, task_ids: Sequence[str]) -> dict[str, list[FileVersion]]:
    """The file versions each task wrote (newest per path), by task id."""
    found: dict[str, dict[str, FileVersion]] = defaultdict(dict)
    if not task_ids:
        return {}
    rows = (FileVersion.objects.filter(workspace_id=workspace_id, task_id__in=list(task_ids), deleted=False)
            .select_related("author").order_by("version"))
    for version in rows:
        found[version.task_id][version.path] = version
    return {task_id: sorted(paths.values(), key=lambda v: v.path) for task_id, paths in found.items()}


# -- tasks -------------------------------------------------------------------------------------------
@dataclass
class Dependency:
    id: str
    number: int
    title: str
    status: str


@dataclass
class Board:
    columns: dict[str, list[Task]]
    counts: dict[str, int]
    depends_on: dict[str, list[Dependency]] = field(default_factory=dict)


def task_board(*, workspace_id: str, per_column: int = 100) -> Board:
    """Tasks by status for the board: the unfinished ones oldest first, the finished ones newest
    first; each column holds at most `per_column` (the counts say how many there are)."""
    counts = dict.fromkeys((s.value for s in BOARD_COLUMNS), 0)
    for row in Task.objects.filter(workspace_id=workspace_id).values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    base = Task.objects.filter(workspace_id=workspace_id).select_related("claimed_by", "approval")
    columns: dict[str, list[Task]] = {}
    for status in BOARD_COLUMNS:
        if not counts[status.value]:
            columns[status.value] = []
            continue
        order = ("number",) if status in (TaskStatus.BLOCKED, TaskStatus.QUEUED, TaskStatus.CLAIMED) \
            else ("-updated_at", "-number")
        columns[status.value] = list(base.filter(status=status).order_by(*order)[:per_column])
    shown = [t.pk for tasks in columns.values() for t in tasks]
    return Board(columns=columns, counts=counts, depends_on=dependencies(task_ids=shown))


def dependencies(*, task_ids: Iterable[str]) -> dict[str, list[Dependency]]:
    """What each task depends on, with the dependency's number, title and status (one query)."""
    out: dict[str, list[Dependency]] = defaultdict(list)
    ids = list(task_ids)
    if not ids:
        return {}
    rows = (TaskDependency.objects.filter(task_id__in=ids)
            .values_list("task_id", "depends_on_id", "depends_on__number", "depends_on__title", "depends_on__status")
            .order_by("depends_on__number"))
    for task_id, dep_id, number, title, status in rows:
        out[task_id].append(Dependency(id=dep_id, number=number, title=title, status=status))
    return dict(out)


def dependents(*, task_id: str) -> list[Dependency]:
    rows = (TaskDependency.objects.filter(depends_on_id=task_id)
            .values_list("task_id", "task__number", "task__title", "task__status").order_by("task__number"))
    return [Dependency(id=i, number=n, title=t, status=s) for i, n, t, s in rows]


def task_detail(*, workspace_id: str, task_id: str) -> Task | None:
    return (Task.objects.filter(workspace_id=workspace_id, pk=task_id)
            .select_related("claimed_by", "created_by", "approval", "approval__decided_by").first())


# -- worklog -----------------------------------------------------------------------------------------
def worklog_entries(*, workspace_id: str, task_id: str = "", author_id: int | None = None,
                    before: int | None = None, limit: int = 100) -> list[WorklogEntry]:
    """Entries newest first, optionally of one task and/or one author, below seq `before`."""
    qs = WorklogEntry.objects.filter(workspace_id=workspace_id).select_related("author", "on_behalf_of", "task")
    if task_id:
        qs = qs.filter(task_id=task_id)
    if author_id is not None:
        qs = qs.filter(author_id=author_id)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    return list(qs.order_by("-seq")[:limit])


def worklog_filter_choices(*, workspace_id: str) -> tuple[list[tuple[str, int, str]], list[Any]]:
    """The tasks (id, number, title) and the authors that appear in the worklog."""
    entries = WorklogEntry.objects.filter(workspace_id=workspace_id)
    task_ids = entries.exclude(task_id=None).values("task_id").distinct()
    tasks = list(Task.objects.filter(pk__in=task_ids).order_by("number").values_list("id", "number", "title"))
    authors = list(get_user_model().objects.filter(pk__in=entries.values("author_id").distinct())
                   .order_by("username"))
    return tasks, authors


# -- events ------------------------------------------------------------------------------------------
def events_page(*, workspace_id: str, types: Sequence[str] = (), actor_id: int | None = None,
                system: bool = False, target: str = "", before: int | None = None, limit: int = 100) -> list[Event]:
    """Events newest first. `system` selects the events no account caused (sweeps, indexing)."""
    qs = Event.objects.filter(workspace_id=workspace_id).select_related("actor", "on_behalf_of")
    if types:
        qs = qs.filter(type__in=list(types))
    if system:
        qs = qs.filter(actor__isnull=True)
    elif actor_id is not None:
        qs = qs.filter(actor_id=actor_id)
    if target:
        qs = qs.filter(target=target)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    return list(qs.order_by("-seq")[:limit])


def event_filter_choices(*, workspace_id: str) -> tuple[list[str], list[Any]]:
    """The event types and the actors that appear in the workspace's log."""
    events = Event.objects.filter(workspace_id=workspace_id)
    types = list(events.order_by("type").values_list("type", flat=True).distinct())
    actors = list(get_user_model().objects.filter(pk__in=events.exclude(actor=None).values("actor_id").distinct())
                  .order_by("username"))
    return types, actors


# -- approvals ---------------------------------------------------------------------------------------
def approvals_inbox(*, workspace_id: str, decided_limit: int = 50) -> tuple[list[Approval], list[Approval]]:
    """(pending, the most recently settled), each with its requester, decider and task."""
    qs = Approval.objects.filter(workspace_id=workspace_id).select_related(
        "requested_by", "decided_by", "task", "task__claimed_by")
    pending = list(qs.filter(status=ApprovalStatus.PENDING).order_by("number")[:200])
    settled = list(qs.exclude(status=ApprovalStatus.PENDING).order_by("-decided_at", "-number")[:decided_limit])
    return pending, settled


def pending_approval_count(*, workspace_id: str) -> int:
    return Approval.objects.filter(workspace_id=workspace_id, status=ApprovalStatus.PENDING).count()


# -- members, rules, transfers -----------------------------------------------------------------------
def members(*, workspace_id: str) -> list[Membership]:
    return list(Membership.objects.filter(workspace_id=workspace_id).select_related("user")
                .order_by("user__username"))


def rules(*, workspace_id: str) -> list[DirectoryRule]:
    return list(DirectoryRule.objects.filter(workspace_id=workspace_id).prefetch_related("writers")
                .order_by("prefix"))


def transfers(*, workspace_id: str, limit: int = 20) -> list[Transfer]:
    return list(Transfer.objects.filter(workspace_id=workspace_id)
                .select_related("from_user", "to_user", "finished_by").order_by("-created_at")[:limit])


def offers_for(*, user: Any) -> list[Transfer]:
    """Pending ownership offers made to `user`'s account, or to its email address."""
    match = Q(to_user_id=user.pk)
    if getattr(user, "email", ""):
        match |= Q(to_user__isnull=True, to_email__iexact=user.email)
    return list(Transfer.objects.filter(match, status=TransferStatus.PENDING)
                .select_related("workspace", "from_user").order_by("created_at"))
