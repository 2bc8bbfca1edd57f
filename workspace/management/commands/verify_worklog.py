from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from workspace.models import Workspace
from workspace.services.worklog import worklog_verify


class Command(BaseCommand):
    help = ("Recompute every worklog's hash chain and report the first broken entry of each; exits "
            "non-zero if any chain is broken (a row altered, removed or re-chained in the database).")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--workspace", action="append", default=[], metavar="ID",
                            help="Check only this workspace (may be repeated); default: every workspace.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object per workspace.")

    def handle(self, *args: Any, **options: Any) -> None:
        ids = options["workspace"] or list(Workspace.objects.order_by("id").values_list("id", flat=True))
        missing = sorted(set(ids) - set(Workspace.objects.filter(id__in=ids).values_list("id", flat=True)))
        if missing:
            raise CommandError(f"no such workspace: {', '.join(missing)}")
        broken = 0
        for ws_id in ids:
            report = worklog_verify(workspace_id=ws_id)
            if options["json"]:
                self.stdout.write(json.dumps({"workspace": ws_id, **report}))
            elif report["ok"]:
                self.stdout.write(f"{ws_id}: ok, {report['entries']} entries")
            else:
                where = report["broken"]
                self.stdout.write(f"{ws_id}: BROKEN at entry {where['seq']} ({where['reason']}): "
                                  f"{where.get('message', '')}")
            broken += not report["ok"]
        if broken:
            raise CommandError(f"{broken} worklog(s) broken")
