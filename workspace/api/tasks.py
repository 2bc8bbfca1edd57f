"""Tasks over HTTP (API.md "Tasks"): create, claim, heartbeat, complete, fail, cancel, reads."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from workspace.access import workspace_for
from workspace.api.base import ApiView, idempotent
from workspace.api.pagination import keyset_page
from workspace.api.schema import errors, page_of
from workspace.errors import Invalid, NotFound
from workspace.models import Role
from workspace.models.tasks import Task, TaskDependency, TaskStatus
from workspace.services import tasks as svc
from workspace.services.tasks import iso


class TaskOutput(serializers.Serializer):
    id = serializers.CharField()
    workspace = serializers.CharField()
    number = serializers.IntegerField()
    title = serializers.CharField()
    kind = serializers.CharField()
    queue = serializers.CharField()
    payload = serializers.DictField()
    priority = serializers.IntegerField()
    status = serializers.ChoiceField(choices=TaskStatus.choices)
    depends_on = serializers.ListField(child=serializers.CharField())
    attempts = serializers.IntegerField()
    max_attempts = serializers.IntegerField()
    lease_seconds = serializers.IntegerField()
    requires_approval = serializers.BooleanField()
    claimed_by = serializers.CharField(allow_null=True)
    claimed_at = serializers.DateTimeField(allow_null=True)
    lease_id = serializers.CharField(allow_null=True)
    lease_expires_at = serializers.DateTimeField(allow_null=True)
    not_before = serializers.DateTimeField(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    outputs = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(allow_null=True)
    history = serializers.ListField(child=serializers.DictField())
    review = serializers.DictField(allow_null=True)
    approval = serializers.DictField(allow_null=True)
    cancel_reason = serializers.CharField(allow_null=True)
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)


def dependencies_of(task_ids: Iterable[str]) -> dict[str, list[str]]:
    """The dependencies of several tasks, from the edge table (task JSON reads `Task.depends_on`)."""
    deps: dict[str, list[str]] = defaultdict(list)
    for task_id, dep in TaskDependency.objects.filter(task_id__in=list(task_ids)).values_list(
            "task_id", "depends_on_id").order_by("id"):
        deps[task_id].append(dep)
    return deps


def task_json(task: Task, depends_on: list[str] | None = None) -> dict[str, Any]:
    if depends_on is None:
        depends_on = list(task.depends_on or [])
    approval = task.approval if task.approval_id else None
    return {
        "id": task.pk, "workspace": task.workspace_id, "number": task.number, "title": task.title,
        "kind": task.kind, "queue": task.queue, "payload": task.payload, "priority": task.priority,
        "status": task.status, "depends_on": depends_on, "attempts": task.attempts,
        "max_attempts": task.max_attempts, "lease_seconds": task.lease_seconds,
        "requires_approval": task.requires_approval,
        "claimed_by": task.claimed_by.username if task.claimed_by_id else None,
        "claimed_at": iso(task.claimed_at), "lease_id": task.lease_id or None,
        "lease_expires_at": iso(task.lease_expires_at), "not_before": iso(task.not_before),
        "result": task.result, "outputs": task.outputs or [], "error": task.error or None,
        "history": task.history or [], "review": task.review,
        "approval": {"id": approval.pk, "status": approval.status} if approval else None,
        "cancel_reason": task.cancel_reason or None, "created_by": task.created_by.username,
        "created_at": iso(task.created_at), "updated_at": iso(task.updated_at), "completed_at": iso(task.completed_at),
    }


class _TaskFields(serializers.Serializer):
    title = serializers.CharField(max_length=svc.MAX_TITLE)
    kind = serializers.CharField(max_length=svc.MAX_NAME, required=False, allow_blank=True, default="")
    queue = serializers.CharField(max_length=svc.MAX_NAME, required=False, default="default")
    payload = serializers.DictField(required=False, default=dict)
    depends_on = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list,
                                       max_length=svc.MAX_DEPENDENCIES)
    priority = serializers.IntegerField(required=False, default=0, min_value=-svc.PRIORITY_LIMIT,
                                        max_value=svc.PRIORITY_LIMIT)
    max_attempts = serializers.IntegerField(required=False, default=3, min_value=1, max_value=svc.MAX_ATTEMPTS_LIMIT)
    lease_seconds = serializers.IntegerField(required=False, default=60, min_value=1, max_value=svc.MAX_LEASE_SECONDS)
    requires_approval = serializers.BooleanField(required=False, default=False)


class TasksView(ApiView):
    @extend_schema_serializer(component_name="TaskCreateInput")
    class InputSerializer(_TaskFields):
        pass

    @extend_schema(operation_id="task_list", parameters=[
        OpenApiParameter("status", str, enum=list(TaskStatus.values)),
        OpenApiParameter("queue", str), OpenApiParameter("kind", str),
    ], responses={200: page_of("TaskPage", TaskOutput()), **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws)
        qs = Task.objects.filter(workspace=access.workspace).select_related("claimed_by", "created_by", "approval")
        params = request.query_params
        filters = {}
        if params.get("status"):
            if params["status"] not in TaskStatus.values:
                raise Invalid("invalid_parameter", f"'status' is one of {', '.join(TaskStatus.values)}.",
                              parameter="status")
            filters["status"] = params["status"]
        for name in ("queue", "kind"):
            if params.get(name) is not None:
                filters[name] = params[name]
        qs = qs.filter(**filters)
        scope = f"tasks:{ws}:{filters.get('status', '')}:{filters.get('queue', '')}:{filters.get('kind', '')}"

        return Response(keyset_page(qs, request=request, scope=scope, key="number",
                                    render=lambda rows: [task_json(t) for t in rows]))

    @extend_schema(operation_id="task_create", request=InputSerializer,
                   responses={201: TaskOutput, **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        task = svc.task_create(access=access, **data)
        return Response(task_json(task), status=status.HTTP_201_CREATED)


class TaskBatchView(ApiView):
    @extend_schema_serializer(component_name="TaskBatchInput")
    class InputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="TaskBatchItem")
        class Item(_TaskFields):
            ref = serializers.CharField(max_length=64, required=False)

        tasks = serializers.ListField(child=Item(), min_length=1, max_length=svc.MAX_BATCH)

    @extend_schema(operation_id="task_create_batch", request=InputSerializer, responses={
        201: inline_serializer("TaskBatch", {"tasks": serializers.ListField(child=TaskOutput())}),
        **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str) -> Response:
        """Create several tasks at once, all or nothing. `depends_on` may name the `ref` of another
        task of the batch as well as the id of an existing task; a cycle is a 400."""
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        specs = [svc.TaskSpec(**item) for item in data["tasks"]]
        tasks = svc.task_create_many(access=access, specs=specs)
        return Response({"tasks": [task_json(t) for t in tasks]}, status=status.HTTP_201_CREATED)


class TaskClaimView(ApiView):
    @extend_schema_serializer(component_name="TaskClaimInput")
    class InputSerializer(serializers.Serializer):
        queue = serializers.CharField(max_length=svc.MAX_NAME, required=False, default="default")
        kinds = serializers.ListField(child=serializers.CharField(max_length=svc.MAX_NAME, allow_blank=True),
                                      required=False, default=list, max_length=100)
        lease_seconds = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                                 max_value=svc.MAX_LEASE_SECONDS)

    @extend_schema(operation_id="task_claim", request=InputSerializer, responses={
        200: TaskOutput, 204: OpenApiResponse(description="No ready task"), **errors(400, 401, 403, 404)})
    @idempotent
    def post(self, request: Request, ws: str) -> Response:
        """Claim the oldest ready task of the highest priority: 200 with it, or 204 when none is ready."""
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        started = time.perf_counter()
        task = svc.task_claim(access=access, queue=data["queue"], kinds=data["kinds"],
                              lease_seconds=data.get("lease_seconds"))
        # The claim's own time (its transaction, including any wait for the workspace lock), so
        # that clients and bench/tasks.py can see contention apart from the HTTP round trip.
        timing = {"Server-Timing": f"claim;dur={(time.perf_counter() - started) * 1000:.2f}"}
        if task is None:
            return Response(status=status.HTTP_204_NO_CONTENT, headers=timing)
        return Response(task_json(task), headers=timing)


class TaskDetailView(ApiView):
    @extend_schema(operation_id="task_get", responses={200: TaskOutput, **errors(401, 404)})
    def get(self, request: Request, ws: str, task_id: str) -> Response:
        access = workspace_for(request.user, ws)
        task = Task.objects.select_related("claimed_by", "created_by", "approval").filter(
            workspace=access.workspace, pk=task_id).first()
        if task is None:
            raise NotFound("task")
        return Response(task_json(task))


class _LeaseInput(serializers.Serializer):
    lease_id = serializers.CharField(max_length=32, required=False,
                                     help_text="The claim's lease id: refused if the task was claimed again since.")


class TaskHeartbeatView(ApiView):
    @extend_schema_serializer(component_name="TaskHeartbeatInput")
    class InputSerializer(_LeaseInput):
        lease_seconds = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                                 max_value=svc.MAX_LEASE_SECONDS)

    @extend_schema(operation_id="task_heartbeat", request=InputSerializer,
                   responses={200: TaskOutput, **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str, task_id: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        task = svc.task_heartbeat(access=access, task_id=task_id, lease_seconds=data.get("lease_seconds"),
                                  lease_id=data.get("lease_id"))
        task.claimed_by = request.user
        return Response(task_json(task))


class TaskCompleteView(ApiView):
    @extend_schema_serializer(component_name="TaskCompleteInput")
    class InputSerializer(_LeaseInput):
        result = serializers.JSONField(required=False, allow_null=True, default=None)
        outputs = serializers.ListField(child=serializers.CharField(max_length=4096), required=False, default=list,
                                        max_length=svc.MAX_OUTPUTS)
        accept_stale = serializers.BooleanField(required=False, default=False)

    @extend_schema(operation_id="task_complete", request=InputSerializer,
                   responses={200: TaskOutput, **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str, task_id: str) -> Response:
        """Finish the caller's claim. `409 stale_inputs` (with `files`) when a file the task read has
        changed since, unless `accept_stale`."""
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        task = svc.task_complete(access=access, task_id=task_id, result=data["result"], outputs=data["outputs"],
                                 accept_stale=data["accept_stale"], lease_id=data.get("lease_id"))
        return Response(task_json(task))


class TaskFailView(ApiView):
    @extend_schema_serializer(component_name="TaskFailInput")
    class InputSerializer(_LeaseInput):
        error = serializers.CharField(max_length=svc.MAX_ERROR_CHARS, required=False, allow_blank=True, default="",
                                      trim_whitespace=False)
        retry = serializers.BooleanField(required=False, default=True)

    @extend_schema(operation_id="task_fail", request=InputSerializer,
                   responses={200: TaskOutput, **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str, task_id: str) -> Response:
        """Give up this attempt: back to the queue after a back-off (with `retry`, while attempts
        remain), else `failed` with its error log written to `failed/<task-id>.log`."""
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        task = svc.task_fail(access=access, task_id=task_id, error=data["error"], retry=data["retry"],
                             lease_id=data.get("lease_id"))
        return Response(task_json(task))


class TaskCancelView(ApiView):
    @extend_schema_serializer(component_name="TaskCancelInput")
    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=svc.MAX_TITLE, required=False, allow_blank=True, default="")

    @extend_schema(operation_id="task_cancel", request=InputSerializer,
                   responses={200: TaskOutput, **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str, task_id: str) -> Response:
        """Cancel an unfinished task (its creator or an admin); tasks that depend on it are cancelled too."""
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        task = svc.task_cancel(access=access, task_id=task_id, reason=data["reason"])
        return Response(task_json(task))


class TaskReadsView(ApiView):
    @extend_schema_serializer(component_name="TaskReadsInput")
    class InputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="TaskReadsFileRead")
        class FileRead(serializers.Serializer):
            path = serializers.CharField(max_length=4096, trim_whitespace=False)
            version = serializers.IntegerField(min_value=1, max_value=2**31 - 1)

        files = serializers.ListField(child=FileRead(), min_length=1, max_length=svc.MAX_READS)

    @extend_schema(operation_id="task_record_reads", request=InputSerializer, responses={
        200: inline_serializer("TaskReads", {
            "task": serializers.CharField(), "lease_id": serializers.CharField(),
            "files": serializers.ListField(child=serializers.DictField())}),
        **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str, task_id: str) -> Response:
        """Record the file versions the claimant read; `complete` then refuses if any has changed."""
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        rows = svc.task_record_reads(access=access, task_id=task_id, files=[dict(f) for f in data["files"]])
        return Response({"task": task_id, "lease_id": rows[0].lease_id,
                         "files": [{"path": r.path, "version": r.version} for r in rows]})
