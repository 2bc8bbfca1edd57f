"""The queue of lock requests that wait, and what it shares with the lock manager: the
database clock and the rules for when two lock paths overlap.

A waiting request is a `LockWaiter` row (its id is its ticket) with one `LockWaiterPath` per
path; it is served when no earlier live waiter overlaps it (see `locks._blocker`). Waiters keep
`alive_until` fresh while they wait, so the queue never stays blocked by a process that died.
A Redis list per ticket wakes the next waiter when a lock ends; it is only a hint: waiters also
re-check the database on their own, and correctness rests on the rows alone.
"""
from __future__ import annotations

import asyncio
import logging
import os
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from workspace.models import LockWaiter, LockWaiterPath, Workspace
from workspace.services.clock import db_now
from workspace.services.events import send_held_announcements
from workspace.services.workspaces import lock_workspace

log = logging.getLogger(__name__)

# A waiter refreshes `alive_until` every HEARTBEAT_SECONDS; one that stops (its process died) no
# longer holds back the queue once WAITER_GRACE has passed.
WAITER_GRACE = timedelta(seconds=10)
HEARTBEAT_SECONDS = 4.0
# Whatever frees a path wakes the first waiter for it (a release, an expiry, a waiter leaving);
# without a wake-up (Redis down, a lost message) a waiter still re-checks this often.
FALLBACK_POLL_SECONDS = 4.0
REDIS_DOWN_POLL_SECONDS = 0.05
_WAKE_KEY = "sy:lockwake:{ticket}"


# -- the database clock and lock paths -----------------------------------------------------
def adapt_time(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def as_utc(value: Any) -> datetime:
    """A datetime read by a raw cursor: text or naive UTC on SQLite, aware on PostgreSQL."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def covering_paths(path: str) -> list[str]:
    """`path` itself and every subtree above it: the lock paths that would cover it."""
    body = path[:-1] if path.endswith("/") else path
    return [path] + [body[: i + 1] for i, ch in enumerate(body) if ch == "/"]


def paths_overlap(a: str, b: str) -> bool:
    return a == b or (a.endswith("/") and b.startswith(a)) or (b.endswith("/") and a.startswith(b))


# -- the queue -------------------------------------------------------------------------------
# Every waiting request runs these, so they are plain SQL statements (see locks.py, "queries").
_WAITER = LockWaiter._meta.db_table
_WAITER_PATH = LockWaiterPath._meta.db_table


def waiter_enqueue(workspace_id: str, user: Any, paths: list[str]) -> int:
    """Join the queue in a transaction of its own; the ticket (see `waiter_insert`)."""
    with transaction.atomic():
        lock_workspace(workspace_id)
        return waiter_insert(workspace_id, user, paths, now=db_now())


def waiter_insert(workspace_id: str, user: Any, paths: list[str], *, now: datetime) -> int:
    """Join the queue inside the caller's transaction, which holds the workspace row lock: the
    new waiter's id is its ticket, so tickets are in commit order."""
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {_WAITER} (workspace_id, user_id, alive_until, created_at)"
                       " VALUES (%s, %s, %s, %s) RETURNING id",
                       [workspace_id, user.pk, adapt_time(now + WAITER_GRACE), adapt_time(now)])
        ticket = int(cursor.fetchone()[0])
        cursor.executemany(f"INSERT INTO {_WAITER_PATH} (waiter_id, workspace_id, path) VALUES (%s, %s, %s)",
                           [[ticket, workspace_id, p] for p in paths])
    return ticket


def waiter_delete(ticket: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {_WAITER_PATH} WHERE waiter_id = %s", [ticket])
        cursor.execute(f"DELETE FROM {_WAITER} WHERE id = %s", [ticket])
        return bool(cursor.rowcount)


def waiter_heartbeat(workspace_id: str, ticket: int) -> bool:
    """Keep our place: False when it was already given up (we stalled past the grace)."""
    with transaction.atomic():
        lock_workspace(workspace_id)
        now = db_now()
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {_WAITER} SET alive_until = %s WHERE id = %s AND alive_until > %s",
                           [adapt_time(now + WAITER_GRACE), ticket, adapt_time(now)])
            return bool(cursor.rowcount)


