from __future__ import annotations

from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "search"
    verbose_name = "Intelligence"

    def ready(self) -> None:
        from search import listeners
        from workspace import hooks

        hooks.subscribe(listeners.on_event)
        hooks.register_sweep("search.requeue", listeners.requeue_sweep)
