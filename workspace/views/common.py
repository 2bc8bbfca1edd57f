"""What every page view shares: the permission gate, the workspace frame, live fragments, and
turning a service's refusal into a message for the person.

A page that shows changing state marks regions with `data-live="<name>"` (see static/js/live.js);
when an event of interest arrives the script asks for the same URL with `?fragment=<name>` and
swaps the region's contents, so the server renders every byte of markup the page ever shows.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme

from workspace.access import Access, workspace_for
from workspace.errors import Forbidden, NotFound, ServiceError
from workspace.models import Role
from workspace.selectors import pending_approval_count
from workspace.services.locks import db_now
from workspace.views.present import Urls, iso

NAV_FRAGMENT = {"nav": "workspace/_nav.html"}


def page_access(request: HttpRequest, ws: str, need: Role = Role.VIEWER) -> Access:
    """`workspace_for` for pages: a hidden or missing workspace is the 404 page, a missing role 403."""
    try:
        return workspace_for(request.user, ws, need=need)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from exc


def act(request: HttpRequest, action: Callable[[], Any], *, done: str | Callable[[Any], str]) -> Any:
    """Run a service call for a form: its result, with `done` as a success message; or None, with the
    service's own message as the error to show (nothing changed)."""
    try:
        result = action()
    except ServiceError as exc:
        messages.error(request, exc.message)
        return None
    messages.success(request, done(result) if callable(done) else done)
    return result if result is not None else True


def back(request: HttpRequest, fallback: str) -> HttpResponseRedirect:
    """Redirect to the form's `next` (same site only), else to `fallback`."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return HttpResponseRedirect(target)
    return HttpResponseRedirect(fallback)


def int_param(request: HttpRequest, name: str, *, minimum: int = 1) -> int | None:
    raw = request.GET.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if minimum <= value <= 2**62 else None


def workspace_page(request: HttpRequest, access: Access, template: str, context: dict[str, Any], *,
                   tab: str, fragments: Mapping[str, str] | None = None, status: int = 200) -> HttpResponse:
    """Render a page inside the workspace frame, or only one of its live `fragments`."""
    ws = access.workspace
    base: dict[str, Any] = {
        "ws": ws, "role": access.role.value, "access": access, "tab": tab,
        "is_admin": access.at_least(Role.ADMIN), "is_editor": access.at_least(Role.EDITOR),
        "urls": context.get("urls") or Urls(ws.id),
        # Read with the membership, before the page's data: any event after it refreshes the page.
        "seq": ws.event_seq,
    }
    base.update(context)
    if "now" not in base:
        base["now"] = db_now()
    base["server_now"] = iso(base["now"])
    fragments = {**NAV_FRAGMENT, **(fragments or {})}
    wanted = request.GET.get("fragment")
    if wanted is not None:
        if wanted not in fragments:
            raise Http404("No such fragment.")
        if wanted == "nav":
            base["pending_approvals"] = pending_approval_count(workspace_id=ws.id)
        response = render(request, fragments[wanted], base, status=status)
        response["Cache-Control"] = "no-store"
        return response
    base["pending_approvals"] = pending_approval_count(workspace_id=ws.id)
    return render(request, template, base, status=status)
