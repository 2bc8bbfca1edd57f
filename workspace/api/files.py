"""Versioned files over HTTP (API.md "Files")."""
from __future__ import annotations

import mimetypes
import re
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response

from workspace.access import workspace_for
from workspace.api.base import ApiView, idempotent, raw_body
from workspace.api.fields import StrictCharField
from workspace.api.pagination import keyset_page, parse_int
from workspace.api.schema import errors, page_of
from workspace.errors import Invalid
from workspace.models import File, FileVersion, Role
from workspace.paths import validate_prefix
from workspace.services import files as svc
from workspace.services.locks import lock_state_for

_ETAG_RE = re.compile(r'^\s*(?:W/)?"?(\d{1,12})"?\s*$')


def parse_version_header(value: str | None, header: str) -> int | None:
    if value is None:
        return None
    match = _ETAG_RE.match(value)
    if not match:
        raise Invalid("invalid_precondition", f'{header} must be a version in quotes, such as "3".', header=header)
    return int(match.group(1))


def parse_lock_token(request: Request) -> int | None:
    raw = request.headers.get("X-Lock-Token")
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise Invalid("invalid_lock_token", "X-Lock-Token is the integer fencing token of your lock.") from exc
    if value < 0 or value > 2**62:
        raise Invalid("invalid_lock_token", "X-Lock-Token is out of range.")
    return value


def task_header(request: Request) -> str:
    value = request.headers.get("X-Task-Id", "").strip()
    if len(value) > 32 or not re.fullmatch(r"[A-Za-z0-9_]*", value):
        raise Invalid("invalid_task_id", "X-Task-Id is a task id.")
    return value


class VersionOutput(serializers.Serializer):
    path = serializers.CharField()
    version = serializers.IntegerField()
    sha256 = serializers.CharField(allow_null=True)
    size = serializers.IntegerField()
    deleted = serializers.BooleanField()
    author = serializers.CharField()
    created_at = serializers.DateTimeField()


def write_json(version: FileVersion) -> dict[str, Any]:
    return svc.version_summary(version)


class RawBodyParser(BaseParser):
    """Documents that file bodies are raw bytes of any type; the view reads them itself."""

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return None


def content_type_for(path: str, data: bytes) -> str:
    guessed, _ = mimetypes.guess_type(path)
    if svc.is_text(data):
        # Never serve user content as HTML or script from our origin.
        return "text/plain; charset=utf-8" if not guessed or not guessed.startswith("application/json") \
            else "application/json"
    if guessed and (guessed.startswith("image/") or guessed in {"application/pdf", "application/zip"}) \
            and guessed != "image/svg+xml":
        return guessed
    return "application/octet-stream"


_PATH_PARAM = OpenApiParameter("path", OpenApiTypes.STR, OpenApiParameter.PATH, description="File path")


