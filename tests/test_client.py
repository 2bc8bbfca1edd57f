"""The Python client against a scripted local HTTP server: retries, Retry-After and jitter,
idempotency keys, error mapping, update(), the lock helper and the polling fallback.

The fake server lets a test say exactly what the network does (a 429, a dropped connection, a
412 carrying the current content) and see exactly what the client sent.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from switchyard.client import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Client,
    ClientError,
    ConnectionFailed,
    Locked,
    LockGone,
    LockLost,
    NotFound,
    NotOwner,
    RateLimited,
    RetryPolicy,
    ServerError,
    StaleLockToken,
    Unavailable,
    VersionMismatch,
)

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeApi:
    """A threaded HTTP server answering from a script (`queue`) or a function (`route`)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.replies: list[Reply] = []
        self.route: Callable[[Seen], Reply] | None = None
        self.clients: list[Client] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                seen = Seen(self.command, unquote(parts.path), parse_qs(parts.query),
                            {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                reply = fake.answer(seen)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(reply.body, bytes):
                    data, ctype = reply.body, "application/octet-stream"
                elif reply.body is None:
                    data, ctype = b"", "application/json"
                else:
                    data, ctype = json.dumps(reply.body).encode(), "application/json"
                self.send_response(reply.status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def answer(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            if self.route is not None:
                return self.route(seen)
            if self.replies:
                return self.replies.pop(0)
        return Reply(500, {"error": {"code": "unscripted", "message": f"no reply for {seen.method} {seen.path}"}})

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    server = FakeApi()
    yield server
    server.close()


@dataclass
class Sleeps:
    """Records the waits instead of sleeping them, so retry tests take no time."""

    waits: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_client(fake: FakeApi, *, rnd: float = 0.5, attempts: int = 5, sleeps: Sleeps | None = None,
                **policy: Any) -> Client:
    client = Client(fake.url, "secret-token", timeout=5, retry=RetryPolicy(
        max_attempts=attempts, sleep=sleeps if sleeps is not None else Sleeps(), random=lambda: rnd, **policy))
    fake.clients.append(client)
    return client


def error(status: int, code: str, message: str = "m", headers: dict[str, str] | None = None, **details: Any) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message, **details}}, headers or {})


WRITTEN = {"path": "a.txt", "version": 1, "sha256": "ab", "size": 1, "deleted": False, "author": "x",
           "created_at": "2026-01-01T00:00:00Z"}


# -- packaging -------------------------------------------------------------------------------------
def test_importing_the_client_does_not_import_django() -> None:
    """GIVEN a fresh interpreter without Django settings WHEN it imports switchyard.client
    THEN no django module is loaded (agents run the client without the server's dependencies)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = ("import sys, switchyard.client as c; c.Client('http://x', 't').workspace('w'); "
            "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith(('django.', 'rest_framework')));"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr



@pytest.mark.parametrize(("base_url", "root", "ws_root"), [
    ("http://h:8000", "http://h:8000", "ws://h:8000"),
    ("http://h:8000/api/v1/", "http://h:8000", "ws://h:8000"),
    ("https://example.org/switchyard/api/v1", "https://example.org/switchyard", "wss://example.org/switchyard"),
])
def test_base_url_may_name_the_server_or_its_api_root(base_url: str, root: str, ws_root: str) -> None:
    """GIVEN a base URL with or without /api/v1 (and behind a path prefix) WHEN a client is made
    THEN requests go under one /api/v1 and WebSockets use the matching ws/wss origin."""
    with Client(base_url, "t") as client:
        assert client.transport.root == root and client.transport.ws_root == ws_root
    with pytest.raises(ValueError):
        Client("localhost:8000", "t")

# -- retries -------------------------------------------------------------------------------------
def test_429_is_retried_after_retry_after_plus_jitter_with_the_same_idempotency_key(fake: FakeApi) -> None:
    """GIVEN a server answering 429 Retry-After: 2 once WHEN the client creates a workspace
    THEN it waits 2 s plus jitter, retries once with the same Idempotency-Key, and returns the 201."""
    sleeps = Sleeps()
    fake.queue(error(429, "rate_limited", headers={"Retry-After": "2"}),
               Reply(201, {"id": "w1", "name": "n", "role": "owner"}))
    ws = make_client(fake, rnd=1.0, sleeps=sleeps).workspaces.create("n")
    assert ws.id == "w1" and ws.info is not None and ws.info.role == "owner"
    assert sleeps.waits == [pytest.approx(2.5)]  # 2 s + the full 25 % jitter at random() == 1
    first, second = fake.seen
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert uuid.UUID(first.headers["idempotency-key"]).version == 4
    assert first.body == second.body and first.json() == {"name": "n", "intelligence": True}


def test_jitter_spreads_the_wait_above_retry_after_never_below() -> None:
    """GIVEN Retry-After: 1 WHEN the random draw varies THEN waits range over [1, 1.25], never under 1 s;
    without Retry-After the back-off is full jitter under an exponential cap."""
    low, high = RetryPolicy(random=lambda: 0.0), RetryPolicy(random=lambda: 1.0)
    assert low.delay(1, 1.0) == 1.0 and high.delay(1, 1.0) == pytest.approx(1.25)
    assert high.delay(1, 0.0) == pytest.approx(0.05)  # Retry-After: 0 still spreads a crowd a little
    assert [high.delay(n, None) for n in (1, 2, 3, 4)] == [0.25, 0.5, 1.0, 2.0]
    assert high.delay(20, None) == high.backoff_max
    assert low.delay(5, None) == 0.0
    real = RetryPolicy()
    assert len({real.delay(1, 1.0) for _ in range(20)}) > 1


def test_503_is_retried_a_bounded_number_of_times_then_raises(fake: FakeApi) -> None:
    """GIVEN a server that always answers 503 WHEN reading THEN the client makes exactly max_attempts
    requests with growing back-off between them and raises Unavailable with the body."""
    sleeps = Sleeps()
    fake.route = lambda seen: error(503, "unavailable", "down for a moment")
    with pytest.raises(Unavailable) as caught:
        make_client(fake, rnd=1.0, attempts=3, sleeps=sleeps).me()
    assert len(fake.seen) == 3
    assert sleeps.waits == [0.25, 0.5]
    assert caught.value.status == 503 and caught.value.message == "down for a moment"


def test_a_retry_after_longer_than_the_cap_is_raised_not_slept(fake: FakeApi) -> None:
    """GIVEN 429 with Retry-After: 3600 WHEN calling THEN RateLimited is raised at once with retry_after."""
    sleeps = Sleeps()
    fake.queue(error(429, "rate_limited", headers={"Retry-After": "3600"}))
    with pytest.raises(RateLimited) as caught:
        make_client(fake, sleeps=sleeps).me()
    assert caught.value.retry_after == 3600 and sleeps.waits == [] and len(fake.seen) == 1


def test_a_dropped_connection_is_retried_with_the_same_key(fake: FakeApi) -> None:
    """GIVEN the first PUT's connection drops before an answer WHEN writing a file
    THEN the client retries with the same Idempotency-Key and body, and returns the version."""
    fake.queue(Reply(drop=True), Reply(201, WRITTEN, {"ETag": '"1"'}))
    written = make_client(fake).workspace("w").write("a.txt", b"x")
    assert written.version == 1
    first, second = fake.seen
    assert first.method == second.method == "PUT"
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.body == second.body == b"x"


def test_an_unreachable_server_raises_connection_failed_after_the_attempts() -> None:
    """GIVEN nothing listening WHEN calling THEN ConnectionFailed after max_attempts tries."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    client = Client(f"http://127.0.0.1:{port}", "t", retry=RetryPolicy(max_attempts=3, sleep=sleeps))
    with pytest.raises(ConnectionFailed):
        client.me()
    assert len(sleeps.waits) == 2


def test_every_mutating_call_has_its_own_key_and_reads_have_none(fake: FakeApi) -> None:
    """GIVEN a server answering 200 WHEN the client sends POST, PUT, PATCH, DELETE and GET
    THEN each mutating request carries a distinct uuid4 Idempotency-Key, GET carries none,
    and every request carries the bearer token."""
    fake.route = lambda seen: Reply(200, {"id": "x"}) if seen.method != "DELETE" else Reply(204)
    client = make_client(fake)
    ws = client.workspace("w")
    ws.worklog.append("hello")
    ws.members.set("bob", "editor")
    client.workspaces.update("w", name="new")
    ws.rules.delete("research/")
    client.me()
    keys = [s.headers.get("idempotency-key") for s in fake.seen]
    assert [s.method for s in fake.seen] == ["POST", "PUT", "PATCH", "DELETE", "GET"]
    assert keys[-1] is None
    assert len(set(keys[:-1])) == 4 and all(uuid.UUID(k).version == 4 for k in keys[:-1])
    assert {s.headers["authorization"] for s in fake.seen} == {"Bearer secret-token"}


def test_an_in_progress_duplicate_is_waited_for(fake: FakeApi) -> None:
    """GIVEN 409 idempotency_in_progress (our own earlier attempt still running) WHEN posting
    THEN the client retries the same key and gets the stored answer."""
    fake.queue(error(409, "idempotency_in_progress"), Reply(201, {"seq": 1, "hash": "h", "message": "m"}))
    entry = make_client(fake).workspace("w").worklog.append("m")
    assert entry.seq == 1 and len(fake.seen) == 2
    assert fake.seen[0].headers["idempotency-key"] == fake.seen[1].headers["idempotency-key"]



def test_a_malformed_request_is_not_retried(fake: FakeApi) -> None:
    """GIVEN a token that cannot go in a header WHEN calling THEN a ClientError is raised at once,
    with no retry and nothing sent; without a token no Authorization header is sent, and an unhealthy
    server's 503 comes back as the health body, once, not retried."""
    sleeps = Sleeps()
    with Client(fake.url, "bad\ntoken", retry=RetryPolicy(sleep=sleeps)) as bad, pytest.raises(ClientError):
        bad.me()
    assert sleeps.waits == [] and fake.seen == []
    fake.queue(Reply(503, {"status": "error", "checks": {"database": "ok", "index": "error: down"}}))
    with Client(fake.url) as anonymous:
        assert anonymous.health()["checks"]["index"] == "error: down"
    assert len(fake.seen) == 1 and "authorization" not in fake.seen[0].headers

# -- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("reply", "cls"), [
    (error(404, "not_found"), NotFound),
    (error(403, "not_owner", writers=["a"]), NotOwner),
    (error(409, "stale_lock_token"), StaleLockToken),
    (error(410, "lock_gone"), LockGone),
    (error(412, "already_exists", current={"version": 3}), AlreadyExists),
    (error(400, "invalid", fields={"name": ["required"]}), BadRequest),
    (Reply(502, b"<html>bad gateway</html>"), ServerError),
])
def test_error_bodies_map_to_typed_exceptions(fake: FakeApi, reply: Reply, cls: type[ApiError]) -> None:
    """GIVEN an error answer WHEN a call gets it THEN the exception class follows status and code,
    and carries the code, message and details of the body."""
    fake.queue(reply)
    with pytest.raises(cls) as caught:
        make_client(fake).workspace("w").get()
    exc = caught.value
    assert exc.status == reply.status and len(fake.seen) == 1
    if isinstance(reply.body, dict):
        assert exc.code == reply.body["error"]["code"] and exc.message == "m"
        assert exc.details == {k: v for k, v in reply.body["error"].items() if k not in ("code", "message")}
    else:
        assert exc.code == "http_502"


