"""The Switchyard Python client (API.md, v1).

    from switchyard.client import Client

    client = Client("http://localhost:8000", token)
    ws = client.workspace(ws_id)
    with ws.lock("notes.md", ttl=60, reason="summarising") as lock:
        ws.write("notes.md", b"...", lock_token=lock.token)

It imports no Django (only httpx and websockets), so agents and scripts can use it anywhere.
"""
from __future__ import annotations

from switchyard.client.client import Client
from switchyard.client.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Gone,
    IdempotencyInProgress,
    Locked,
    LockGone,
    LockLost,
    NotClaimant,
    NotFound,
    NotOwner,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    ServerError,
    StaleInputs,
    StaleLockToken,
    Unauthorized,
    Unavailable,
    Unprocessable,
    VersionMismatch,
)
from switchyard.client.locking import HeldLock
from switchyard.client.models import (
    Answer,
    Approval,
    Citation,
    Event,
    FileContent,
    FileVersion,
    IndexEntry,
    Lock,
    Member,
    Message,
    Move,
    PipelineRun,
    Rule,
    SearchHit,
    SearchResults,
    Task,
    Token,
    Transfer,
    TreeEntry,
    Trigger,
    User,
    WorklogEntry,
    WorklogVerification,
    WorkspaceInfo,
    parse_time,
)
from switchyard.client.resources import Topic
from switchyard.client.streams import Stream
from switchyard.client.transport import Page, RetryPolicy
from switchyard.client.workspace import Workspace

__all__ = [
    "AlreadyExists", "Answer", "ApiError", "Approval", "BadRequest", "Citation", "Client", "ClientError",
    "Conflict", "ConnectionFailed", "Event", "FileContent", "FileVersion", "Forbidden", "Gone", "HeldLock",
    "IdempotencyInProgress", "IndexEntry", "Lock", "LockGone", "LockLost", "Locked", "Member", "Message", "Move", "NotClaimant",
    "NotFound", "NotOwner", "Page", "PayloadTooLarge", "PipelineRun", "PreconditionFailed", "RateLimited",
    "RetryPolicy", "Rule", "SearchHit", "SearchResults", "ServerError", "StaleInputs", "StaleLockToken", "Stream",
    "Task", "Token", "Topic", "Transfer", "TreeEntry", "Trigger", "Unauthorized", "Unavailable", "Unprocessable",
    "User", "VersionMismatch", "Workspace", "WorklogEntry", "WorklogVerification", "WorkspaceInfo", "parse_time",
]
