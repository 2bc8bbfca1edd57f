"""Topics, consumer groups and triggers."""
from __future__ import annotations

__all__: list[str] = []
