"""The event log: every change records an event in its own transaction.

The sequence number is taken from a counter on the workspace row inside the same transaction,
so the per-workspace sequence is gap-free and in commit order. After commit the event goes to
the channel layer (browsers, WebSocket clients) and to the listeners in `workspace.hooks`.
"""
from __future__ import annotations

import atexit
import contextvars
import logging
import os
import queue
import threading
from datetime import UTC, datetime
from typing import Any

from channels.layers import get_channel_layer

from switchyard.db.plain import Plain
from switchyard.timetext import iso_z
from workspace import hooks
from workspace.models import Event

log = logging.getLogger(__name__)


def next_counter(*, workspace_id: str, column: str) -> int:
    """Advance a workspace counter (`event_seq` or `lock_seq`) and return the new value.

    Must run inside the caller's transaction; the row lock this takes serialises the
    workspace's writers until commit, which is what keeps sequences gap-free and ordered.
    """
    return next_counters(workspace_id=workspace_id, columns=(column,))[0]


def next_counters(*, workspace_id: str, columns: tuple[str, ...], db: Plain | None = None) -> tuple[int, ...]:
    """Advance several workspace counters in one statement (a lock grant takes a fencing token and
    the sequence number of its event together); the new values, in the order asked. `db`: the
    caller's statements, if it has them open."""
    if db is None:
        with Plain() as own:
            return next_counters(workspace_id=workspace_id, columns=columns, db=own)
    assert db.connection.in_atomic_block, "counters advance inside a transaction"
    row = db.one(_counter_sql(columns)[0], [workspace_id])
    if row is None:
        raise LookupError(workspace_id)
    return tuple(int(value) for value in row)


def next_counters_if(*, workspace_id: str, columns: tuple[str, ...], condition: str, params: list[Any],
                     db: Plain) -> tuple[int, ...] | None:
    """`next_counters`, only when `condition` (SQL on the workspace row's update, with `params`)
    holds; otherwise nothing advances and the answer is None. A lock grant checks in this very
    statement that nothing is in its way."""
    assert db.connection.in_atomic_block, "counters advance inside a transaction"
    _, head, returning = _counter_sql(columns)
    row = db.one(f"{head} AND {condition}{returning}", [workspace_id, *params])
    return None if row is None else tuple(int(value) for value in row)


def _counter_sql(columns: tuple[str, ...]) -> tuple[str, str, str]:
    """The statement advancing `columns`, and its head (up to the row's id) and RETURNING clause."""
    found = _COUNTER_SQL.get(columns)
    if found is None:
        assert columns and set(columns) <= {"event_seq", "lock_seq"}
        assignments = ", ".join(f"{column} = {column} + 1" for column in columns)
        head = f'UPDATE "workspace_workspace" SET {assignments} WHERE id = %s'  # noqa: S608
        returning = f" RETURNING {', '.join(columns)}"
        found = _COUNTER_SQL[columns] = (head + returning, head, returning)
    return found


_COUNTER_SQL: dict[tuple[str, ...], tuple[str, str, str]] = {}


def event_record(*, workspace_id: str, type: str, actor: Any = None, target: str = "",
                 data: dict[str, Any] | None = None, seq: int | None = None,
                 db: Plain | None = None) -> dict[str, Any]:
    """Record an event in the current transaction and publish it once that commits; returns the
    event as published (`event_payload`).

    Every change runs this, so the row goes in with one plain INSERT: the JSON and the timestamp
    adapted by the backend directly, no model instance and no ORM query to build. `seq` is an
    `event_seq` the caller has already taken with `next_counters` in this transaction; by default
    the next one is taken here. `db`: the caller's statements, if it has them open."""
    if db is None:
        with Plain() as own:
            return event_record(workspace_id=workspace_id, type=type, actor=actor, target=target, data=data,
                                seq=seq, db=own)
    actor = actor if actor is not None and getattr(actor, "pk", None) else None
    on_behalf_of = getattr(actor, "on_behalf_of", None) if actor is not None else None
    if seq is None:
        seq = next_counters(workspace_id=workspace_id, columns=("event_seq",), db=db)[0]
    target, data, at = target[:1100], data or {}, datetime.now(UTC)
    ops = db.connection.ops
    db.execute(_EVENT_INSERT, [workspace_id, seq, type, actor.pk if actor is not None else None,
                               on_behalf_of.pk if on_behalf_of is not None else None, target,
                               ops.adapt_json_value(data, _DATA_ENCODER), ops.adapt_datetimefield_value(at)])
    payload = _payload(seq=seq, type=type, actor=actor, on_behalf_of=on_behalf_of, workspace_id=workspace_id,
                       target=target, data=data, at=at)
    db.connection.on_commit(lambda: _announce(payload))  # transaction.on_commit, on the connection at hand
    return payload


_EVENT_FIELDS = [Event._meta.get_field(name) for name in
                 ("workspace", "seq", "type", "actor", "on_behalf_of", "target", "data", "at")]
_DATA_ENCODER = Event._meta.get_field("data").encoder
_EVENT_INSERT = (
    f"INSERT INTO {Event._meta.db_table} ({', '.join(f.column for f in _EVENT_FIELDS)}) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(_EVENT_FIELDS))})"
)


def event_payload(event: Event) -> dict[str, Any]:
    """A stored event as `event_record` published it."""
    return _payload(seq=event.seq, type=event.type, actor=event.actor, on_behalf_of=event.on_behalf_of,
                    workspace_id=event.workspace_id, target=event.target, data=event.data, at=event.at)


