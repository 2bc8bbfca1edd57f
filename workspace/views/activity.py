"""The activity feed: every event, newest first, live, by type and by actor."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from workspace.selectors import event_filter_choices, events_page
from workspace.views.common import int_param, page_access, workspace_page
from workspace.views.present import Urls, feed_row

PAGE = 100
SYSTEM = "(system)"


@login_required
@require_GET
def activity_page(request: HttpRequest, ws: str) -> HttpResponse:
    access = page_access(request, ws)
    ws_id = access.workspace_id
    urls = Urls(ws_id)
    types = [t for t in request.GET.getlist("type") if t][:50]
    actor = request.GET.get("actor", "").strip()[:150]
    actor_id = None
    if actor and actor != SYSTEM:
        actor_id = get_user_model().objects.filter(username=actor).values_list("pk", flat=True).first() or -1
    before = int_param(request, "before")
    events = events_page(workspace_id=ws_id, types=types, actor_id=actor_id, system=actor == SYSTEM,
                         before=before, limit=PAGE)
    all_types, actors = event_filter_choices(workspace_id=ws_id)
    context = {
        "urls": urls, "types": types, "actor": actor, "before": before, "all_types": all_types,
        "actors": actors, "system": SYSTEM,
        "rows": [feed_row(e, urls) for e in events],
        "older": events[-1].seq if len(events) == PAGE and events[-1].seq > 1 else None,
        # Paging back in time shows a fixed window: only the newest page follows the stream.
        "follow": before is None,
    }
    return workspace_page(request, access, "workspace/activity.html", context, tab="activity",
                          fragments={"feed": "workspace/_feed.html"})
