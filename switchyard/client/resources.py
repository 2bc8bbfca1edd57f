"""The per-workspace resources other than files: locks, tasks, worklog, approvals, transfers,
messages, triggers, pipelines, members and rules. Each is a thin, typed wrapper over API.md;
the rules themselves live on the server."""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from switchyard.client.errors import Locked
from switchyard.client.models import (
    Approval,
    Lock,
    Member,
    Message,
    PipelineRun,
    Rule,
    Task,
    Transfer,
    Trigger,
    WorklogEntry,
    WorklogVerification,
)
from switchyard.client.transport import Page, Transport, drop_none, quote_path, quote_segment

if TYPE_CHECKING:
    from switchyard.client.streams import Stream

__all__ = ["Approvals", "Locks", "Members", "Pipelines", "Rules", "Tasks", "Topic", "Transfers", "Triggers",
           "Worklog"]

# The server waits for a lock at most this long per request; longer waits loop client-side so a
# single HTTP request never outlives proxies' idle timeouts.
_MAX_SERVER_WAIT = 30


class _Resource:
    def __init__(self, transport: Transport, ws_id: str) -> None:
        self._t = transport
        self.ws_id = ws_id

    def _path(self, *parts: str) -> str:
        return "/".join(["workspaces", quote_segment(self.ws_id), *parts])


class Locks(_Resource):
    """Advisory locks with fencing tokens. For a lock held over a block of work, with renewal,
    use `Workspace.lock()` instead of these calls."""

    def acquire(self, path: str, *, ttl: int = 60, reason: str = "", wait: float = 0) -> Lock:
        """Take the lock on `path` (a trailing `/` locks the subtree), waiting up to `wait` seconds.

        The server queues waiters first come, first served; past its per-request wait, or when it
        answers `423` early, this retries after `Retry-After` until `wait` is used up, then
        raises `Locked` with the holder.
        """
        return self.take([path], ttl=ttl, reason=reason, wait=wait)[0][0]

    def batch(self, paths: Iterable[str], *, ttl: int = 60, reason: str = "", wait: float = 0) -> list[Lock]:
        """Take every lock in `paths` or none of them."""
        return self.take(list(paths), ttl=ttl, reason=reason, wait=wait)[0]

    def take(self, paths: list[str], *, ttl: int, reason: str, wait: float) -> tuple[list[Lock], float]:
        """The locks, and the `time.monotonic()` at which the granting request was sent.

        The grant happened after that instant, so `sent + ttl` is a safe lower bound of the
        expiry by our own clock, whatever the server's clock says.
        """
        single = len(paths) == 1
        url = self._path("locks") if single else self._path("locks", "batch")
        target: dict[str, Any] = {"path": paths[0]} if single else {"paths": paths}
        deadline = time.monotonic() + max(0.0, wait)
        policy = self._t.retry
        while True:
            server_wait = round(min(_MAX_SERVER_WAIT, max(0.0, deadline - time.monotonic())), 3)
            sent = time.monotonic()
            try:
                body = self._t.json("POST", url, json={**target, "ttl_seconds": ttl, "reason": reason,
                                                       "wait_seconds": server_wait},
                                    timeout=self._t.timeout + server_wait)
            except Locked as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                pause = policy.delay(1, exc.retry_after if exc.retry_after is not None else 0.5)
                policy.sleep(min(remaining, pause))
                continue
            items = [body] if single else body.get("locks", [])
            return [Lock.from_json(item) for item in items], sent

    def renew(self, lock_id: str, *, ttl: int | None = None, timeout: float | None = None) -> Lock:
        """Extend a held lock; `LockGone` if it already expired or was released.

        `timeout` (seconds per attempt) lets a renewer give up in time to try again before expiry.
        """
        body = self._t.json("POST", self._path("locks", quote_segment(lock_id), "renew"),
                            json=drop_none(ttl_seconds=ttl), timeout=timeout)
        return Lock.from_json(body or {"id": lock_id})

    def release(self, lock_id: str) -> None:
        """Release a lock (an admin may release anyone's: a recorded force release)."""
        self._t.request("DELETE", self._path("locks", quote_segment(lock_id)))

    def get(self, lock_id: str) -> Lock:
        return Lock.from_json(self._t.json("GET", self._path("locks", quote_segment(lock_id))))

    def list(self, *, prefix: str | None = None, holder: str | None = None, limit: int | None = None) -> Page[Lock]:
        """The active locks (under `prefix`, held by `holder`)."""
        return self._t.page(self._path("locks"), Lock.from_json,
                            params=drop_none(prefix=prefix, holder=holder, limit=limit))


