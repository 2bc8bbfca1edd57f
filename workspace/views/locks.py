"""Locks: who holds what, since when, why, until when; admins may force-release."""
from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from workspace.models import Role
from workspace.selectors import active_locks
from workspace.services.locks import db_now, lock_release
from workspace.views.common import act, back, page_access, workspace_page
from workspace.views.present import Urls, time_left


@login_required
@require_GET
def locks_page(request: HttpRequest, ws: str) -> HttpResponse:
    access = page_access(request, ws)
    now = db_now()
    urls = Urls(access.workspace_id)
    rows = [{"lock": lock, "left": time_left(lock.expires_at, now), "held": (now - lock.acquired_at).total_seconds(),
             "url": urls.file(lock.path) if not lock.subtree else f"{urls.home}?{urlencode({'prefix': lock.path})}"}
            for lock in active_locks(workspace_id=access.workspace_id, now=now)]
    return workspace_page(request, access, "workspace/locks.html", {"urls": urls, "now": now, "rows": rows},
                          tab="locks", fragments={"locks": "workspace/_locks.html"})


@login_required
@require_POST
def lock_release_view(request: HttpRequest, ws: str, lock_id: str) -> HttpResponse:
    """Release a lock: its holder's own, or anyone's for an admin (recorded as a force release)."""
    access = page_access(request, ws, need=Role.VIEWER)
    act(request, lambda: lock_release(access=access, lock_id=lock_id),
        done=lambda lock: f"Released the lock on {lock.path} held by {lock.holder.username}.")
    return back(request, reverse("ws-locks", kwargs={"ws": access.workspace_id}))
