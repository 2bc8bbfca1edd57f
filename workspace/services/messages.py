"""Topics and consumer groups: agents coordinating by message passing.

- A topic is an ordered, durable log in the database. `message_publish` takes the workspace lock,
  advances the topic's offset counter and stores the message in one transaction (gap-free
  offsets), then announces it after commit to the channel layer (WebSocket streams) and on a
  Redis channel that wakes long-polling pulls. Neither announcement is needed for correctness.
- A consumer group leases messages (`group_pull`), at least once: an unacked message becomes
  visible again when its lease ends on the database clock, with its delivery count raised; past
  the group's `max_deliveries` it moves to `<topic>.dead`. Messages sharing a key go out in
  order, one at a time per group. Acking deletes the group's row for the message; the log keeps it.
- `inbox.<username>` topics are private to that account and the workspace's admins.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Now
from django.utils import timezone

from workspace.access import Access
from workspace.errors import Forbidden, Invalid, NotFound, TooLarge
from workspace.models import ConsumerGroup, Delivery, Message, Role, Topic
from workspace.services.events import event_record, publish_to_channel_layer, send_held_announcements
from workspace.services.workspaces import lock_workspace

log = logging.getLogger(__name__)

NAME_MAX = 100
_NAME_RE = re.compile(r"[a-z0-9._-]+")
DEAD_SUFFIX = ".dead"
INBOX_PREFIX = "inbox."
KEY_MAX = 200
BODY_MAX_BYTES = 1024 * 1024
INLINE_BODY_MAX = 64 * 1024  # bodies larger than this are not pushed through the channel layer
DEFAULT_MAX_DELIVERIES = 5
PULL_MAX = 100
VISIBILITY_MIN, VISIBILITY_MAX = 0.5, 12 * 3600
WAIT_MAX = 30.0
ACK_MAX = 1000
# How many not-yet-delivered messages a group takes from the log at a time. A key blocked by an
# in-flight message holds its later messages in this window; other keys keep flowing.
WINDOW = 1000
# Long-polls re-check the database this often even without a wake-up (Redis down, lease expiry).
POLL_INTERVAL = 0.2


# -- names and access -----------------------------------------------------------------------
def validate_topic_name(name: Any) -> str:
    """`[a-z0-9._-]`, up to 100 characters, plus `.dead` for a dead-letter topic."""
    if not isinstance(name, str):
        raise Invalid("invalid_topic", "A topic name is a string.")
    base = name[: -len(DEAD_SUFFIX)] if name.endswith(DEAD_SUFFIX) and len(name) > len(DEAD_SUFFIX) else name
    if not _NAME_RE.fullmatch(name) or not 1 <= len(base) <= NAME_MAX or set(name) == {"."}:
        raise Invalid("invalid_topic", "A topic name is 1-100 characters of a-z, 0-9, '.', '_' and '-' "
                      "(a dead-letter topic adds '.dead').", topic=name[:200])
    return name


def is_dead_letter_topic(name: str) -> bool:
    return name.endswith(DEAD_SUFFIX)


def clean_json_object(value: Any, *, code: str, what: str, max_bytes: int) -> int:
    """Check that `value` is a JSON object every database stores faithfully (no NUL, no lone
    surrogates, no NaN, not absurdly deep); returns its encoded size."""
    if not isinstance(value, dict):
        raise Invalid(code, f"{what} is a JSON object.")

    def walk(item: Any, depth: int) -> None:
        if depth > 64:
            raise Invalid(code, f"{what} is nested too deeply.")
        if isinstance(item, str):
            if "\x00" in item:
                raise Invalid(code, f"{what} must not contain NUL characters.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise Invalid(code, f"{what} must be valid Unicode text.") from exc
        elif isinstance(item, dict):
            for key, child in item.items():
                walk(key, depth + 1)
                walk(child, depth + 1)
        elif isinstance(item, list):
            for child in item:
                walk(child, depth + 1)
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise Invalid(code, f"{what} must not contain NaN or infinities.")
        elif not (item is None or isinstance(item, bool | int)):
            raise Invalid(code, f"{what} must be JSON.")

    walk(value, 0)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        raise TooLarge("too_large", f"{what} is at most {max_bytes} bytes of JSON.", limit=max_bytes)
    return size


def validate_group_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > NAME_MAX or set(name) == {"."}:
        raise Invalid("invalid_group", "A group name is 1-100 characters of a-z, 0-9, '.', '_' and '-'.",
                      group=str(name)[:200])
    return name


def inbox_owner(name: str) -> str | None:
    """The username whose inbox `name` is (`inbox.<username>`, matched exactly), or None when `name`
    is not in the inbox namespace. `inbox.<username>.dead` belongs to the account named
    `<username>.dead` if any: an inbox's dead letters are for the admins."""
    return name[len(INBOX_PREFIX):] if name.startswith(INBOX_PREFIX) else None


