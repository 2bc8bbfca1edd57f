"""The file browser: the tree with lock badges, a file (any version), its history, and diffs."""
from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from workspace.api.files import content_type_for
from workspace.errors import Invalid, NotFound, ServiceError
from workspace.models import Lock
from workspace.paths import validate_path, validate_prefix
from workspace.selectors import active_locks, file_head, file_versions, lock_covering, tree_entries
from workspace.services import files as file_svc
from workspace.services.locks import covering_paths, db_now
from workspace.views.common import int_param, page_access, workspace_page
from workspace.views.present import (
    HIGHLIGHT_LIMIT,
    Urls,
    as_text,
    cited,
    diff_lines,
    highlight,
    is_image,
    is_markdown,
    render_markdown,
    render_tree,
    text_head,
    time_left,
)


def _path_or_404(path: str) -> str:
    try:
        return validate_path(path)
    except Invalid as exc:
        raise Http404(exc.message) from exc


def _locks_on(workspace_id: str, path: str, now: Any) -> Lock | None:
    locks = Lock.objects.filter(workspace_id=workspace_id, state=Lock.State.ACTIVE, expires_at__gt=now,
                                path__in=covering_paths(path)).select_related("holder")
    return lock_covering(path, {lock.path: lock for lock in locks})


@login_required
@require_GET
def workspace_home(request: HttpRequest, ws: str) -> HttpResponse:
    """The workspace's files as a tree, each with the lock that covers it (live)."""
    access = page_access(request, ws)
    try:
        prefix = validate_prefix(request.GET.get("prefix", ""))
    except Invalid as exc:
        messages.error(request, exc.message)
        prefix = ""
    now = db_now()
    urls = Urls(access.workspace_id)
    files = tree_entries(workspace_id=access.workspace_id, prefix=prefix)
    locks = active_locks(workspace_id=access.workspace_id, now=now)
    tree = render_tree(files, {lock.path: lock for lock in locks}, urls, now, base=prefix)
    crumbs = []
    if prefix:
        parts = prefix.rstrip("/").split("/")
        crumbs = [{"name": name, "prefix": "/".join(parts[:i + 1]) + "/"} for i, name in enumerate(parts)]
    ws_obj = access.workspace
    context = {
        "urls": urls, "now": now, "prefix": prefix, "crumbs": crumbs, "tree": tree, "file_count": len(files),
        "total_size": sum(f.size for f in files), "lock_count": len(locks),
        "transferred_from": ws_obj.transferred_from.username if ws_obj.transferred_from_id else "",
    }
    return workspace_page(request, access, "workspace/tree.html", context, tab="files",
                          fragments={"tree": "workspace/_tree.html"})


def _render_content(path: str, data: bytes, *, mode: str, start: int | None, end: int | None) -> dict[str, Any]:
    """How a version shows: rendered Markdown, highlighted code, a cited passage, an image, or
    a download for anything else."""
    out: dict[str, Any] = {"markdown": is_markdown(path), "truncated": False, "binary": False, "image": False}
    text = as_text(data) if len(data) <= HIGHLIGHT_LIMIT else text_head(data, HIGHLIGHT_LIMIT)
    if text is None:
        out["binary"] = True
        out["image"] = is_image(path)
        return out
    out["truncated"] = len(data) > HIGHLIGHT_LIMIT
    if start is not None and end is not None:
        # Offsets count characters of the whole version (as the index does).
        full = as_text(data) or text
        out["body"] = cited(full, start, end)
        out["mode"] = "cited"
    elif out["markdown"] and mode != "source":
        out["body"] = render_markdown(text)
        out["mode"] = "rendered"
    else:
        out["body"] = highlight(path, text)
        out["mode"] = "source"
    return out


