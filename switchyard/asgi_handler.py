"""Django's ASGI handler, with fewer thread switches and no thread started per request.

Two costs of the stock handler on every request, measured with py-spy on a uvicorn worker serving
lock acquire/release pairs (with both removed, an authenticated no-op over HTTP went from about
4.3 ms to 2.3-2.7 ms, one web worker on this 2-core machine):

- Django builds the chain for ASGI around its async `_get_response_async`. Our middleware (and most
  of Django's) is synchronous, so the request hops from the event loop to a worker thread for the
  sync middleware, back to the event loop (`async_to_sync`) for URL resolution, to the worker
  thread again (`sync_to_async`) for the view, and the same way out. Every view here is
  synchronous, so the chain is built as under WSGI, around the sync `_get_response`, and all of it
  runs on the request's thread in one hop. (Django's own top-level adaptation does exactly that
  to a sync chain; an async view would still work, through `async_to_sync`.)
- Each request runs in a `ThreadSensitiveContext`, which by default starts a single-thread
  executor for the request and, at the end, another thread to join it. Here the context is given
  an executor from a pool of idle ones. An executor goes back to the pool only once its thread is
  idle: a view still running for a client that went away finishes before anyone else's request is
  queued behind it.

The request's event announcements (Redis PUBLISHes for live clients) are handed to the publisher
thread once the response has been sent, not while the request still needs the GIL
(`hold_announcements` in workspace/services/events.py).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler

from workspace.services.events import hold_announcements, release_announcements


class _ExecutorPool:
    """Idle single-thread executors, newest first; at most `keep` are kept."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._idle: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()

    def take(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")

    def give(self, executor: ThreadPoolExecutor) -> None:
        """Back to the pool once everything already submitted to it has run."""
        executor.submit(_nothing).add_done_callback(lambda _: self._idle_again(executor))

    def _idle_again(self, executor: ThreadPoolExecutor) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(executor)
                return
        executor.shutdown(wait=False)

    def __len__(self) -> int:
        return len(self._idle)


def _nothing() -> None:
    return None


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self, *, keep_threads: int = 64) -> None:
        super().__init__()
        self.executors = _ExecutorPool(keep_threads)

    def load_middleware(self, is_async: bool = False) -> None:  # noqa: FBT001, FBT002 - Django's signature
        super().load_middleware(is_async=False)
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.executors.take()
        held = hold_announcements()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            release_announcements(held)
            self.executors.give(executor)


__all__ = ["SyncChainASGIHandler"]