def test_412_exposes_current_and_423_exposes_holder(fake: FakeApi) -> None:
    """GIVEN a 412 with the current version inline, then a 423 with holder and Retry-After
    WHEN writing THEN VersionMismatch.current/current_content and Locked.holder/expires_at/retry_after
    are the server's values, and neither is retried."""
    current = {"version": 4, "sha256": "cd", "author": "bob", "created_at": "t", "content": "héllo"}
    fake.queue(error(412, "version_mismatch", current=current),
               error(423, "locked", headers={"Retry-After": "7"}, holder="bob", expires_at="2026-01-01T00:01:00Z"))
    ws = make_client(fake).workspace("w")
    with pytest.raises(VersionMismatch) as mismatch:
        ws.write("a.txt", "x", if_match=3)
    assert mismatch.value.current == current and mismatch.value.current_version == 4
    assert mismatch.value.current_content == "héllo".encode()
    with pytest.raises(Locked) as locked:
        ws.write("a.txt", "x", lock_token=5)
    assert locked.value.holder == "bob" and locked.value.expires_at == "2026-01-01T00:01:00Z"
    assert locked.value.retry_after == 7
    assert len(fake.seen) == 2
    assert fake.seen[0].headers["if-match"] == '"3"' and fake.seen[1].headers["x-lock-token"] == "5"


