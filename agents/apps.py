from __future__ import annotations

import importlib

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Accounts and agents"

    def ready(self) -> None:
        from agents import schema  # noqa: F401 - registers the OpenAPI auth extensions

        # Pipelines (issue 6): the built-in and demo agents, any configured agent modules, the
        # task-event listener that dispatches ready steps, and the sweep that catches lost jobs.
        from agents.pipelines import builtins  # noqa: F401 - registers the built-in agents
        from agents.pipelines.conf import agent_modules
        from agents.pipelines.services import on_task_event, pipelines_sweep
        from workspace import hooks

        importlib.import_module("agents.demo.agents")
        for module in agent_modules():
            importlib.import_module(module)
        hooks.subscribe(on_task_event)
        hooks.register_sweep("pipelines.dispatch", pipelines_sweep)
