"""Typed exceptions for every error the API can answer with, plus the client's own failures.

The API's error body is `{"error": {"code", "message", ...details}}` (API.md "Conventions").
The status picks the exception class and, for the codes an agent has to react to differently
(a stale fencing token is not the same problem as someone else's lock), the code picks a
subclass, so callers write `except StaleLockToken` instead of comparing strings.
"""
from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

__all__ = [
    "AlreadyExists", "ApiError", "BadRequest", "ClientError", "Conflict", "ConnectionFailed", "Forbidden",
    "Gone", "IdempotencyInProgress", "LockGone", "LockLost", "Locked", "NotClaimant", "NotFound", "NotOwner",
    "PayloadTooLarge", "PreconditionFailed", "RateLimited", "ServerError", "StaleInputs", "StaleLockToken",
    "Unauthorized", "Unavailable", "Unprocessable", "VersionMismatch", "error_from_response", "parse_retry_after",
]


class ClientError(Exception):
    """Base of everything this package raises, so one `except` can catch all of it."""


class ConnectionFailed(ClientError):
    """The server could not be reached (or kept dropping the connection) after every retry."""


class LockLost(ClientError):
    """A lock held through `Workspace.lock()` ended before the block did.

    Raised when a renew was refused (`410 lock_gone` / `404`), when renewing kept failing until
    the lock's expiry passed, or when the release found the lock already gone: in each case
    another agent may have taken the path meanwhile, so work done under it is not protected.
    """

    def __init__(self, message: str, *, path: str | None = None, lock_id: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.lock_id = lock_id


class ApiError(ClientError):
    """An HTTP error answer, carrying the API's error body.

    `details` holds every key of the error object besides `code` and `message` (for example
    `current` on a 412, `holder` on a 423, `fields` on a validation error).
    """

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None, *,
                 headers: httpx.Headers | None = None, request_id: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.headers = headers if headers is not None else httpx.Headers()
        self.request_id = request_id

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked us to wait (`Retry-After`, or `retry_after` in the body)."""
        header = parse_retry_after(self.headers.get("Retry-After"))
        if header is not None:
            return header
        value = self.details.get("retry_after")
        return float(value) if isinstance(value, int | float) else None


class BadRequest(ApiError):
    """400: the request is malformed or invalid; retrying it unchanged cannot help."""


class Unauthorized(ApiError):
    """401: no token, or a revoked or unknown one."""


class Forbidden(ApiError):
    """403: authenticated, but the role (or a directory rule) does not allow this."""


class NotOwner(Forbidden):
    """403 `not_owner`: the path is under a directory rule that does not list the caller."""


class NotFound(ApiError):
    """404: no such resource, or a workspace the caller is not a member of (never told apart)."""


class Conflict(ApiError):
    """409: the request conflicts with the current state."""


class StaleLockToken(Conflict):
    """409 `stale_lock_token`: the caller holds the lock but sent no token or an older one."""


class NotClaimant(Conflict):
    """409 `not_claimant`: only the task's current claimant may heartbeat, complete or fail it."""


class StaleInputs(Conflict):
    """409 `stale_inputs`: files the task read have newer versions since it read them."""

    @property
    def files(self) -> list[dict[str, Any]]:
        """The changed files with the version read and the current one, as the server lists them."""
        value = self.details.get("files")
        return list(value) if isinstance(value, list) else []


class IdempotencyInProgress(Conflict):
    """409 `idempotency_in_progress`: an earlier attempt with the same key is still running."""


class Gone(ApiError):
    """410: the resource existed but has ended."""


class LockGone(Gone):
    """410 `lock_gone`: the lock expired or was released; renewing does not revive it."""


class PreconditionFailed(ApiError):
    """412: `If-Match` / `If-None-Match` did not hold.

    `current` is the file's current version as the server described it (version, sha256, author,
    created_at and, for text under 64 KiB, `content`), so a writer can merge without a re-read.
    """

    @property
    def current(self) -> dict[str, Any] | None:
        value = self.details.get("current")
        return value if isinstance(value, dict) else None

    @property
    def current_version(self) -> int | None:
        current = self.current
        return int(current["version"]) if current and current.get("version") is not None else None

    @property
    def current_content(self) -> bytes | None:
        """The current content when the server inlined it, as bytes; None when it did not."""
        current = self.current
        if current is None or current.get("deleted") or not isinstance(current.get("content"), str):
            return None
        return str(current["content"]).encode("utf-8")


class VersionMismatch(PreconditionFailed):
    """412 `version_mismatch`: the file is no longer at the version named in `If-Match`."""


class AlreadyExists(PreconditionFailed):
    """412 `already_exists`: `If-None-Match: *` and the path has a live file."""


class PayloadTooLarge(ApiError):
    """413: the body is over the server's limit (`details["limit"]` when given)."""


class Unprocessable(ApiError):
    """422: understood but refused, e.g. an Idempotency-Key reused with a different body."""


class Locked(ApiError):
    """423 `locked`: the path is locked by someone else. `retry_after` says when to try again."""

    @property
    def holder(self) -> str | None:
        value = self.details.get("holder")
        return str(value) if value is not None else None

    @property
    def expires_at(self) -> str | None:
        value = self.details.get("expires_at")
        return str(value) if value is not None else None


class RateLimited(ApiError):
    """429: too many requests; raised only once the retries are used up."""


class ServerError(ApiError):
    """5xx: the server failed; the request may be retried."""


class Unavailable(ServerError):
    """503: the server (or one of its dependencies) is temporarily down."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone,
    412: PreconditionFailed, 413: PayloadTooLarge, 422: Unprocessable, 423: Locked, 429: RateLimited,
    503: Unavailable,
}
_BY_CODE: dict[tuple[int, str], type[ApiError]] = {
    (403, "not_owner"): NotOwner,
    (409, "stale_lock_token"): StaleLockToken,
    (409, "not_claimant"): NotClaimant,
    (409, "stale_inputs"): StaleInputs,
    (409, "idempotency_in_progress"): IdempotencyInProgress,
    (410, "lock_gone"): LockGone,
    (412, "version_mismatch"): VersionMismatch,
    (412, "already_exists"): AlreadyExists,
}


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed exception for an error response, tolerant of bodies that are not ours
    (a proxy's HTML 502 still becomes a `ServerError` with the status as its code)."""
    status = response.status_code
    code, message, details = f"http_{status}", response.reason_phrase or "HTTP error", {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = dict(body["error"])
        code = str(error.pop("code", code))
        message = str(error.pop("message", message))
        details = error
    cls = _BY_CODE.get((status, code)) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ApiError
    return cls(status, code, message, details, headers=response.headers,
               request_id=response.headers.get("X-Request-Id"))