# -- files -------------------------------------------------------------------------------------------
def test_paths_are_quoted_and_file_reads_carry_the_version(fake: FakeApi) -> None:
    """GIVEN a path with spaces, '#', '?' and non-ASCII WHEN reading it THEN the server sees that exact
    path, and the result carries the bytes and the version from the headers."""
    fake.queue(Reply(200, b"\x00\x01", {"ETag": '"7"', "X-Version": "7", "X-Content-Sha256": "ff"}))
    got = make_client(fake).workspace("w s").read("dir/a b#c?d/é.bin", task_id="t1")
    assert fake.seen[0].path == "/api/v1/workspaces/w s/files/dir/a b#c?d/é.bin"
    assert fake.seen[0].headers["x-task-id"] == "t1"
    assert got.content == b"\x00\x01" and got.version == 7 and got.sha256 == "ff"


def test_update_merges_from_the_412_body_without_another_read(fake: FakeApi) -> None:
    """GIVEN a file at v3 that another writer moves to v4 before our write WHEN update() runs
    THEN fn sees v3, then v4's content taken from the 412 body, and the retry says If-Match "4"
    with no second GET."""
    fake.queue(Reply(200, b"a", {"X-Version": "3"}),
               error(412, "version_mismatch", current={"version": 4, "content": "ab"}),
               Reply(200, {**WRITTEN, "version": 5}))
    calls: list[bytes | None] = []

    def append_c(old: bytes | None) -> bytes:
        calls.append(old)
        return (old or b"") + b"c"

    result = make_client(fake).workspace("w").update("a.txt", append_c)
    assert result is not None and result.version == 5
    assert calls == [b"a", b"ab"]
    assert [s.method for s in fake.seen] == ["GET", "PUT", "PUT"]
    assert fake.seen[1].headers["if-match"] == '"3"' and fake.seen[2].headers["if-match"] == '"4"'
    assert fake.seen[2].body == b"abc"


