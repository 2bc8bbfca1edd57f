"""Small typed views of the API's JSON.

Each model keeps the full JSON it came from in `raw`, so a field the server adds later (or one
this client does not model) is still reachable without a client upgrade. Missing optional
fields take their defaults instead of failing: the client must keep working while the server
grows. Timestamps stay RFC 3339 strings; `parse_time()` turns one into an aware datetime.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

__all__ = [
    "Answer", "Approval", "Citation", "Event", "FileContent", "FileVersion", "IndexEntry", "Lock", "Member", "Message",
    "Move", "PipelineRun", "Rule", "SearchHit", "SearchResults", "Task", "Token", "Transfer", "TreeEntry",
    "Trigger", "User", "WorklogEntry", "WorklogVerification", "WorkspaceInfo", "parse_time",
]

M = TypeVar("M", bound="Model")


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp from the API as an aware datetime (None stays None)."""
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Model:
    """Base of the JSON views: `from_json` takes the known keys and keeps everything in `raw`."""

    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    @classmethod
    def from_json(cls: type[M], data: dict[str, Any]) -> M:
        names = {f.name for f in dataclasses.fields(cls) if f.name != "raw"}
        values = {key: value for key, value in data.items() if key in names}
        return cls(**values, raw=dict(data))


@dataclass(frozen=True)
class User(Model):
    id: str = ""
    username: str = ""
    kind: str = ""
    on_behalf_of: str | None = None
    token: str | None = None  # only when an agent account was just created


@dataclass(frozen=True)
class Token(Model):
    id: str = ""
    name: str = ""
    prefix: str = ""
    created_at: str | None = None
    last_used_at: str | None = None
    revoked_at: str | None = None
    token: str | None = None  # the secret, only in the answer that created it


@dataclass(frozen=True)
class WorkspaceInfo(Model):
    id: str = ""
    name: str = ""
    intelligence: bool = True
    role: str = ""
    created_at: str | None = None
    created_by: str | None = None
    transferred_from: str | None = None
    transferred_at: str | None = None


@dataclass(frozen=True)
class Member(Model):
    username: str = ""
    kind: str = ""
    role: str = ""


@dataclass(frozen=True)
class Rule(Model):
    prefix: str = ""
    writers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FileVersion(Model):
    """One version of a file: what a write, delete or history entry describes."""

    path: str = ""
    version: int = 0
    sha256: str | None = None
    size: int = 0
    deleted: bool = False
    author: str | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class FileContent:
    """A file's bytes with the version they are, so a later write can say `if_match=version`."""

    path: str
    version: int
    content: bytes
    sha256: str | None = None
    content_type: str | None = None

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")

    def __bytes__(self) -> bytes:
        return self.content


@dataclass(frozen=True)
class TreeEntry(Model):
    path: str = ""
    version: int = 0
    size: int = 0
    sha256: str | None = None
    author: str | None = None
    updated_at: str | None = None
    lock: dict[str, Any] | None = None


@dataclass(frozen=True)
class Move(Model):
    source: FileVersion = field(default_factory=FileVersion)
    target: FileVersion = field(default_factory=FileVersion)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Move:
        return cls(source=FileVersion.from_json(data.get("from") or {}),
                   target=FileVersion.from_json(data.get("to") or {}), raw=dict(data))


@dataclass(frozen=True)
class Lock(Model):
    id: str = ""
    path: str = ""
    token: int = 0
    holder: str | None = None
    on_behalf_of: str | None = None
    reason: str = ""
    subtree: bool = False
    ttl_seconds: int = 0
    acquired_at: str | None = None
    expires_at: str | None = None
    renewals: int = 0
    state: str = ""
    ended_at: str | None = None


@dataclass(frozen=True)
class Task(Model):
    id: str = ""
    number: int = 0
    workspace: str = ""
    title: str = ""
    kind: str = ""
    queue: str = "default"
    status: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 3
    lease_seconds: int = 60
    requires_approval: bool = False
    claimed_by: str | None = None
    claimed_at: str | None = None
    lease_id: str | None = None  # the claim's id: pass it back so a re-claimed task refuses a stale worker
    lease_expires_at: str | None = None
    not_before: str | None = None
    result: Any = None
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    approval: dict[str, Any] | None = None
    cancel_reason: str | None = None
    created_by: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    completed_at: str | None = None