def can_read_topic(access: Access, name: str) -> bool:
    owner = inbox_owner(name)
    return owner is None or access.user.username == owner or access.at_least(Role.ADMIN)


def check_read(access: Access, name: str) -> str:
    """Read access to topic `name`. Someone else's inbox is a 404: it is not confirmed to exist."""
    validate_topic_name(name)
    if not can_read_topic(access, name):
        raise NotFound("topic")
    return name


def check_consume(access: Access, name: str) -> str:
    """Pulling and acking change a group's state: editors may, and an inbox's owner always may."""
    check_read(access, name)
    if not access.at_least(Role.EDITOR) and inbox_owner(name) != access.user.username:
        raise Forbidden("forbidden", "Consuming a topic needs the editor role.",
                        required_role=Role.EDITOR.value, role=access.role.value)
    return name


# -- the clock, announcements, wake-ups --------------------------------------------------------
def db_now() -> datetime:
    """The database's clock: leases are decided on it, so web hosts' clocks may disagree.

    SQLite runs inside this process, so its clock is this host's clock.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT clock_timestamp()")
            return cursor.fetchone()[0]
    return timezone.now()


def topic_group(workspace_id: str, name: str) -> str:
    """The channel-layer group of a topic (group names are limited to 100 ASCII characters)."""
    return f"topic.{workspace_id}.{hashlib.sha256(name.encode()).hexdigest()[:24]}"


def wake_channel(workspace_id: str, name: str) -> str:
    return f"sy:topic:{workspace_id}:{name}"


def _wake(workspace_id: str, name: str) -> None:
    try:
        from workspace.redis import get_redis

        get_redis().publish(wake_channel(workspace_id, name), b"1")
    except redis.RedisError as exc:  # long-polls fall back to polling the database
        log.warning("could not wake pullers of %s: %s", name, exc)


def _announce(workspace_id: str, item: dict[str, Any], size: int) -> None:
    _wake(workspace_id, item["topic"])
    payload = dict(item)
    if size > INLINE_BODY_MAX:
        # Too big for the channel layer: the stream reads the message from the database instead.
        payload.pop("body", None)
    publish_to_channel_layer(topic_group(workspace_id, item["topic"]), {"type": "topic.message", "message": payload})


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def message_json(message: Message, topic: str, publisher: str | None = None) -> dict[str, Any]:
    if publisher is None and message.publisher_id is not None:
        publisher = message.publisher.username
    return {
        "topic": topic,
        "offset": message.offset,
        "key": message.key or None,
        "body": message.body,
        "meta": message.meta or {},
        "publisher": publisher,
        "published_at": iso(message.published_at),
    }


# -- publishing -----------------------------------------------------------------------------------
def _validate_key(key: Any) -> str:
    if key is None:
        return ""
    if not isinstance(key, str) or len(key) > KEY_MAX or not key.isprintable():
        raise Invalid("invalid_key", f"'key' is a string of up to {KEY_MAX} printable characters.")
    return key


def _advance_offset(topic_id: int) -> int:
    table = connection.ops.quote_name(Topic._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_offset = last_offset + 1 WHERE id = %s RETURNING last_offset",  # noqa: S608
            [topic_id],
        )
        return int(cursor.fetchone()[0])


def _append(*, workspace_id: str, name: str, body: dict[str, Any], key: str, size: int, publisher: Any,
            meta: dict[str, Any] | None = None) -> Message:
    """Append to a topic inside the caller's transaction, which holds the workspace lock."""
    topic, _ = Topic.objects.get_or_create(workspace_id=workspace_id, name=name)
    message = Message.objects.create(
        topic=topic, offset=_advance_offset(topic.pk), key=key, body=body, meta=meta or {},
        publisher=publisher if publisher is not None and getattr(publisher, "pk", None) else None,
        published_at=timezone.now(),
    )
    item = message_json(message, name, publisher.username if message.publisher_id else None)
    # Registered before the event's own announcement, so that waiting consumers hear first.
    transaction.on_commit(lambda: _announce(workspace_id, item, size))
    event_record(workspace_id=workspace_id, type="message.published", actor=publisher, target=name,
                 data={"topic": name, "offset": message.offset})
    return message


