"""Domain errors. Services raise these; the API turns each into API.md's error body
`{"error": {"code", "message", ...details}}` with the status it carries."""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, code: str | None = None, message: str = "", *, headers: dict[str, str] | None = None,
                 **details: Any) -> None:
        self.code = code or self.code
        self.message = message or self.code.replace("_", " ")
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class Invalid(ServiceError):
    status = 400
    code = "invalid"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    """404. `what` names the kind of thing, never whether a hidden one exists."""

    status = 404
    code = "not_found"

    def __init__(self, what: str = "resource", message: str = "", **details: Any) -> None:
        super().__init__("not_found", message or f"No such {what}.", **details)


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Gone(ServiceError):
    status = 410
    code = "gone"


class PreconditionFailed(ServiceError):
    status = 412
    code = "precondition_failed"


class TooLarge(ServiceError):
    status = 413
    code = "too_large"


class Unprocessable(ServiceError):
    status = 422
    code = "unprocessable"


class Locked(ServiceError):
    status = 423
    code = "locked"


class TooManyRequests(ServiceError):
    status = 429
    code = "rate_limited"


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"
