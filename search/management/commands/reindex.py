"""`manage.py reindex [--workspace WS] [--sync]`: index every file again, with a progress bar."""
from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from search import services
from search.models import IndexState
from workspace.models import Workspace


class Command(BaseCommand):
    help = ("Index every file again (all workspaces with intelligence on, or one). By default the jobs go "
            "to the RQ workers and this waits for them; --sync indexes in this process instead.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--workspace", help="Only this workspace id.")
        parser.add_argument("--sync", action="store_true", help="Index here, without the workers.")
        parser.add_argument("--no-wait", action="store_true", help="Enqueue and return at once.")
        parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds to wait for the workers.")

    def handle(self, *args: Any, **options: Any) -> None:
        workspaces = Workspace.objects.filter(intelligence=True)
        if options["workspace"]:
            workspace = Workspace.objects.filter(pk=options["workspace"]).first()
            if workspace is None:
                raise CommandError(f"No workspace {options['workspace']!r}.")
            if not workspace.intelligence:
                raise CommandError(f"Intelligence is off for {workspace.pk}; switch it on first.")
            workspaces = Workspace.objects.filter(pk=workspace.pk)
        ids = list(workspaces.values_list("pk", flat=True))
        if options["sync"]:
            self._sync(ids)
            return
        requested = sum(services.index_request_workspace(workspace_id=ws, force=True) for ws in ids)
        self.stdout.write(f"Requested {requested} files in {len(ids)} workspaces.")
        if options["no_wait"] or not requested:
            return
        self._wait(ids, requested, options["timeout"])

    def _sync(self, ids: list[str]) -> None:
        states = [state for ws in ids for state in services.index_mark_workspace(workspace_id=ws, force=True)]
        bar = Progress(len(states), tty=sys.stderr.isatty())
        errors = 0
        for number, state in enumerate(states, start=1):
            try:
                services.index_file(state_id=state.pk)
            except Exception as exc:
                errors += 1
                services.index_failed(state_id=state.pk, version=state.version,
                                      error=f"{exc.__class__.__name__}: {exc}", final=True)
            bar.show(number)
        bar.done()
        self.stdout.write(f"Indexed {len(states) - errors} files; {errors} failed.")
        if errors:
            raise CommandError(f"{errors} files failed; see GET /api/v1/workspaces/<ws>/index?status=error")

    def _wait(self, ids: list[str], total: int, timeout: float) -> None:
        bar = Progress(total, tty=sys.stderr.isatty())
        deadline = time.monotonic() + timeout
        while True:
            pending = IndexState.objects.filter(workspace_id__in=ids, status=IndexState.Status.PENDING).count()
            bar.show(total - min(pending, total))
            if pending == 0:
                break
            if time.monotonic() > deadline:
                bar.done()
                raise CommandError(f"{pending} files still pending after {timeout:.0f}s; are the workers running?")
            time.sleep(0.5)
        bar.done()
        failed = IndexState.objects.filter(workspace_id__in=ids, status=IndexState.Status.ERROR).count()
        self.stdout.write(f"Done; {failed} files in error." if failed else "Done.")


class Progress:
    """A one-line progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, total: int, *, tty: bool, width: int = 40) -> None:
        self.total = max(total, 1)
        self.tty = tty
        self.width = width
        self.started = time.monotonic()
        self.last_decile = -1

    def show(self, done: int) -> None:
        fraction = min(done / self.total, 1.0)
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        line = (f"[{'#' * int(fraction * self.width):<{self.width}}] {done}/{self.total} "
                f"{fraction:4.0%} {rate:.1f} files/s")
        if self.tty:
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
        elif int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            sys.stderr.write(line + "\n")

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
        sys.stderr.flush()