def waiter_leave(workspace_id: str, ticket: int) -> None:
    """Leave the queue (if still in it) and wake whoever may now be first."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {_WAITER} WHERE id = %s", [ticket])
        if cursor.fetchone() is None:
            return  # granted: the grant removed us
    try:
        with transaction.atomic():
            lock_workspace(workspace_id)
            paths = list(LockWaiterPath.objects.filter(waiter_id=ticket).values_list("path", flat=True))
            if waiter_delete(ticket):
                wake_heads_on_commit(workspace_id, paths, now=db_now())
    except Workspace.DoesNotExist:
        return


def live_waiters_sql() -> str:
    """A condition true when a workspace has a live waiter (parameters: the workspace, the
    time); a statement that ends a lock can return it."""
    return f"EXISTS (SELECT 1 FROM {_WAITER} w WHERE w.workspace_id = %s AND w.alive_until > %s)"


# Every release that finds waiters runs this inside its transaction, while the next holder waits
# for the commit: one statement written out, not an ORM query (which took longer to build).
_LIVE_WAITER_PATHS = (f"SELECT wp.waiter_id, wp.path FROM {_WAITER_PATH} wp JOIN {_WAITER} w ON w.id = wp.waiter_id"
                      " WHERE wp.workspace_id = %s AND w.alive_until > %s ORDER BY wp.waiter_id")


def wake_heads_on_commit(workspace_id: str, paths: list[str], *, now: datetime, waiting: bool | None = None) -> None:
    """After commit, wake the waiters that may now be served: those overlapping `paths` that
    have no earlier live waiter overlapping them. `waiting=False`: the caller knows that the
    workspace has no live waiter (`live_waiters_sql`), and nothing is read."""
    if not paths or waiting is False:
        return
    with connection.cursor() as cursor:
        cursor.execute(_LIVE_WAITER_PATHS, [workspace_id, adapt_time(now)])
        rows = cursor.fetchall()
    queue: dict[int, list[str]] = {}
    for wid, p in rows:
        queue.setdefault(wid, []).append(p)
    heads: list[int] = []
    earlier: list[str] = []
    for wid, wpaths in queue.items():
        first = not any(paths_overlap(a, b) for a in wpaths for b in earlier)
        if first and any(paths_overlap(a, b) for a in wpaths for b in paths):
            heads.append(wid)
        earlier.extend(wpaths)
    if heads:
        transaction.on_commit(lambda: _wake(heads))


def _wake(tickets: list[int]) -> None:
    from workspace.redis import get_redis

    try:
        pipe = get_redis().pipeline(transaction=False)
        for ticket in tickets:
            key = _WAKE_KEY.format(ticket=ticket)
            pipe.lpush(key, 1)
            pipe.expire(key, 120)
        pipe.execute()
    except Exception as exc:  # only a hint: waiters re-check the database on their own
        log.warning("could not wake lock waiters: %s", exc)


# The Redis client each long-lived event loop (a web process's server loop) waits with: marked
# loops are keys, their client is made on the first wait. A new client per wait cost 1.6 ms of CPU
# on that loop (connecting and its handshake), against 0.2 ms for a wait on a pooled connection: a
# lock with thirty waiters starts one wait per grant.
_loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def wait_on_this_loop_with_a_shared_client() -> None:
    """Mark the running loop as the server's (the ASGI lifespan calls this at startup): lock waits
    on it share one pooled Redis client. Waits on any other loop (one that async_to_sync makes for
    a single call, outside a server) open their own client and close it."""
    _loop_clients.setdefault(asyncio.get_running_loop(), None)


async def close_this_loops_wait_client() -> None:
    """Close the running loop's shared client (the ASGI lifespan calls this at shutdown)."""
    client = _loop_clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


async def _wait_for_wake(key: str, timeout: float) -> None:
    import redis.asyncio

    loop = asyncio.get_running_loop()
    shared = loop in _loop_clients
    client = _loop_clients.get(loop)
    if client is None:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2,
                                              client_name=f"switchyard-lock-wait-{os.getpid()}")
        if shared:
            _loop_clients[loop] = client
    try:
        # Cancelled (the client went away), redis-py drops the connection rather than reuse it.
        await client.blpop([key], timeout=timeout)
    except (redis.asyncio.RedisError, OSError) as exc:
        # No wake-ups: poll the database with short sleeps instead.
        log.warning("lock wake-ups unavailable, polling instead: %s", exc)
        await asyncio.sleep(min(timeout, REDIS_DOWN_POLL_SECONDS))
    finally:
        if not shared:
            await client.aclose()


def sleep_until_woken(ticket: int, timeout: float) -> None:
    """Block until woken or `timeout`. It runs as a coroutine on the server's event loop, so a
    client that disconnects cancels it: the CancelledError unwinds the waiting request, and
    its `finally` takes it out of the queue."""
    from asgiref.sync import async_to_sync

    send_held_announcements()
    async_to_sync(_wait_for_wake)(_WAKE_KEY.format(ticket=ticket), max(0.01, timeout))
