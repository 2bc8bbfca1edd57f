"""Accounts API: who am I, agent accounts, personal tokens."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from agents import services
from agents.models import ApiToken
from workspace.api.base import ApiView, idempotent
from workspace.api.fields import StrictCharField
from workspace.api.pagination import keyset_page
from workspace.api.schema import errors, page_of
from workspace.errors import Forbidden


class UserOutput(serializers.Serializer):
    id = serializers.CharField()
    username = serializers.CharField()
    kind = serializers.CharField()
    on_behalf_of = serializers.CharField(allow_null=True)


def user_json(user: Any) -> dict[str, Any]:
    owner = user.on_behalf_of
    return {"id": str(user.pk), "username": user.username, "kind": user.kind,
            "on_behalf_of": owner.username if owner else None}


class TokenOutput(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


def token_json(token: ApiToken, secret: str | None = None) -> dict[str, Any]:
    data = TokenOutput(token).data
    if secret is not None:
        data["token"] = secret
    return data


class MeView(ApiView):
    @extend_schema(operation_id="me", responses={200: UserOutput, **errors(401)})
    def get(self, request: Request) -> Response:
        return Response(user_json(request.user))


class AgentsView(ApiView):
    idempotency_secret_fields = ("token",)
    class InputSerializer(serializers.Serializer):
        name = StrictCharField(max_length=64)

    class OutputSerializer(UserOutput):
        token = serializers.CharField()

    @extend_schema(operation_id="agent_create", request=InputSerializer,
                   responses={201: OutputSerializer, **errors(400, 401, 403, 409)})
    @idempotent
    def post(self, request: Request) -> Response:
        if request.user.is_agent:
            raise Forbidden("humans_only", "Only a human account creates agent accounts.")
        data = self.data(self.InputSerializer)
        issued = services.agent_create(name=data["name"], created_by=request.user)
        return Response({**user_json(issued.token.user), "token": issued.secret}, status=status.HTTP_201_CREATED)


class TokensView(ApiView):
    idempotency_secret_fields = ("token",)
    class InputSerializer(serializers.Serializer):
        name = StrictCharField(max_length=100, required=False, allow_blank=True, default="")

    class CreatedSerializer(TokenOutput):
        token = serializers.CharField()

    @extend_schema(operation_id="token_list", responses={200: page_of("TokenPage", TokenOutput()), **errors(400, 401)})
    def get(self, request: Request) -> Response:
        return Response(keyset_page(ApiToken.objects.filter(user=request.user), request=request, scope="tokens",
                                    key="id", render=lambda rows: [token_json(t) for t in rows]))

    @extend_schema(operation_id="token_create", request=InputSerializer,
                   responses={201: CreatedSerializer, **errors(400, 401)})
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.data(self.InputSerializer)
        issued = services.token_issue(user=request.user, name=data["name"])
        return Response(token_json(issued.token, issued.secret), status=status.HTTP_201_CREATED)


class TokenDetailView(ApiView):
    @extend_schema(operation_id="token_revoke", responses={204: None, **errors(401, 404)})
    def delete(self, request: Request, token_id: str) -> Response:
        services.token_revoke(user=request.user, token_id=token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
