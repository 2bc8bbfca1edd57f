"""Consumer groups under fault injection: real consumer processes, some SIGKILLed mid-lease.

Each consumer process pulls, "works" briefly, acks, and appends what it did to its own log file
(`P <offsets>` after a pull, `A <offsets>` with the offsets the server confirmed acked). A victim is
told to freeze: after its next pull it stops (`H`) and is SIGKILLed holding that lease, which must
then come back to the others. Meanwhile the others hold back (between their batches), so that the
victim's next pull finds messages: otherwise they could drain the topic first.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import create_workspace
from tests.test_messages_api import add_member, events_of, topic_url

TOPIC, GROUP = "work", "crew"
VISIBILITY = 2
WORK_SECONDS = 0.03


def consume(base_url: str, token: str, ws: str, log_path: str, stop: Any, freeze: Any, hold: Any) -> None:
    """One consumer process (started with the spawn method, so it shares nothing with pytest).

    Like any real agent it retries what the API says to retry (429 and 503, after `Retry-After`) and
    a dropped connection; anything else ends it, with the reason in its log (`X ...`)."""
    import httpx

    url = f"{base_url}{topic_url(ws, TOPIC)}/groups/{GROUP}"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def call(api: httpx.Client, action: str, body: dict[str, Any]) -> dict[str, Any]:
        while True:
            try:
                response = api.post(f"{url}/{action}", json=body)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if response.status_code in (429, 503):
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            response.raise_for_status()
            return dict(response.json())

    try:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
            while not stop.is_set():
                if hold.is_set() and not freeze.is_set():
                    time.sleep(0.01)  # a victim is about to be frozen: let it pull first
                    continue
                pulled = call(api, "pull", {"max": 10, "visibility_seconds": VISIBILITY, "wait_seconds": 0.5})
                offsets = [m["offset"] for m in pulled["results"]]
                if not offsets:
                    continue
                os.write(fd, f"P {' '.join(map(str, offsets))}\n".encode())
                if freeze.is_set():
                    os.write(fd, b"H\n")
                    time.sleep(3600)  # hung mid-work, holding the lease, until the test kills it
                time.sleep(WORK_SECONDS)
                acked = call(api, "ack", {"offsets": offsets})["acked"]
                os.write(fd, f"A {' '.join(map(str, acked))}\n".encode())
    except Exception as exc:
        os.write(fd, f"X {exc!r}\n".replace("\n", " ").encode() + b"\n")
        raise


def _lines(path: Path) -> list[tuple[str, list[int]]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        kind, *numbers = line.split(" ")
        if kind == "X":
            raise AssertionError(f"a consumer failed: {line}")
        out.append((kind, [int(n) for n in numbers if n]))
    return out


def _publish_all(owner: Any, ws: str, count: int, keys: int) -> dict[int, str | None]:
    """Publish `count` messages through the service, in this process (setup, not the subject under
    test: the HTTP publish path has its own tests); returns offset -> key."""
    from workspace.access import workspace_for
    from workspace.services.messages import message_publish

    access = workspace_for(owner.user, ws)
    key_of: dict[int, str | None] = {}
    for i in range(count):
        key = None if i % 5 == 4 else f"k{i % keys}"
        key_of[message_publish(access=access, topic=TOPIC, body={"i": i}, key=key).offset] = key
    return key_of


def _run(live: Any, make_user: Any, make_agent: Any, tmp_path: Path, *, count: int, timeout: float) -> None:
    owner = make_user()
    agents = [make_agent() for _ in range(8)]
    with live.client(owner.token) as api:
        ws = create_workspace(api, "crew")
        for agent in agents:
            add_member(api, ws, agent.username, "editor")
        key_of = _publish_all(owner, ws, count, keys=32)
        assert sorted(key_of) == list(range(1, count + 1))

        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        freeze = [ctx.Event() for _ in range(8)]
        hold = ctx.Event()
        logs = [tmp_path / f"consumer-{i}.log" for i in range(8)]
        procs = [ctx.Process(target=consume, args=(live.url, agents[i].token, ws, str(logs[i]), stop, freeze[i], hold),
                             daemon=True) for i in range(8)]
        for proc in procs:
            proc.start()
        last_leases: dict[int, list[int]] = {}  # victim -> the batch it had pulled when it died
        deadline = time.monotonic() + timeout
        try:
            # Kill 3 consumers at different points, each frozen right after a pull, holding its lease.
            for victim, share in zip((1, 4, 6), (0.15, 0.35, 0.55), strict=True):
                while sum(len(o) for k, o in _all(logs) if k == "A") < share * count:
                    assert time.monotonic() < deadline, "consumers made no progress"
                    time.sleep(0.02)
                hold.set()
                freeze[victim].set()
                while not _lines(logs[victim]) or _lines(logs[victim])[-1][0] != "H":
                    assert procs[victim].is_alive(), f"consumer {victim} died: {logs[victim].read_text()[-500:]}"
                    assert time.monotonic() < deadline, (
                        f"consumer {victim} never pulled again: "
                        f"{api.get(f'{topic_url(ws, TOPIC)}/groups/{GROUP}').json()}, "
                        f"{sum(len(o) for k, o in _all(logs) if k == 'A')} acked")
                    time.sleep(0.01)
                os.kill(procs[victim].pid, signal.SIGKILL)
                procs[victim].join(10)
                hold.clear()
                last_leases[victim] = _lines(logs[victim])[-2][1]
            while True:
                state = api.get(f"{topic_url(ws, TOPIC)}/groups/{GROUP}").json()
                if state["backlog"] == 0:
                    break
                assert time.monotonic() < deadline, f"not drained: {state}"
                time.sleep(0.2)
        finally:
            stop.set()
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()

        # Per-key order, from the server's event log: a keyed message is only pulled while it is the
        # oldest unacked message of its key, and the acks of a key come in offset order.
        pending: dict[str, list[int]] = defaultdict(list)
        for offset in sorted(key_of):
            if key_of[offset] is not None:
                pending[key_of[offset]].append(offset)
        events = [e for e in events_of(api, ws, "message.pulled,message.acked,message.redelivered")
                  if e["data"]["group"] == GROUP]
        deliveries: dict[int, int] = defaultdict(int)
        acked_by: dict[int, list[str]] = defaultdict(list)
        for event in events:
            for offset in event["data"]["offsets"]:
                key = key_of[offset]
                if event["type"] == "message.pulled":
                    deliveries[offset] += 1
                    assert key is None or pending[key][0] == offset, (key, offset, pending[key][:3])
                elif event["type"] == "message.acked":
                    acked_by[offset].append(event["actor"])
                    if key is not None:
                        assert pending[key][0] == offset, (key, offset, pending[key][:3])
                        pending[key].pop(0)
        assert not any(pending.values())

        # Every message acked exactly once, none lost; what each consumer was told agrees.
        assert sorted(acked_by) == sorted(key_of)
        assert all(len(actors) == 1 for actors in acked_by.values())
        told = [o for kind, offsets in _all(logs) if kind == "A" for o in offsets]
        assert len(told) == len(set(told)) and set(told) <= set(key_of)

        # What each victim held when it died came back to, and was acked by, the others.
        stranded = [o for batch in last_leases.values() for o in batch]
        assert len(last_leases) == 3 and stranded
        assert all(acked_by[o] != [agents[i].username] for i, batch in last_leases.items() for o in batch)
        redelivered = {o for e in events if e["type"] == "message.redelivered" for o in e["data"]["offsets"]}
        assert all(deliveries[o] >= 2 for o in stranded) and set(stranded) <= redelivered

        # A second group on the same topic sees every message too.
        seen: list[int] = []
        while len(seen) < count:
            response = api.post(f"{topic_url(ws, TOPIC)}/groups/audit/pull", json={"max": 100, "wait_seconds": 1})
            batch = [m["offset"] for m in response.json()["results"]]
            assert batch, f"audit group stalled after {len(seen)}"
            seen += batch
            api.post(f"{topic_url(ws, TOPIC)}/groups/audit/ack", json={"offsets": batch}).raise_for_status()
        assert sorted(seen) == sorted(key_of)


def _all(logs: list[Path]) -> list[tuple[str, list[int]]]:
    return [line for path in logs for line in _lines(path)]


def test_eight_consumers_drain_a_topic_while_three_are_killed(live, make_user, make_agent, tmp_path):
    """GIVEN 300 keyed messages and 8 consumer processes in one group WHEN 3 of them are SIGKILLed while
    holding leases THEN every message is acked exactly once, none is lost, what the victims held is
    redelivered, per-key order holds throughout, and a second group sees all 300 too."""
    _run(live, make_user, make_agent, tmp_path, count=300, timeout=120)


@pytest.mark.slow
def test_eight_consumers_drain_2000_messages_while_three_are_killed(live, make_user, make_agent, tmp_path):
    """GIVEN 2,000 keyed messages and 8 consumer processes in one group WHEN 3 of them are SIGKILLed while
    holding leases THEN every message is acked exactly once, none is lost, per-key order holds, and a second
    group sees all 2,000 too."""
    _run(live, make_user, make_agent, tmp_path, count=2000, timeout=600)