def message_publish(*, access: Access, topic: str, body: Any, key: Any = None) -> Message:
    if not access.at_least(Role.EDITOR):
        raise Forbidden("forbidden", "Publishing needs the editor role.", required_role=Role.EDITOR.value,
                        role=access.role.value)
    validate_topic_name(topic)
    key = _validate_key(key)
    size = clean_json_object(body, code="invalid_body", what="'body'", max_bytes=BODY_MAX_BYTES)
    with transaction.atomic():
        lock_workspace(access.workspace_id)
        return _append(workspace_id=access.workspace_id, name=topic, body=body, key=key, size=size,
                       publisher=access.user)


# -- reading the log ----------------------------------------------------------------------------
def messages_after(*, workspace_id: str, topic: str, after: int, limit: int) -> list[dict[str, Any]]:
    """The log from `after` (exclusive), oldest first. Access is the caller's to check."""
    rows = (Message.objects.filter(topic__workspace_id=workspace_id, topic__name=topic, offset__gt=after)
            .select_related("publisher").order_by("offset")[:limit])
    return [message_json(m, topic) for m in rows]


def topics_visible(*, access: Access) -> Any:
    """The workspace's topics the caller may read: others' inboxes are left out (in the query, so
    that pages stay full)."""
    qs = Topic.objects.filter(workspace_id=access.workspace_id)
    if not access.at_least(Role.ADMIN):
        qs = qs.filter(~Q(name__startswith=INBOX_PREFIX) | Q(name=INBOX_PREFIX + access.user.username))
    return qs


def topic_json(topic: Topic) -> dict[str, Any]:
    return {"name": topic.name, "last_offset": topic.last_offset, "created_at": iso(topic.created_at)}


def group_state(*, access: Access, topic: str, group: str) -> dict[str, Any]:
    check_read(access, topic)
    validate_group_name(group)
    found = (ConsumerGroup.objects.select_related("topic")
             .filter(topic__workspace_id=access.workspace_id, topic__name=topic, name=group).first())
    if found is None:
        raise NotFound("group")
    now = db_now()
    rows = Delivery.objects.filter(group=found)
    in_flight = rows.filter(visible_at__gt=now).count()
    unfinished = rows.count()
    return {
        "topic": topic, "group": group, "max_deliveries": found.max_deliveries,
        "last_offset": found.topic.last_offset, "cursor": found.cursor,
        "in_flight": in_flight,
        # Not yet acked: taken into the group but not finished, plus what it has not taken yet.
        "backlog": unfinished + (found.topic.last_offset - found.cursor),
        "created_at": iso(found.created_at),
    }


# -- consumer groups -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Lease:
    offset: int
    key: str
    body: dict[str, Any]
    meta: dict[str, Any]
    deliveries: int
    published_at: datetime
    visible_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "key": self.key or None, "body": self.body, "meta": self.meta,
                "deliveries": self.deliveries, "published_at": iso(self.published_at),
                "lease_expires_at": iso(self.visible_at)}


def _deliverable(group: ConsumerGroup, now: datetime) -> Any:
    """Rows a pull may take, oldest first: not leased now, and the oldest unfinished row of their
    key (an unkeyed message waits for nothing). Those past the delivery limit among them are due for
    the dead-letter topic instead. (A delivered row is always the oldest of its key, because a row is
    only delivered as such and earlier rows never come back.)"""
    earlier_same_key = Delivery.objects.filter(group_id=OuterRef("group_id"), key=OuterRef("key"),
                                               offset__lt=OuterRef("offset"))
    return (Delivery.objects.filter(group=group)
            .filter(Q(visible_at__isnull=True) | Q(visible_at__lte=now))
            .filter(Q(key="") | ~Exists(earlier_same_key))
            .order_by("offset"))


