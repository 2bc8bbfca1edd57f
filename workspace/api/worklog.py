"""The worklog over HTTP (API.md "Worklog"): append, list, verify. There is no update or delete."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from workspace.access import workspace_for
from workspace.api.base import ApiView, idempotent
from workspace.api.pagination import keyset_page, parse_int
from workspace.api.schema import errors, page_of
from workspace.models import Role
from workspace.models.tasks import WorklogEntry
from workspace.services import worklog as svc
from workspace.services.tasks import iso


class EntryOutput(serializers.Serializer):
    seq = serializers.IntegerField()
    hash = serializers.CharField()
    prev_hash = serializers.CharField()
    message = serializers.CharField()
    task = serializers.CharField(allow_null=True)
    data = serializers.JSONField(allow_null=True)
    author = serializers.CharField()
    on_behalf_of = serializers.CharField(allow_null=True)
    at = serializers.DateTimeField()


def entry_json(entry: WorklogEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq, "hash": entry.hash, "prev_hash": entry.prev_hash, "message": entry.message,
        "task": entry.task_id, "data": svc.entry_data(entry), "author": entry.author.username,
        "on_behalf_of": entry.on_behalf_of.username if entry.on_behalf_of_id else None,
        "at": iso(entry.created_at),
    }


class WorklogView(ApiView):
    @extend_schema_serializer(component_name="WorklogAppendInput")
    class InputSerializer(serializers.Serializer):
        message = serializers.CharField(max_length=svc.MAX_MESSAGE, trim_whitespace=False)
        task = serializers.CharField(max_length=64, required=False, allow_null=True)
        data = serializers.JSONField(required=False, allow_null=True, default=None)

    @extend_schema(operation_id="worklog_list", parameters=[
        OpenApiParameter("task", str, description="Only entries linked to this task"),
        OpenApiParameter("author", str, description="Only entries by this username"),
        OpenApiParameter("after", int, description="Only entries with a larger seq"),
    ], responses={200: page_of("WorklogPage", EntryOutput()), **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws)
        params = request.query_params
        qs = WorklogEntry.objects.filter(workspace=access.workspace).select_related("author", "on_behalf_of")
        after = parse_int(params.get("after"), "after")
        if after is not None:
            qs = qs.filter(seq__gt=after)
        if params.get("task"):
            qs = qs.filter(task_id=params["task"])
        if params.get("author"):
            qs = qs.filter(author__username=params["author"])
        scope = f"worklog:{ws}:{params.get('task', '')}:{params.get('author', '')}"
        return Response(keyset_page(qs, request=request, scope=scope, key="seq",
                                    render=lambda rows: [entry_json(e) for e in rows]))

    @extend_schema(operation_id="worklog_append", request=InputSerializer,
                   responses={201: EntryOutput, **errors(400, 401, 403, 404)})
    @idempotent
    def post(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        entry = svc.worklog_append(access=access, message=data["message"], task_id=data.get("task"),
                                   data=data.get("data"))
        entry.author = request.user
        return Response(entry_json(entry), status=status.HTTP_201_CREATED)


class WorklogVerifyView(ApiView):
    @extend_schema(operation_id="worklog_verify", responses={200: inline_serializer("WorklogVerification", {
        "ok": serializers.BooleanField(), "entries": serializers.IntegerField(),
        "broken": serializers.DictField(required=False)}), **errors(401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        """Recompute the hash chain: `{"ok": true, "entries": N}`, or the first entry that breaks it."""
        access = workspace_for(request.user, ws)
        return Response(svc.worklog_verify(workspace_id=access.workspace_id))
