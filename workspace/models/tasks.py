"""Tasks, worklog, approvals and ownership transfers."""
from __future__ import annotations

__all__: list[str] = []
