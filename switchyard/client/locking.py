"""`with ws.lock(path) as lock:` — a lock held for the length of a block, renewed in the background.

Why a thread: a lock ends at its TTL even when its holder is alive but busy, so a holder doing
long work must renew it. Renewing every third of the TTL leaves two more chances before expiry
when one renew is slow or fails. If the server says the lock is gone (`410`/`404`), or renewing
keeps failing until the TTL has run out by our own clock, the lock is lost: someone else may hold
the path now, and the block's work is no longer protected. That is reported, never swallowed:
`lock.check()` raises `LockLost` at once, and leaving the block raises it too.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from switchyard.client.errors import ClientError, Gone, LockLost, NotFound
from switchyard.client.models import Lock

if TYPE_CHECKING:
    from switchyard.client.resources import Locks

__all__ = ["HeldLock"]

log = logging.getLogger(__name__)


class HeldLock:
    """One or more locks (taken all or nothing) held until the `with` block ends."""

    def __init__(self, locks: Locks, paths: Sequence[str], *, ttl: int = 60, reason: str = "", wait: float = 0,
                 renew_every: float | None = None) -> None:
        if not paths:
            raise ValueError("HeldLock needs at least one path")
        self._api = locks
        self.paths = list(paths)
        self.ttl = ttl
        self.reason = reason
        self.wait = wait
        self.renew_every = renew_every if renew_every is not None else ttl / 3
        self.locks: list[Lock] = []
        self._lost: LockLost | None = None
        self._valid_until = 0.0  # monotonic: when the lock ends by our clock if no renew lands
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what the block uses ------------------------------------------------------------------
    @property
    def token(self) -> int:
        """The fencing token to send with writes (`lock_token=lock.token`)."""
        if len(self.locks) != 1:
            raise ValueError("several locks are held: use token_for(path)")
        return self.locks[0].token

    @property
    def tokens(self) -> dict[str, int]:
        return {lock.path: lock.token for lock in self.locks}

    def token_for(self, path: str) -> int:
        """The token of the held lock covering `path` (its own path, or a subtree `dir/` above it)."""
        for lock in self.locks:
            if lock.path == path or (lock.path.endswith("/") and path.startswith(lock.path)):
                return lock.token
        raise KeyError(path)

    @property
    def lost(self) -> bool:
        return self._lost is not None or (bool(self.locks) and time.monotonic() >= self._valid_until)

    def check(self) -> None:
        """Raise `LockLost` if the lock has ended: call it before a step that relies on the lock."""
        if self._lost is not None:
            raise self._lost
        if self.locks and time.monotonic() >= self._valid_until:
            raise LockLost(f"the lock on {', '.join(self.paths)} ran past its TTL without a renew",
                           path=self.paths[0], lock_id=self.locks[0].id)

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> HeldLock:
        self.locks, sent = self._api.take(self.paths, ttl=self.ttl, reason=self.reason, wait=self.wait)
        self._valid_until = sent + self.ttl
        self._thread = threading.Thread(target=self._renew_loop, name="switchyard-lock-renew", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        lost = self._lost
        if lost is None:
            for lock in self.locks:
                try:
                    self._api.release(lock.id)
                except (Gone, NotFound):
                    lost = lost or LockLost(f"the lock on {lock.path} had already ended when released",
                                            path=lock.path, lock_id=lock.id)
                except ClientError as error:
                    # It ends at its TTL anyway; the block's work was done under a valid lock.
                    log.warning("could not release lock %s on %s: %s", lock.id, lock.path, error)
        if lost is not None and exc_type is None:
            raise lost

    def _renew_loop(self) -> None:
        interval = self.renew_every
        while not self._stop.wait(interval):
            sent = time.monotonic()
            try:
                renewed = [self._api.renew(lock.id, ttl=self.ttl, timeout=max(1.0, self.ttl / 3))
                           for lock in self.locks]
            except (Gone, NotFound) as error:
                self._lose(f"the lock on {', '.join(self.paths)} is gone ({error.code})", error)
                return
            except ClientError as error:
                if time.monotonic() >= self._valid_until:
                    self._lose(f"could not renew the lock on {', '.join(self.paths)} before it expired", error)
                    return
                log.warning("lock renew failed, retrying: %s", error)
                interval = min(self.renew_every, max(0.1, (self._valid_until - time.monotonic()) / 3))
                continue
            # One assignment each, so the block's thread never sees a half-updated list.
            self.locks = [new if new.token else old for old, new in zip(self.locks, renewed, strict=True)]
            self._valid_until = sent + self.ttl
            interval = self.renew_every

    def _lose(self, message: str, cause: ClientError) -> None:
        lost = LockLost(message, path=self.paths[0], lock_id=self.locks[0].id if self.locks else None)
        lost.__cause__ = cause
        self._lost = lost
