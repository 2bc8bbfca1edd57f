"""The event log over HTTP, and health."""
from __future__ import annotations

from typing import Any

from django.db import connection
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from workspace.access import workspace_for
from workspace.api.base import ApiView
from workspace.api.pagination import parse_int, parse_limit
from workspace.api.schema import errors, page_of
from workspace.models import Event
from workspace.services.events import event_payload


class EventOutput(serializers.Serializer):
    seq = serializers.IntegerField()
    type = serializers.CharField()
    actor = serializers.CharField(allow_null=True)
    on_behalf_of = serializers.CharField(allow_null=True)
    workspace = serializers.CharField()
    target = serializers.CharField()
    data = serializers.DictField()
    at = serializers.DateTimeField()


def events_after(*, workspace_id: str, after: int, limit: int, types: list[str] | None = None) -> list[dict[str, Any]]:
    qs = Event.objects.filter(workspace_id=workspace_id, seq__gt=after).select_related("actor", "on_behalf_of")
    if types:
        qs = qs.filter(type__in=types)
    return [event_payload(e) for e in qs.order_by("seq")[:limit]]


class EventsView(ApiView):
    @extend_schema(operation_id="event_list", parameters=[
        OpenApiParameter("after", int, description="Only events with a larger seq"),
        OpenApiParameter("type", str, description="Comma-separated event types"),
    ], responses={200: page_of("EventPage", EventOutput()), **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        """Events in seq order. `next` is the cursor for the following page; `after` resumes from a seq."""
        access = workspace_for(request.user, ws)
        limit = parse_limit(request.query_params.get("limit"))
        cursor = request.query_params.get("cursor")
        after = parse_int(request.query_params.get("after"), "after", default=0) or 0
        if cursor:
            from workspace.api.pagination import decode_cursor

            after = max(after, int(decode_cursor(f"events:{ws}", cursor)))
        types = [t for t in request.query_params.get("type", "").split(",") if t]
        rows = events_after(workspace_id=access.workspace_id, after=after, limit=limit + 1, types=types)
        more = len(rows) > limit
        rows = rows[:limit]
        from workspace.api.pagination import encode_cursor

        return Response({"results": rows, "next": encode_cursor(f"events:{ws}", rows[-1]["seq"]) if more else None})


class HealthView(ApiView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(operation_id="health", auth=[], responses={
        200: inline_serializer("Health", {"status": serializers.CharField(), "checks": serializers.DictField()}),
        503: inline_serializer("HealthFailing", {"status": serializers.CharField(), "checks": serializers.DictField()}),
    })
    def get(self, request: Request) -> Response:
        checks: dict[str, Any] = {}
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {exc.__class__.__name__}"
        from workspace.redis import get_redis

        try:
            get_redis().ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {exc.__class__.__name__}"
        checks["index"] = _index_check()
        checks["workers"] = _worker_count() if checks["redis"] == "ok" else 0
        # Informational, per answering process: whether its embedding model is loaded yet.
        from search.embeddings import ready_for_queries

        checks["model"] = "loaded" if ready_for_queries() else "not loaded"
        healthy = all(checks[k] == "ok" for k in ("database", "redis", "index"))
        return Response({"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503)


def _index_check() -> str:
    import httpx
    from django.conf import settings

    try:
        response = httpx.get(f"{settings.CHROMA_URL}/api/v2/heartbeat", timeout=2.0)
        return "ok" if response.status_code == 200 else f"error: HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        return f"error: {exc.__class__.__name__}"


def _worker_count() -> int:
    from rq import Worker

    from workspace.redis import get_redis

    try:
        return len(Worker.all(connection=get_redis()))
    except Exception:
        return 0
