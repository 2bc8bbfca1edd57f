"""Request ids on every response; security headers on every page."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

MAX_HEADER_BYTES = 32 * 1024
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Echo a well-formed `X-Request-Id`, or make one; every response carries it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["X-Request-Id"] = request_id
        return response


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not request.path.startswith("/api/docs") and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = settings.CONTENT_SECURITY_POLICY
        response.setdefault("Referrer-Policy", "same-origin")
        return response


class BodySizeLimitMiddleware:
    """Refuse an API body larger than its endpoint allows before anything reads it (413)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            header_bytes = sum(len(k) + len(str(v)) for k, v in request.META.items() if k.startswith("HTTP_"))
            if header_bytes > MAX_HEADER_BYTES:
                return _json(431, "headers_too_large",
                             f"The request headers are larger than {MAX_HEADER_BYTES} bytes.", limit=MAX_HEADER_BYTES)
            limit = settings.MAX_FILE_SIZE if "/files/" in request.path else settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = -1
            if declared < 0:
                return _json(400, "invalid_content_length", "Content-Length is not a number.")
            if declared > limit:
                return _json(413, "too_large", f"The body is larger than this endpoint accepts ({limit} bytes).",
                             limit=limit)
        return self.get_response(request)


def _json(status: int, code: str, message: str, **details: object) -> HttpResponse:
    from django.http import JsonResponse

    return JsonResponse({"error": {"code": code, "message": message, **details}}, status=status)
