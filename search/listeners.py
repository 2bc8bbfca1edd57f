"""What `search` does when `workspace` announces a change (see workspace/hooks.py).

Listeners run after the announcing transaction commits and must be quick: they mark files
pending and enqueue jobs, nothing more.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from search import services
from workspace.models import Workspace

log = logging.getLogger(__name__)

FILE_EVENTS = frozenset({"file.written", "file.deleted", "file.moved"})
SWEEP_EVERY = 5.0  # seconds; the sweeper calls every sweep much more often than this one needs

_next_sweep = 0.0


def on_event(event: dict[str, Any]) -> None:
    kind = event.get("type")
    workspace_id = event.get("workspace")
    data = event.get("data") or {}
    if not isinstance(workspace_id, str):
        return
    if kind == "workspace.updated":
        change = data.get("intelligence")
        if isinstance(change, dict) and change.get("new") is True:
            services.index_enqueue_workspace(workspace_id=workspace_id)
        return
    if kind not in FILE_EVENTS:
        return
    if not Workspace.objects.filter(pk=workspace_id, intelligence=True).exists():
        return
    if kind == "file.moved":
        # The destination first: while the source still has its chunks, their vectors are reused.
        targets = [(data["to"], data["version"]), (data["from"], data["from_version"])]
    else:
        targets = [(data["path"], data["version"])]
    for path, version in targets:
        services.index_request(workspace_id=workspace_id, path=str(path), version=int(version))


def requeue_sweep() -> int:
    """The periodic sweep: requeue files whose indexing job was lost, and files that failed only
    because Chroma was down once it is back (at most every few seconds)."""
    global _next_sweep
    now = time.monotonic()
    if now < _next_sweep:
        return 0
    _next_sweep = now + SWEEP_EVERY
    return services.index_requeue_stuck() + services.index_retry_unavailable()
