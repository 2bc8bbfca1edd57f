"""Waiting for a lock against the live server: first come, first served across processes, no
overtaking by requests that do not wait, timeouts, disconnects, expiry hand-over, and batches
taken in opposite orders without deadlock."""
from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.test_locks_support import all_events, check_lock_log, make_team, parse_time, ws_url


@pytest.fixture
def team(live, make_user, make_agent):
    team = make_team(live, make_user, make_agent, agents=("ada", "bert", "cy", "dot", "eve", "fay", "gus"))
    yield team
    team.close()


def queued() -> int:
    from workspace.models import LockWaiter

    return LockWaiter.objects.count()


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_waiters_are_served_first_come_first_served(team, live):
    """GIVEN ada holding a file and six agents queuing for it one after another WHEN ada releases
    THEN they get it in the order they asked, each with a larger token than the one before."""
    held = team.ada.post(ws_url(team.ws, "/locks"), json={"path": "hot.txt", "ttl_seconds": 60}).json()
    waiters = ["bert", "cy", "dot", "eve", "fay", "gus"]
    grants: list[tuple[str, int]] = []
    guard = threading.Lock()

    def wait_for_it(name: str) -> None:
        with live.client(team.accounts[name].token) as client:
            response = client.post(ws_url(team.ws, "/locks"), json={"path": "hot.txt", "wait_seconds": 30})
            assert response.status_code == 201, response.text
            with guard:
                grants.append((name, response.json()["token"]))
            time.sleep(0.05)
            assert client.delete(ws_url(team.ws, f"/locks/{response.json()['id']}")).status_code == 204

    threads = []
    for position, name in enumerate(waiters, start=1):
        thread = threading.Thread(target=wait_for_it, args=(name,))
        thread.start()
        threads.append(thread)
        wait_until(lambda position=position: queued() == position, what=f"{name} to queue")
    assert team.ada.delete(ws_url(team.ws, f"/locks/{held['id']}")).status_code == 204
    for thread in threads:
        thread.join(timeout=30)
    assert [name for name, _ in grants] == waiters
    tokens = [token for _, token in grants]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    assert queued() == 0
    check_lock_log(all_events(team.owner, team.ws))


def test_requests_that_do_not_wait_cannot_overtake_a_queued_waiter(team, live):
    """GIVEN ada holding docs/x and bert queued for the whole docs/ subtree WHEN a stream of other
    requests asks for free paths inside docs/ THEN each is refused (they would starve bert), and
    bert gets docs/ as soon as ada releases."""
    held = team.ada.post(ws_url(team.ws, "/locks"), json={"path": "docs/x.md"}).json()
    outcome: dict[str, Any] = {}

    def bert_waits() -> None:
        with live.client(team.accounts["bert"].token) as client:
            started = time.monotonic()
            response = client.post(ws_url(team.ws, "/locks"), json={"path": "docs/", "wait_seconds": 20})
            outcome["response"], outcome["waited"] = response, time.monotonic() - started

    thread = threading.Thread(target=bert_waits)
    thread.start()
    wait_until(lambda: queued() == 1, what="bert to queue")
    for i in range(10):
        refused = team.cy.post(ws_url(team.ws, "/locks"), json={"path": f"docs/free{i}.md"})
        assert refused.status_code == 423, refused.text
        assert refused.json()["error"]["waiting"] == 1 and refused.headers["Retry-After"] == "1"
    # Beside the queued subtree nothing is held back.
    assert team.cy.post(ws_url(team.ws, "/locks"), json={"path": "elsewhere.md"}).status_code == 201
    released_at = time.monotonic()
    assert team.ada.delete(ws_url(team.ws, f"/locks/{held['id']}")).status_code == 204
    thread.join(timeout=30)
    assert outcome["response"].status_code == 201, outcome["response"].text
    assert outcome["response"].json()["path"] == "docs/"
    assert time.monotonic() - released_at < 2.0


