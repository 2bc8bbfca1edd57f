from __future__ import annotations

from django.apps import AppConfig


class WorkspaceConfig(AppConfig):
    name = "workspace"
    verbose_name = "Workspaces"

    def ready(self) -> None:
        from workspace import hooks
        from workspace.services.locks import lock_sweep

        hooks.register_sweep("locks.expire", lock_sweep)
        # Tasks, approvals and transfers (issue 4): lease expiry, stale approvals, offer expiry.
        from workspace.services.approvals import approvals_sweep_stale, on_file_event
        from workspace.services.tasks import task_expire_leases
        from workspace.services.transfers import transfers_expire

        hooks.register_sweep("tasks.leases", task_expire_leases)
        hooks.register_sweep("approvals.stale", approvals_sweep_stale)
        hooks.register_sweep("transfers.expiry", transfers_expire)
        hooks.subscribe(on_file_event)
        # Messages (issue 10): dead letters without a pull; triggers fired from the durable logs.
        from workspace.services import messages, triggers

        hooks.register_sweep("messages.dead_letters", messages.dead_letter_sweep)
        hooks.register_sweep("messages.triggers", triggers.triggers_sweep)
        hooks.subscribe(triggers.on_event)
