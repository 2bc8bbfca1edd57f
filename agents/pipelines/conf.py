"""Pipeline configuration. Each value is a Django setting when the settings module defines it,
else read from the environment like every other setting (switchyard/env.py parsers):

- PIPELINE_COMMANDS / SWITCHYARD_PIPELINE_COMMANDS (comma-separated): programs that a `command`
  step of a run submitted by a non-operator may run. Operators (superusers, and
  `manage.py run_pipeline`) may run any program. Default: none.
- PIPELINE_AGENT_MODULES / SWITCHYARD_PIPELINE_AGENT_MODULES: modules imported at start-up that
  register agents, functions, scorers and validators (agents/registry.py).
- PIPELINE_SCRATCH_DIR / SWITCHYARD_PIPELINE_SCRATCH_DIR: where steps get their scratch
  directories. Default: <data dir>/scratch.
- PIPELINE_RATE_LIMITS: the server's shared buckets, {name: {"rate", "burst"}} (agents/ratelimit.py).
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings

from switchyard.env import env_list, env_path

QUEUE = "pipeline"


def command_allowlist() -> list[str]:
    value = getattr(settings, "PIPELINE_COMMANDS", None)
    return list(value) if value is not None else env_list("SWITCHYARD_PIPELINE_COMMANDS", [])


def agent_modules() -> list[str]:
    value = getattr(settings, "PIPELINE_AGENT_MODULES", None)
    return list(value) if value is not None else env_list("SWITCHYARD_PIPELINE_AGENT_MODULES", [])


def scratch_root() -> Path:
    value = getattr(settings, "PIPELINE_SCRATCH_DIR", None)
    return Path(value) if value else env_path("SWITCHYARD_PIPELINE_SCRATCH_DIR", Path(settings.DATA_DIR) / "scratch")
