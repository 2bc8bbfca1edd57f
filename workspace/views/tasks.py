"""The task board, one task, the worklog and the approvals inbox."""
from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from workspace.errors import ServiceError
from workspace.models.tasks import Approval, Task, TaskStatus
from workspace.selectors import (
    BOARD_COLUMNS,
    approvals_inbox,
    dependencies,
    dependents,
    events_page,
    task_board,
    task_detail,
    task_versions,
    worklog_entries,
    worklog_filter_choices,
)
from workspace.services import files as file_svc
from workspace.services.approvals import approval_decide
from workspace.services.locks import db_now
from workspace.services.worklog import entry_data, worklog_verify
from workspace.views.common import act, back, int_param, page_access, workspace_page
from workspace.views.present import Urls, event_link, event_summary, pretty_json, preview, time_left

PREVIEWS_PER_PAGE = 20
PREVIEWS_PER_APPROVAL = 3


def _card(task: Task, deps: list[Any], now: Any) -> dict[str, Any]:
    claimed = task.status == TaskStatus.CLAIMED
    return {
        "task": task, "deps": deps, "deps_open": sum(1 for d in deps if d.status != TaskStatus.DONE),
        "lease_left": time_left(task.lease_expires_at, now) if claimed else "",
        # `attempts` counts attempts that ended without completing; a claim is the next one.
        "attempt": task.attempts + 1 if claimed else task.attempts,
        "awaiting_approval": task.status == TaskStatus.BLOCKED and task.completed_at is not None,
    }


@login_required
@require_GET
def task_board_page(request: HttpRequest, ws: str) -> HttpResponse:
    access = page_access(request, ws)
    context: dict[str, Any] = {"urls": Urls(access.workspace_id)}
    now = context["now"] = db_now()
    board = task_board(workspace_id=access.workspace_id)
    context["columns"] = [{
        "status": status.value, "label": status.label, "count": board.counts[status.value],
        "cards": [_card(t, board.depends_on.get(t.pk, []), now) for t in board.columns[status.value]],
    } for status in BOARD_COLUMNS]
    return workspace_page(request, access, "workspace/tasks.html", context, tab="tasks",
                          fragments={"board": "workspace/_board.html"})


@login_required
@require_GET
def task_page(request: HttpRequest, ws: str, task_id: str) -> HttpResponse:
    access = page_access(request, ws)
    ws_id = access.workspace_id
    task = task_detail(workspace_id=ws_id, task_id=task_id)
    if task is None:
        raise Http404("No such task.")
    now = db_now()
    urls = Urls(ws_id)
    deps = dependencies(task_ids=[task.pk]).get(task.pk, [])
    events = events_page(workspace_id=ws_id, target=task.pk, limit=50)
    context = {
        "urls": urls, "now": now, "task": task, "card": _card(task, deps, now),
        "dependents": dependents(task_id=task.pk),
        "outputs": task_versions(workspace_id=ws_id, task_ids=[task.pk]).get(task.pk, []),
        "entries": worklog_entries(workspace_id=ws_id, task_id=task.pk, limit=50),
        "events": [{"event": e, "summary": event_summary(e), "link": event_link(e, urls)} for e in events],
        "result_json": pretty_json(task.result) if task.result is not None else "",
        "payload_json": pretty_json(task.payload) if task.payload else "",
    }
    return workspace_page(request, access, "workspace/task.html", context, tab="tasks",
                          fragments={"task": "workspace/_task.html"})


