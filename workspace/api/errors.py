"""One exception handler: every API error has API.md's body `{"error": {"code", "message", ...}}`."""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from workspace.errors import ServiceError

log = logging.getLogger(__name__)

_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ParseError: "invalid_json",
}


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {str(k): _flatten(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [_flatten(v) for v in detail]
    return str(detail)


def _message(detail: Any) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _message(value)
            return inner if key == "non_field_errors" else f"{key}: {inner}"
    if isinstance(detail, list) and detail:
        return _message(detail[0])
    return str(detail)


def error_response(status_code: int, code: str, message: str, headers: dict[str, str] | None = None,
                   **details: Any) -> Response:
    return Response({"error": {"code": code, "message": message, **details}}, status=status_code, headers=headers)


_BUSY_MARKERS = ("database is locked", "could not serialize", "deadlock detected", "lock timeout",
                 "couldn't get a connection", "connection pool")


def _database_busy(exc: Exception) -> bool:
    from django.db import OperationalError

    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover - the pool is installed with psycopg[pool]
        PoolTimeout = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, PoolTimeout):
        return True
    return isinstance(exc, OperationalError) and any(m in str(exc).lower() for m in _BUSY_MARKERS)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if _database_busy(exc):
        # Overload, not a bug: nothing was committed, and the client may retry (the Python
        # client does, honouring Retry-After).
        set_rollback()
        log.warning("database busy: %s", exc)
        return error_response(503, "database_busy", "The database is busy; retry shortly. Nothing was changed.",
                              {"Retry-After": "1"})
    if isinstance(exc, ServiceError):
        set_rollback()
        return Response(exc.body(), status=exc.status, headers=exc.headers or None)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None
    set_rollback()
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
    if isinstance(exc, exceptions.ValidationError):
        return error_response(status.HTTP_400_BAD_REQUEST, "invalid", _message(exc.detail), headers,
                              fields=_flatten(exc.detail))
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), None) or str(
        getattr(exc, "default_code", "error"))
    if isinstance(exc, exceptions.ParseError):
        message = f"The request body is not valid JSON: {exc.detail}"
    else:
        message = _message(exc.detail)
    return error_response(exc.status_code, code, message, headers)


# -- Django-level handlers for /api/ paths that never reach a DRF view ---------------------
def _json_error(status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status_code)


def handler404(request: HttpRequest, exception: Exception | None = None) -> Any:
    if request.path.startswith("/api/"):
        return _json_error(404, "not_found", "No such resource.")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request: HttpRequest) -> Any:
    if request.path.startswith("/api/"):
        return _json_error(500, "internal_error", "Something went wrong on our side; it has been logged.")
    from django.views.defaults import server_error

    return server_error(request)


def handler400(request: HttpRequest, exception: Exception | None = None) -> Any:
    if request.path.startswith("/api/"):
        return _json_error(400, "bad_request", "The request could not be understood.")
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception | None = None) -> Any:
    if request.path.startswith("/api/"):
        return _json_error(403, "forbidden", "Forbidden.")
    from django.views.defaults import permission_denied

    return permission_denied(request, exception)


def csrf_failure(request: HttpRequest, reason: str = "") -> Any:
    if request.path.startswith("/api/"):
        return _json_error(403, "csrf_failed", f"CSRF verification failed: {reason}")
    from django.views.csrf import csrf_failure as default

    return default(request, reason)
