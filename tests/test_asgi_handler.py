"""The ASGI handler: Django's request handling on one thread per request, with request threads
reused instead of started (and joined) for every request."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from asgiref.testing import ApplicationCommunicator

from switchyard.asgi_handler import SyncChainASGIHandler, _ExecutorPool


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": [(b"host", b"testserver"), *(headers or [])],
            "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}


async def _request(app, method: str, path: str, body: bytes = b"", headers=None) -> tuple[int, dict, bytes]:
    communicator = ApplicationCommunicator(app, _scope(method, path, headers))
    await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await communicator.receive_output(10)
    chunks = []
    while True:
        message = await communicator.receive_output(10)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await communicator.wait(10)
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, b"".join(chunks)


@pytest.mark.django_db(transaction=True)
def test_requests_go_through_the_whole_middleware_chain_and_reuse_request_threads(monkeypatch):
    """GIVEN the handler WHEN thirty requests come one after another (an unauthenticated API call,
    a POST with a JSON body, an unknown URL) THEN each gets Django's full answer (the API's error
    body, our security headers and request id) and they are served by one reused request thread
    rather than a new thread each (and a joining thread at its end)."""
    app = SyncChainASGIHandler()

    async def run() -> list[tuple[int, dict, bytes]]:
        out = []
        for i in range(10):
            out.append(await _request(app, "GET", "/api/v1/me"))
            out.append(await _request(app, "POST", "/api/v1/workspaces", json.dumps({"name": f"w{i}"}).encode(),
                                      [(b"content-type", b"application/json")]))
            out.append(await _request(app, "GET", "/no/such/page/"))
            await asyncio.sleep(0.01)  # let the pool take the idle executor back
        return out

    asyncio.run(_request(app, "GET", "/api/v1/me"))  # whatever starts once per process has started
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    responses = asyncio.run(run())
    for status, headers, body in responses[0::3] + responses[1::3]:
        assert status == 401
        assert json.loads(body)["error"]["code"] == "not_authenticated"
        assert headers["x-content-type-options"] == "nosniff" and headers["x-request-id"]
    assert all(status == 404 for status, _, _ in responses[2::3])
    # A request may find the previous one's executor not yet idle: three back to back start at most
    # three threads. Django's own handler starts two per request (its thread and one to join it).
    assert len(started) <= 3, started
    assert 1 <= len(app.executors) <= 3


def test_an_executor_still_busy_is_not_handed_to_the_next_request():
    """GIVEN a request thread still running a view whose client went away WHEN the request ends
    THEN its executor goes back to the pool only after that work has finished, so nobody else's
    request queues behind it."""
    pool = _ExecutorPool(keep=4)
    executor = pool.take()
    release = threading.Event()
    executor.submit(release.wait, 10)
    pool.give(executor)
    time.sleep(0.1)
    assert len(pool) == 0
    assert pool.take() is not executor
    release.set()
    deadline = time.monotonic() + 5
    while len(pool) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert pool.take() is executor


def test_the_pool_keeps_at_most_its_size():
    """GIVEN a pool that keeps two WHEN three idle executors come back THEN two are kept and the
    third is shut down."""
    pool = _ExecutorPool(keep=2)
    executors = [pool.take() for _ in range(3)]
    for executor in executors:
        pool.give(executor)
    deadline = time.monotonic() + 5
    while len(pool) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(pool) == 2
    shut = [e for e in executors if e._shutdown]
    assert len(shut) == 1


@pytest.mark.django_db(transaction=True)
def test_a_requests_announcements_go_to_the_publisher_after_its_response(monkeypatch, make_user):
    """GIVEN the handler WHEN a request records events (creating a workspace, then a file) THEN
    its announcements reach the publisher thread only once the whole response has been sent, in
    the order they were recorded; outside a request they are handed over at once."""
    from workspace.services import events

    owner = make_user("hana")
    handed: list[tuple[str, int]] = []
    communicators: list[ApplicationCommunicator] = []
    monkeypatch.setattr(events._publisher, "send",
                        lambda channel, data: handed.append((channel, communicators[-1].output_queue.qsize())))
    app = SyncChainASGIHandler()
    payload = json.dumps({"name": "held"}).encode()
    headers = [(b"authorization", f"Bearer {owner.token}".encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode())]

    async def run() -> tuple[int, bytes]:
        communicator = ApplicationCommunicator(app, _scope("POST", "/api/v1/workspaces", headers))
        communicators.append(communicator)
        await communicator.send_input({"type": "http.request", "body": payload})
        await communicator.wait(10)  # the app has finished: both response messages are queued
        start = await communicator.receive_output(1)
        body = await communicator.receive_output(1)
        return start["status"], body["body"]

    status, body = asyncio.run(run())
    assert status == 201, body
    assert handed, "the workspace's events were announced"
    assert all(queued == 2 for _, queued in handed), handed  # after the response start and body
    ws = json.loads(body)["id"]
    assert {channel for channel, _ in handed} == {f"switchyard__group__{events.events_group(ws)}"}

    handed.clear()
    communicators.append(ApplicationCommunicator(app, _scope("GET", "/")))  # nothing queued on it
    events.publish_to_channel_layer(events.events_group(ws), {"type": "event.message", "event": {"seq": 0}})
    assert handed == [(f"switchyard__group__{events.events_group(ws)}", 0)]


def test_held_announcements_are_handed_over_when_asked_and_at_release(monkeypatch):
    from workspace.services import events

    handed: list[str] = []
    monkeypatch.setattr(events._publisher, "send", lambda channel, data: handed.append(channel))

    def announce(name: str) -> None:
        events.publish_to_channel_layer(name, {"type": "event.message", "event": {"seq": 1}})

    token = events.hold_announcements()
    announce("one")
    assert handed == []
    events.send_held_announcements()
    assert [c.rsplit("__", 1)[1] for c in handed] == ["one"]
    announce("two")
    assert len(handed) == 1
    events.release_announcements(token)
    announce("three")
    assert [c.rsplit("__", 1)[1] for c in handed] == ["one", "two", "three"]


@pytest.mark.django_db(transaction=True)
def test_a_lock_request_that_waits_first_hands_over_what_it_announced(monkeypatch, make_user, database_to_itself):
    """GIVEN Ada's live lock on one path and her lock on another that is past its expiry (not yet
    swept) WHEN Bea asks for both, waiting, through the handler THEN her refusal records the
    expiry, and its announcement goes out before she waits, not when her request ends.

    The session's live server is stopped first (`database_to_itself`): its sweeper shares the
    test database and could expire the due lock before Bea's request does."""
    from datetime import timedelta

    from workspace.access import workspace_for
    from workspace.models import Lock, Role
    from workspace.services import events, lock_queue
    from workspace.services import locks as svc
    from workspace.services.workspaces import member_set, workspace_create

    ada, bea = make_user("ada"), make_user("bea")
    ws = workspace_create(user=ada.user, name="waits", intelligence=False)
    member_set(access=workspace_for(ada.user, ws.id), username="bea", role=Role.EDITOR)
    svc.lock_acquire(access=workspace_for(ada.user, ws.id), paths=["live.md"], ttl_seconds=60)
    due = svc.lock_acquire(access=workspace_for(ada.user, ws.id), paths=["due.md"], ttl_seconds=60)[0]
    Lock.objects.filter(pk=due.pk).update(expires_at=svc.db_now() - timedelta(seconds=1))

    handed: list[str] = []
    seen_at_wait: list[list[str]] = []
    monkeypatch.setattr(events._publisher, "send", lambda channel, data: handed.append(channel))

    async def fake_wait(key: str, timeout: float) -> None:
        seen_at_wait.append(list(handed))

    monkeypatch.setattr(lock_queue, "_wait_for_wake", fake_wait)
    payload = json.dumps({"paths": ["due.md", "live.md"], "wait_seconds": 0.2}).encode()
    headers = [(b"authorization", f"Bearer {bea.token}".encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode())]
    status, _, body = asyncio.run(_request(SyncChainASGIHandler(), "POST",
                                           f"/api/v1/workspaces/{ws.id}/locks/batch", payload, headers))
    assert status == 423, body
    assert Lock.objects.get(pk=due.pk).state == Lock.State.EXPIRED
    assert seen_at_wait, "the request waited"
    assert [c.rsplit("__", 1)[1] for c in seen_at_wait[0]] == [events.events_group(ws.id)], seen_at_wait[0]