def _payload(*, seq: int, type: str, actor: Any, on_behalf_of: Any, workspace_id: str, target: str,
             data: Any, at: Any) -> dict[str, Any]:
    """An event as the API, the WebSocket stream and the listeners see it."""
    return {
        "seq": seq,
        "type": type,
        "actor": actor.username if actor is not None else None,
        "on_behalf_of": on_behalf_of.username if on_behalf_of is not None else None,
        "workspace": workspace_id,
        "target": target,
        "data": data,
        "at": iso_z(at),
    }


def events_group(workspace_id: str) -> str:
    return f"events.{workspace_id}"


def _announce(payload: dict[str, Any]) -> None:
    publish_to_channel_layer(events_group(payload["workspace"]), {"type": "event.message", "event": payload})
    hooks.dispatch(payload)


def publish_to_channel_layer(group: str, message: dict[str, Any]) -> None:
    """Best effort: the database is the truth, and a live client refills gaps from it.

    With the Redis pub/sub layer a group message is a single PUBLISH of the layer's own
    serialisation, sent by this process's publisher thread with its synchronous Redis client: no
    event loop per call (RQ workers and the sweeper have none), no new connection per event, and
    no Redis round trip on the request that made the change.
    """
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        if _is_pubsub_layer(layer):
            held = _held.get()
            if held is not None:
                # Serialised when handed over, once the response has gone out.
                held.append((layer, group, message))
            else:
                _publisher.send(_group_channel(layer, group), layer.serialize(message))
            return
        from asgiref.sync import async_to_sync

        async_to_sync(layer.group_send)(group, message)
    except Exception as exc:  # a down Redis must never fail the write that already committed
        log.warning("could not publish to %s: %s", group, exc)


class _Publisher:
    """PUBLISHes from one daemon thread per process, in the order they were sent, pipelined when
    several are waiting. The write that caused an event has committed; its announcement is best
    effort, so it need not hold up the response. Whatever is still queued when the process exits
    normally is flushed first (atexit)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._done = threading.Condition()
        self._pending = 0

    def send(self, channel: str, data: bytes) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._start()
        with self._done:
            self._pending += 1
        self._queue.put((channel, data))

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until everything sent so far has gone out (or `timeout`); True if it has."""
        if self._thread is None or not self._thread.is_alive():
            return self._queue.empty()
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            if self._pid != os.getpid():  # a forked child starts with a queue of its own
                self._queue = queue.SimpleQueue()
                self._pending = 0
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="switchyard-publisher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        from workspace.redis import get_redis

        # One connection of its own, written to directly: the commands of a batch go out in one
        # write and their replies are read back in order. A pipeline object per batch (and the
        # pool's checks on every checkout) cost this thread twice the CPU of the PUBLISHes.
        connection = None
        while True:
            batch = [self._queue.get()]
            while len(batch) < 200:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            commands = [("PUBLISH", *item) for item in batch if item is not None]
            try:
                if commands:
                    if connection is None:
                        connection = get_redis().connection_pool.make_connection()
                    connection.send_packed_command(connection.pack_commands(commands))
                    for _ in commands:
                        connection.read_response()
            except Exception as exc:  # a down Redis must never fail anything: clients refill gaps
                log.warning("could not publish %d announcement(s): %s", len(commands), exc)
                if connection is not None:
                    connection.disconnect()  # replies may be half read: start afresh next time
            with self._done:
                self._pending -= len(batch)
                self._done.notify_all()


_publisher = _Publisher()
atexit.register(_publisher.flush)

# The announcements of the HTTP request being served, held until its response has gone out.
# Each is (channel layer, group, message), serialised when handed to the publisher.
_held: contextvars.ContextVar[list[tuple[Any, str, dict[str, Any]]] | None] = contextvars.ContextVar(
    "switchyard_held_announcements", default=None)


def hold_announcements() -> contextvars.Token[list[tuple[Any, str, dict[str, Any]]] | None]:
    """From here on in this context (an HTTP request: the handler's task and the threads it runs
    the request on), announcements are held instead of handed to the publisher thread. Waking
    that thread while the request is still running makes it compete with the request for the
    GIL: in a web process that cost more than the PUBLISH itself, on the response's time."""
    return _held.set([])


def release_announcements(token: contextvars.Token[list[tuple[Any, str, dict[str, Any]]] | None]) -> None:
    """Hand the held announcements to the publisher, in order (the response has been sent)."""
    send_held_announcements()
    _held.reset(token)


def send_held_announcements() -> None:
    """Hand over what is held so far, and go on holding: a request about to block (a lock wait,
    a long poll) must not keep the changes it already made from live clients until it ends."""
    held = _held.get()
    if held:
        items = held[:]
        held.clear()
        for layer, group, message in items:
            try:
                _publisher.send(_group_channel(layer, group), layer.serialize(message))
            except Exception as exc:  # best effort, as when published at once
                log.warning("could not publish to %s: %s", group, exc)


def flush_announcements(timeout: float = 2.0) -> bool:
    """Wait until this process's queued announcements have been published."""
    return _publisher.flush(timeout)


def _is_pubsub_layer(layer: Any) -> bool:
    found = _pubsub_classes.get(type(layer))
    if found is None:
        from channels_redis.pubsub import RedisPubSubChannelLayer

        found = _pubsub_classes[type(layer)] = isinstance(layer, RedisPubSubChannelLayer)
    return found


_pubsub_classes: dict[type, bool] = {}


def _group_channel(layer: Any, group: str) -> str:
    # channels_redis names a group's pub/sub channel "<prefix>__group__<group>" (RedisPubSubLoopLayer).
    prefix = layer._kwargs.get("prefix", "asgi")
    return f"{prefix}__group__{group}"