def test_update_creates_with_if_none_match_and_rereads_when_content_is_not_inline(fake: FakeApi) -> None:
    """GIVEN no file, and a racing creator WHEN update() runs THEN it first writes with If-None-Match: *,
    and on 412 already_exists (no content inline) reads the file again and writes with If-Match."""
    fake.queue(error(404, "not_found"), error(412, "already_exists", current={"version": 1}),
               Reply(200, b"1", {"X-Version": "1"}), Reply(200, {**WRITTEN, "version": 2}))
    result = make_client(fake).workspace("w").update("n.txt", lambda old: str(int(old or b"0") + 1))
    assert result is not None and result.version == 2
    assert [s.method for s in fake.seen] == ["GET", "PUT", "GET", "PUT"]
    assert fake.seen[1].headers["if-none-match"] == "*" and fake.seen[1].body == b"1"
    assert fake.seen[3].headers["if-match"] == '"1"' and fake.seen[3].body == b"2"


# -- locks -------------------------------------------------------------------------------------------
def _lock(token: int = 9, lock_id: str = "L1", path: str = "a.txt") -> dict[str, Any]:
    return {"id": lock_id, "path": path, "token": token, "holder": "me", "reason": "r",
            "acquired_at": "t", "expires_at": "t"}


def test_lock_helper_renews_in_the_background_and_releases(fake: FakeApi) -> None:
    """GIVEN a 1 s TTL WHEN a block holds the lock for 1.2 s THEN it is renewed about every third
    of the TTL, the token is the grant's, and the lock is released on exit."""
    fake.route = lambda seen: (Reply(201, _lock()) if seen.path.endswith("/locks")
                               else Reply(200, _lock()) if seen.path.endswith("/renew") else Reply(204))
    with make_client(fake).workspace("w").lock("a.txt", ttl=1, reason="r") as lock:
        assert lock.token == 9
        time.sleep(1.2)
        lock.check()
    methods = [(s.method, s.path.rsplit("/", 1)[-1]) for s in fake.seen]
    assert methods[0] == ("POST", "locks") and methods[-1] == ("DELETE", "L1")
    renews = methods.count(("POST", "renew"))
    assert 2 <= renews <= 4, methods
    assert fake.seen[0].json() == {"path": "a.txt", "ttl_seconds": 1, "reason": "r", "wait_seconds": 0}