def test_a_wait_that_runs_out_is_a_423_and_leaves_the_queue(team):
    """GIVEN a held lock WHEN another agent waits 0.6 s for it THEN it gets 423 (with holder and
    Retry-After) after about that long, and its place in the queue is gone."""
    team.ada.post(ws_url(team.ws, "/locks"), json={"path": "slow.txt", "ttl_seconds": 30})
    started = time.monotonic()
    response = team.bert.post(ws_url(team.ws, "/locks"), json={"path": "slow.txt", "wait_seconds": 0.6})
    waited = time.monotonic() - started
    assert response.status_code == 423 and response.json()["error"]["holder"] == "ada"
    assert 0.55 <= waited < 3.0, waited
    assert 20 <= int(response.headers["Retry-After"]) <= 30
    assert queued() == 0
    assert team.cy.post(ws_url(team.ws, "/locks"), json={"path": "free.txt"}).status_code == 201


def test_a_waiter_with_an_idempotency_key_is_served_in_turn_and_its_retry_replays(team):
    """GIVEN ada's lock WHEN bert waits for it with an Idempotency-Key (his tries then run inside
    the key's transaction, so his refusal cannot keep his place: he queues on his own) and ada
    releases THEN he gets the lock, the queue is empty, and his retry with the same key replays
    the same grant without taking another."""
    held = team.ada.post(ws_url(team.ws, "/locks"), json={"path": "keyed.txt", "ttl_seconds": 30}).json()
    headers = {"Idempotency-Key": "wait-for-keyed-1"}
    body = {"path": "keyed.txt", "wait_seconds": 20}
    result: dict[str, httpx.Response] = {}
    waiter = threading.Thread(target=lambda: result.update(
        first=team.bert.post(ws_url(team.ws, "/locks"), json=body, headers=headers)))
    waiter.start()
    wait_until(lambda: queued() == 1, what="bert to queue")
    assert team.ada.delete(ws_url(team.ws, f"/locks/{held['id']}")).status_code == 204
    waiter.join(timeout=20)
    first = result["first"]
    assert first.status_code == 201 and first.json()["holder"] == "bert", first.text
    assert queued() == 0
    again = team.bert.post(ws_url(team.ws, "/locks"), json=body, headers=headers)
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    holders = [e["data"]["holder"] for e in all_events(team.owner, team.ws, types="lock.acquired")]
    assert holders == ["ada", "bert"]


def test_a_client_that_disconnects_while_waiting_leaves_the_queue(team, live):
    """GIVEN bert waiting up to 20 s for ada's lock WHEN bert's connection drops after 0.5 s THEN
    his place in the queue is removed at once, so after ada releases a request that does not
    wait gets the lock, and bert never holds it."""
    held = team.ada.post(ws_url(team.ws, "/locks"), json={"path": "gone.txt", "ttl_seconds": 30}).json()
    with live.client(team.accounts["bert"].token, timeout=0.5) as impatient, pytest.raises(httpx.TimeoutException):
        impatient.post(ws_url(team.ws, "/locks"), json={"path": "gone.txt", "wait_seconds": 20})
    wait_until(lambda: queued() == 0, timeout=2.0, what="the disconnected waiter to leave the queue")
    assert team.ada.delete(ws_url(team.ws, f"/locks/{held['id']}")).status_code == 204
    taken = team.cy.post(ws_url(team.ws, "/locks"), json={"path": "gone.txt"})
    assert taken.status_code == 201 and taken.json()["holder"] == "cy"
    time.sleep(0.5)
    holders = [e["data"]["holder"] for e in all_events(team.owner, team.ws, types="lock.acquired")]
    assert holders == ["ada", "cy"]


def test_a_waiter_gets_a_crashed_holders_lock_at_its_expiry_not_before(team):
    """GIVEN ada's 1 s lock that is never released WHEN bert waits for it THEN bert gets it right
    after ada's expiry (on the database clock), not before."""
    held = team.ada.post(ws_url(team.ws, "/locks"), json={"path": "crash.txt", "ttl_seconds": 1}).json()
    response = team.bert.post(ws_url(team.ws, "/locks"), json={"path": "crash.txt", "wait_seconds": 10})
    assert response.status_code == 201, response.text
    gap = (parse_time(response.json()["acquired_at"]) - parse_time(held["expires_at"])).total_seconds()
    assert 0 <= gap < 0.5, gap
    events = all_events(team.owner, team.ws)
    assert [e["type"] for e in events if e["type"].startswith("lock.")] == \
        ["lock.acquired", "lock.expired", "lock.acquired"]
    check_lock_log(events)


