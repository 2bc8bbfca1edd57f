from __future__ import annotations

from django.apps import AppConfig


class WorkspaceConfig(AppConfig):
    name = "workspace"
    verbose_name = "Workspaces"

    def ready(self) -> None:
        from workspace import hooks
        from workspace.services.locks import lock_sweep

        hooks.register_sweep("locks.expire", lock_sweep)

        # Messages (issue 10): dead letters without a pull; triggers fired from the durable logs.
        from workspace.services import messages, triggers

        hooks.register_sweep("messages.dead_letters", messages.dead_letter_sweep)
        hooks.register_sweep("messages.triggers", triggers.triggers_sweep)
        hooks.subscribe(triggers.on_event)
