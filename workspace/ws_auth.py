"""WebSocket authentication: `Authorization: Bearer` for agents, the session for browsers.

A session-authenticated upgrade must come from our own origin (no cross-site WebSocket
hijacking); a bearer token is not ambient, so it needs no origin check.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from agents.authentication import bearer_from_header, user_for_token


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


class _TokenAuth:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        auth = _header(scope, b"authorization")
        if auth is not None:
            secret = bearer_from_header(auth)
            user = await database_sync_to_async(user_for_token)(secret) if secret else None
            scope["user"] = user or AnonymousUser()
            scope["auth_token"] = secret if user else None
        else:
            scope["auth_token"] = None
            user = scope.get("user")
            if user is not None and getattr(user, "is_authenticated", False) and not _same_origin(scope):
                scope["user"] = AnonymousUser()
        return await self.inner(scope, receive, send)


def _same_origin(scope: dict[str, Any]) -> bool:
    origin = _header(scope, b"origin")
    host = _header(scope, b"host")
    if origin is None:
        return True  # not a browser
    if host is None:
        return False
    return urlparse(origin.decode("latin-1")).netloc == host.decode("latin-1")


def TokenOrSessionAuthMiddleware(inner: Any) -> Any:  # noqa: N802 - reads like the Channels stacks
    return AuthMiddlewareStack(_TokenAuth(inner))
