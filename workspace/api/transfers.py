"""Ownership transfers over HTTP (API.md "Ownership transfer"), and the accept page a recipient
opens from the link (server-rendered, with a sign-up form for an address that has no account)."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import login
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from workspace.access import workspace_for
from workspace.api.base import ApiView, idempotent
from workspace.api.pagination import keyset_page
from workspace.api.schema import errors, page_of
from workspace.errors import ServiceError
from workspace.models import Role
from workspace.models.tasks import Transfer, TransferStatus
from workspace.services import transfers as svc
from workspace.services.tasks import iso


class TransferOutput(serializers.Serializer):
    id = serializers.CharField()
    workspace = serializers.CharField()
    workspace_name = serializers.CharField()
    status = serializers.ChoiceField(choices=TransferStatus.choices)
    to = serializers.CharField()
    to_user = serializers.CharField(allow_null=True)
    message = serializers.CharField()
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    finished_by = serializers.CharField(allow_null=True)


def transfer_json(transfer: Transfer) -> dict[str, Any]:
    return {
        "id": transfer.pk, "workspace": transfer.workspace_id, "workspace_name": transfer.workspace.name,
        "status": transfer.status, "to": transfer.to,
        "to_user": transfer.to_user.username if transfer.to_user_id else None, "message": transfer.message,
        "created_by": transfer.from_user.username, "created_at": iso(transfer.created_at),
        "expires_at": iso(transfer.expires_at), "finished_at": iso(transfer.finished_at),
        "finished_by": transfer.finished_by.username if transfer.finished_by_id else None,
    }


def accept_path(transfer_id: str, token: str) -> str:
    return f"{reverse('transfer_accept', kwargs={'transfer_id': transfer_id})}?{urlencode({'token': token})}"


class _OneTimeSecretResponse(Response):
    """`data` lacks the one-time token, so the stored `Idempotency-Key` response (which is what
    `data` is) never holds it and only its hash is ever stored; the body sent carries it. A replay
    therefore answers with `token` and `accept_url` null: cancel and offer again if the link is lost."""

    def __init__(self, data: dict[str, Any], secret: dict[str, Any], **kwargs: Any) -> None:
        super().__init__({**data, **dict.fromkeys(secret)}, **kwargs)
        self._secret = secret

    @property
    def rendered_content(self) -> Any:
        public = self.data
        self.data = {**public, **self._secret}
        try:
            return super().rendered_content
        finally:
            self.data = public


class WorkspaceTransfersView(ApiView):
    @extend_schema_serializer(component_name="TransferOfferInput")
    class InputSerializer(serializers.Serializer):
        to = serializers.CharField(max_length=254)
        message = serializers.CharField(required=False, allow_blank=True, default="", max_length=svc.MAX_MESSAGE,
                                        trim_whitespace=False)

    @extend_schema_serializer(component_name="TransferOffered")
    class CreatedSerializer(TransferOutput):
        token = serializers.CharField(allow_null=True)
        accept_url = serializers.CharField(allow_null=True)

    @extend_schema(operation_id="transfer_list", responses={200: page_of("TransferPage", TransferOutput()),
                                                            **errors(400, 401, 403, 404)})
    def get(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        qs = Transfer.objects.filter(workspace=access.workspace).select_related(
            "workspace", "from_user", "to_user", "finished_by")
        return Response(keyset_page(qs, request=request, scope=f"transfers:{ws}", key="id",
                                    render=lambda rows: [transfer_json(t) for t in rows]))

    @extend_schema(operation_id="transfer_offer", request=InputSerializer,
                   responses={201: CreatedSerializer, **errors(400, 401, 403, 404, 409)})
    @idempotent
    def post(self, request: Request, ws: str) -> Response:
        """Offer the workspace to an account (username) or an email address (owner only). The answer
        carries the accept link with its one-time token; only the token's hash is stored."""
        access = workspace_for(request.user, ws)
        data = self.data(self.InputSerializer)
        offer = svc.transfer_offer(access=access, to=data["to"], message=data["message"])
        link = request.build_absolute_uri(accept_path(offer.transfer.pk, offer.token))
        return _OneTimeSecretResponse(transfer_json(offer.transfer), {"token": offer.token, "accept_url": link},
                                      status=status.HTTP_201_CREATED)