def test_batches_in_opposite_orders_never_deadlock(team, live):
    """GIVEN two agents that batch-lock the same four paths, one in order and one reversed WHEN
    they do it 15 times each at once, waiting as needed THEN every round is granted within its
    wait, and the log shows they never held them at the same time."""
    paths = [f"shared/{c}.txt" for c in "abcd"]
    rounds = 15
    failures: list[str] = []

    def agent(name: str, order: list[str]) -> None:
        with live.client(team.accounts[name].token) as client:
            for i in range(rounds):
                response = client.post(ws_url(team.ws, "/locks/batch"),
                                       json={"paths": order, "wait_seconds": 10, "ttl_seconds": 10, "reason": f"r{i}"})
                if response.status_code != 201:
                    failures.append(f"{name} round {i}: {response.status_code} {response.text}")
                    return
                token = response.json()["locks"][0]["token"]
                written = client.put(ws_url(team.ws, f"/files/{order[0]}"), content=f"{name} {i}".encode(),
                                     headers={"X-Lock-Token": str(token)})
                if written.status_code not in (200, 201):
                    failures.append(f"{name} round {i} write: {written.status_code} {written.text}")
                for held in response.json()["locks"]:
                    client.delete(ws_url(team.ws, f"/locks/{held['id']}"))

    started = time.monotonic()
    threads = [threading.Thread(target=agent, args=("ada", paths)),
               threading.Thread(target=agent, args=("bert", list(reversed(paths))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert time.monotonic() - started < 60
    report = check_lock_log(all_events(team.owner, team.ws))
    assert report.grants == 2 * rounds * len(paths)
    assert report.fenced_writes == 2 * rounds


def _wait_connections(client: Any) -> int:
    import os

    name = f"switchyard-lock-wait-{os.getpid()}"
    return sum(1 for entry in client.client_list() if entry.get("name") == name)


def _wait_connections_settled(client: Any, expected: int, *, within: float = 2.0) -> int:
    """The count once Redis has seen the closes: a client's close reaches the server after
    `aclose()` returns, so CLIENT LIST may still show it for a moment. A leak stays."""
    deadline = time.monotonic() + within
    while (count := _wait_connections(client)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def test_waits_on_the_server_loop_share_a_connection_and_other_loops_close_theirs(redis_server):
    """GIVEN the web server's event loop (marked at ASGI lifespan startup) WHEN twenty lock waits
    run on it one after another, each woken through Redis THEN they all use one pooled connection,
    which stays open until shutdown; waits on a loop made for one call close their connection."""
    import asyncio

    from workspace.redis import get_redis
    from workspace.services import lock_queue

    redis = get_redis()

    async def twenty_waits(*, server_loop: bool) -> float:
        if server_loop:
            lock_queue.wait_on_this_loop_with_a_shared_client()
        started = time.monotonic()
        for i in range(20):
            key = lock_queue._WAKE_KEY.format(ticket=f"test-{i}")
            redis.lpush(key, 1)
            await lock_queue._wait_for_wake(key, 5)
        return time.monotonic() - started

    async def on_server_loop() -> tuple[float, int]:
        took = await twenty_waits(server_loop=True)
        open_after = _wait_connections(redis)
        await lock_queue.close_this_loops_wait_client()  # as the lifespan does at shutdown
        return took, open_after

    took, open_after = asyncio.run(on_server_loop())
    assert took < 5 and open_after == 1  # woken each time, not timed out; one connection kept
    assert asyncio.run(twenty_waits(server_loop=False)) < 5
    assert _wait_connections_settled(redis, 0) == 0
