from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from workspace.blobs import blob_check, blob_iter_all
from workspace.models import File, FileVersion


class Command(BaseCommand):
    help = ("Check stored contents: every version's blob is present and matches its sha256, and every "
            "file head points at a version that exists. Exits non-zero on any problem.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        problems: list[dict[str, Any]] = []
        shas = set(FileVersion.objects.filter(deleted=False).values_list("sha256", flat=True).distinct())
        for sha in sorted(shas):
            state = blob_check(sha)
            if state is not None:
                for ws_id, path, version in FileVersion.objects.filter(sha256=sha, deleted=False).values_list(
                        "workspace_id", "path", "version"):
                    problems.append({"kind": f"blob_{state}", "workspace": ws_id, "path": path,
                                     "version": version, "sha256": sha})
        versions = set(FileVersion.objects.values_list("workspace_id", "path", "version"))
        for ws_id, path, version in File.objects.values_list("workspace_id", "path", "version"):
            if (ws_id, path, version) not in versions:
                problems.append({"kind": "head_without_version", "workspace": ws_id, "path": path, "version": version})
        unreferenced = sorted(set(blob_iter_all()) - shas)
        report = {"ok": not problems, "versions": len(versions), "blobs_checked": len(shas),
                  "problems": problems, "unreferenced_blobs": len(unreferenced)}
        if options["json"]:
            import json

            self.stdout.write(json.dumps(report))
        else:
            for p in problems:
                self.stdout.write(f"{p['kind']}: {p['workspace']} {p['path']}@{p['version']}")
            self.stdout.write(f"checked {len(versions)} versions, {len(shas)} blobs; "
                              f"{len(problems)} problems; {len(unreferenced)} unreferenced blobs (harmless)")
        if problems:
            raise CommandError(f"{len(problems)} problems found")