class Tasks(_Resource):
    """The task queue: create, claim with a lease, heartbeat, and finish."""

    def create(self, title: str, kind: str, *, queue: str = "default", payload: Mapping[str, Any] | None = None,
               depends_on: Iterable[str] = (), priority: int = 0, max_attempts: int = 3,
               lease_seconds: int = 60, requires_approval: bool = False) -> Task:
        body = self._t.json("POST", self._path("tasks"), json={
            "title": title, "kind": kind, "queue": queue, "payload": dict(payload or {}),
            "depends_on": list(depends_on), "priority": priority, "max_attempts": max_attempts,
            "lease_seconds": lease_seconds, "requires_approval": requires_approval,
        })
        return Task.from_json(body)

    def claim(self, queue: str = "default", *, kinds: Iterable[str] | None = None, lease_seconds: int | None = None,
              wait: float = 0, poll_interval: float = 1.0) -> Task | None:
        """The next ready task of `queue`, now claimed by the caller; None when there is none.

        With `wait`, polls (with jitter, so idle workers do not hit the server in step) until a
        task is claimed or `wait` seconds have passed.
        """
        payload = drop_none(queue=queue, kinds=list(kinds) if kinds is not None else None,
                             lease_seconds=lease_seconds)
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            response = self._t.request("POST", self._path("tasks", "claim"), json=payload)
            if response.status_code != 204 and response.content:
                return Task.from_json(response.json())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._t.retry.sleep(min(remaining, poll_interval * (0.5 + self._t.retry.random())))

    def get(self, task_id: str) -> Task:
        return Task.from_json(self._t.json("GET", self._path("tasks", quote_segment(task_id))))

    def list(self, *, status: str | None = None, queue: str | None = None, limit: int | None = None) -> Page[Task]:
        return self._t.page(self._path("tasks"), Task.from_json,
                            params=drop_none(status=status, queue=queue, limit=limit))

    def record_reads(self, task_id: str, files: Iterable[tuple[str, int] | Mapping[str, Any]]) -> Any:
        """Record the file versions the task read, so `complete` can refuse stale inputs.

        Reading with `Workspace.read(..., task_id=...)` records them without this call.
        """
        items = [dict(f) if isinstance(f, Mapping) else {"path": f[0], "version": f[1]} for f in files]
        return self._t.json("POST", self._path("tasks", quote_segment(task_id), "reads"), json={"files": items})

    # `lease_id` (the claimed task's `lease_id`) makes the server refuse the call when the task
    # was claimed again since, even by the same account: a stalled worker cannot finish work
    # that has been handed to another.
    def heartbeat(self, task_id: str, *, lease_seconds: int | None = None, lease_id: str | None = None) -> Task:
        """Extend the claim's lease; `NotClaimant` if the caller no longer holds it."""
        return self._act(task_id, "heartbeat", drop_none(lease_seconds=lease_seconds, lease_id=lease_id))

    def complete(self, task_id: str, *, result: Any = None, outputs: Iterable[str] = (), accept_stale: bool = False,
                 lease_id: str | None = None) -> Task:
        """Finish the task. `StaleInputs` when a file it read has changed, unless `accept_stale`."""
        body: dict[str, Any] = {"result": result, "outputs": list(outputs), **drop_none(lease_id=lease_id)}
        if accept_stale:
            body["accept_stale"] = True
        return self._act(task_id, "complete", body)

    def fail(self, task_id: str, error: str, *, retry: bool = True, lease_id: str | None = None) -> Task:
        """Give the task up: back to the queue (`retry`, within `max_attempts`) or failed for good."""
        return self._act(task_id, "fail", {"error": error, "retry": retry, **drop_none(lease_id=lease_id)})

    def cancel(self, task_id: str, *, reason: str = "") -> Task:
        """Cancel an unfinished task (its creator or an admin); its dependents are cancelled too."""
        return self._act(task_id, "cancel", {"reason": reason} if reason else {})

    def _act(self, task_id: str, action: str, body: dict[str, Any]) -> Task:
        answer = self._t.json("POST", self._path("tasks", quote_segment(task_id), action), json=body)
        return Task.from_json(answer if isinstance(answer, dict) else {"id": task_id})