class FileView(ApiView):
    parser_classes = [RawBodyParser]

    @extend_schema(operation_id="file_read", parameters=[
        _PATH_PARAM,
        OpenApiParameter("version", OpenApiTypes.INT, description="Read this version instead of the newest"),
    ], responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, 304: None, **errors(400, 401, 404)})
    def get(self, request: Request, ws: str, path: str) -> HttpResponse:
        access = workspace_for(request.user, ws)
        version_param = parse_int(request.query_params.get("version"), "version", minimum=1)
        version, data = svc.file_read(access=access, path=path, version=version_param)
        task_id = task_header(request)
        if task_id:
            from workspace.services.tasks import task_record_reads

            task_record_reads(access=access, task_id=task_id, files=[{"path": path, "version": version.version}])
        etag = f'"{version.version}"'
        inm = request.headers.get("If-None-Match")
        if inm and etag in [tag.strip().removeprefix("W/") for tag in inm.split(",")]:
            response = HttpResponse(status=304)
        else:
            response = HttpResponse(data, content_type=content_type_for(path, data))
            response["Content-Length"] = str(len(data))
        response["ETag"] = etag
        response["X-Version"] = str(version.version)
        response["X-Content-Sha256"] = version.sha256
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        response["X-Content-Type-Options"] = "nosniff"
        return response

    @extend_schema(operation_id="file_write", parameters=[
        _PATH_PARAM,
        OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER),
        OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER),
        OpenApiParameter("X-Lock-Token", OpenApiTypes.INT, OpenApiParameter.HEADER),
    ], request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={200: VersionOutput, 201: VersionOutput, **errors(400, 401, 403, 404, 409, 412, 413, 423)})
    @idempotent
    def put(self, request: Request, ws: str, path: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        content = raw_body(request, limit=settings.MAX_FILE_SIZE)
        inm = request.headers.get("If-None-Match")
        if inm is not None and inm.strip() != "*":
            raise Invalid("invalid_precondition", "On a write, If-None-Match may only be '*'.")
        result = svc.file_write(
            access=access, path=path, content=content,
            if_match=parse_version_header(request.headers.get("If-Match"), "If-Match"),
            if_none_match=inm is not None, lock_token=parse_lock_token(request), task_id=task_header(request),
        )
        return Response(write_json(result.version),
                        status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
                        headers={"ETag": f'"{result.version.version}"', "X-Version": str(result.version.version)})

    @extend_schema(operation_id="file_delete", parameters=[
        _PATH_PARAM,
        OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER),
        OpenApiParameter("X-Lock-Token", OpenApiTypes.INT, OpenApiParameter.HEADER),
    ], responses={200: VersionOutput, **errors(400, 401, 403, 404, 409, 412, 423)})
    @idempotent
    def delete(self, request: Request, ws: str, path: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        version = svc.file_delete(
            access=access, path=path,
            if_match=parse_version_header(request.headers.get("If-Match"), "If-Match"),
            lock_token=parse_lock_token(request), task_id=task_header(request),
        )
        return Response(write_json(version), headers={"ETag": f'"{version.version}"'})


class TreeEntry(serializers.Serializer):
    path = serializers.CharField()
    version = serializers.IntegerField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    author = serializers.CharField()
    updated_at = serializers.DateTimeField()
    lock = serializers.DictField(allow_null=True)


class TreeView(ApiView):
    @extend_schema(operation_id="tree", parameters=[OpenApiParameter("prefix", OpenApiTypes.STR)],
                   responses={200: page_of("TreePage", TreeEntry()), **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws)
        prefix = validate_prefix(request.query_params.get("prefix", ""))
        qs = File.objects.filter(workspace=access.workspace, deleted=False).select_related("author")
        if prefix:
            qs = qs.filter(path__startswith=prefix)

        def render(rows: list[File]) -> list[dict[str, Any]]:
            locks = lock_state_for(workspace_id=access.workspace_id, paths=[f.path for f in rows])
            return [{"path": f.path, "version": f.version, "size": f.size, "sha256": f.sha256,
                     "author": f.author.username, "updated_at": f.updated_at.isoformat().replace("+00:00", "Z"),
                     "lock": locks.get(f.path)} for f in rows]

        return Response(keyset_page(qs, request=request, scope=f"tree:{ws}:{prefix}", key="path", render=render))


class HistoryView(ApiView):
    @extend_schema(operation_id="history", parameters=[_PATH_PARAM],
                   responses={200: page_of("HistoryPage", VersionOutput()), **errors(400, 401, 404)})
    def get(self, request: Request, ws: str, path: str) -> Response:
        access = workspace_for(request.user, ws)
        from workspace.paths import validate_path

        validate_path(path)
        qs = FileVersion.objects.filter(workspace=access.workspace, path=path).select_related("author")
        if not qs.exists():
            from workspace.errors import NotFound

            raise NotFound("file", f"No file has ever been at {path}.")
        return Response(keyset_page(qs, request=request, scope=f"history:{ws}:{path}", key="version",
                                    descending=True, render=lambda rows: [write_json(v) for v in rows]))


class DiffView(ApiView):
    @extend_schema(operation_id="diff", parameters=[
        _PATH_PARAM,
        OpenApiParameter("from", OpenApiTypes.INT, required=True),
        OpenApiParameter("to", OpenApiTypes.INT, required=True),
    ], responses={200: inline_serializer("Diff", {
        "path": serializers.CharField(), "from": serializers.IntegerField(), "to": serializers.IntegerField(),
        "binary": serializers.BooleanField(), "diff": serializers.CharField()}), **errors(400, 401, 404)})
    def get(self, request: Request, ws: str, path: str) -> Response:
        access = workspace_for(request.user, ws)
        start = parse_int(request.query_params.get("from"), "from", minimum=1)
        end = parse_int(request.query_params.get("to"), "to", minimum=1)
        if start is None or end is None:
            raise Invalid("invalid_parameter", "Both 'from' and 'to' versions are required.")
        return Response(svc.file_diff(access=access, path=path, from_version=start, to_version=end))


class MovesView(ApiView):
    class InputSerializer(serializers.Serializer):
        from_ = StrictCharField(max_length=4096)
        to = StrictCharField(max_length=4096)
        if_match = serializers.IntegerField(required=False, min_value=1, allow_null=True)

        def get_fields(self) -> dict[str, Any]:
            fields = super().get_fields()
            fields["from"] = fields.pop("from_")
            return fields

    @extend_schema(operation_id="file_move", request=InputSerializer, responses={
        201: inline_serializer("Move", {"from": VersionOutput(), "to": VersionOutput()}),
        **errors(400, 401, 403, 404, 409, 412, 423)})
    @idempotent
    def post(self, request: Request, ws: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        tomb, moved = svc.file_move(access=access, src=data["from"], dst=data["to"], if_match=data.get("if_match"),
                                    lock_token=parse_lock_token(request))
        return Response({"from": write_json(tomb), "to": write_json(moved)}, status=status.HTTP_201_CREATED)