def _take_in(group: ConsumerGroup, topic: Topic) -> None:
    """Give the group a Delivery row for the next messages of the log, up to WINDOW pending.

    One INSERT ... SELECT: offsets are gap-free and every offset up to the topic's head (read under
    the workspace lock) is committed, so the new cursor is known without reading the rows back.
    """
    if group.cursor >= topic.last_offset:
        return
    room = WINDOW - Delivery.objects.filter(group=group, visible_at__isnull=True).count()
    if room <= 0:
        return
    upto = min(topic.last_offset, group.cursor + room)
    q = connection.ops.quote_name
    columns = ", ".join(q(c) for c in ("group_id", "message_id", "offset", "key", "deliveries"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {q(Delivery._meta.db_table)} ({columns}) "  # noqa: S608 - names are ours, quoted
            f"SELECT %s, {q('id')}, {q('offset')}, {q('key')}, 0 FROM {q(Message._meta.db_table)} "
            f"WHERE {q('topic_id')} = %s AND {q('offset')} > %s AND {q('offset')} <= %s",
            [group.pk, topic.pk, group.cursor, upto],
        )
    group.cursor = upto
    ConsumerGroup.objects.filter(pk=group.pk).update(cursor=upto)


def _dead_letter(group: ConsumerGroup, topic: Topic, rows: list[Delivery]) -> int:
    """Move these expired leases past the delivery limit to `<topic>.dead` (inside a locked
    transaction; `rows` come with their message).

    A dead-letter topic has no dead-letter topic of its own: its group gives such a message up
    (it stays in the log, and the event says so) rather than feed it around a loop.
    """
    dead_name = None if is_dead_letter_topic(topic.name) else topic.name + DEAD_SUFFIX
    for row in rows:
        message = row.message
        dead_offset = None
        if dead_name is not None:
            dead_offset = _append(
                workspace_id=topic.workspace_id, name=dead_name, body=message.body, key=message.key,
                size=len(json.dumps(message.body, separators=(",", ":"), ensure_ascii=False).encode()),
                publisher=None,
                meta={"dead_letter": {"topic": topic.name, "offset": message.offset, "group": group.name,
                                      "deliveries": row.deliveries, "published_at": iso(message.published_at)}},
            ).offset
        Delivery.objects.filter(pk=row.pk).delete()
        event_record(workspace_id=topic.workspace_id, type="message.dead_lettered", target=topic.name,
                     data={"topic": topic.name, "group": group.name, "offset": message.offset,
                           "deliveries": row.deliveries, "dead_topic": dead_name, "dead_offset": dead_offset})
    if rows:
        # The next message of a dead letter's key is free now.
        transaction.on_commit(lambda: _wake(topic.workspace_id, topic.name))
    return len(rows)


def _has_work(topic: Topic, group: ConsumerGroup | None, max_deliveries: int | None) -> bool:
    """Without locks: could a pull lease (or dead-letter) anything now?"""
    if group is None:
        return topic.last_offset > 0
    if max_deliveries is not None and max_deliveries != group.max_deliveries:
        return True
    return group.cursor < topic.last_offset or _deliverable(group, db_now()).exists()


def _lookup(workspace_id: str, topic: str, group: str) -> tuple[Topic | None, ConsumerGroup | None]:
    found = (ConsumerGroup.objects.select_related("topic")
             .filter(topic__workspace_id=workspace_id, topic__name=topic, name=group).first())
    if found is not None:
        return found.topic, found
    return Topic.objects.filter(workspace_id=workspace_id, name=topic).first(), None


def _pull_once(*, access: Access, topic: str, group: str, limit: int, visibility: float,
               max_deliveries: int | None, precheck: bool = True) -> list[Lease]:
    ws_id = access.workspace_id
    found, found_group = _lookup(ws_id, topic, group)
    if found is None or (precheck and not _has_work(found, found_group, max_deliveries)):
        return []
    with transaction.atomic():
        lock_workspace(ws_id)
        # Read again under the lock: the cursor and the log's head may have moved.
        if found_group is not None:
            # The database's clock comes along with the row: one round trip fewer.
            grp = ConsumerGroup.objects.select_related("topic").annotate(db_clock=Now()).get(pk=found_group.pk)
            found, now = grp.topic, grp.db_clock
        else:
            found = Topic.objects.get(pk=found.pk)
            grp, _ = ConsumerGroup.objects.get_or_create(
                topic=found, name=group, defaults={"max_deliveries": max_deliveries or DEFAULT_MAX_DELIVERIES})
            now = db_now()
        if max_deliveries is not None and grp.max_deliveries != max_deliveries:
            grp.max_deliveries = max_deliveries
            grp.save(update_fields=["max_deliveries"])
        _take_in(grp, found)
        rows = list(_deliverable(grp, now).select_related("message")[:limit])
        _dead_letter(grp, found, [r for r in rows if r.deliveries >= grp.max_deliveries])
        rows = [r for r in rows if r.deliveries < grp.max_deliveries]
        if not rows:
            return []
        until = now + timedelta(seconds=visibility)
        Delivery.objects.filter(pk__in=[r.pk for r in rows]).update(
            deliveries=F("deliveries") + 1, visible_at=until, consumer=access.user)
        leases = [Lease(offset=r.offset, key=r.key, body=r.message.body, meta=r.message.meta or {},
                        deliveries=r.deliveries + 1, published_at=r.message.published_at, visible_at=until)
                  for r in rows]
        event_record(workspace_id=ws_id, type="message.pulled", actor=access.user, target=topic,
                     data={"topic": topic, "group": group, "offsets": [lease.offset for lease in leases]})
        again = [lease for lease in leases if lease.deliveries > 1]
        if again:
            event_record(workspace_id=ws_id, type="message.redelivered", actor=access.user, target=topic,
                         data={"topic": topic, "group": group, "offsets": [lease.offset for lease in again],
                               "deliveries": [lease.deliveries for lease in again]})
        return leases


class _Waker:
    """A Redis subscription that ends a wait early when the topic changes. Best effort only."""

    def __init__(self, workspace_id: str, topic: str) -> None:
        from workspace.redis import get_redis

        self.pubsub: Any = None
        try:
            self.pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(wake_channel(workspace_id, topic))
        except redis.RedisError as exc:
            log.warning("long-poll without wake-ups: %s", exc)
            self.close()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when woken by a change to the topic."""
        if seconds <= 0:
            return False
        send_held_announcements()
        if self.pubsub is None:
            time.sleep(seconds)
            return False
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                if self.pubsub.get_message(timeout=max(0.0, deadline - time.monotonic())) is not None:
                    return True
        except redis.RedisError as exc:
            log.warning("long-poll wake-ups lost: %s", exc)
            self.close()
            time.sleep(max(0.0, deadline - time.monotonic()))
        return False

    def close(self) -> None:
        if self.pubsub is not None:
            try:
                self.pubsub.close()
            except redis.RedisError:
                pass
            self.pubsub = None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate_pull(limit: Any, visibility: Any, wait: Any, max_deliveries: Any) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= PULL_MAX:
        raise Invalid("invalid_max", f"'max' is a whole number from 1 to {PULL_MAX}.")
    if not _number(visibility) or not VISIBILITY_MIN <= visibility <= VISIBILITY_MAX:
        raise Invalid("invalid_visibility", f"'visibility_seconds' is from {VISIBILITY_MIN} to {VISIBILITY_MAX}.")
    if not _number(wait) or not 0 <= wait <= WAIT_MAX:
        raise Invalid("invalid_wait", f"'wait_seconds' is from 0 to {WAIT_MAX:g}.")
    if max_deliveries is not None and (not isinstance(max_deliveries, int) or not 1 <= max_deliveries <= 100):
        raise Invalid("invalid_max_deliveries", "'max_deliveries' is a whole number from 1 to 100.")


def group_wait(*, access: Access, topic: str, group: str, wait_seconds: float,
               max_deliveries: int | None = None) -> bool:
    """Wait (holding no transaction) until a pull could lease something, or `wait_seconds` pass.

    True when the database says there is something, or when a publish, ack or dead letter on the
    topic woke the wait: then the pull itself finds out, without a second look first (every
    woken waiter would see the new message as available anyway, until one has leased it)."""
    check_consume(access, topic)
    validate_group_name(group)
    _validate_pull(1, VISIBILITY_MIN, wait_seconds, max_deliveries)
    deadline = time.monotonic() + wait_seconds
    waker: _Waker | None = None
    try:
        while True:
            found, found_group = _lookup(access.workspace_id, topic, group)
            if found is not None and _has_work(found, found_group, max_deliveries):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if waker is None:
                # Subscribe, then look again: a publish between the look and the wait is not missed.
                waker = _Waker(access.workspace_id, topic)
                continue
            if waker.wait(min(remaining, POLL_INTERVAL)):
                return True
    finally:
        if waker is not None:
            waker.close()


def group_pull(*, access: Access, topic: str, group: str, limit: int = 10, visibility_seconds: float = 30,
               wait_seconds: float = 0, max_deliveries: int | None = None) -> list[Lease]:
    """Lease up to `limit` messages to the caller for `visibility_seconds`; with `wait_seconds`,
    long-poll until there is something (no transaction is held while waiting)."""
    check_consume(access, topic)
    validate_group_name(group)
    _validate_pull(limit, visibility_seconds, wait_seconds, max_deliveries)
    deadline = time.monotonic() + wait_seconds
    precheck = True
    while True:
        leases = _pull_once(access=access, topic=topic, group=group, limit=limit,
                            visibility=float(visibility_seconds), max_deliveries=max_deliveries, precheck=precheck)
        remaining = deadline - time.monotonic()
        if leases or remaining <= 0:
            return leases
        # Another consumer may win what woke us: then wait again, until the deadline.
        precheck = not group_wait(access=access, topic=topic, group=group, wait_seconds=remaining,
                                  max_deliveries=max_deliveries)


def group_ack(*, access: Access, topic: str, group: str, offsets: Any) -> dict[str, list[int]]:
    """Finish delivered messages for the group. Offsets that are not outstanding deliveries (already
    acked, dead-lettered, never delivered) are returned as `skipped` and change nothing."""
    check_consume(access, topic)
    validate_group_name(group)
    if (not isinstance(offsets, list) or not 1 <= len(offsets) <= ACK_MAX
            or not all(isinstance(o, int) and not isinstance(o, bool) and 1 <= o <= 2**62 for o in offsets)):
        raise Invalid("invalid_offsets", f"'offsets' is a list of 1-{ACK_MAX} message offsets.")
    wanted = sorted(set(offsets))
    ws_id = access.workspace_id
    with transaction.atomic():
        lock_workspace(ws_id)
        found, found_group = _lookup(ws_id, topic, group)
        if found is None:
            raise NotFound("topic")
        if found_group is None:
            raise NotFound("group")
        rows = dict(Delivery.objects.filter(group=found_group, offset__in=wanted, deliveries__gte=1)
                    .values_list("offset", "pk"))
        acked = sorted(rows)
        if acked:
            Delivery.objects.filter(pk__in=list(rows.values())).delete()
            event_record(workspace_id=ws_id, type="message.acked", actor=access.user, target=topic,
                         data={"topic": topic, "group": group, "offsets": acked})
            # An ack may unblock the next message of a key: wake the waiting pullers.
            transaction.on_commit(lambda: _wake(ws_id, topic))
    return {"acked": acked, "skipped": [o for o in wanted if o not in rows]}


# -- sweep ---------------------------------------------------------------------------------------
def dead_letter_sweep() -> int:
    """Dead-letter expired leases past their group's delivery limit, even if nobody pulls."""
    now = db_now()
    group_ids = list(Delivery.objects.filter(visible_at__lte=now, deliveries__gte=F("group__max_deliveries"))
                     .values_list("group_id", flat=True).distinct()[:50])
    moved = 0
    for group_id in group_ids:
        workspace_id = (ConsumerGroup.objects.filter(pk=group_id)
                        .values_list("topic__workspace_id", flat=True).first())
        if workspace_id is None:
            continue
        with transaction.atomic():
            lock_workspace(workspace_id)
            grp = ConsumerGroup.objects.select_related("topic").get(pk=group_id)
            due = list(Delivery.objects.filter(group=grp, visible_at__lte=db_now(),
                                               deliveries__gte=grp.max_deliveries)
                       .select_related("message").order_by("offset")[:PULL_MAX])
            moved += _dead_letter(grp, grp.topic, due)
    return moved
