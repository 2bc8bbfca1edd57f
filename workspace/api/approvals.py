"""Approvals over HTTP (API.md "Approvals")."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from workspace.access import workspace_for
from workspace.api.base import ApiView, idempotent
from workspace.api.pagination import keyset_page
from workspace.api.schema import errors, page_of
from workspace.errors import Invalid, NotFound
from workspace.models import Role
from workspace.models.tasks import Approval, ApprovalStatus
from workspace.services import approvals as svc
from workspace.services.tasks import iso


class ApprovalOutput(serializers.Serializer):
    id = serializers.CharField()
    workspace = serializers.CharField()
    number = serializers.IntegerField()
    title = serializers.CharField()
    description = serializers.CharField()
    status = serializers.ChoiceField(choices=ApprovalStatus.choices)
    task = serializers.CharField(allow_null=True)
    path = serializers.CharField(allow_null=True)
    version = serializers.IntegerField(allow_null=True)
    automatic = serializers.BooleanField()
    requested_by = serializers.CharField()
    decision = serializers.ChoiceField(choices=["approve", "reject"], allow_null=True)
    comment = serializers.CharField(allow_null=True)
    decided_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)


def approval_json(approval: Approval) -> dict[str, Any]:
    return {
        "id": approval.pk, "workspace": approval.workspace_id, "number": approval.number, "title": approval.title,
        "description": approval.description, "status": approval.status, "task": approval.task_id,
        "path": approval.path or None, "version": approval.version, "automatic": approval.automatic,
        "requested_by": approval.requested_by.username, "decision": approval.decision or None,
        "comment": approval.comment if approval.decision else None,
        "decided_by": approval.decided_by.username if approval.decided_by_id else None,
        "created_at": iso(approval.created_at), "decided_at": iso(approval.decided_at),
    }


def _approvals(workspace_id: str) -> Any:
    return Approval.objects.filter(workspace_id=workspace_id).select_related("requested_by", "decided_by")


class ApprovalsView(ApiView):
    @extend_schema_serializer(component_name="ApprovalRequestInput")
    class InputSerializer(serializers.Serializer):
        title = serializers.CharField(max_length=500)
        description = serializers.CharField(required=False, allow_blank=True, default="",
                                            max_length=svc.MAX_DESCRIPTION, trim_whitespace=False)
        task = serializers.CharField(max_length=64, required=False, allow_null=True)
        path = serializers.CharField(max_length=4096, required=False, allow_null=True, trim_whitespace=False)
        version = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**31 - 1)

    @extend_schema(operation_id="approval_list", parameters=[
        OpenApiParameter("status", str, enum=list(ApprovalStatus.values))],
        responses={200: page_of("ApprovalPage", ApprovalOutput()), **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws)
        qs = _approvals(access.workspace_id)
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in ApprovalStatus.values:
                raise Invalid("invalid_parameter", f"'status' is one of {', '.join(ApprovalStatus.values)}.",
                              parameter="status")
            qs = qs.filter(status=wanted)
        return Response(keyset_page(qs, request=request, scope=f"approvals:{ws}:{wanted or ''}", key="number",
                                    render=lambda rows: [approval_json(a) for a in rows]))

    @extend_schema(operation_id="approval_request", request=InputSerializer,
                   responses={201: ApprovalOutput, **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        approval = svc.approval_request(access=access, title=data["title"], description=data["description"],
                                        task_id=data.get("task"), path=data.get("path"), version=data.get("version"))
        return Response(approval_json(approval), status=status.HTTP_201_CREATED)


class ApprovalDetailView(ApiView):
    @extend_schema(operation_id="approval_get", responses={200: ApprovalOutput, **errors(401, 404)})
    def get(self, request: Request, ws: str, approval_id: str) -> Response:
        access = workspace_for(request.user, ws)
        approval = _approvals(access.workspace_id).filter(pk=approval_id).first()
        if approval is None:
            raise NotFound("approval")
        return Response(approval_json(approval))


class ApprovalDecideView(ApiView):
    @extend_schema_serializer(component_name="ApprovalDecideInput")
    class InputSerializer(serializers.Serializer):
        decision = serializers.ChoiceField(choices=["approve", "reject"])
        comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=svc.MAX_COMMENT,
                                        trim_whitespace=False)

    @extend_schema(operation_id="approval_decide", request=InputSerializer,
                   responses={200: ApprovalOutput, **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str, approval_id: str) -> Response:
        """Approve or reject (admins and owners). A rejected task goes back to `queued` with the
        comment as its `review`; an approval whose file changed is `stale` and cannot be approved (409)."""
        access = workspace_for(request.user, ws)
        data = self.data(self.InputSerializer)
        approval = svc.approval_decide(access=access, approval_id=approval_id, decision=data["decision"],
                                       comment=data["comment"])
        return Response(approval_json(_approvals(access.workspace_id).get(pk=approval.pk)))