class Worklog(_Resource):
    """The append-only, hash-chained worklog."""

    def append(self, message: str, *, task: str | None = None, data: Any = None) -> WorklogEntry:
        body = self._t.json("POST", self._path("worklog"), json=drop_none(message=message, task=task, data=data))
        return WorklogEntry.from_json(body)

    def list(self, *, task: str | None = None, author: str | None = None, after: int | None = None,
             limit: int | None = None) -> Page[WorklogEntry]:
        return self._t.page(self._path("worklog"), WorklogEntry.from_json,
                            params=drop_none(task=task, author=author, after=after, limit=limit))

    def verify(self) -> WorklogVerification:
        return WorklogVerification.from_json(self._t.json("GET", self._path("worklog", "verify")))


class Approvals(_Resource):
    def request(self, title: str, *, description: str = "", task: str | None = None, path: str | None = None,
                version: int | None = None) -> Approval:
        body = self._t.json("POST", self._path("approvals"), json=drop_none(
            title=title, description=description, task=task, path=path, version=version))
        return Approval.from_json(body)

    def list(self, *, status: str | None = None, limit: int | None = None) -> Page[Approval]:
        return self._t.page(self._path("approvals"), Approval.from_json, params=drop_none(status=status, limit=limit))

    def get(self, approval_id: str) -> Approval:
        return Approval.from_json(self._t.json("GET", self._path("approvals", quote_segment(approval_id))))

    def decide(self, approval_id: str, decision: Literal["approve", "reject"], *, comment: str = "") -> Approval:
        """Approve or reject (admins and owners only)."""
        body = self._t.json("POST", self._path("approvals", quote_segment(approval_id), "decide"),
                            json={"decision": decision, "comment": comment})
        return Approval.from_json(body)


class Transfers(_Resource):
    def create(self, to: str, *, message: str = "") -> Transfer:
        """Offer the workspace to `to` (a username or email); owner only. The answer alone carries
        the accept link (`accept_url`, `token`)."""
        return Transfer.from_json(self._t.json("POST", self._path("transfers"), json={"to": to, "message": message}))

    def list(self, *, limit: int | None = None) -> Page[Transfer]:
        return self._t.page(self._path("transfers"), Transfer.from_json, params=drop_none(limit=limit))


