"""Live streams of a workspace's events or a topic's messages, that survive disconnects.

A stream reads the WebSocket endpoint, which replays from `after` before going live. When the
connection drops it reconnects with back-off from the last position it yielded, so nothing is
missed, and it drops anything at or below that position, so nothing is seen twice. When the
WebSocket keeps failing (a proxy that does not pass upgrades, say) it polls the HTTP list
instead, and tries the WebSocket again from time to time.
"""
from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from switchyard.client.errors import ConnectionFailed, RateLimited, ServerError
from switchyard.client.models import Event, Message
from switchyard.client.transport import Transport, quote_segment

__all__ = ["Stream", "event_stream", "topic_stream"]

T = TypeVar("T")

# Close codes the server uses for "you may not read this" (the HTTP list gives the typed error).
_ACCESS_CLOSE_CODES = frozenset({4401, 4403, 4404})
_RECV_TICK = 0.5  # how often a blocked read wakes up to notice close() and the idle timeout


class Stream(Generic[T]):
    """An iterator over live items, each yielded once, in order of `key` (`seq` or `offset`).

    `last` is the position of the last item yielded: resume a later stream with `after=last`.
    `idle_timeout` ends the iteration after that many seconds without a new item (None: never).
    `close()` (from any thread) ends it within about half a second.
    """

    def __init__(self, transport: Transport, *, ws_path: str, poll_path: str, key: str,
                 parse: Callable[[dict[str, Any]], T], after: int | None, idle_timeout: float | None = None,
                 max_ws_failures: int = 3, backoff_base: float = 0.5, backoff_max: float = 15.0,
                 poll_interval: float = 1.0, ws_retry_interval: float = 60.0, open_timeout: float = 10.0) -> None:
        self._t = transport
        self._ws_path = ws_path
        self._poll_path = poll_path
        self._key = key
        self._parse = parse
        self.last = after
        self.idle_timeout = idle_timeout
        self.max_ws_failures = max_ws_failures
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.ws_retry_interval = ws_retry_interval
        self.open_timeout = open_timeout
        self.mode: Literal["connecting", "websocket", "polling"] = "connecting"
        self.connections = 0  # successful WebSocket handshakes, for observability and tests
        self._stop = threading.Event()
        self._last_activity = time.monotonic()
        self._gen = self._run()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        return next(self._gen)

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        try:
            self._gen.close()
        except ValueError:
            pass  # running in another thread: it sees the stop flag at its next tick

    # -- the loop ---------------------------------------------------------------------------
    def _run(self) -> Generator[T, None, None]:
        failures = 0
        while not self._stop.is_set() and not self._idle():
            if failures >= self.max_ws_failures:
                yield from self._poll_for(self.ws_retry_interval)
                failures = 0
                continue
            try:
                # A short close timeout: closing a stream must not hang on a peer that went away.
                conn = connect(self._ws_url(), additional_headers=self._t.auth_header,
                               open_timeout=self.open_timeout, close_timeout=2, max_size=2**24)
            except InvalidStatus as exc:
                status = exc.response.status_code
                # A refused handshake (401/403/404) will not change by retrying the socket; the
                # HTTP list either works (polling) or raises the typed error that explains why.
                failures = self.max_ws_failures if 400 <= status < 500 and status != 429 else failures + 1
                self._backoff(failures)
                continue
            except (OSError, TimeoutError, WebSocketException):
                failures += 1
                self._backoff(failures)
                continue
            self.connections += 1
            self.mode = "websocket"
            healthy, refused = yield from self._read(conn)
            if refused:
                failures = self.max_ws_failures
            elif healthy:
                failures = 0
            else:
                failures += 1
            self._backoff(failures)

    def _read(self, conn: ClientConnection) -> Generator[T, None, tuple[bool, bool]]:
        """Yield from one connection until it ends; returns (was it healthy, did it refuse us)."""
        healthy = False
        with conn:
            while not self._stop.is_set():
                try:
                    frame = conn.recv(timeout=_RECV_TICK)
                except TimeoutError:
                    healthy = True  # connected and quiet: the server is fine
                    if self._idle():
                        return healthy, False
                    continue
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    return healthy, code in _ACCESS_CLOSE_CODES
                except (OSError, WebSocketException):
                    return healthy, False
                healthy = True
                item = self._accept(frame)
                if item is not None:
                    yield item
        return healthy, False

    def _poll_for(self, seconds: float) -> Generator[T, None, None]:
        """Poll the HTTP list for `seconds`, then give the WebSocket another chance.

        A server that is down or overloaded (after the transport's own retries) ends this round
        early instead of ending the stream: a long-lived consumer outlives an outage. Any other
        error (no access, say) is the caller's to see, so it propagates.
        """
        self.mode = "polling"
        until = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < until:
            params: dict[str, Any] = {"limit": 500}
            if self.last is not None:
                params["after"] = self.last
            try:
                body = self._t.json("GET", self._poll_path, params=params) or {}
            except (ConnectionFailed, RateLimited, ServerError):
                self._stop.wait(self.backoff_max * random.uniform(0.5, 1.0))
                return
            got = False
            for raw in body.get("results", []):
                item = self._accept(raw)
                if item is not None:
                    got = True
                    yield item
            if self._idle():
                return
            if not got:
                self._stop.wait(self.poll_interval)

    def _accept(self, frame: str | bytes | dict[str, Any]) -> T | None:
        """Parse a frame; None for anything that is not a new item (a pong, a replayed duplicate)."""
        if isinstance(frame, dict):
            data: Any = frame
        else:
            try:
                data = json.loads(frame)
            except ValueError:
                return None
        if not isinstance(data, dict) or data.get("type") == "pong" or not isinstance(data.get(self._key), int):
            return None
        position = int(data[self._key])
        if self.last is not None and position <= self.last:
            return None
        self.last = position
        self._last_activity = time.monotonic()
        return self._parse(data)

    def _idle(self) -> bool:
        return self.idle_timeout is not None and time.monotonic() - self._last_activity >= self.idle_timeout

    def _backoff(self, failures: int) -> None:
        if failures >= self.max_ws_failures:
            return  # on to polling at once: waiting longer would only delay the next item
        delay = self.backoff_base * (0.5 + random.random()) if failures == 0 else \
            random.uniform(0.5, 1.0) * min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
        self._stop.wait(delay)

    def _ws_url(self) -> str:
        query = f"?{urlencode({'after': self.last})}" if self.last is not None else ""
        return f"{self._t.ws_root}{self._ws_path}{query}"


def event_stream(transport: Transport, ws_id: str, *, after: int = 0, **options: Any) -> Stream[Event]:
    """Events of a workspace with `seq` greater than `after`, then live."""
    ws = quote_segment(ws_id)
    return Stream(transport, ws_path=f"/ws/workspaces/{ws}/events/", poll_path=f"workspaces/{ws}/events",
                  key="seq", parse=Event.from_json, after=after, **options)


def topic_stream(transport: Transport, ws_id: str, topic: str, *, after: int | None = None,
                 **options: Any) -> Stream[Message]:
    """Messages of a topic with offset greater than `after` (from the start when None), then live."""
    ws, name = quote_segment(ws_id), quote_segment(topic)
    return Stream(transport, ws_path=f"/ws/workspaces/{ws}/topics/{name}/",
                  poll_path=f"workspaces/{ws}/topics/{name}/messages", key="offset", parse=Message.from_json,
                  after=after, **options)
