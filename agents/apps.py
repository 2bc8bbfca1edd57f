from __future__ import annotations

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Accounts and agents"

    def ready(self) -> None:
        from agents import schema  # noqa: F401 - registers the OpenAPI auth extensions