@dataclass(frozen=True)
class WorklogEntry(Model):
    seq: int = 0
    hash: str = ""
    prev_hash: str = ""
    message: str = ""
    task: str | None = None
    data: Any = None
    author: str | None = None
    on_behalf_of: str | None = None
    at: str | None = None


@dataclass(frozen=True)
class WorklogVerification(Model):
    """`ok` with the number of entries checked; when not ok, `raw` names the first broken entry."""

    ok: bool = False
    entries: int = 0


@dataclass(frozen=True)
class Approval(Model):
    id: str = ""
    number: int = 0
    title: str = ""
    description: str = ""
    status: str = ""
    task: str | None = None
    path: str | None = None
    version: int | None = None
    automatic: bool = False
    requested_by: str | None = None
    decision: str | None = None
    comment: str | None = None
    decided_by: str | None = None
    created_at: str | None = None
    decided_at: str | None = None


@dataclass(frozen=True)
class Transfer(Model):
    id: str = ""
    workspace: str = ""
    workspace_name: str = ""
    status: str = ""
    to: str | None = None
    to_user: str | None = None
    message: str = ""
    created_by: str | None = None
    created_at: str | None = None
    expires_at: str | None = None
    finished_at: str | None = None
    finished_by: str | None = None
    token: str | None = None  # the accept secret and link: only in the answer that created the offer
    accept_url: str | None = None


@dataclass(frozen=True)
class Message(Model):
    offset: int = 0
    topic: str = ""
    key: str | None = None
    body: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    publisher: str | None = None
    published_at: str | None = None
    deliveries: int = 0  # set on messages leased by a consumer group's pull
    lease_expires_at: str | None = None


@dataclass(frozen=True)
class Trigger(Model):
    name: str = ""
    on: dict[str, Any] = field(default_factory=dict)
    create_task: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    created_by: str | None = None
    last_error: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class Event(Model):
    seq: int = 0
    type: str = ""
    actor: str | None = None
    on_behalf_of: str | None = None
    workspace: str = ""
    target: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    at: str | None = None


@dataclass(frozen=True)
class SearchHit(Model):
    path: str = ""
    version: int = 0
    score: float = 0.0
    snippet: str = ""
    start: int | None = None
    end: int | None = None
    stale: bool = False
    workspace: str | None = None  # set by the cross-workspace search


@dataclass(frozen=True)
class SearchResults(Model):
    """Hits, best first; `pending` files are not searchable yet, `degraded` names retrievers that
    were down (the hits then come from the others)."""

    results: list[SearchHit] = field(default_factory=list)
    pending: int = 0
    degraded: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchResults:
        return cls(results=[SearchHit.from_json(h) for h in data.get("results", [])],
                   pending=int(data.get("pending") or 0), degraded=list(data.get("degraded") or []),
                   raw=dict(data))

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)


@dataclass(frozen=True)
class Citation(Model):
    path: str = ""
    version: int = 0
    snippet: str = ""


@dataclass(frozen=True)
class Answer(Model):
    """`[n]` in the answer refers to `citations[n - 1]`."""

    answer: str = ""
    citations: list[Citation] = field(default_factory=list)
    pending: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answer:
        return cls(answer=str(data.get("answer") or ""),
                   citations=[Citation.from_json(c) for c in data.get("citations", [])],
                   pending=int(data.get("pending") or 0), raw=dict(data))


@dataclass(frozen=True)
class IndexEntry(Model):
    """One file's index state: `status` is pending, indexed or error (`reason` says why)."""

    path: str = ""
    version: int = 0
    indexed_version: int | None = None
    status: str = ""
    reason: str | None = None
    chunks: int = 0
    attempts: int = 0
    updated_at: str | None = None


@dataclass(frozen=True)
class PipelineRun(Model):
    """A pipeline run; per-task status, critical path and speed-up are in `raw` as the server sends them."""

    id: str = ""
    status: str = ""
    tasks: list[dict[str, Any]] = field(default_factory=list)
    critical_path: list[Any] = field(default_factory=list)
    speedup: float | None = None