class TransferDetailView(ApiView):
    @extend_schema(operation_id="transfer_get", responses={200: TransferOutput, **errors(401, 404)})
    def get(self, request: Request, transfer_id: str) -> Response:
        return Response(transfer_json(svc.transfer_for(user=request.user, transfer_id=transfer_id)))


class TransferAcceptView(ApiView):
    @extend_schema_serializer(component_name="TransferAcceptInput")
    class InputSerializer(serializers.Serializer):
        token = serializers.CharField(max_length=200, required=False)

    @extend_schema(operation_id="transfer_accept", request=InputSerializer,
                   responses={200: TransferOutput, **errors(400, 401, 404, 409, 410)})
    @idempotent
    def post(self, request: Request, transfer_id: str) -> Response:
        """The recipient accepts: it becomes owner and the previous owner admin. The token from the
        link is required when the offer was made to an email address; to anyone but the recipient,
        the transfer does not exist (404)."""
        data = self.data(self.InputSerializer)
        transfer = svc.transfer_accept(user=request.user, transfer_id=transfer_id, token=data.get("token"))
        return Response(transfer_json(svc.transfer_for(user=request.user, transfer_id=transfer.pk)))


class TransferCancelView(ApiView):
    @extend_schema(operation_id="transfer_cancel", request=None,
                   responses={200: TransferOutput, **errors(401, 403, 404, 409, 410)})
    @idempotent
    def post(self, request: Request, transfer_id: str) -> Response:
        """Withdraw a pending offer (the owner), or decline it (the recipient)."""
        transfer = svc.transfer_cancel(user=request.user, transfer_id=transfer_id)
        return Response(transfer_json(svc.transfer_for(user=request.user, transfer_id=transfer.pk)))


# -- the browser page behind the accept link -----------------------------------------------------
@require_http_methods(["GET", "POST"])
def transfer_accept_page(request: HttpRequest, transfer_id: str) -> HttpResponse:
    """`/transfers/<id>/accept?token=...`: sign up (an offer to an address with no account) or
    sign in, then accept. Without the right token, or as anyone but the recipient, it is a 404."""
    token = request.POST.get("token") or request.GET.get("token") or ""
    try:
        transfer = svc.transfer_by_token(transfer_id=transfer_id, token=token)
    except ServiceError as exc:
        raise Http404("No such transfer.") from exc
    here = accept_path(transfer.pk, token)
    user = request.user if request.user.is_authenticated else None
    if user is not None and not svc.is_recipient(transfer, user):
        raise Http404("No such transfer.")
    context: dict[str, Any] = {"transfer": transfer, "token": token, "here": here, "errors": [],
                               "login_url": f"{reverse('login')}?{urlencode({'next': here})}",
                               "can_sign_up": transfer.to_user_id is None and bool(transfer.to_email)}
    if transfer.status != TransferStatus.PENDING:
        return render(request, "transfers/accept.html", context, status=409 if transfer.status == "accepted" else 410)
    if request.method == "POST" and request.POST.get("action") == "accept" and user is not None:
        try:
            svc.transfer_accept(user=user, transfer_id=transfer.pk, token=token)
        except ServiceError as exc:
            context["errors"] = [exc.message]
            transfer.refresh_from_db()
            return render(request, "transfers/accept.html", context, status=exc.status)
        return redirect("workspace", ws=transfer.workspace_id)
    if request.method == "POST" and request.POST.get("action") == "signup" and user is None \
            and context["can_sign_up"]:
        new_user = _sign_up(request, transfer, context)
        if new_user is not None:
            login(request, new_user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect(here)
        return render(request, "transfers/accept.html", context, status=400)
    return render(request, "transfers/accept.html", context)


def _sign_up(request: HttpRequest, transfer: Transfer, context: dict[str, Any]) -> Any:
    from agents.models import User
    from agents.services import user_create

    username = request.POST.get("username", "").strip()
    password = request.POST.get("password", "")
    context["username"] = username
    if password != request.POST.get("password2", ""):
        context["errors"] = ["The two passwords differ."]
        return None
    try:
        validate_password(password, User(username=username, email=transfer.to_email))
    except ValidationError as exc:
        context["errors"] = list(exc.messages)
        return None
    try:
        return user_create(username=username, email=transfer.to_email, password=password)
    except ServiceError as exc:
        context["errors"] = [exc.message]
        return None
