"""The MCP server object, who is calling, and the one way a tool runs a service.

Tools are thin (DESIGN.md): they resolve the caller, then run one synchronous function that
passes the permission gate (`workspace_for`) and calls a service, on a worker thread with
Channels' `database_sync_to_async` (the ORM must not run on the event loop). A `ServiceError`
becomes a tool error whose text says what to do next (`errors.tool_error_text`).

The caller: over HTTP the ASGI middleware (`switchyard.mcp_server.http`) authenticates the
bearer token on every request and puts the user in the request scope; over stdio the
management command sets the token in `stdio_token`, and it is checked again on every call so a
revoked token stops working at once.
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from channels.db import database_sync_to_async
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from switchyard.mcp_server.errors import tool_error_text
from workspace.errors import ServiceError

T = TypeVar("T")

SCOPE_USER_KEY = "switchyard.user"
stdio_token: contextvars.ContextVar[str | None] = contextvars.ContextVar("switchyard_mcp_stdio_token", default=None)

INSTRUCTIONS = """\
Switchyard: shared, versioned workspaces where many agents work at once without breaking each other's work.
- Find your workspace with workspace_list (ids look like ws_...). Every tool takes that id as `workspace`.
- Files are versioned. Read with file_read, then write with file_write passing expected_version = the version
  you read: if someone wrote in between you get a version_mismatch error with the current content, so merge
  and write again. Never overwrite blindly.
- To edit a file for a while without interference, lock_acquire it (pass wait_seconds to wait in line), pass
  the lock's token as lock_token on every write, lock_renew before it expires, and lock_release when done.
- Work comes as tasks: task_claim, task_heartbeat while working (before lease_expires_at), then task_complete
  or task_fail. Record what you did with worklog_append. Ask a human with approval_request.
- search and ask find things across files; events(after=...) tells you what changed since you last looked.
Errors say what went wrong and, on the line starting 'Next:', what to do about it."""

server: MCPServer = MCPServer(
    "switchyard",
    title="Switchyard",
    instructions=INSTRUCTIONS,
    version="1",
    log_level="WARNING",
)

# Argument types shared by many tools (the descriptions are what a model reads).
WorkspaceId = Annotated[str, Field(description="The workspace id, such as 'ws_...' (see workspace_list).",
                                   min_length=1, max_length=64)]
FilePath = Annotated[str, Field(description="A file path relative to the workspace root, '/'-separated, "
                                            "such as 'research/notes.md' (no leading '/', no '..').",
                                min_length=1, max_length=4096)]
LockToken = Annotated[int | None, Field(description="The fencing token of your lock covering this path "
                                                    "(the `token` lock_acquire returned). Required when you "
                                                    "hold a lock on the path; omit otherwise.",
                                        ge=0, le=2**62)]


class Unauthenticated(ToolError):
    """The stdio token was revoked (HTTP requests without a valid token never reach a tool)."""


def _scope_user(ctx: Context) -> Any:
    try:
        request = ctx.request_context.request
    except ValueError:  # called outside a request (a direct call_tool, as in-process clients do)
        return None
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict) and scope.get(SCOPE_USER_KEY) is not None:
        return scope[SCOPE_USER_KEY]
    return None


async def caller(ctx: Context) -> Any:
    """The authenticated user behind this tool call."""
    user = _scope_user(ctx)
    if user is not None:
        return user
    token = stdio_token.get()
    if token is not None:
        from agents.authentication import user_for_token

        user = await database_sync_to_async(user_for_token, thread_sensitive=False)(token)
        if user is not None:
            return user
    raise Unauthenticated("not_authenticated: the token is not valid or has been revoked. Next: get a new token "
                          "(manage.py create_agent, or POST /api/v1/agents) and restart the MCP client with it.")


async def call(ctx: Context, fn: Callable[[Any], T]) -> T:
    """Run `fn(user)` on a worker thread with a fresh database connection; map service errors.

    Not thread-sensitive: a tool that waits (a lock with wait_seconds) must not hold up every other
    call of this process behind one shared thread.
    """
    user = await caller(ctx)
    try:
        return await database_sync_to_async(fn, thread_sensitive=False)(user)
    except ServiceError as err:
        raise ToolError(tool_error_text(err, username=user.username)) from err


def iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
