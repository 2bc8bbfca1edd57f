"""Locks and fencing tokens (see workspace/services/locks.py)."""
from __future__ import annotations

__all__: list[str] = []
