"""`manage.py run_pipeline FILE --workspace WS [--user U] [--wait]`: submit a pipeline spec (JSON or
YAML) as an operator. The run's steps are run by the RQ workers (`make run` starts them)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from agents.models import PipelineRun, User
from agents.pipelines.selectors import run_detail_json
from agents.pipelines.services import pipeline_submit
from workspace.access import workspace_for
from workspace.errors import ServiceError
from workspace.models import Membership, Role


class Command(BaseCommand):
    help = "Submit a pipeline spec (JSON or YAML) to a workspace; with --wait, follow it to its end."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", help="The spec file, or - for standard input.")
        parser.add_argument("--workspace", required=True, help="The workspace id.")
        parser.add_argument("--user", help="The account the run acts as (default: the workspace's owner).")
        parser.add_argument("--wait", action="store_true", help="Wait for the run to end; exit 1 unless it succeeded.")
        parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds to wait at most (with --wait).")

    def handle(self, *args: Any, **options: Any) -> None:
        text = sys.stdin.read() if options["file"] == "-" else self._read(options["file"])
        user = self._user(options["workspace"], options.get("user"))
        try:
            access = workspace_for(user, options["workspace"], need=Role.EDITOR)
            run = pipeline_submit(access=access, spec=text, trusted=True)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        self.stdout.write(f"{run.id} {run.name}: {len(run.plan.get('waves', []))} waves, "
                          f"{sum(len(w) for w in run.plan.get('waves', []))} steps")
        if not options["wait"]:
            return
        deadline = time.monotonic() + options["timeout"]
        seen: dict[str, str] = {}
        while True:
            run.refresh_from_db()
            detail = run_detail_json(run)
            for step in detail["steps"]:
                if seen.get(step["key"]) != step["status"]:
                    seen[step["key"]] = step["status"]
                    self.stdout.write(f"  {step['key']}: {step['status']}")
            if run.finished_at is not None:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"{run.id} is still {run.status} after {options['timeout']:g}s")
            time.sleep(0.5)
        summary = {k: detail[k] for k in ("id", "status", "makespan_seconds", "sum_seconds", "speedup",
                                          "critical_path", "counts")}
        self.stdout.write(json.dumps(summary, indent=2))
        if run.status != PipelineRun.Status.SUCCEEDED:
            raise CommandError(f"{run.id} {run.status}")

    def _read(self, name: str) -> str:
        try:
            return Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {name}: {exc}") from exc

    def _user(self, workspace_id: str, username: str | None) -> User:
        if username:
            user = User.objects.filter(username=username, is_active=True).first()
            if user is None:
                raise CommandError(f"no active user named {username!r}")
            return user
        owner = Membership.objects.select_related("user").filter(workspace_id=workspace_id, role=Role.OWNER).first()
        if owner is None:
            raise CommandError(f"no workspace {workspace_id!r}")
        return owner.user
