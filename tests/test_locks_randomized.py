"""A randomized multi-process run against the live server, then a check of the whole history.

Sixteen client processes, each with its own agent account and HTTP client, loop acquire -> read
-> write with the token -> release over four overlapping lock paths (a subtree and files in and
beside it). Some stall past their TTL before writing, some never release, and some processes die
holding a lock. Afterwards an independent checker replays the event log and compares it with
what the clients saw and with each file's version history.
"""
from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.test_locks_support import (
    RunLength,
    all_events,
    chaos_client,
    check_lock_log,
    make_team,
    overlap,
    read_outcomes,
    ws_url,
)

CLIENTS = 16


def run_chaos(live, make_user, make_agent, tmp_path: Path, *, min_seconds: float, max_seconds: float,
              target_grants: int, seed: int) -> None:
    names = tuple(f"agent{i:02d}" for i in range(CLIENTS))
    team = make_team(live, make_user, make_agent, agents=names)
    # fork: the clients use nothing of this process but their arguments, and start at once.
    context = multiprocessing.get_context("fork")
    run = RunLength(min_seconds=min_seconds, max_seconds=max_seconds, target_grants=target_grants,
                    grants=context.Value("i", 0))
    processes = []
    for i, name in enumerate(names):
        # Three of the sixteen die holding their first, second or third lock.
        crash_after = i + 1 if i < 3 else None
        process = context.Process(target=chaos_client, args=(
            live.url, team.accounts[name].token, team.ws, name, seed * 1000 + i, run,
            str(tmp_path / f"{name}.jsonl"), crash_after))
        process.start()
        processes.append(process)
    for process in processes:
        process.join(timeout=max_seconds + 60)
        assert not process.is_alive(), "a chaos client hung"
    crashed = [p for p in processes if p.exitcode == 3]
    assert len(crashed) == 3 and all(p.exitcode in (0, 3) for p in processes), [p.exitcode for p in processes]
    # Let the crashed holders' locks expire and be swept.
    time.sleep(2.0)
    try:
        verify(team, read_outcomes(tmp_path))
    finally:
        team.close()


def verify(team, outcomes: list[dict]) -> None:
    events = all_events(team.owner, team.ws)
    report = check_lock_log(events)

    statuses = Counter((o["op"], o.get("status")) for o in outcomes)
    unexpected = [o for o in outcomes if o["op"] in ("acquire", "write", "release")
                  and o["status"] not in {"acquire": (201, 423), "write": (200, 201, 409, 423),
                                          "release": (204, 410)}[o["op"]]]
    assert not unexpected, unexpected[:5]
    assert statuses[("acquire", 201)] == report.grants
    assert report.grants >= 16, statuses
    assert sum(1 for o in outcomes if o["op"] == "crash") == 3

    # What the clients were told matches the log: every accepted write is there with its token,
    # nothing refused is, and each refusal was for a reason the log explains.
    accepted = {(o["path"], o["version"]): o["token"] for o in outcomes
                if o["op"] == "write" and o["status"] in (200, 201)}
    written = {(e["data"]["path"], e["data"]["version"]): e["data"]["lock_token"]
               for e in events if e["type"] == "file.written"}
    assert accepted == written
    assert report.fenced_writes == len(written) and report.unlocked_writes == 0
    refused = [o for o in outcomes if o["op"] == "write" and o["status"] in (409, 423)]
    assert {o["code"] for o in refused} <= {"stale_lock_token", "locked"}
    grants = [(e["data"]["path"], e["data"]["token"]) for e in events if e["type"] == "lock.acquired"]
    for o in refused:
        if o["status"] == 409:
            # Stale: a newer grant covered the path by then.
            assert any(t > o["token"] and overlap(p, o["path"]) for p, t in grants), o

    # The version history of every file is exactly the accepted writes.
    for path in {p for p, _ in written}:
        history = team.owner.get(ws_url(team.ws, f"/history/{path}"), params={"limit": 500}).json()["results"]
        assert sorted(v["version"] for v in history) == sorted(v for p, v in written if p == path)

    # Every lock ended: the crashed holders' and the abandoned ones by expiry.
    assert team.owner.get(ws_url(team.ws, "/locks")).json()["results"] == []
    ends = report.ends
    assert sum(ends.values()) == report.grants
    assert ends.get("lock.expired", 0) >= 3


def test_randomized_clients_never_break_the_lock_invariants(live, make_user, make_agent, tmp_path):
    """GIVEN 16 client processes locking, reading, writing with their token and releasing four
    overlapping paths, with stalls past the TTL, abandoned locks and crashes WHEN they run for a
    short while (at least 6 s, until 150 grants, at most 20 s) THEN the event log shows no overlapping holders at any point, no write under a
    stale token, every write carrying its path's newest grant, and the clients' view agrees."""
    run_chaos(live, make_user, make_agent, tmp_path, min_seconds=6, max_seconds=20, target_grants=150, seed=7)


@pytest.mark.slow
def test_randomized_clients_long_run(live, make_user, make_agent, tmp_path):
    """GIVEN the same 16 chaotic clients WHEN they run for two minutes (or until 2000 grants, up to
    three) THEN the same invariants hold."""
    run_chaos(live, make_user, make_agent, tmp_path, min_seconds=120, max_seconds=180, target_grants=2000, seed=11)
