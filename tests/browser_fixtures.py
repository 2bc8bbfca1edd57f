"""One headless Chromium for the whole test session, driven through Playwright's sync API.

Playwright's sync API keeps an asyncio loop running in the thread that started it, and Django
refuses ORM calls from a thread with a running loop (SynchronousOnlyOperation). So Playwright
lives in a thread of its own and the tests talk to it through `Remote` proxies: every call on a
page, locator or context is run on that thread and its result handed back. The test thread
stays free for the ORM (accounts, fixtures, the transactional database flush).

Nothing is downloaded: the browser is Debian's /usr/bin/chromium (`playwright install` is never run).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CALL_TIMEOUT = 120.0


class BrowserThread(threading.Thread):
    """Owns Playwright and the browser; runs submitted callables one at a time."""

    def __init__(self) -> None:
        super().__init__(name="playwright", daemon=True)
        self._calls: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self._ready: Future[Any] = Future()
        self.browser: Any = None

    def run(self) -> None:
        from playwright.sync_api import sync_playwright

        try:
            playwright = sync_playwright().start()
            self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(True)
        while True:
            item = self._calls.get()
            if item is None:
                break
            call, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:
                    future.set_exception(exc)
        self.browser.close()
        playwright.stop()

    def start_and_wait(self) -> None:
        self.start()
        self._ready.result(timeout=60)

    def call(self, fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is self:
            return fn()
        future: Future[Any] = Future()
        self._calls.put((fn, future))
        return future.result(timeout=CALL_TIMEOUT)

    def stop(self) -> None:
        self._calls.put(None)
        self.join(timeout=30)


def _unwrap(value: Any) -> Any:
    if isinstance(value, Remote):
        return object.__getattribute__(value, "_target")
    if isinstance(value, list | tuple):
        return type(value)(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return value


class Remote:
    """A Playwright object on the browser thread; attribute reads and calls run there."""

    __slots__ = ("_runner", "_target")

    def __init__(self, runner: BrowserThread, target: Any) -> None:
        object.__setattr__(self, "_runner", runner)
        object.__setattr__(self, "_target", target)

    def _wrap(self, value: Any) -> Any:
        runner = object.__getattribute__(self, "_runner")
        module = type(value).__module__ or ""
        if module.startswith("playwright."):
            return Remote(runner, value)
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        return value

    def __getattr__(self, name: str) -> Any:
        runner = object.__getattribute__(self, "_runner")
        target = object.__getattribute__(self, "_target")
        value = runner.call(lambda: getattr(target, name))
        if callable(value) and not isinstance(value, type):
            def method(*args: Any, **kwargs: Any) -> Any:
                return self._wrap(runner.call(lambda: value(*_unwrap(args), **_unwrap(kwargs))))
            return method
        return self._wrap(value)

    def __repr__(self) -> str:
        return f"Remote({object.__getattribute__(self, '_target')!r})"


class Browser:
    """What the tests use: new contexts (one per person), and `expect` on the browser thread."""

    def __init__(self, runner: BrowserThread) -> None:
        self.runner = runner

    def context(self, base_url: str, **options: Any) -> Remote:
        runner = self.runner
        context = runner.call(lambda: runner.browser.new_context(base_url=base_url,
                                                                 viewport={"width": 1360, "height": 900},
                                                                 **options))
        return Remote(runner, context)

    def expect(self, target: Remote, **kwargs: Any) -> Remote:
        from playwright.sync_api import expect

        inner = object.__getattribute__(target, "_target")
        return Remote(self.runner, self.runner.call(lambda: expect(inner, **kwargs)))


@pytest.fixture(scope="session", name="browser")
def browser_fixture() -> Iterator[Browser]:
    runner = BrowserThread()
    runner.start_and_wait()
    ARTIFACTS.mkdir(exist_ok=True)
    yield Browser(runner)
    runner.stop()