@login_required
@require_GET
def file_view(request: HttpRequest, ws: str, path: str) -> HttpResponse:
    """One version of a file (the newest unless `?version=`), with its lock and where it stands."""
    access = page_access(request, ws)
    path = _path_or_404(path)
    ws_id = access.workspace_id
    head = file_head(workspace_id=ws_id, path=path)
    if head is None:
        raise Http404("No such file.")
    wanted = int_param(request, "version")
    now = db_now()
    urls = Urls(ws_id)
    context: dict[str, Any] = {"urls": urls, "now": now, "path": path, "head": head,
                               "lock": _locks_on(ws_id, path, now), "name": path.rsplit("/", 1)[-1]}
    context["lock_left"] = time_left(context["lock"].expires_at, now) if context["lock"] else ""
    try:
        version, data = file_svc.file_read(access=access, path=path, version=wanted)
    except NotFound as exc:
        context.update(missing=exc.message, version=None)
        return workspace_page(request, access, "workspace/file.html", context, tab="files", status=404,
                              fragments={"status": "workspace/_file_status.html"})
    context["version"] = version
    context.update(_render_content(path, data, mode=request.GET.get("view", ""),
                                   start=int_param(request, "start", minimum=0),
                                   end=int_param(request, "end", minimum=0)))
    return workspace_page(request, access, "workspace/file.html", context, tab="files",
                          fragments={"status": "workspace/_file_status.html"})


@login_required
@require_GET
def file_raw(request: HttpRequest, ws: str, path: str) -> HttpResponse:
    """The bytes of a version, as a download (images may be shown inline)."""
    access = page_access(request, ws)
    path = _path_or_404(path)
    try:
        version, data = file_svc.file_read(access=access, path=path, version=int_param(request, "version"))
    except ServiceError as exc:
        raise Http404(exc.message) from exc
    content_type = content_type_for(path, data)
    inline = request.GET.get("inline") == "1" and content_type.startswith("image/")
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(not inline, path.rsplit("/", 1)[-1])
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response["X-Content-Type-Options"] = "nosniff"
    response["ETag"] = f'"{version.version}"'
    return response


@login_required
@require_GET
def file_history(request: HttpRequest, ws: str, path: str) -> HttpResponse:
    """Every version of a path, newest first, each viewable, and a diff between any two."""
    access = page_access(request, ws)
    path = _path_or_404(path)
    ws_id = access.workspace_id
    head = file_head(workspace_id=ws_id, path=path)
    if head is None:
        raise Http404("No file has ever been at this path.")
    before = int_param(request, "before")
    versions = file_versions(workspace_id=ws_id, path=path, before=before, limit=200)
    older = versions[-1].version if versions and versions[-1].version > 1 else None
    context = {"urls": Urls(ws_id), "path": path, "head": head, "versions": versions, "older": older,
               "before": before, "diff_from": max(1, head.version - 1), "diff_to": head.version}
    return workspace_page(request, access, "workspace/history.html", context, tab="files",
                          fragments={"history": "workspace/_history.html"})


@login_required
@require_GET
def file_diff(request: HttpRequest, ws: str, path: str) -> HttpResponse:
    """The unified diff between two versions (`?from=&to=`; by default the newest two)."""
    access = page_access(request, ws)
    path = _path_or_404(path)
    head = file_head(workspace_id=access.workspace_id, path=path)
    if head is None:
        raise Http404("No file has ever been at this path.")
    start = int_param(request, "from") or max(1, head.version - 1)
    end = int_param(request, "to") or head.version
    context: dict[str, Any] = {"urls": Urls(access.workspace_id), "path": path, "head": head,
                               "diff_from": start, "diff_to": end, "lines": [], "binary": False, "error": ""}
    status = 200
    try:
        result = file_svc.file_diff(access=access, path=path, from_version=start, to_version=end)
    except ServiceError as exc:
        context["error"] = exc.message
        status = exc.status
    else:
        context["binary"] = result["binary"]
        context["lines"] = diff_lines(result["diff"])
        context["identical"] = not result["diff"]
    return workspace_page(request, access, "workspace/diff.html", context, tab="files", status=status)
