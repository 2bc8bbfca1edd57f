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
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from workspace.models import LockWaiter, LockWaiterPath, Workspace
from workspace.services.workspaces import lock_workspace

log = logging.getLogger(__name__)

# A waiter refreshes `alive_until` about once a second; one that stops (its process died) no
# longer holds back the queue once this grace has passed.
WAITER_GRACE = timedelta(seconds=3)
HEARTBEAT_SECONDS = 1.0
# Without a wake-up (Redis down, a lost message) a waiter still re-checks this often.
FALLBACK_POLL_SECONDS = 0.25
_WAKE_KEY = "sy:lockwake:{ticket}"


# -- the database clock and lock paths -----------------------------------------------------
def db_now() -> datetime:
    """The database's current time (UTC), the one clock every lock deadline is measured on."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
            return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)
        # clock_timestamp(), not now(): now() is when the transaction began, which may be long
        # before the workspace row lock was granted.
        cursor.execute("SELECT clock_timestamp()" if connection.vendor == "postgresql" else "SELECT CURRENT_TIMESTAMP")
        value = cursor.fetchone()[0]
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
def waiter_enqueue(workspace_id: str, user: Any, paths: list[str]) -> int:
    with transaction.atomic():
        lock_workspace(workspace_id)
        now = db_now()
        # The id is the ticket: assigned under the workspace row lock, so in commit order.
        waiter = LockWaiter.objects.create(workspace_id=workspace_id, user=user, alive_until=now + WAITER_GRACE,
                                           created_at=now)
        LockWaiterPath.objects.bulk_create(
            [LockWaiterPath(waiter=waiter, workspace_id=workspace_id, path=p) for p in paths])
    return int(waiter.pk)


def waiter_delete(ticket: int) -> int:
    LockWaiterPath.objects.filter(waiter_id=ticket).delete()
    return int(LockWaiter.objects.filter(pk=ticket).delete()[0])


def waiter_heartbeat(workspace_id: str, ticket: int) -> bool:
    with transaction.atomic():
        lock_workspace(workspace_id)
        now = db_now()
        return LockWaiter.objects.filter(pk=ticket, alive_until__gt=now).update(alive_until=now + WAITER_GRACE) == 1


def waiter_leave(workspace_id: str, ticket: int) -> None:
    """Leave the queue (if still in it) and wake whoever may now be first."""
    _wake_clear(ticket)
    if not LockWaiter.objects.filter(pk=ticket).exists():
        return  # granted: the grant removed us
    try:
        with transaction.atomic():
            lock_workspace(workspace_id)
            paths = list(LockWaiterPath.objects.filter(waiter_id=ticket).values_list("path", flat=True))
            if waiter_delete(ticket):
                wake_heads_on_commit(workspace_id, paths, now=db_now())
    except Workspace.DoesNotExist:
        return


def wake_heads_on_commit(workspace_id: str, paths: list[str], *, now: datetime) -> None:
    """After commit, wake the waiters that may now be served: those overlapping `paths` that
    have no earlier live waiter overlapping them."""
    if not paths:
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {LockWaiter._meta.db_table} WHERE workspace_id = %s AND alive_until > %s LIMIT 1",
                       [workspace_id, adapt_time(now)])
        if cursor.fetchone() is None:
            return
    rows = LockWaiterPath.objects.filter(workspace_id=workspace_id, waiter__alive_until__gt=now) \
        .order_by("waiter_id").values_list("waiter_id", "path")
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


def _wake_clear(ticket: int) -> None:
    from workspace.redis import get_redis

    try:
        get_redis().delete(_WAKE_KEY.format(ticket=ticket))
    except Exception as exc:
        log.warning("could not clear a lock wake-up key: %s", exc)


async def _wait_for_wake(key: str, timeout: float) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    try:
        await client.blpop([key], timeout=timeout)
    except (redis.asyncio.RedisError, OSError) as exc:
        log.warning("lock wake-ups unavailable, polling instead: %s", exc)
        await asyncio.sleep(timeout)
    finally:
        await client.aclose()


def sleep_until_woken(ticket: int, timeout: float) -> None:
    """Block until woken or `timeout`. It runs as a coroutine on the server's event loop, so a
    client that disconnects cancels it: the CancelledError unwinds the waiting request, and
    its `finally` takes it out of the queue."""
    from asgiref.sync import async_to_sync

    async_to_sync(_wait_for_wake)(_WAKE_KEY.format(ticket=ticket), max(0.01, timeout))