def test_a_refused_renew_raises_lock_lost_on_check_and_on_exit(fake: FakeApi) -> None:
    """GIVEN a renew answered 410 lock_gone WHEN the block checks the lock and ends
    THEN check() and the exit raise LockLost, and no release is attempted."""
    fake.route = lambda seen: (Reply(201, _lock()) if seen.path.endswith("/locks")
                               else error(410, "lock_gone"))
    with pytest.raises(LockLost), make_client(fake).workspace("w").lock("a.txt", ttl=1) as lock:
        deadline = time.monotonic() + 3
        while not lock.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LockLost):
            lock.check()
    assert not any(s.method == "DELETE" for s in fake.seen)


def test_lock_waits_after_423_until_granted_or_gives_up(fake: FakeApi) -> None:
    """GIVEN a lock held by someone else WHEN acquiring with wait THEN the client retries after
    Retry-After and gets the lock; with no wait it raises Locked with the holder at once."""
    sleeps = Sleeps()
    busy = error(423, "locked", headers={"Retry-After": "0"}, holder="bob", expires_at="t")
    fake.queue(busy, Reply(201, _lock(token=12)))
    client = make_client(fake, sleeps=sleeps)
    assert client.workspace("w").locks.acquire("a.txt", wait=5).token == 12
    assert len(sleeps.waits) == 1 and fake.seen[0].json()["wait_seconds"] == pytest.approx(5, abs=0.5)
    fake.queue(busy)
    with pytest.raises(Locked) as caught:
        client.workspace("w").locks.acquire("a.txt")
    assert caught.value.holder == "bob"



def test_several_paths_are_locked_all_or_nothing_with_a_token_each(fake: FakeApi) -> None:
    """GIVEN a batch grant of a subtree lock and a file lock WHEN holding both in one block
    THEN one batch request takes them, token_for() finds the covering lock's token (a subtree covers
    the files under it), and both are released."""
    grant = {"locks": [_lock(token=3, lock_id="L1", path="out/"), _lock(token=4, lock_id="L2", path="a.txt")]}
    fake.route = lambda seen: Reply(201, grant) if seen.path.endswith("/locks/batch") else Reply(204)
    with make_client(fake).workspace("w").lock(["out/", "a.txt"], ttl=30) as held:
        assert held.token_for("out/x/y.md") == 3 and held.token_for("a.txt") == 4
        assert held.tokens == {"out/": 3, "a.txt": 4}
        with pytest.raises(KeyError):
            held.token_for("b.txt")
        with pytest.raises(ValueError, match="token_for"):
            _ = held.token
    assert fake.seen[0].json()["paths"] == ["out/", "a.txt"]
    assert sorted(s.path.rsplit("/", 1)[-1] for s in fake.seen if s.method == "DELETE") == ["L1", "L2"]

