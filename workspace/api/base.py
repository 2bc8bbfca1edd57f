"""The base class of every API view, and the `Idempotency-Key` support."""
from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils.datastructures import MultiValueDict
from rest_framework.exceptions import ParseError
from rest_framework.request import Empty, Request
from rest_framework.response import Response
from rest_framework.views import APIView

from workspace.api import fast_input
from workspace.api.parsers import StrictJSONParser, parse_json
from workspace.errors import Conflict, Invalid, TooLarge, Unprocessable
from workspace.models import IdempotencyRecord
from workspace.ratelimit import token_rate_check

_REPLAYED_HEADERS = ("ETag", "Location", "X-Version", "Retry-After")


class ApiView(APIView):
    """Thin views: parse, call a service, render (STYLE rule 7)."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.user and request.user.is_authenticated:
            token_rate_check(request.user.pk)

    def data(self, serializer_class: type, *, partial: bool = False) -> dict[str, Any]:
        """Validate the JSON body with `serializer_class`; a body that is not an object is a 400."""
        body = self.json_body()
        if not isinstance(body, dict):
            raise Invalid("invalid_body", "The request body must be a JSON object.")
        if not partial:
            validated = fast_input.parse(serializer_class, body)
            if validated is not None:
                return validated
        serializer = serializer_class(data=body, partial=partial)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def json_body(self) -> Any:
        """`request.data` for this API's usual body: UTF-8 JSON with a Content-Length, parsed by the
        same rules as StrictJSONParser without DRF's negotiation and stream wrappers (which cost
        several times the parse on a short body). The body is read with `raw_body`, so it stays
        readable (the Idempotency-Key fingerprint). Anything else goes to DRF as before."""
        request = self.request
        django_request = request._request
        # DRF's Request starts with `_full_data = Empty`: anything else means it has been parsed.
        if (request._full_data is not Empty or tuple(self.parser_classes) != (StrictJSONParser,)
                or getattr(django_request, "content_type", None) != "application/json"
                or django_request.content_params.get("charset", "utf-8").lower() not in ("utf-8", "utf8")
                or django_request.META.get("CONTENT_LENGTH") in (None, "", "0")):
            return request.data
        try:
            data = parse_json(raw_body(request, limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
        except ParseError:
            # As DRF leaves a request whose body failed to parse.
            request._data = request._full_data = {}
            request._files = MultiValueDict()
            raise
        request._data = request._full_data = data
        request._files = MultiValueDict()
        return data


class _Rollback(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def raw_body(request: Request | HttpRequest, *, limit: int) -> bytes:
    """The request body, read at most once and refused (413) past `limit` bytes."""
    django_request = request._request if isinstance(request, Request) else request
    cached = getattr(django_request, "_body", None)
    if cached is not None:
        if len(cached) > limit:
            raise TooLarge("too_large", f"The body is larger than {limit} bytes.", limit=limit)
        return cached
    try:
        declared = int(django_request.META.get("CONTENT_LENGTH") or 0)
    except ValueError as exc:
        raise Invalid("invalid_content_length", "Content-Length is not a number.") from exc
    if declared > limit:
        raise TooLarge("too_large", f"The body is larger than {limit} bytes.", limit=limit)
    data = django_request.read(limit + 1)
    if len(data) > limit:
        raise TooLarge("too_large", f"The body is larger than {limit} bytes.", limit=limit)
    django_request._body = data
    django_request._stream = io.BytesIO(data)
    return data


def _fingerprint(request: Request) -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0")
    digest.update(request.get_full_path().encode("utf-8", "surrogateescape"))
    digest.update(b"\0")
    digest.update(raw_body(request, limit=max(settings.MAX_FILE_SIZE, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)))
    return digest.hexdigest()


def _replay(record: IdempotencyRecord) -> Response:
    response = Response(record.response, status=record.status_code, headers=record.headers or None)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(handler: Callable[..., Response]) -> Callable[..., Response]:
    """With `Idempotency-Key`, the first successful response is stored in the same transaction as
    the change, and a retry with the same key and body gets that response back, changing nothing.
    A concurrent duplicate waits on the key's unique index and then replays."""

    @functools.wraps(handler)
    def wrapper(self: ApiView, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return handler(self, request, *args, **kwargs)
        if not 1 <= len(key) <= 200 or not key.isprintable():
            raise Invalid("invalid_idempotency_key", "An Idempotency-Key is 1-200 printable characters.")
        fingerprint = _fingerprint(request)
        existing = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
        if existing is not None:
            return _check_and_replay(existing, fingerprint)
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(user=request.user, key=key, fingerprint=fingerprint)
                response = handler(self, request, *args, **kwargs)
                if not 200 <= response.status_code < 300:
                    raise _Rollback(response)
                record.status_code = response.status_code
                stored = json.loads(json.dumps(response.data, default=str)) if response.data is not None else None
                # A secret is shown once: the stored copy never keeps it (a replay answers null).
                for name in getattr(self, "idempotency_secret_fields", ()):
                    if isinstance(stored, dict) and name in stored:
                        stored[name] = None
                record.response = stored
                record.headers = {h: response[h] for h in _REPLAYED_HEADERS if response.has_header(h)}
                record.save(update_fields=["status_code", "response", "headers"])
                return response
        except _Rollback as rollback:
            return rollback.response
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
            if existing is None:
                raise
            return _check_and_replay(existing, fingerprint)

    return wrapper


def _check_and_replay(record: IdempotencyRecord, fingerprint: str) -> Response:
    if record.fingerprint != fingerprint:
        raise Unprocessable("idempotency_key_reused",
                            "This Idempotency-Key was used with a different request; use a new key.")
    if record.status_code == 0:
        raise Conflict("idempotency_in_progress", "A request with this Idempotency-Key is still running.")
    return _replay(record)
