"""MCP over streamable HTTP at `/mcp`, inside the same ASGI application as Django.

- Every request is authenticated here with `Authorization: Bearer <token>` (`user_for_token`, as
  for the API and WebSockets): no valid token is a 401 with API.md's error body, and the user
  goes into the request scope, where the tools find it (`core.caller`).
- Stateless, with JSON responses: any web process can serve any request, so any number of
  uvicorn workers behind any balancer behave as one (DESIGN.md: nothing in process memory).
- The SDK's session manager needs a running task group: `McpHttp.running()` is entered from the
  ASGI lifespan (`switchyard.asgi`); a fresh manager is built for each run, so the application
  can be started again (uvicorn --reload, tests). Without lifespan, /mcp answers 503 and says why.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from mcp.server.transport_security import TransportSecuritySettings

from switchyard.mcp_server.core import SCOPE_USER_KEY, server

log = logging.getLogger(__name__)

PATH = "/mcp"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# JSON escaping can double a file's size; the service still enforces MAX_FILE_SIZE on the bytes.
_MAX_BODY = 2 * settings.MAX_FILE_SIZE + 1024 * 1024


def is_mcp_path(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _json(send: Send, status: int, code: str, message: str, *, request_id: str,
                headers: dict[str, str] | None = None, **details: Any) -> None:
    body = json.dumps({"error": {"code": code, "message": message, **details}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"x-request-id", request_id.encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _Peer:
    """What the rate limiters read from a request: its client address."""

    def __init__(self, scope: Scope) -> None:
        client = scope.get("client") or ("unknown", 0)
        self.META = {"REMOTE_ADDR": client[0]}


def _authenticate(scope: Scope, header: str | None) -> tuple[Any, tuple[int, str, str, dict[str, str]] | None]:
    """(user, None), or (None, (status, code, message, headers)) for the refusal."""
    from agents.authentication import bearer_from_header, user_for_token
    from workspace.errors import TooManyRequests
    from workspace.ratelimit import auth_failure_record, token_rate_check

    challenge = {"WWW-Authenticate": 'Bearer realm="switchyard"'}
    secret = bearer_from_header(header)
    if secret is None:
        message = "Use 'Authorization: Bearer <token>'." if header else "Authentication credentials were not provided."
        return None, (401, "authentication_failed" if header else "not_authenticated", message, challenge)
    try:
        user = user_for_token(secret)
        if user is None:
            auth_failure_record(_Peer(scope))
            return None, (401, "authentication_failed", "The token is not valid or has been revoked.", challenge)
        token_rate_check(user.pk)
    except TooManyRequests as exc:
        return None, (429, exc.code, exc.message, exc.headers)
    return user, None


class McpHttp:
    """The streamable-HTTP MCP endpoint as an ASGI application, with its lifecycle."""

    def __init__(self) -> None:
        self._app: Any = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Build the endpoint and run its session manager for as long as the context lasts."""
        app = server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            max_request_body_size=_MAX_BODY,
            # Hosts are checked against Django's ALLOWED_HOSTS below; a bearer token is not ambient,
            # so a rebound page in a browser cannot use it.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        async with server.session_manager.run():
            self._app = app
            try:
                yield
            finally:
                self._app = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = _header(scope, b"x-request-id") or ""
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        app = self._app
        if app is None:
            await _json(send, 503, "mcp_not_running",
                        "The MCP endpoint needs an ASGI server that runs the lifespan protocol (uvicorn does).",
                        request_id=request_id)
            return
        domain, _port = split_domain_port(_header(scope, b"host") or "")
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            await _json(send, 400, "bad_request", "Invalid Host header.", request_id=request_id)
            return
        if scope["path"] not in (PATH, PATH + "/"):
            await _json(send, 404, "not_found", f"The MCP endpoint is {PATH}.", request_id=request_id)
            return
        user, refusal = await database_sync_to_async(_authenticate, thread_sensitive=False)(
            scope, _header(scope, b"authorization"))
        if refusal is not None:
            status, code, message, headers = refusal
            await _json(send, status, code, message, request_id=request_id, headers=headers)
            return
        scope = {**scope, "path": PATH, SCOPE_USER_KEY: user}

        async def send_with_request_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        await app(scope, receive, send_with_request_id)


endpoint = McpHttp()
