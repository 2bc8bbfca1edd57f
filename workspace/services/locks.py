"""Lock manager (filled in by the locks work: acquire, renew, release, fencing, expiry)."""
from __future__ import annotations

from typing import Any


def lock_enforce_write(*, workspace_id: str, paths: list[str], user: Any, token: int | None) -> int | None:
    """Refuse a write under someone else's lock (423) or with a stale token (409).

    Returns the fencing token the write was made under, if any. Runs inside the write's
    transaction, after the workspace row lock.
    """
    return None


def lock_state_for(*, workspace_id: str, paths: list[str]) -> dict[str, dict[str, Any]]:
    """The active lock covering each of `paths` (by the lock's own path or a subtree), as JSON."""
    return {}