class _CountingExecutor:
    """An executor that counts what is submitted to it (each `sync_to_async` hop is one)."""

    def __init__(self, executor) -> None:
        self.executor, self.submitted = executor, []

    def submit(self, fn, *args, **kwargs):
        self.submitted.append(getattr(fn, "__name__", repr(fn)))
        return self.executor.submit(fn, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.executor, name)


@pytest.mark.django_db(transaction=True)
def test_a_request_is_served_in_one_hop_and_closed_before_it_is_sent(monkeypatch, make_user):
    """GIVEN the handler WHEN an API request is served THEN request_started, the view and
    request_finished (which hands the database connection back) all run on the request's thread
    in one hop, request_finished before the response goes out; Django's handler makes three hops
    (the signal, the chain, the close), each costing the request a thread switch."""
    from django.core import signals
    from django.db import connection

    owner = make_user("ida")
    app = SyncChainASGIHandler()
    executors: list[_CountingExecutor] = []
    take = app.executors.take

    def counting_take():
        executors.append(_CountingExecutor(take()))
        return executors[-1]

    monkeypatch.setattr(app.executors, "take", counting_take)
    monkeypatch.setattr(app.executors, "give", lambda executor: None)
    seen: list[tuple[str, int, bool]] = []
    communicators: list[ApplicationCommunicator] = []

    def started(**kwargs):
        seen.append(("started", threading.get_ident(), communicators[-1].output_queue.qsize()))

    def finished(**kwargs):
        seen.append(("finished", threading.get_ident(), communicators[-1].output_queue.qsize(),
                     connection.connection is None))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    views: list[int] = []
    from agents import api as agents_api

    real_get = agents_api.MeView.get
    monkeypatch.setattr(agents_api.MeView, "get", lambda self, request: views.append(threading.get_ident())
                        or real_get(self, request))
    try:
        async def run():
            communicator = ApplicationCommunicator(app, _scope("GET", "/api/v1/me", [
                (b"authorization", f"Bearer {owner.token}".encode())]))
            communicators.append(communicator)
            await communicator.send_input({"type": "http.request", "body": b""})
            await communicator.wait(10)
            return (await communicator.receive_output(1))["status"]

        assert asyncio.run(run()) == 200
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert [name for name, *_ in seen] == ["started", "finished"]
    (_, started_on, queued_at_start), (_, finished_on, queued_at_finish, connection_closed) = seen
    assert started_on == finished_on == views[0]
    assert queued_at_start == queued_at_finish == 0  # nothing sent before the close
    assert connection_closed
    assert len(executors[0].submitted) == 1, executors[0].submitted