# -- tasks and pages ---------------------------------------------------------------------------------
def test_claim_returns_none_on_204_and_the_task_otherwise(fake: FakeApi) -> None:
    """GIVEN an empty queue, then one task WHEN claiming twice THEN None, then the task."""
    fake.queue(Reply(204), Reply(200, {"id": "t1", "title": "x", "status": "claimed", "payload": {"n": 1},
                                       "unknown_field": True}))
    tasks = make_client(fake).workspace("w").tasks
    assert tasks.claim("q", kinds=["k"]) is None
    task = tasks.claim("q")
    assert task is not None and task.id == "t1" and task.payload == {"n": 1} and task.raw["unknown_field"]
    assert fake.seen[0].json() == {"queue": "q", "kinds": ["k"]}


def test_page_all_follows_next_cursors(fake: FakeApi) -> None:
    """GIVEN a list served in two pages WHEN iterating all() THEN both pages' items come, in order."""
    fake.queue(Reply(200, {"results": [{"path": "a"}], "next": "c1"}),
               Reply(200, {"results": [{"path": "b"}], "next": None}))
    page = make_client(fake).workspace("w").tree("dir/", limit=1)
    assert [e.path for e in page] == ["a"]
    assert [e.path for e in page.all()] == ["a", "b"]
    assert fake.seen[1].query == {"prefix": ["dir/"], "limit": ["1"], "cursor": ["c1"]}


# -- streams -----------------------------------------------------------------------------------------
def _event(seq: int) -> dict[str, Any]:
    return {"seq": seq, "type": "file.written", "actor": "a", "on_behalf_of": None, "workspace": "w",
            "target": "a.txt", "data": {}, "at": "t"}


def test_events_fall_back_to_polling_when_the_websocket_is_refused(fake: FakeApi) -> None:
    """GIVEN a server that refuses WebSocket upgrades and serves overlapping pages of events
    WHEN iterating ws.events(after=1) THEN it polls from the last seq and yields each seq once."""
    pages = [[_event(2), _event(3)], [_event(3), _event(4)], []]

    def route(seen: Seen) -> Reply:
        if seen.path.startswith("/ws/"):
            return error(404, "not_found")
        return Reply(200, {"results": pages.pop(0) if pages else [], "next": None})

    fake.route = route
    with make_client(fake).workspace("w").events(after=1, idle_timeout=0.6, poll_interval=0.05) as stream:
        seqs = [event.seq for event in stream]
    assert seqs == [2, 3, 4]
    assert stream.mode == "polling" and stream.last == 4
    polls = [s.query["after"] for s in fake.seen if s.path.endswith("/events")]
    assert polls[:3] == [["1"], ["3"], ["4"]]



def test_a_polling_stream_outlives_a_server_outage(fake: FakeApi) -> None:
    """GIVEN a polling stream whose server answers 503 to every list request for a while
    WHEN the outage ends THEN the stream carries on from where it was instead of raising."""
    outage = {"left": 4}

    def route(seen: Seen) -> Reply:
        if seen.path.startswith("/ws/"):
            return error(404, "not_found")
        if outage["left"]:
            outage["left"] -= 1
            return error(503, "unavailable")
        after = int(seen.query["after"][0])
        return Reply(200, {"results": [_event(s) for s in range(after + 1, 4)], "next": None})

    fake.route = route
    stream = make_client(fake, attempts=2).workspace("w").events(after=0, idle_timeout=5, poll_interval=0.05,
                                                                  backoff_max=0.05)
    with stream:
        assert [e.seq for e in take_events(stream, 3)] == [1, 2, 3]
    assert outage["left"] == 0


def take_events(stream: Any, count: int) -> list[Any]:
    items = []
    for item in stream:
        items.append(item)
        if len(items) == count:
            break
    return items