# -- worklog ----------------------------------------------------------------------------------------
@login_required
@require_GET
def worklog_page(request: HttpRequest, ws: str) -> HttpResponse:
    """The append-only history, newest first, by task and by author, with the chain's state."""
    access = page_access(request, ws)
    ws_id = access.workspace_id
    task_filter = request.GET.get("task", "").strip()[:32]
    author_name = request.GET.get("author", "").strip()[:150]
    author_id = None
    if author_name:
        author_id = get_user_model().objects.filter(username=author_name).values_list("pk", flat=True).first() or -1
    before = int_param(request, "before")
    entries = worklog_entries(workspace_id=ws_id, task_id=task_filter, author_id=author_id, before=before)
    tasks, authors = worklog_filter_choices(workspace_id=ws_id)
    rows = [{"entry": e, "data": pretty_json(entry_data(e)) if e.data_json else ""} for e in entries]
    context: dict[str, Any] = {
        "urls": Urls(ws_id), "rows": rows, "tasks": tasks, "authors": authors, "task_filter": task_filter,
        "author_filter": author_name, "before": before,
        "older": entries[-1].seq if len(entries) == 100 and entries[-1].seq > 1 else None,
    }
    # Verifying walks the whole chain, so the page asks for it separately (and on each append);
    # without JavaScript, `?verify=1` shows it inline.
    if request.GET.get("fragment") == "verify" or request.GET.get("verify") == "1":
        context["verification"] = worklog_verify(workspace_id=ws_id)
    return workspace_page(request, access, "workspace/worklog.html", context, tab="worklog",
                          fragments={"entries": "workspace/_worklog_entries.html",
                                     "verify": "workspace/_worklog_verify.html"})


# -- approvals --------------------------------------------------------------------------------------
def _previews(access: Any, approvals: list[Approval]) -> dict[str, list[dict[str, Any]]]:
    """The file versions each pending approval concerns, rendered: its own `path@version`, or the
    versions its task wrote."""
    ws_id = access.workspace_id
    written = task_versions(workspace_id=ws_id, task_ids=[a.task_id for a in approvals if a.task_id and not a.path])
    out: dict[str, list[dict[str, Any]]] = {}
    budget = PREVIEWS_PER_PAGE
    for approval in approvals:
        targets: list[tuple[str, int]] = []
        if approval.path and approval.version:
            targets = [(approval.path, approval.version)]
        elif approval.task_id:
            targets = [(v.path, v.version) for v in written.get(approval.task_id, [])]
        shown = []
        for path, version in targets[:PREVIEWS_PER_APPROVAL]:
            item: dict[str, Any] = {"path": path, "version": version, "body": None, "error": ""}
            if budget > 0:
                budget -= 1
                try:
                    _, data = file_svc.file_read(access=access, path=path, version=version)
                    item["body"] = preview(path, data)
                    item["size"] = len(data)
                except ServiceError as exc:
                    item["error"] = exc.message
            shown.append(item)
        out[approval.pk] = shown
        if len(targets) > PREVIEWS_PER_APPROVAL:
            out[approval.pk].append({"more": len(targets) - PREVIEWS_PER_APPROVAL})
    return out


def _description(approval: Approval) -> str:
    """An automatic approval's description is the task's result as JSON: show it indented."""
    if approval.automatic and approval.description.startswith("{"):
        try:
            return pretty_json(json.loads(approval.description))
        except ValueError:
            return approval.description
    return approval.description


@login_required
@require_GET
def approvals_page(request: HttpRequest, ws: str) -> HttpResponse:
    """Pending approvals with the file version each concerns beside it; admins decide here."""
    access = page_access(request, ws)
    pending, settled = approvals_inbox(workspace_id=access.workspace_id)
    previews = _previews(access, pending)
    context = {
        "urls": Urls(access.workspace_id),
        "pending": [{"approval": a, "previews": previews.get(a.pk, []), "description": _description(a)}
                    for a in pending],
        "settled": settled,
    }
    return workspace_page(request, access, "workspace/approvals.html", context, tab="approvals",
                          fragments={"inbox": "workspace/_approvals.html"})


@login_required
@require_POST
def approval_decide_view(request: HttpRequest, ws: str, approval_id: str) -> HttpResponse:
    access = page_access(request, ws)
    decision = request.POST.get("decision", "")
    act(request, lambda: approval_decide(access=access, approval_id=approval_id, decision=decision,
                                         comment=request.POST.get("comment", "")),
        done=lambda a: f"{'Approved' if a.status == 'approved' else 'Rejected'}: {a.title}")
    return back(request, reverse("ws-approvals", kwargs={"ws": access.workspace_id}))
