"""Tasks: queues, claims, leases, dependencies (filled in by the tasks work)."""
from __future__ import annotations

from typing import Any

from workspace.access import Access
from workspace.errors import NotFound


def task_record_reads(*, access: Access, task_id: str, files: list[dict[str, Any]]) -> None:
    """Record that the claimant of `task_id` read these file versions (for stale-input checks)."""
    raise NotFound("task")
