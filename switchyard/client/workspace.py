"""`Workspace`: a handle on one workspace — its files, and every resource under it."""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from switchyard.client.errors import NotFound, PreconditionFailed
from switchyard.client.locking import HeldLock
from switchyard.client.models import (
    Answer,
    Event,
    FileContent,
    FileVersion,
    IndexEntry,
    Move,
    SearchResults,
    TreeEntry,
    WorkspaceInfo,
)
from switchyard.client.resources import (
    Approvals,
    Locks,
    Members,
    Pipelines,
    Rules,
    Tasks,
    Topic,
    Transfers,
    Triggers,
    Worklog,
)
from switchyard.client.streams import Stream, event_stream
from switchyard.client.transport import Page, Transport, drop_none, quote_path, quote_segment

__all__ = ["Workspace"]

SearchMode = Literal["hybrid", "semantic", "keyword"]


def _file_headers(*, if_match: int | None, if_none_match: bool, lock_token: int | None,
                   task_id: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    if if_none_match:
        headers["If-None-Match"] = "*"
    if lock_token is not None:
        headers["X-Lock-Token"] = str(lock_token)
    if task_id:
        headers["X-Task-Id"] = task_id
    return headers


class Workspace:
    """Everything an agent does inside one workspace. Creating the handle costs no request."""

    def __init__(self, transport: Transport, ws_id: str, info: WorkspaceInfo | None = None) -> None:
        self._t = transport
        self.id = ws_id
        self.info = info
        self.locks = Locks(transport, ws_id)
        self.tasks = Tasks(transport, ws_id)
        self.worklog = Worklog(transport, ws_id)
        self.approvals = Approvals(transport, ws_id)
        self.transfers = Transfers(transport, ws_id)
        self.triggers = Triggers(transport, ws_id)
        self.pipelines = Pipelines(transport, ws_id)
        self.members = Members(transport, ws_id)
        self.rules = Rules(transport, ws_id)

    def __repr__(self) -> str:
        return f"Workspace({self.id!r})"

    def _path(self, *parts: str) -> str:
        return "/".join(["workspaces", quote_segment(self.id), *parts])

    # -- the workspace itself ---------------------------------------------------------------
    def get(self) -> WorkspaceInfo:
        """Fetch the workspace's name, settings and the caller's role (and cache it in `info`)."""
        self.info = WorkspaceInfo.from_json(self._t.json("GET", self._path()))
        return self.info

    def create_layout(self, agents: Iterable[str]) -> dict[str, Any]:
        """`inbox/`, `agent-<name>/` per agent (only that agent writes there), `output/`, `failed/`."""
        body: dict[str, Any] = self._t.json("POST", self._path("layout"), json={"agents": list(agents)})
        return body

    # -- files --------------------------------------------------------------------------------
    def read(self, path: str, *, version: int | None = None, task_id: str | None = None) -> FileContent:
        """A file's content (the newest version, or `version`). With `task_id`, the server
        records the read for that task, so completing it notices if the file changes."""
        response = self._t.request("GET", self._path("files", quote_path(path)),
                                   params=drop_none(version=version),
                                   headers=_file_headers(if_match=None, if_none_match=False, lock_token=None,
                                                          task_id=task_id))
        return _content(path, response.headers, response.content)

    def read_if_changed(self, path: str, known_version: int) -> FileContent | None:
        """The newest content, or None (a `304`, no body sent) while it is still `known_version`."""
        response = self._t.request("GET", self._path("files", quote_path(path)),
                                   headers={"If-None-Match": f'"{known_version}"'})
        if response.status_code == 304:
            return None
        return _content(path, response.headers, response.content)

    def write(self, path: str, content: bytes | str, *, if_match: int | None = None, if_none_match: bool = False,
              lock_token: int | None = None, task_id: str | None = None) -> FileVersion:
        """Write a new version. `if_match=N`: only if the file is still at version N (else
        `VersionMismatch`, whose `current` may carry the content); `if_none_match=True`: only if
        the path has no live file (else `AlreadyExists`); `lock_token`: the fencing token of the
        caller's lock on the path."""
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        body = self._t.json("PUT", self._path("files", quote_path(path)), content=data,
                            headers={"Content-Type": "application/octet-stream",
                                     **_file_headers(if_match=if_match, if_none_match=if_none_match,
                                                      lock_token=lock_token, task_id=task_id)})
        return FileVersion.from_json(body)

    def delete(self, path: str, *, if_match: int | None = None, lock_token: int | None = None,
               task_id: str | None = None) -> FileVersion:
        """Delete by writing a tombstone version; the history stays readable."""
        body = self._t.json("DELETE", self._path("files", quote_path(path)),
                            headers=_file_headers(if_match=if_match, if_none_match=False, lock_token=lock_token,
                                                   task_id=task_id))
        return FileVersion.from_json(body)

    def move(self, source: str, target: str, *, if_match: int | None = None,
             lock_token: int | None = None) -> Move:
        """Atomically move a file: of two racing movers exactly one wins (the other: 404 or 412)."""
        body = self._t.json("POST", self._path("moves"), json=drop_none(**{"from": source, "to": target,
                                                                               "if_match": if_match}),
                            headers=_file_headers(if_match=None, if_none_match=False, lock_token=lock_token,
                                                   task_id=None))
        return Move.from_json(body)

    def tree(self, prefix: str = "", *, limit: int | None = None) -> Page[TreeEntry]:
        """Live files (under `prefix`) with version, size, author and lock state."""
        return self._t.page(self._path("tree"), TreeEntry.from_json,
                            params=drop_none(prefix=prefix or None, limit=limit))

    def history(self, path: str, *, limit: int | None = None) -> Page[FileVersion]:
        """Every version of `path`, newest first (deletions included)."""
        return self._t.page(self._path("history", quote_path(path)), FileVersion.from_json,
                            params=drop_none(limit=limit))

    def diff(self, path: str, from_version: int, to_version: int) -> str:
        """The unified diff between two versions (a one-line note for binary files)."""
        body = self._t.json("GET", self._path("diff", quote_path(path)),
                            params={"from": from_version, "to": to_version})
        return str(body.get("diff", ""))

    def update(self, path: str, fn: Callable[[bytes | None], bytes | str | None], *, max_attempts: int = 20,
               lock_token: int | None = None, task_id: str | None = None) -> FileVersion | None:
        """Read-modify-write without lost updates: `fn(current_bytes_or_None)` returns the new content.

        The write carries `If-Match` (or `If-None-Match: *` when the file does not exist, so two
        creators cannot both win). On `412`, `fn` runs again on the content the server put in the
        error body, with no extra read; only when the server did not inline it (binary or large
        files) is the file read again. `fn` must be a pure function of its input, since it may run
        several times; returning None leaves the file alone (and returns None).
        """
        current, version = self._read_for_update(path)
        attempt = 0
        while True:
            attempt += 1
            new = fn(current)
            if new is None:
                return None
            try:
                return self.write(path, new, if_match=version, if_none_match=version is None,
                                  lock_token=lock_token, task_id=task_id)
            except PreconditionFailed as conflict:
                if attempt >= max_attempts:
                    raise
                server = conflict.current
                if server is None or server.get("deleted"):
                    current, version = None, None
                elif conflict.current_content is not None:
                    current, version = conflict.current_content, int(server["version"])
                else:
                    current, version = self._read_for_update(path)
                # Many writers on one file: spread them out so one of them wins each round.
                if attempt > 2:
                    time.sleep(random.uniform(0, min(0.5, 0.01 * 2 ** min(attempt, 10))))

    def _read_for_update(self, path: str) -> tuple[bytes | None, int | None]:
        try:
            found = self.read(path)
        except NotFound:
            return None, None
        return found.content, found.version

    # -- locks ----------------------------------------------------------------------------------
    def lock(self, path: str | Iterable[str], *, ttl: int = 60, reason: str = "", wait: float = 0,
             renew_every: float | None = None) -> HeldLock:
        """A lock for a `with` block, renewed in the background (see `HeldLock`).

        `path` may be several paths, taken all or nothing; then use `lock.token_for(path)`.
        """
        paths = [path] if isinstance(path, str) else list(path)
        return HeldLock(self.locks, paths, ttl=ttl, reason=reason, wait=wait, renew_every=renew_every)

    # -- messages ---------------------------------------------------------------------------
    def topic(self, name: str) -> Topic:
        """A handle on the topic `name` (`inbox.<username>` is that account's direct notes)."""
        return Topic(self._t, self.id, name)

    def topics(self) -> list[dict[str, Any]]:
        """The topics the caller can read, with their last offsets."""
        body: dict[str, Any] = self._t.json("GET", self._path("topics")) or {}
        return list(body.get("results", []))

    # -- intelligence -------------------------------------------------------------------------
    def search(self, query: str, *, k: int = 10, prefix: str | None = None, author: str | None = None,
               mode: SearchMode = "hybrid", task: str | None = None, since: str | None = None,
               until: str | None = None) -> SearchResults:
        """Passages of this workspace's files, locked ones included; `since`/`until` are RFC 3339."""
        return SearchResults.from_json(self._t.json("POST", self._path("search"), json=drop_none(
            query=query, k=k, prefix=prefix, author=author, mode=mode, task=task, since=since, until=until)))

    def ask(self, question: str) -> Answer:
        """An answer from the workspace's files, with the versions it cites."""
        return Answer.from_json(self._t.json("POST", self._path("ask"), json={"question": question}))

    def index_state(self, *, status: str | None = None, limit: int | None = None) -> Page[IndexEntry]:
        """The index state per file (`pending`, `indexed`, `error`); `extra["counts"]` has the
        number of files in each state over the whole workspace."""
        return self._t.page(self._path("index"), IndexEntry.from_json, params=drop_none(status=status, limit=limit))

    # -- events ---------------------------------------------------------------------------------
    def list_events(self, *, after: int = 0, types: Iterable[str] | None = None,
                    limit: int | None = None) -> Page[Event]:
        """Recorded events with `seq` greater than `after`, oldest first."""
        return self._t.page(self._path("events"), Event.from_json, params=drop_none(
            after=after, type=list(types) if types is not None else None, limit=limit))

    def events(self, after: int = 0, **options: Any) -> Stream[Event]:
        """Live events, replayed from `after` first; reconnects and falls back to polling by itself
        (options: `idle_timeout`, `max_ws_failures`, `poll_interval`, ... of `Stream`)."""
        return event_stream(self._t, self.id, after=after, **options)


def _content(path: str, headers: Any, data: bytes) -> FileContent:
    version = headers.get("X-Version") or (headers.get("ETag") or "").strip('W/"')
    return FileContent(path=path, version=int(version) if version else 0, content=data,
                       sha256=headers.get("X-Content-Sha256"), content_type=headers.get("Content-Type"))