@pytest.mark.django_db(transaction=True)
def test_a_streamed_response_is_closed_after_it_has_been_sent(monkeypatch):
    """GIVEN a view that streams its response (as a static file is) WHEN it is served THEN the
    response is closed (request_finished) only after its last chunk has gone out."""
    from django.core import signals
    from django.http import StreamingHttpResponse

    async def chunks():
        yield b"one"
        yield b"two"

    app = SyncChainASGIHandler()
    monkeypatch.setattr(app, "_sync_chain", lambda request: StreamingHttpResponse(chunks()))
    communicators: list[ApplicationCommunicator] = []
    finished_at: list[int] = []

    def finished(**kwargs):
        finished_at.append(communicators[-1].output_queue.qsize())

    signals.request_finished.connect(finished)
    try:
        async def run():
            communicator = ApplicationCommunicator(app, _scope("GET", "/streamed"))
            communicators.append(communicator)
            await communicator.send_input({"type": "http.request", "body": b""})
            await communicator.wait(10)
            return [await communicator.receive_output(1) for _ in range(4)]

        messages = asyncio.run(run())
    finally:
        signals.request_finished.disconnect(finished)
    assert b"".join(m.get("body", b"") for m in messages[1:]) == b"onetwo"
    assert finished_at == [4]  # the start, two chunks and the closing message were all sent
