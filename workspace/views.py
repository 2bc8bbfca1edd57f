"""Browser pages: thin views over selectors and services."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from workspace.access import workspace_for
from workspace.errors import ServiceError
from workspace.models import File, Membership
from workspace.services.workspaces import workspace_create


@login_required
@require_http_methods(["GET", "POST"])
def workspace_list(request: HttpRequest) -> HttpResponse:
    error = ""
    if request.method == "POST":
        try:
            ws = workspace_create(user=request.user, name=request.POST.get("name", ""),
                                  intelligence=request.POST.get("intelligence") == "on")
            return redirect("workspace", ws=ws.id)
        except ServiceError as exc:
            error = exc.message
    memberships = (Membership.objects.filter(user=request.user).select_related("workspace")
                   .order_by("workspace__name"))
    return render(request, "workspace/list.html", {"memberships": memberships, "error": error})


@login_required
def workspace_detail(request: HttpRequest, ws: str) -> HttpResponse:
    try:
        access = workspace_for(request.user, ws)
    except ServiceError as exc:
        raise Http404 from exc
    files = File.objects.filter(workspace=access.workspace, deleted=False).select_related("author").order_by("path")[:1000]
    return render(request, "workspace/detail.html", {"ws": access.workspace, "role": access.role, "files": files})
