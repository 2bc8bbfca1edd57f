"""Locks over HTTP (API.md "Locks")."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from workspace.access import Access, workspace_for
from workspace.api import fast_input
from workspace.api.base import ApiView, idempotent
from workspace.api.pagination import keyset_fetch_page
from workspace.api.schema import errors, page_of
from workspace.errors import NotFound
from workspace.models import Lock, Role
from workspace.paths import validate_prefix
from workspace.services import locks as svc


@fast_input.plain
class StrictFloatField(serializers.FloatField):
    """A JSON number; `true` is not 1."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            self.fail("invalid")
        return float(super().to_internal_value(data))


@fast_input.plain
class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool):
            self.fail("invalid")
        return int(super().to_internal_value(data))


def _ttl_field(*, required: bool = False) -> serializers.IntegerField:
    return StrictIntegerField(min_value=1, max_value=settings.LOCK_MAX_TTL, required=required,
                              **({} if required else {"default": settings.LOCK_DEFAULT_TTL}))


def _wait_field() -> serializers.FloatField:
    return StrictFloatField(min_value=0, max_value=svc.MAX_WAIT_SECONDS, default=0)


@fast_input.plain
class PathField(serializers.CharField):
    """A path exactly as sent: a JSON string (not a number), never trimmed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=4096, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


def _path_field() -> serializers.CharField:
    return PathField()


class LockOutput(serializers.Serializer):
    id = serializers.CharField()
    path = serializers.CharField()
    subtree = serializers.BooleanField()
    token = serializers.IntegerField()
    holder = serializers.CharField()
    on_behalf_of = serializers.CharField(allow_null=True)
    reason = serializers.CharField()
    ttl_seconds = serializers.IntegerField()
    acquired_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    renewals = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Lock.State.choices)
    ended_at = serializers.DateTimeField(allow_null=True)


_RETRY_AFTER = OpenApiParameter("Retry-After", OpenApiTypes.INT, OpenApiParameter.HEADER, response=[423],
                                description="Seconds until the blocking lock expires")


def _location(ws: str, lock: Lock) -> str:
    return f"/api/v1/workspaces/{ws}/locks/{lock.id}"


class _Acquire(ApiView):
    """Shared by the single and the batch acquire: queue and wait outside any transaction, and
    make each grant attempt one idempotent request (a retry with the same key replays it)."""

    def acquire(self, request: Request, ws: str, *, access: Access, paths: list[str], data: dict[str, Any],
                batch: bool) -> Response:
        return svc.lock_acquire_waiting(
            access=access, paths=paths, wait_seconds=data["wait_seconds"],
            attempt=lambda ticket, join_queue: self.grant(request, ws, access=access, paths=paths, data=data,
                                                          batch=batch, ticket=ticket, join_queue=join_queue),
        )

    @idempotent
    def grant(self, request: Request, ws: str, *, access: Access, paths: list[str], data: dict[str, Any],
              batch: bool, ticket: int | None, join_queue: bool) -> Response:
        locks = svc.lock_acquire(access=access, paths=paths, ttl_seconds=data["ttl_seconds"],
                                 reason=data["reason"], ticket=ticket, join_queue=join_queue)
        if batch:
            return Response({"locks": [svc.lock_summary(lock) for lock in locks]}, status=status.HTTP_201_CREATED)
        return Response(svc.lock_summary(locks[0]), status=status.HTTP_201_CREATED,
                        headers={"Location": _location(ws, locks[0])})


class LocksView(_Acquire):
    @extend_schema_serializer(component_name="LockAcquireInput")
    class InputSerializer(serializers.Serializer):
        path = _path_field()
        ttl_seconds = _ttl_field()
        reason = serializers.CharField(max_length=svc.MAX_REASON, allow_blank=True, default="")
        wait_seconds = _wait_field()

    @extend_schema(operation_id="lock_list", parameters=[
        OpenApiParameter("prefix", OpenApiTypes.STR, description="Only locks whose path starts with this directory"),
        OpenApiParameter("holder", OpenApiTypes.STR, description="Only locks held by this username"),
    ], responses={200: page_of("LockPage", LockOutput()), **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        """Active locks, by path. A lock past its expiry is not listed (it is gone)."""
        access = workspace_for(request.user, ws)
        prefix = validate_prefix(request.query_params.get("prefix", ""))
        holder = request.query_params.get("holder") or None
        return Response(keyset_fetch_page(
            lambda after, count: svc.lock_list(workspace_id=access.workspace_id, prefix=prefix, holder=holder,
                                               after=after, limit=count),
            request=request, scope=f"locks:{ws}:{prefix}:{holder or ''}", key=lambda lock: lock.path,
            render=lambda rows: [svc.lock_summary(lock) for lock in rows]))

    @extend_schema(operation_id="lock_acquire", request=InputSerializer, parameters=[_RETRY_AFTER],
                   responses={201: LockOutput, **errors(400, 401, 403, 404, 423)})
    def post(self, request: Request, ws: str) -> Response:
        """Lock a file, or a subtree with a path ending in '/'. Waits up to `wait_seconds` (first come,
        first served) while someone else holds it; `token` is the fencing token for X-Lock-Token."""
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        return self.acquire(request, ws, access=access, paths=[data["path"]], data=data, batch=False)


class LockBatchView(_Acquire):
    @extend_schema_serializer(component_name="LockBatchInput")
    class InputSerializer(serializers.Serializer):
        paths = serializers.ListField(child=_path_field(), min_length=1, max_length=svc.MAX_BATCH_PATHS)
        ttl_seconds = _ttl_field()
        reason = serializers.CharField(max_length=svc.MAX_REASON, allow_blank=True, default="")
        wait_seconds = _wait_field()

    @extend_schema(operation_id="lock_acquire_batch", request=InputSerializer, parameters=[_RETRY_AFTER],
                   responses={201: inline_serializer("LockBatch", {"locks": serializers.ListField(child=LockOutput())}),
                              **errors(400, 401, 403, 404, 423)})
    def post(self, request: Request, ws: str) -> Response:
        """All of `paths` or none, as one grant: every lock of the batch carries the same token."""
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        return self.acquire(request, ws, access=access, paths=list(data["paths"]), data=data, batch=True)


class LockView(ApiView):
    @extend_schema(operation_id="lock_get", responses={200: LockOutput, **errors(401, 404)})
    def get(self, request: Request, ws: str, lock_id: str) -> Response:
        """One lock, active or ended."""
        access = workspace_for(request.user, ws)
        lock = Lock.objects.select_related("holder", "on_behalf_of").filter(workspace=access.workspace,
                                                                            pk=lock_id).first()
        if lock is None:
            raise NotFound("lock", f"No lock {lock_id} in this workspace.")
        return Response(svc.lock_summary(lock))

    @extend_schema(operation_id="lock_release", responses={204: None, **errors(401, 403, 404, 410)})
    def delete(self, request: Request, ws: str, lock_id: str) -> Response:
        """The holder releases; an admin or the owner may release anyone's lock (a force release)."""
        access = workspace_for(request.user, ws)
        svc.lock_release(access=access, lock_id=lock_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LockRenewView(ApiView):
    @extend_schema_serializer(component_name="LockRenewInput")
    class InputSerializer(serializers.Serializer):
        ttl_seconds = StrictIntegerField(min_value=1, max_value=settings.LOCK_MAX_TTL, required=False)

    @extend_schema(operation_id="lock_renew", request=InputSerializer,
                   responses={200: LockOutput, **errors(400, 401, 403, 404, 410)})
    @idempotent
    def post(self, request: Request, ws: str, lock_id: str) -> Response:
        """Extend your active lock to `ttl_seconds` from now (default: its TTL). An ended lock is not
        revived: `410 lock_gone`."""
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        lock = svc.lock_renew(access=access, lock_id=lock_id, ttl_seconds=data.get("ttl_seconds"))
        return Response(svc.lock_summary(lock))
