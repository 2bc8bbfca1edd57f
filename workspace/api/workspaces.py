"""Workspaces, members, directory rules and the standard layout."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from workspace.access import workspace_for
from workspace.api.base import ApiView, idempotent
from workspace.api.fields import StrictCharField
from workspace.api.pagination import keyset_page
from workspace.api.schema import errors, page_of
from workspace.models import DirectoryRule, Membership, Role, Workspace
from workspace.services import workspaces as svc


def iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


class WorkspaceOutput(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    intelligence = serializers.BooleanField()
    role = serializers.CharField()
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField()
    transferred_from = serializers.CharField(allow_null=True)
    transferred_at = serializers.DateTimeField(allow_null=True)


def workspace_json(ws: Workspace, role: str) -> dict[str, Any]:
    return {
        "id": ws.id, "name": ws.name, "intelligence": ws.intelligence, "role": role,
        "created_at": iso(ws.created_at), "created_by": ws.created_by.username,
        "transferred_from": ws.transferred_from.username if ws.transferred_from_id else None,
        "transferred_at": iso(ws.transferred_at),
    }


class WorkspacesView(ApiView):
    class InputSerializer(serializers.Serializer):
        name = StrictCharField(max_length=200)
        intelligence = serializers.BooleanField(required=False, default=True)

    @extend_schema(operation_id="workspace_list", responses={200: page_of("WorkspacePage", WorkspaceOutput()),
                                                             **errors(400, 401)})
    def get(self, request: Request) -> Response:
        memberships = Membership.objects.filter(user=request.user).select_related(
            "workspace", "workspace__created_by", "workspace__transferred_from")
        return Response(keyset_page(memberships, request=request, scope="workspaces", key="id",
                                    render=lambda rows: [workspace_json(m.workspace, m.role) for m in rows]))

    @extend_schema(operation_id="workspace_create", request=InputSerializer,
                   responses={201: WorkspaceOutput, **errors(400, 401)})
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.data(self.InputSerializer)
        ws = svc.workspace_create(user=request.user, name=data["name"], intelligence=data["intelligence"])
        return Response(workspace_json(ws, Role.OWNER), status=status.HTTP_201_CREATED)


class WorkspaceDetailView(ApiView):
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200, required=False)
        intelligence = serializers.BooleanField(required=False)

    @extend_schema(operation_id="workspace_get", responses={200: WorkspaceOutput, **errors(401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws)
        return Response(workspace_json(access.workspace, access.role))

    @extend_schema(operation_id="workspace_update", request=InputSerializer,
                   responses={200: WorkspaceOutput, **errors(400, 401, 403, 404)})
    @idempotent
    def patch(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        data = self.data(self.InputSerializer)
        updated = svc.workspace_update(access=access, name=data.get("name"), intelligence=data.get("intelligence"))
        return Response(workspace_json(updated, access.role))


class MemberOutput(serializers.Serializer):
    username = serializers.CharField()
    kind = serializers.CharField()
    role = serializers.CharField()


class MembersView(ApiView):
    @extend_schema(operation_id="member_list", responses={200: page_of("MemberPage", MemberOutput()),
                                                          **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws)
        qs = Membership.objects.filter(workspace=access.workspace).select_related("user")
        return Response(keyset_page(qs, request=request, scope=f"members:{ws}", key="id", render=lambda rows: [
            {"username": m.user.username, "kind": m.user.kind, "role": m.role} for m in rows]))


class MemberView(ApiView):
    class InputSerializer(serializers.Serializer):
        role = serializers.ChoiceField(choices=["admin", "editor", "viewer"])

    @extend_schema(operation_id="member_set", request=InputSerializer,
                   responses={200: MemberOutput, **errors(400, 401, 403, 404)})
    @idempotent
    def put(self, request: Request, ws: str, username: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        data = self.data(self.InputSerializer)
        membership = svc.member_set(access=access, username=username, role=data["role"])
        return Response({"username": membership.user.username, "kind": membership.user.kind, "role": membership.role})

    @extend_schema(operation_id="member_remove", responses={204: None, **errors(401, 403, 404)})
    def delete(self, request: Request, ws: str, username: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        svc.member_remove(access=access, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RuleOutput(serializers.Serializer):
    prefix = serializers.CharField()
    writers = serializers.ListField(child=serializers.CharField())


def rule_json(rule: DirectoryRule) -> dict[str, Any]:
    return {"prefix": rule.prefix, "writers": sorted(u.username for u in rule.writers.all())}


class RulesView(ApiView):
    @extend_schema(operation_id="rule_list", responses={200: page_of("RulePage", RuleOutput()),
                                                        **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws)
        qs = DirectoryRule.objects.filter(workspace=access.workspace).prefetch_related("writers")
        return Response(keyset_page(qs, request=request, scope=f"rules:{ws}", key="prefix",
                                    render=lambda rows: [rule_json(r) for r in rows]))


class RuleView(ApiView):
    class InputSerializer(serializers.Serializer):
        writers = serializers.ListField(child=StrictCharField(max_length=150), max_length=1000)

    @extend_schema(operation_id="rule_set", request=InputSerializer,
                   responses={200: RuleOutput, **errors(400, 401, 403, 404)})
    @idempotent
    def put(self, request: Request, ws: str, prefix: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        data = self.data(self.InputSerializer)
        rule = svc.rule_set(access=access, prefix=prefix, writers=data["writers"])
        return Response(rule_json(rule))

    @extend_schema(operation_id="rule_delete", responses={204: None, **errors(400, 401, 403, 404)})
    def delete(self, request: Request, ws: str, prefix: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        svc.rule_delete(access=access, prefix=prefix)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LayoutView(ApiView):
    class InputSerializer(serializers.Serializer):
        agents = serializers.ListField(child=StrictCharField(max_length=150), max_length=200)

    @extend_schema(operation_id="layout_create", request=InputSerializer, responses={
        201: inline_serializer("Layout", {"directories": serializers.ListField(child=serializers.CharField()),
                                          "created": serializers.ListField(child=serializers.CharField()),
                                          "rules": serializers.ListField(child=RuleOutput())}),
        **errors(400, 401, 403, 404)})
    @idempotent
    def post(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        data = self.data(self.InputSerializer)
        return Response(svc.layout_create(access=access, agents=data["agents"]), status=status.HTTP_201_CREATED)