class Topic(_Resource):
    """One durable, ordered message log of a workspace, with consumer groups for work sharing."""

    def __init__(self, transport: Transport, ws_id: str, name: str) -> None:
        super().__init__(transport, ws_id)
        self.name = name

    def _topic(self, *parts: str) -> str:
        return self._path("topics", quote_segment(self.name), *parts)

    def publish(self, body: Any, *, key: str | None = None) -> Message:
        """Append a message; messages with the same `key` reach a group in order, one at a time."""
        return Message.from_json(self._t.json("POST", self._topic("messages"), json=drop_none(body=body, key=key)))

    def read(self, *, after: int | None = None, limit: int | None = None) -> list[Message]:
        """Messages after the offset `after` (from the start when None): replay from anywhere."""
        body = self._t.json("GET", self._topic("messages"), params=drop_none(after=after, limit=limit)) or {}
        return [Message.from_json(m) for m in body.get("results", [])]

    def pull(self, group: str, *, max: int = 10, visibility_seconds: float = 30, wait_seconds: float = 0,
             max_deliveries: int | None = None) -> list[Message]:
        """Lease up to `max` messages to the caller within `group`; ack them or they come back."""
        body = self._t.json("POST", self._topic("groups", quote_segment(group), "pull"), json={
            "max": max, "visibility_seconds": visibility_seconds, "wait_seconds": wait_seconds,
            **drop_none(max_deliveries=max_deliveries),
        }, timeout=self._t.timeout + wait_seconds) or {}
        return [Message.from_json(m) for m in body.get("results", [])]

    def ack(self, group: str, offsets: Iterable[int]) -> Any:
        return self._t.json("POST", self._topic("groups", quote_segment(group), "ack"),
                            json={"offsets": list(offsets)})

    def group_state(self, group: str) -> dict[str, Any]:
        """A consumer group's position and in-flight leases, as the server reports them."""
        body: dict[str, Any] = self._t.json("GET", self._topic("groups", quote_segment(group))) or {}
        return body

    def stream(self, *, after: int | None = None, **options: Any) -> Stream[Message]:
        """Live messages over WebSocket, replaying first; see `switchyard.client.streams.Stream`."""
        from switchyard.client.streams import topic_stream

        return topic_stream(self._t, self.ws_id, self.name, after=after, **options)


class Triggers(_Resource):
    def put(self, name: str, *, on: Mapping[str, Any], create_task: Mapping[str, Any]) -> Trigger:
        """Create or replace a trigger: on an event (`{"event", "prefix"}`) or a topic (`{"topic"}`),
        create a task whose payload carries the event or message."""
        body = self._t.json("PUT", self._path("triggers", quote_segment(name)),
                            json={"on": dict(on), "create_task": dict(create_task)})
        return Trigger.from_json(body if isinstance(body, dict) else {"name": name})

    def get(self, name: str) -> Trigger:
        return Trigger.from_json(self._t.json("GET", self._path("triggers", quote_segment(name))))

    def list(self) -> list[Trigger]:
        body = self._t.json("GET", self._path("triggers")) or {}
        return [Trigger.from_json(t) for t in body.get("results", [])]

    def delete(self, name: str) -> None:
        self._t.request("DELETE", self._path("triggers", quote_segment(name)))


class Pipelines(_Resource):
    def create(self, spec: Mapping[str, Any]) -> PipelineRun:
        return PipelineRun.from_json(self._t.json("POST", self._path("pipelines"), json={"spec": dict(spec)}))

    def get(self, run_id: str) -> PipelineRun:
        return PipelineRun.from_json(self._t.json("GET", self._path("pipelines", quote_segment(run_id))))


class Members(_Resource):
    def list(self, *, limit: int | None = None) -> Page[Member]:
        return self._t.page(self._path("members"), Member.from_json, params=drop_none(limit=limit))

    def set(self, username: str, role: Literal["admin", "editor", "viewer"]) -> Member:
        return Member.from_json(self._t.json("PUT", self._path("members", quote_segment(username)),
                                             json={"role": role}))

    def remove(self, username: str) -> None:
        self._t.request("DELETE", self._path("members", quote_segment(username)))


class Rules(_Resource):
    """Directory ownership: under a prefix with a rule, only its writers may write."""

    def list(self, *, limit: int | None = None) -> Page[Rule]:
        return self._t.page(self._path("rules"), Rule.from_json, params=drop_none(limit=limit))

    def set(self, prefix: str, writers: Iterable[str]) -> Rule:
        return Rule.from_json(self._t.json("PUT", self._path("rules", quote_path(prefix)),
                                           json={"writers": list(writers)}))

    def delete(self, prefix: str) -> None:
        self._t.request("DELETE", self._path("rules", quote_path(prefix)))
