"""How `workspace` announces changes without knowing who listens.

Other apps (search, agents) subscribe in their AppConfig.ready(): event listeners run after the
transaction that recorded the events commits; sweeps run periodically in the sweeper process.
Listeners must be quick and must not raise: they enqueue work, they do not do it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

EventListener = Callable[[dict[str, Any]], None]
Sweep = Callable[[], int]

_listeners: list[EventListener] = []
_sweeps: dict[str, Sweep] = {}


def subscribe(listener: EventListener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def register_sweep(name: str, sweep: Sweep) -> None:
    _sweeps[name] = sweep


def sweeps() -> dict[str, Sweep]:
    return dict(_sweeps)


def dispatch(event: dict[str, Any]) -> None:
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception:
            log.exception("event listener %r failed for %s", listener, event.get("type"))