def test_a_topic_stream_starts_from_the_beginning_and_resumes_after_the_last_offset(fake: FakeApi) -> None:
    """GIVEN a topic whose WebSocket is refused WHEN streaming with no `after` THEN the first poll asks
    for the whole log (no `after`, so a log starting at offset 0 loses nothing) and later polls resume
    after the last offset yielded."""
    log = [{"offset": n, "key": None, "body": {"n": n}, "published_at": "t"} for n in range(3)]

    def route(seen: Seen) -> Reply:
        if seen.path.startswith("/ws/"):
            return error(404, "not_found")
        after = int(seen.query["after"][0]) if "after" in seen.query else -1
        return Reply(200, {"results": [m for m in log if m["offset"] > after], "next": None})

    fake.route = route
    client = make_client(fake)
    with client.topic_stream("w", "jobs", idle_timeout=0.5, poll_interval=0.05) as stream:
        bodies = [m.body for m in take_events(stream, 3)]
        log.append({"offset": 3, "key": "k", "body": {"n": 3}, "published_at": "t"})
        late = take_events(stream, 1)
    assert bodies == [{"n": 0}, {"n": 1}, {"n": 2}] and [m.key for m in late] == ["k"]
    polls = [s for s in fake.seen if s.path.endswith("/topics/jobs/messages")]
    assert "after" not in polls[0].query and {p.query["after"][0] for p in polls[1:]} == {"2"}

# -- the README's worker -------------------------------------------------------------------------------
def test_the_worker_example_claims_reads_locks_writes_logs_and_completes(fake: FakeApi,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN one queued task whose input is inbox/a.txt WHEN examples/worker_agent.py runs
    THEN it claims the task, reads the input for the task, writes the output under its lock's token,
    releases the lock, logs, completes with the output path, and stops when the queue is empty."""
    import importlib.util

    claims = [Reply(200, {"id": "t1", "status": "claimed", "payload": {"input": "inbox/a.txt"}}), Reply(204)]
    base = "/api/v1/workspaces/w"
    routes = {
        ("GET", f"{base}/files/inbox/a.txt"): Reply(200, b"three little words", {"X-Version": "2"}),
        ("POST", f"{base}/locks"): Reply(201, _lock(path="output/a.txt.summary")),
        ("PUT", f"{base}/files/output/a.txt.summary"): Reply(201, {**WRITTEN, "version": 1}),
        ("DELETE", f"{base}/locks/L1"): Reply(204),
        ("POST", f"{base}/worklog"): Reply(201, {"seq": 1, "hash": "h", "message": "m"}),
        ("POST", f"{base}/tasks/t1/complete"): Reply(200, {"id": "t1", "status": "done"}),
    }
    fake.route = lambda seen: claims.pop(0) if seen.path.endswith("/claim") else routes[(seen.method, seen.path)]
    monkeypatch.setenv("SWITCHYARD_URL", fake.url)
    monkeypatch.setenv("SWITCHYARD_TOKEN", "tok")
    monkeypatch.setenv("SWITCHYARD_WS", "w")
    spec = importlib.util.spec_from_file_location("worker_agent", ROOT / "examples" / "worker_agent.py")
    assert spec is not None and spec.loader is not None
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.main(idle=0)
    calls = [(s.method, s.path.removeprefix(base)) for s in fake.seen]
    assert calls == [("POST", "/tasks/claim"), ("GET", "/files/inbox/a.txt"), ("POST", "/locks"),
                     ("PUT", "/files/output/a.txt.summary"), ("DELETE", "/locks/L1"), ("POST", "/worklog"),
                     ("POST", "/tasks/t1/complete"), ("POST", "/tasks/claim")]
    read, _, write = fake.seen[1:4]
    assert read.headers["x-task-id"] == write.headers["x-task-id"] == "t1"
    assert write.headers["x-lock-token"] == "9" and write.body == b"3 words\n"
    assert fake.seen[6].json() == {"result": {"version": 1}, "outputs": ["output/a.txt.summary"]}
