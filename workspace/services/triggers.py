"""Triggers: event-driven work. A matching event or topic message creates a task, exactly once.

Exactly once with any number of web, worker and sweeper processes:
- a trigger's `cursor` (the last event seq or message offset it has handled) advances in the same
  transaction that creates the task and records the firing, under the workspace lock, so two
  processes catching up on one trigger are serialised and the second finds nothing left to do;
- `TriggerFiring` has a unique (trigger, source): a backstop that turns any double firing into a
  rolled-back transaction instead of a second task;
- nothing is lost: the sources are the durable event log and topic logs, and the sweep
  (`triggers_sweep`) catches up on whatever the after-commit fast path (`on_event`, which only
  enqueues an RQ job) missed: a crashed process, a lost Redis, a full queue.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from workspace.access import Access, workspace_for
from workspace.errors import Forbidden, Invalid, NotFound, ServiceError
from workspace.models import Event, Message, Role, Topic, Trigger, TriggerFiring
from workspace.services.events import event_payload, event_record
from workspace.services.messages import clean_json_object, message_json, validate_topic_name
from workspace.services.workspaces import lock_workspace

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[a-z0-9._-]{1,100}")
_EVENT_RE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)+")
# Events a trigger may not listen to: its own firings and task creation would feed themselves.
_LOOPING_EVENTS = {"task.created"}
_TASK_FIELDS: dict[str, tuple[type, ...]] = {
    "title": (str,), "kind": (str,), "queue": (str,), "payload": (dict,), "depends_on": (list,),
    "priority": (int,), "max_attempts": (int,), "lease_seconds": (int,), "requires_approval": (bool,),
}
BATCH = 100


@dataclass(frozen=True)
class Source:
    position: int
    payload: dict[str, Any]


# -- definitions ---------------------------------------------------------------------------------
def validate_trigger_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or set(name) == {"."}:
        raise Invalid("invalid_name", "A trigger name is 1-100 characters of a-z, 0-9, '.', '_' and '-'.")
    return name


def _parse_on(on: Any) -> tuple[str, str, str]:
    """(event_type, prefix, topic) from `{"event", "prefix"?}` or `{"topic"}`."""
    if not isinstance(on, dict):
        raise Invalid("invalid_on", "'on' is {\"event\": type, \"prefix\"?: path prefix} or {\"topic\": name}.")
    if ("event" in on) == ("topic" in on):
        raise Invalid("invalid_on", "'on' names either an event type or a topic, not both or neither.")
    if "topic" in on:
        if set(on) != {"topic"}:
            raise Invalid("invalid_on", "A topic trigger's 'on' has only 'topic'.")
        return "", "", validate_topic_name(on["topic"])
    if set(on) - {"event", "prefix"}:
        raise Invalid("invalid_on", "An event trigger's 'on' has 'event' and optionally 'prefix'.")
    event_type, prefix = on["event"], on.get("prefix", "")
    if not isinstance(event_type, str) or len(event_type) > 64 or not _EVENT_RE.fullmatch(event_type):
        raise Invalid("invalid_on", "'on.event' is an event type such as 'file.written'.")
    if event_type.startswith("trigger.") or event_type in _LOOPING_EVENTS:
        raise Invalid("invalid_on", f"A trigger cannot listen to {event_type!r}: it would fire itself.")
    if not isinstance(prefix, str) or len(prefix) > 1024 or not prefix.isprintable():
        raise Invalid("invalid_on", "'on.prefix' is a path prefix such as 'research/'.")
    return event_type, prefix, ""


def _parse_create_task(spec: Any) -> dict[str, Any]:
    clean_json_object(spec, code="invalid_create_task", what="'create_task'", max_bytes=256 * 1024)
    unknown = sorted(set(spec) - set(_TASK_FIELDS))
    if unknown:
        raise Invalid("invalid_create_task", f"Unknown task fields: {', '.join(unknown)}.", fields=unknown)
    for name, types in _TASK_FIELDS.items():
        if name in spec and (not isinstance(spec[name], types) or (bool not in types and isinstance(spec[name], bool))):
            raise Invalid("invalid_create_task", f"'create_task.{name}' has the wrong type.", field=name)
    title = spec.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > 500:
        raise Invalid("invalid_create_task", "'create_task.title' is 1-500 characters.", field="title")
    if "trigger" in spec.get("payload", {}):
        raise Invalid("invalid_create_task", "'create_task.payload.trigger' is set by the trigger itself.",
                      field="payload")
    if not all(isinstance(d, str) for d in spec.get("depends_on", [])):
        raise Invalid("invalid_create_task", "'create_task.depends_on' is a list of task ids.", field="depends_on")
    return dict(spec)


def _head(workspace_id: str, event_type: str, topic: str) -> int:
    """Where a new trigger starts: it fires for what happens from now on, not for history."""
    if topic:
        found = Topic.objects.filter(workspace_id=workspace_id, name=topic).values_list("last_offset", flat=True)
        return int(found.first() or 0)
    from workspace.models import Workspace

    return int(Workspace.objects.filter(pk=workspace_id).values_list("event_seq", flat=True).get())


def trigger_set(*, access: Access, name: str, on: Any, create_task: Any) -> tuple[Trigger, bool]:
    """Create or replace a trigger (admins). Replacing keeps its place in its source unless the
    source changes; the caller becomes the account its tasks are created as."""
    if not access.at_least(Role.ADMIN):
        raise _admins_only()
    validate_trigger_name(name)
    event_type, prefix, topic = _parse_on(on)
    spec = _parse_create_task(create_task)
    ws_id = access.workspace_id
    with transaction.atomic():
        lock_workspace(ws_id)
        trigger = Trigger.objects.filter(workspace_id=ws_id, name=name).first()
        created = trigger is None
        old = None if created else trigger_json(trigger)
        if trigger is None:
            trigger = Trigger(workspace_id=ws_id, name=name)
        same_source = not created and (trigger.event_type, trigger.prefix, trigger.topic) == (event_type, prefix, topic)
        if not same_source:
            trigger.cursor = _head(ws_id, event_type, topic)
        trigger.event_type, trigger.prefix, trigger.topic = event_type, prefix, topic
        trigger.create_task = spec
        trigger.created_by = access.user
        trigger.enabled = True
        trigger.last_error = ""
        trigger.save()
        new = trigger_json(trigger)
        event_record(workspace_id=ws_id, type="trigger.set", actor=access.user, target=name,
                     data={"old": _definition(old), "new": _definition(new)})
    return trigger, created


def _admins_only() -> ServiceError:
    return Forbidden("forbidden", "Triggers are managed by the workspace's admins.", required_role=Role.ADMIN.value)


def _definition(data: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if data is None else {"on": data["on"], "create_task": data["create_task"]}


def trigger_delete(*, access: Access, name: str) -> None:
    if not access.at_least(Role.ADMIN):
        raise _admins_only()
    validate_trigger_name(name)
    with transaction.atomic():
        lock_workspace(access.workspace_id)
        trigger = Trigger.objects.filter(workspace_id=access.workspace_id, name=name).first()
        if trigger is None:
            raise NotFound("trigger")
        old = trigger_json(trigger)
        trigger.delete()
        event_record(workspace_id=access.workspace_id, type="trigger.deleted", actor=access.user, target=name,
                     data={"old": _definition(old)})


def trigger_get(*, access: Access, name: str) -> Trigger:
    if not access.at_least(Role.ADMIN):
        raise _admins_only()
    validate_trigger_name(name)
    trigger = Trigger.objects.select_related("created_by").filter(workspace_id=access.workspace_id, name=name).first()
    if trigger is None:
        raise NotFound("trigger")
    return trigger


def trigger_json(trigger: Trigger) -> dict[str, Any]:
    on: dict[str, Any] = {"topic": trigger.topic} if trigger.topic else {"event": trigger.event_type}
    if trigger.event_type and trigger.prefix:
        on["prefix"] = trigger.prefix
    return {
        "name": trigger.name, "on": on, "create_task": trigger.create_task,
        "created_by": trigger.created_by.username, "enabled": trigger.enabled, "cursor": trigger.cursor,
        "last_error": trigger.last_error or None,
        "created_at": trigger.created_at.isoformat().replace("+00:00", "Z") if trigger.created_at else None,
        "updated_at": trigger.updated_at.isoformat().replace("+00:00", "Z") if trigger.updated_at else None,
    }


# -- firing --------------------------------------------------------------------------------------
def _sources(trigger: Trigger, limit: int) -> list[Source]:
    if trigger.topic:
        messages = (Message.objects.filter(topic__workspace_id=trigger.workspace_id, topic__name=trigger.topic,
                                           offset__gt=trigger.cursor)
                    .select_related("publisher").order_by("offset")[:limit])
        return [Source(m.offset, {"name": trigger.name, "message": message_json(m, trigger.topic)})
                for m in messages]
    events = (Event.objects.filter(workspace_id=trigger.workspace_id, type=trigger.event_type,
                                   seq__gt=trigger.cursor, target__startswith=trigger.prefix)
              .select_related("actor", "on_behalf_of").order_by("seq")[:limit])
    return [Source(e.seq, {"name": trigger.name, "event": event_payload(e)}) for e in events]


def _behind(trigger_qs: Any) -> Any:
    """Triggers with a matching source past their cursor (one query, no locks)."""
    events = Event.objects.filter(workspace_id=OuterRef("workspace_id"), type=OuterRef("event_type"),
                                  seq__gt=OuterRef("cursor"), target__startswith=OuterRef("prefix"))
    messages = Message.objects.filter(topic__workspace_id=OuterRef("workspace_id"), topic__name=OuterRef("topic"),
                                      offset__gt=OuterRef("cursor"))
    return trigger_qs.filter(enabled=True).filter(
        (~Q(event_type="") & Exists(events)) | (~Q(topic="") & Exists(messages)))


def _fire(trigger: Trigger, access: Access, source: Source) -> None:
    from workspace.services.tasks import task_create

    spec = dict(trigger.create_task)
    payload = {**spec.pop("payload", {}), "trigger": source.payload}
    task_id, error = "", ""
    try:
        with transaction.atomic():
            task = task_create(access=access, payload=payload, **spec)
        task_id = str(task.pk)
    except ServiceError as exc:
        # The definition cannot produce a task for this source (e.g. a dependency is gone):
        # record the failure once, rather than retrying it forever.
        error = f"{exc.code}: {exc.message}"
    TriggerFiring.objects.create(trigger=trigger, source=source.position, task_id=task_id, error=error,
                                 fired_at=timezone.now())
    where = {"topic": trigger.topic, "offset": source.position} if trigger.topic else {"event": source.position}
    if error:
        event_record(workspace_id=trigger.workspace_id, type="trigger.failed", actor=trigger.created_by,
                     target=trigger.name, data={"trigger": trigger.name, "error": error, **where})
    else:
        event_record(workspace_id=trigger.workspace_id, type="trigger.fired", actor=trigger.created_by,
                     target=trigger.name, data={"trigger": trigger.name, "task": task_id, **where})


def trigger_catch_up(*, trigger_id: int, limit: int = BATCH) -> int:
    """Fire `trigger_id` for up to `limit` sources past its cursor; returns how many it handled."""
    ws_id = Trigger.objects.filter(pk=trigger_id, enabled=True).values_list("workspace_id", flat=True).first()
    if ws_id is None:
        return 0
    with transaction.atomic():
        lock_workspace(ws_id)
        # Read after the lock: a process that fired before us has committed its cursor by now.
        trigger = Trigger.objects.select_related("created_by").filter(pk=trigger_id, enabled=True).first()
        if trigger is None:
            return 0
        sources = _sources(trigger, limit)
        if not sources:
            return 0
        try:
            access = workspace_for(trigger.created_by, ws_id, need=Role.EDITOR)
        except ServiceError:
            trigger.enabled = False
            trigger.last_error = (f"{trigger.created_by.username} can no longer create tasks in this workspace; "
                                  "define the trigger again to re-enable it.")
            trigger.save(update_fields=["enabled", "last_error", "updated_at"])
            event_record(workspace_id=ws_id, type="trigger.disabled", target=trigger.name,
                         data={"trigger": trigger.name, "reason": trigger.last_error})
            return 0
        for source in sources:
            _fire(trigger, access, source)
        Trigger.objects.filter(pk=trigger.pk).update(cursor=sources[-1].position)
    return len(sources)


def triggers_run(*, workspace_id: str | None = None) -> int:
    """Catch up every trigger (of one workspace) that is behind its source."""
    qs = Trigger.objects.all() if workspace_id is None else Trigger.objects.filter(workspace_id=workspace_id)
    handled = 0
    for trigger_id in _behind(qs).values_list("pk", flat=True)[:200]:
        while True:
            done = trigger_catch_up(trigger_id=trigger_id)
            handled += done
            if done < BATCH:
                break
    return handled


def triggers_sweep() -> int:
    return triggers_run()


def trigger_job(workspace_id: str) -> int:
    """RQ job: catch up the triggers of one workspace (a vanished workspace is a clean no-op)."""
    return triggers_run(workspace_id=workspace_id)


_NOT_TRIGGERING = {"message.pulled", "message.acked", "message.redelivered", "message.dead_lettered"}


# Which event types and topics of a workspace have an enabled trigger, as this process last read
# them: (read at, event types, topics). Every committed change asks, so the answer is kept for
# _WATCHED_TTL seconds instead of costing a query per event. A trigger defined or deleted in this
# process is seen at once (its own `trigger.*` event drops the entry); one defined in another
# process within _WATCHED_TTL, and the sweep fires it meanwhile in any case.
_WATCHED_TTL = 1.0
_WATCHED_MAX = 4096
_watched_cache: dict[str, tuple[float, frozenset[str], frozenset[str]]] = {}


def _watched(workspace_id: str) -> tuple[frozenset[str], frozenset[str]]:
    now = time.monotonic()
    entry = _watched_cache.get(workspace_id)
    if entry is not None and now - entry[0] < _WATCHED_TTL:
        return entry[1], entry[2]
    # One plain statement (no ORM query to build): it runs after many commits.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT event_type, topic FROM {Trigger._meta.db_table} WHERE workspace_id = %s AND enabled",
                       [workspace_id])
        rows = cursor.fetchall()
    types = frozenset(event_type for event_type, _ in rows if event_type)
    topics = frozenset(topic for _, topic in rows if topic)
    if len(_watched_cache) >= _WATCHED_MAX:
        _watched_cache.clear()
    _watched_cache[workspace_id] = (now, types, topics)
    return types, topics


def on_event(event: dict[str, Any]) -> None:
    """After commit, in the process that made the change: enqueue a catch-up when a trigger may
    match. Only a fast path; the sweep catches whatever this misses."""
    kind = event.get("type", "")
    ws_id = event.get("workspace") or ""
    if kind.startswith("trigger."):
        _watched_cache.pop(ws_id, None)
        return
    if kind in _NOT_TRIGGERING or kind in _LOOPING_EVENTS:
        return
    types, topics = _watched(ws_id)
    if kind not in types and not (kind == "message.published"
                                  and (event.get("data") or {}).get("topic", "") in topics):
        return
    try:
        import django_rq

        django_rq.get_queue("default").enqueue(trigger_job, ws_id, job_timeout=300, result_ttl=0)
    except Exception as exc:  # the sweep will fire it
        log.warning("could not enqueue the triggers of %s: %s", ws_id, exc)
