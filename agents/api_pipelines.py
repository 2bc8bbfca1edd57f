"""Pipelines over HTTP (API.md "Pipelines"): submit a spec, list runs, read one, cancel one."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from agents.models import PipelineRun
from agents.pipelines import services
from agents.pipelines.selectors import run_detail_json, runs_json
from workspace.access import workspace_for
from workspace.api.base import ApiView, idempotent
from workspace.api.pagination import keyset_page
from workspace.api.schema import errors, page_of
from workspace.errors import Invalid
from workspace.models import Role


@extend_schema_serializer(component_name="PipelineRun")
class RunOutput(serializers.Serializer):
    id = serializers.CharField()
    workspace = serializers.CharField()
    number = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=PipelineRun.Status.choices)
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    waves = serializers.ListField(child=serializers.ListField(child=serializers.CharField()))
    makespan_seconds = serializers.FloatField(allow_null=True)
    sum_seconds = serializers.FloatField(allow_null=True)
    speedup = serializers.FloatField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    steps_total = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())


@extend_schema_serializer(component_name="PipelineStep")
class StepOutput(serializers.Serializer):
    key = serializers.CharField()
    task = serializers.CharField()
    title = serializers.CharField()
    agent = serializers.CharField()
    role = serializers.CharField()
    group = serializers.CharField(allow_null=True)
    wave = serializers.IntegerField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    max_attempts = serializers.IntegerField()
    depends_on = serializers.ListField(child=serializers.CharField())
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.FloatField(allow_null=True)
    outputs = serializers.DictField()
    published = serializers.DictField()
    score = serializers.FloatField(allow_null=True)
    winner = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    requires_approval = serializers.BooleanField()
    approval = serializers.CharField(allow_null=True)
    cancel_reason = serializers.CharField(allow_null=True)


@extend_schema_serializer(component_name="PipelineRunDetail")
class RunDetailOutput(RunOutput):
    spec = serializers.DictField()
    critical_path = serializers.DictField()
    makespan_over_critical_path = serializers.FloatField(allow_null=True)
    steps = serializers.ListField(child=StepOutput())


class PipelinesView(ApiView):
    @extend_schema_serializer(component_name="PipelineCreateInput")
    class InputSerializer(serializers.Serializer):
        spec = serializers.JSONField(help_text="The spec: an object, or its JSON or YAML text (docs/pipelines.md).")

    @extend_schema(operation_id="pipeline_list", responses={200: page_of("PipelineRunPage", RunOutput()),
                                                             **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws)
        qs = PipelineRun.objects.filter(workspace=access.workspace).select_related("created_by")
        return Response(keyset_page(qs, request=request, scope=f"pipelines:{ws}", key="number", descending=True,
                                    render=runs_json))

    @extend_schema(operation_id="pipeline_create", request=InputSerializer,
                   responses={201: RunDetailOutput, **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        spec: Any = self.data(self.InputSerializer)["spec"]
        if not isinstance(spec, dict | str):
            raise Invalid("invalid_spec", "'spec' must be an object, or JSON or YAML text.", field="spec")
        run = services.pipeline_submit(access=access, spec=spec)
        return Response(run_detail_json(run), status=status.HTTP_201_CREATED,
                        headers={"Location": f"/api/v1/workspaces/{ws}/pipelines/{run.id}"})


class PipelineDetailView(ApiView):
    @extend_schema(operation_id="pipeline_get", responses={200: RunDetailOutput, **errors(401, 404)})
    def get(self, request: Request, ws: str, run_id: str) -> Response:
        access = workspace_for(request.user, ws)
        return Response(run_detail_json(services.get_run(access=access, run_id=run_id)))


class PipelineCancelView(ApiView):
    @extend_schema(operation_id="pipeline_cancel", request=None,
                   responses={200: RunDetailOutput, **errors(401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str, run_id: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        run = services.pipeline_cancel(access=access, run_id=run_id)
        run.refresh_from_db()
        return Response(run_detail_json(run))
