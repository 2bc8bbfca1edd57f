"""The Python client against the live server for locks, tasks (with the README's worker) and
messages.

Every path used here is part of API.md and routed by the server, so each test runs (and can fail).
"""
from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchyard.client import (
    Client,
    Forbidden,
    Locked,
    LockLost,
    NotClaimant,
    StaleInputs,
    StaleLockToken,
    Workspace,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def owner(make_user: Any) -> Any:
    return make_user("olga")


@pytest.fixture
def agent(make_agent: Any, owner: Any) -> Any:
    return make_agent("a1", created_by=owner.user)


@pytest.fixture
def clients(live: Any, owner: Any, agent: Any) -> Iterator[tuple[Client, Client]]:
    with Client(live.url, owner.token) as mine, Client(live.url, agent.token) as theirs:
        yield mine, theirs


@pytest.fixture
def pair(clients: tuple[Client, Client], agent: Any) -> tuple[Workspace, Workspace]:
    """The same workspace as seen by its owner and by an agent with the editor role."""
    mine, theirs = clients
    ws = mine.workspaces.create("features", intelligence=False)
    ws.members.set(agent.username, "editor")
    return ws, theirs.workspace(ws.id)


def test_held_lock_is_renewed_fences_writes_and_is_released(pair: tuple[Workspace, Workspace]) -> None:
    """GIVEN the owner holding a 2 s lock in a `with` block for 3 s WHEN it and an agent write the path
    THEN the lock outlives its TTL by renewal, the owner writes with its token (and gets StaleLockToken
    without it), the agent gets Locked naming the owner, and after the block the agent can write."""
    ws, theirs = pair
    with ws.lock("a.txt", ttl=2, reason="editing") as lock:
        assert ws.write("a.txt", "1", lock_token=lock.token).version == 1
        with pytest.raises(Locked) as blocked:
            theirs.write("a.txt", "2")
        assert blocked.value.holder == "olga" and blocked.value.retry_after is not None
        with pytest.raises(StaleLockToken):
            ws.write("a.txt", "3")
        time.sleep(3)
        lock.check()
        assert ws.write("a.txt", "4", lock_token=lock.token).version == 2
        assert [held.path for held in ws.locks.list()] == ["a.txt"]
    assert list(ws.locks.list()) == []
    assert theirs.write("a.txt", "5").version == 3


def test_a_waiter_gets_the_lock_on_release_and_an_unrenewed_lock_is_lost(
        pair: tuple[Workspace, Workspace]) -> None:
    """GIVEN the owner holding a lock WHEN the agent asks for it with wait=10 and the owner releases after
    1 s THEN the agent gets it with a larger fencing token; and a lock whose renewals never come in
    time raises LockLost when its block ends."""
    ws, theirs = pair
    got: dict[str, Any] = {}

    def wait_for_it() -> None:
        started = time.monotonic()
        with theirs.lock("b.txt", ttl=10, wait=10) as lock:
            got.update(waited=time.monotonic() - started, token=lock.token)

    with ws.lock("b.txt", ttl=10) as first:
        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        time.sleep(1)
    waiter.join(timeout=15)
    assert got["token"] > first.token and 0.5 < got["waited"] < 10
    with pytest.raises(LockLost), ws.lock("c.txt", ttl=1, renew_every=30):
        time.sleep(1.5)


def test_the_worker_example_runs_a_task_end_to_end(live: Any, pair: tuple[Workspace, Workspace], agent: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN a queued task naming an input file WHEN examples/worker_agent.py runs as the agent
    THEN the task is done with its output recorded, the output file holds the summary, and the
    worklog has the agent's entry for the task with an intact hash chain."""
    ws, _ = pair
    ws.write("inbox/a.txt", "three little words")
    task = ws.tasks.create("summarise a", "summary", payload={"input": "inbox/a.txt"})
    assert task.status == "queued"
    monkeypatch.setenv("SWITCHYARD_URL", live.url)
    monkeypatch.setenv("SWITCHYARD_TOKEN", agent.token)
    monkeypatch.setenv("SWITCHYARD_WS", ws.id)
    spec = importlib.util.spec_from_file_location("worker_agent", ROOT / "examples" / "worker_agent.py")
    assert spec is not None and spec.loader is not None
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.main(idle=0.5)
    done = ws.tasks.get(task.id)
    assert done.status == "done" and done.claimed_by == "a1" and done.outputs == ["output/a.txt.summary"]
    assert ws.read("output/a.txt.summary").content == b"3 words\n"
    entries = list(ws.worklog.list(task=task.id))
    assert [(e.author, e.message) for e in entries] == [("a1", "wrote output/a.txt.summary v1")]
    assert ws.worklog.verify().ok


def test_topic_publish_stream_pull_and_ack(clients: tuple[Client, Client], pair: tuple[Workspace, Workspace]) -> None:
    """GIVEN three published messages WHEN a topic stream starts from the beginning and a fourth is published,
    and a consumer group pulls and acks THEN the stream yields offsets 1-4 once each over the WebSocket,
    the group leases the three unkeyed messages with a delivery count, and after the ack nothing is left."""
    mine, _ = clients
    ws, theirs = pair
    topic = ws.topic("jobs")
    assert [topic.publish({"n": n}).offset for n in range(3)] == [1, 2, 3]
    with mine.topic_stream(ws.id, "jobs", idle_timeout=10) as stream:
        replayed = [next(stream) for _ in range(3)]
        topic.publish({"n": 3}, key="k")
        live_one = next(stream)
        assert stream.mode == "websocket"
    assert [m.offset for m in replayed + [live_one]] == [1, 2, 3, 4] and live_one.key == "k"
    assert [m.body for m in topic.read(after=2)] == [{"n": 2}, {"n": 3}]
    leased = theirs.topic("jobs").pull("g", max=3)
    assert [(m.offset, m.deliveries) for m in leased] == [(1, 1), (2, 1), (3, 1)]
    theirs.topic("jobs").ack("g", [m.offset for m in leased])
    assert [m.offset for m in theirs.topic("jobs").pull("g", max=10)] == [4]


@pytest.mark.slow  # the live workers load the embedding model and Chroma starts: a minute or more
def test_search_ask_and_index_state(chroma: str, clients: tuple[Client, Client]) -> None:
    """GIVEN a workspace with intelligence on and one file WHEN the index job has run THEN index_state()
    shows it indexed with the per-status counts, workspace and cross-workspace search find the passage
    (with its exact span) and ask() cites it."""
    mine, _ = clients
    ws = mine.workspaces.create("intel", intelligence=True)
    text = "# Berths\n\nThe harbour crane moves containers between the quay and the ships at berth four.\n"
    ws.write("ops/berths.md", text)
    deadline = time.monotonic() + 120
    states = ws.index_state()
    while [s.status for s in states] != ["indexed"]:
        assert time.monotonic() < deadline, list(states)
        time.sleep(0.3)
        states = ws.index_state()
    assert (states[0].path, states[0].indexed_version) == ("ops/berths.md", 1)
    assert states.extra["counts"]["indexed"] == 1
    hits = ws.search("crane", mode="keyword")
    assert hits.pending == 0 and [(h.path, h.version, h.stale) for h in hits] == [("ops/berths.md", 1, False)]
    assert text[hits.results[0].start:hits.results[0].end] == text.strip()
    assert [h.workspace for h in mine.search("crane", mode="keyword")] == [ws.id]
    answer = ws.ask("What moves containers between the quay and the ships?")
    assert answer.answer and [(c.path, c.version) for c in answer.citations][:1] == [("ops/berths.md", 1)]


def test_task_lifecycle_approvals_transfers_and_triggers(live: Any, clients: tuple[Client, Client],
                                                         pair: tuple[Workspace, Workspace], make_user: Any) -> None:
    """GIVEN an owner and an agent sharing a workspace WHEN they go through a task's life, an approval,
    a trigger and an ownership transfer THEN each refusal arrives as its typed error (NotClaimant,
    StaleInputs listing the changed file, Forbidden) and each success returns the model of the change."""
    ws, theirs = pair
    ws.write("in.txt", "v1")
    created = ws.tasks.create("read and report", "report", queue="q", priority=5)
    claimed = theirs.tasks.claim("q", kinds=["report"])
    assert claimed is not None and claimed.id == created.id and claimed.lease_id
    theirs.read("in.txt", task_id=claimed.id)
    assert theirs.tasks.heartbeat(claimed.id, lease_seconds=120, lease_id=claimed.lease_id).status == "claimed"
    with pytest.raises(NotClaimant):
        ws.tasks.complete(claimed.id)
    ws.write("in.txt", "v2")
    with pytest.raises(StaleInputs) as stale:
        theirs.tasks.complete(claimed.id, result={"ok": True}, lease_id=claimed.lease_id)
    assert [f["path"] for f in stale.value.files] == ["in.txt"]
    done = theirs.tasks.complete(claimed.id, result={"ok": True}, accept_stale=True)
    assert (done.status, done.result) == ("done", {"ok": True})
    retry = ws.tasks.create("flaky", "report", queue="q")
    assert theirs.tasks.claim("q") is not None
    assert theirs.tasks.fail(retry.id, "network down", retry=True).status in ("queued", "blocked")
    assert ws.tasks.cancel(retry.id, reason="not needed").status == "cancelled"
    assert [t.status for t in ws.tasks.list(queue="q").all()] == ["done", "cancelled"]

    approval = theirs.approvals.request("publish the report", description="v2 is final", path="in.txt", version=2)
    with pytest.raises(Forbidden):
        theirs.approvals.decide(approval.id, "approve")
    decided = ws.approvals.decide(approval.id, "approve", comment="ship it")
    assert (decided.status, decided.decided_by, decided.comment) == ("approved", "olga", "ship it")
    assert [a.id for a in ws.approvals.list(status="approved")] == [approval.id]

    trigger = ws.triggers.put("on-research", on={"event": "file.written", "prefix": "research/"},
                              create_task={"title": "summarise", "kind": "summary"})
    assert trigger.name == "on-research" and ws.triggers.get("on-research").on["prefix"] == "research/"
    ws.triggers.delete("on-research")
    assert ws.triggers.list() == []

    bob = make_user("bob")
    offer = ws.transfers.create("bob", message="yours now")
    assert offer.status == "pending" and offer.accept_url
    with Client(live.url, bob.token) as as_bob:
        accepted = as_bob.transfers.accept(offer.id)
    assert accepted.status == "accepted" and ws.get().role == "admin"
