from __future__ import annotations

import logging
import signal
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from workspace import hooks

log = logging.getLogger("switchyard.sweeper")


class Command(BaseCommand):
    help = ("Run the periodic sweeps (lock expiry, lease expiry, message redelivery, transfer expiry). "
            "Any number may run: every sweep is a conditional update, safe to race.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="Run every sweep once and exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        stop = False

        def _stop(*_: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not stop:
            started = time.monotonic()
            for name, sweep in hooks.sweeps().items():
                try:
                    done = sweep()
                    if done:
                        log.debug("sweep %s handled %s", name, done)
                except Exception:
                    log.exception("sweep %s failed", name)
                    close_old_connections()
            if options["once"]:
                return
            time.sleep(max(0.0, settings.SWEEP_INTERVAL - (time.monotonic() - started)))
