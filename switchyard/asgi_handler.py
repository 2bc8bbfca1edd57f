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

- Django's `handle` sends `request_started` before the chain and closes the response after sending
  it, each through `sync_to_async`: two more hops to the request's thread (the receivers,
  `close_old_connections` among them, are synchronous and must run where the connection lives). Each
  hop took 0.5-1.2 ms of wall time on this 2-core machine under load, the first on the request's
  way in, the second competing with the client's next request. Here `request_started`, the chain
  and, for a response that is not streamed, `close()` (`request_finished`: the connection goes back
  to the pool) run in the one hop. The content of such a response is complete by then; a streamed
  response (a file download) is closed after it has been sent, as before.

The request's event announcements (Redis PUBLISHes for live clients) are handed to the publisher
thread once the response has been sent, not while the request still needs the GIL
(`hold_announcements` in workspace/services/events.py).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpRequest, HttpResponseBase
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response

from workspace.services.events import hold_announcements, release_announcements

log = logging.getLogger(__name__)


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
        self._sync_chain = self._middleware_chain
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)
        self._serve_async = sync_to_async(self._serve, thread_sensitive=True)

    def _serve(self, request: HttpRequest, scope: dict[str, Any]) -> HttpResponseBase:
        """On the request's thread: `request_started`, the chain (as `BaseHandler.get_response`)
        and, unless the response is streamed, its `close()`."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        set_urlconf(settings.ROOT_URLCONF)
        response: HttpResponseBase = self._sync_chain(request)
        response._resource_closers.append(request.close)
        response._handler_class = self.__class__
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        if not response.streaming:
            try:
                response.close()
            except Exception:  # as when Django closes after sending: the response itself stands
                log.exception("closing the response to %s failed", request.path)
        return response

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's `handle`, with the request's own work in one hop (`_serve`)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            await signals.request_started.asend(sender=self.__class__, scope=scope)
            body_file.close()
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request() -> HttpResponseBase:
            response = await self._serve_async(request, scope)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while it was being sent
            return response

        # As Django: a client that disconnects while the response is prepared cancels the wait
        # for it (the request's thread finishes its work, and its close, on its own).
        tasks = [asyncio.create_task(self.listen_for_disconnect(receive)), asyncio.create_task(process_request())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            if not response.closed:
                await sync_to_async(response.close)()
        body_file.close()

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
