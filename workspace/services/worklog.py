"""The worklog: an append-only, hash-chained record of what agents and people did.

Each entry's `hash` is sha256(previous entry's hash + the entry's canonical JSON), the first
entry chaining from 64 zeros. Entries are numbered 1, 2, 3... per workspace under the workspace
row lock, and each append records a `worklog.appended` event carrying its seq and hash in the
same transaction, so `worklog_verify` also notices an entry that was removed or re-chained.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC
from typing import Any

from django.db import transaction
from django.utils import timezone

from workspace.access import Access
from workspace.errors import Forbidden, Invalid
from workspace.models import Event, Role
from workspace.models.tasks import Task, WorklogEntry
from workspace.services.events import event_record
from workspace.services.tasks import clean_json, clean_text
from workspace.services.workspaces import lock_workspace

GENESIS = "0" * 64
MAX_MESSAGE = 20000
MAX_DATA_BYTES = 64 * 1024


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _at(entry: WorklogEntry) -> str:
    return entry.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(entry: WorklogEntry) -> str:
    """sha256 over the previous hash and every field of the entry that carries meaning."""
    body = canonical_json({
        "v": 1, "workspace": entry.workspace_id, "seq": entry.seq, "author": str(entry.author_id),
        "on_behalf_of": str(entry.on_behalf_of_id) if entry.on_behalf_of_id else None,
        "task": entry.task_id, "message": entry.message, "data": entry.data_json, "at": _at(entry),
    })
    return hashlib.sha256(entry.prev_hash.encode("ascii") + body.encode("utf-8")).hexdigest()


def worklog_append(*, access: Access, message: str, task_id: str | None = None, data: Any = None) -> WorklogEntry:
    if not access.at_least(Role.EDITOR):
        raise Forbidden("forbidden", "Writing to the worklog needs the editor role.", required_role="editor")
    message = clean_text(message, "message", max_length=MAX_MESSAGE)
    data_json = "" if data is None else canonical_json(clean_json(data, "data", max_bytes=MAX_DATA_BYTES))
    ws_id = access.workspace_id
    with transaction.atomic():
        lock_workspace(ws_id)
        if task_id is not None and (not isinstance(task_id, str)
                                    or not Task.objects.filter(workspace_id=ws_id, pk=task_id).exists()):
            raise Invalid("unknown_task", "No such task in this workspace.", field="task")
        last = WorklogEntry.objects.filter(workspace_id=ws_id).order_by("-seq").values("seq", "hash").first()
        # Microseconds survive every database, so the hash computed here is the one verify recomputes.
        now = timezone.now()
        entry = WorklogEntry(
            workspace_id=ws_id, seq=(last["seq"] + 1) if last else 1, task_id=task_id, author=access.user,
            on_behalf_of=getattr(access.user, "on_behalf_of", None), message=message, data_json=data_json,
            created_at=now, prev_hash=last["hash"] if last else GENESIS,
        )
        entry.hash = entry_hash(entry)
        entry.save()
        event_record(workspace_id=ws_id, type="worklog.appended", actor=access.user, target=str(entry.seq),
                     data={"seq": entry.seq, "hash": entry.hash, "task": task_id})
    return entry


def entry_data(entry: WorklogEntry) -> Any:
    return json.loads(entry.data_json) if entry.data_json else None


def worklog_verify(*, workspace_id: str) -> dict[str, Any]:
    """Walk the chain in seq order and report the first entry that breaks it.

    `{"ok": true, "entries": N}`, or `{"ok": false, "entries": N, "broken": {"seq", "reason", ...}}`
    where N counts the entries checked before the break.
    """
    recorded = dict(Event.objects.filter(workspace_id=workspace_id, type="worklog.appended")
                    .values_list("seq", "data").order_by("seq"))
    announced = {int(d["seq"]): d.get("hash") for d in recorded.values() if isinstance(d, dict) and "seq" in d}
    prev = GENESIS
    checked = 0
    expected_seq = 1

    def broken(seq: int, reason: str, **details: Any) -> dict[str, Any]:
        return {"ok": False, "entries": checked, "broken": {"seq": seq, "reason": reason, **details}}

    for entry in WorklogEntry.objects.filter(workspace_id=workspace_id).order_by("seq").iterator(chunk_size=1000):
        if entry.seq != expected_seq:
            return broken(expected_seq, "missing", message=f"entry {expected_seq} is missing (next is {entry.seq})")
        if entry.prev_hash != prev:
            return broken(entry.seq, "prev_hash_mismatch", expected=prev, found=entry.prev_hash,
                          message=f"entry {entry.seq} does not chain from entry {entry.seq - 1}")
        computed = entry_hash(entry)
        if not hmac.compare_digest(computed, entry.hash):
            return broken(entry.seq, "hash_mismatch", expected=computed, found=entry.hash,
                          message=f"entry {entry.seq} was altered after it was written")
        if entry.seq in announced and announced[entry.seq] != entry.hash:
            return broken(entry.seq, "event_mismatch", expected=announced[entry.seq], found=entry.hash,
                          message=f"entry {entry.seq} differs from the hash recorded when it was appended")
        prev = entry.hash
        checked += 1
        expected_seq += 1
    later = sorted(s for s in announced if s >= expected_seq)
    if later:
        return broken(later[0], "missing", message=f"entry {later[0]} was appended but is gone")
    return {"ok": True, "entries": checked}
