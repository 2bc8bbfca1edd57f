"""Helpers for the lock tests (no tests here): a team in a workspace over HTTP, the event log,
an independent checker of the lock invariants, and the chaos client the randomized test runs in
separate processes (importable, so `multiprocessing` can spawn it)."""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

API = "/api/v1"


def ws_url(ws: str, rest: str = "") -> str:
    return f"{API}/workspaces/{ws}{rest}"


@dataclass
class Team:
    """A workspace made over HTTP: `owner` (human), `admin` (human), editors `ada` and `bert`
    (agents created by the owner, so their events carry `on_behalf_of`), viewer `vera`."""

    ws: str
    clients: dict[str, httpx.Client]
    accounts: dict[str, Any]

    def __getattr__(self, name: str) -> httpx.Client:
        try:
            return self.__dict__["clients"][name]
        except KeyError:
            raise AttributeError(name) from None

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def make_team(live: Any, make_user: Any, make_agent: Any, *, agents: tuple[str, ...] = ("ada", "bert")) -> Team:
    owner = make_user("olivia")
    accounts = {"owner": owner, "admin": make_user("adam"), "vera": make_user("vera")}
    for name in agents:
        accounts[name] = make_agent(name, created_by=owner.user)
    clients = {key: live.client(account.token) for key, account in accounts.items()}
    created = clients["owner"].post(f"{API}/workspaces", json={"name": "locks", "intelligence": False})
    assert created.status_code == 201, created.text
    ws = created.json()["id"]
    roles = {"admin": "admin", "vera": "viewer", **{name: "editor" for name in agents}}
    for key, role in roles.items():
        response = clients["owner"].put(ws_url(ws, f"/members/{accounts[key].username}"), json={"role": role})
        assert response.status_code == 200, response.text
    return Team(ws=ws, clients=clients, accounts=accounts)


def all_events(client: httpx.Client, ws: str, *, types: str | None = None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        params: dict[str, Any] = {"after": after, "limit": 500}
        if types:
            params["type"] = types
        page = client.get(ws_url(ws, "/events"), params=params)
        assert page.status_code == 200, page.text
        rows = page.json()["results"]
        events.extend(rows)
        if len(rows) < 500:
            return events
        after = rows[-1]["seq"]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def overlap(a: str, b: str) -> bool:
    return a == b or (a.endswith("/") and b.startswith(a)) or (b.endswith("/") and a.startswith(b))


def covering(path: str) -> list[str]:
    return [path] + [path[: i + 1] for i, ch in enumerate(path) if ch == "/"]


@dataclass
class Held:
    lock: str
    path: str
    holder: str
    token: int
    expires_at: datetime


@dataclass
class LockLogReport:
    grants: int = 0
    ends: dict[str, int] = field(default_factory=dict)
    fenced_writes: int = 0
    unlocked_writes: int = 0


def check_lock_log(events: list[dict[str, Any]], *, clock_slack: float = 0.05) -> LockLogReport:
    """Replay the event log in seq order and assert the lock manager's promises:

    - no two active locks overlap at any point of the log (whoever holds them);
    - tokens only grow (the locks of one batch share theirs);
    - every lock ends once, and `lock.expired` never comes before the lock's expiry;
    - every write with a token carries the newest grant covering its path, and is made by the
      holder of the live lock covering it, if there is one;
    - a write without a token is made while no lock covers the path.
    """
    report = LockLogReport()
    active: dict[str, Held] = {}
    newest: dict[str, int] = {}
    last_token = 0
    last_grant_seq = -1
    for event in events:
        kind, data = event["type"], event["data"]
        at = parse_time(event["at"])
        if kind == "lock.acquired":
            token = int(data["token"])
            assert token > last_token or (token == last_token and data.get("batch")
                                          and last_grant_seq == event["seq"] - 1), \
                f"token {token} after {last_token} at seq {event['seq']}"
            for held in active.values():
                assert not overlap(held.path, data["path"]), \
                    f"seq {event['seq']}: {data['holder']} got {data['path']} while {held.holder} holds {held.path}"
            active[data["lock"]] = Held(data["lock"], data["path"], data["holder"], token,
                                        parse_time(data["expires_at"]))
            newest[data["path"]] = token
            last_token, last_grant_seq = token, event["seq"]
            report.grants += 1
        elif kind == "lock.renewed":
            assert data["lock"] in active, f"seq {event['seq']}: renewed a lock that is not active"
            active[data["lock"]].expires_at = parse_time(data["expires_at"])
        elif kind in ("lock.released", "lock.force_released", "lock.expired"):
            held = active.pop(data["lock"], None)
            assert held is not None, f"seq {event['seq']}: {kind} of a lock that is not active"
            # Never early. (Nothing is asserted about how late a release or write's timestamp is:
            # it is taken after the check made under the workspace row lock, which is what orders
            # it before any later grant.)
            if kind == "lock.expired":
                assert at.timestamp() >= held.expires_at.timestamp() - clock_slack, \
                    f"seq {event['seq']}: expired at {at} before its expiry {held.expires_at}"
            report.ends[kind] = report.ends.get(kind, 0) + 1
        elif kind == "file.written":
            path, token = data["path"], data.get("lock_token")
            covering_locks = [held for held in active.values() if overlap(held.path, path)]
            if token is None:
                assert not covering_locks, f"seq {event['seq']}: unfenced write to {path} under {covering_locks}"
                report.unlocked_writes += 1
                continue
            latest = max((newest[c] for c in covering(path) if c in newest), default=None)
            assert token == latest, f"seq {event['seq']}: write to {path} with token {token}, newest is {latest}"
            for held in covering_locks:
                assert held.holder == event["actor"] and held.token == token, \
                    f"seq {event['seq']}: {event['actor']} wrote {path} under {held.holder}'s lock"
            report.fenced_writes += 1
    return report


# -- the chaos client (runs in its own process) -------------------------------------------------
LOCK_PATHS = ["pool/", "pool/a.txt", "pool/b.txt", "solo.txt"]


@dataclass
class RunLength:
    """How long the chaos clients go on: at least `min_seconds`, then until `grants` (a shared
    counter) reaches `target_grants`, and never past `max_seconds`."""

    min_seconds: float
    max_seconds: float
    target_grants: int
    grants: Any  # a multiprocessing.Value("i") shared by the client processes

    def over(self, started: float) -> bool:
        elapsed = time.monotonic() - started
        return elapsed >= self.max_seconds or (elapsed >= self.min_seconds
                                               and self.grants.value >= self.target_grants)


def chaos_client(url: str, token: str, ws: str, name: str, seed: int, run: RunLength, out: str,
                 crash_after: int | None) -> None:
    """Loop acquire -> read -> write with the token -> release over LOCK_PATHS until the run ends.

    Some iterations pause past the TTL before writing (the write must then be refused if anyone
    took the lock meanwhile), some never release, and with `crash_after` the process dies holding
    its `crash_after`-th grant (it keeps going past the end of the run until it has). Every outcome
    goes to `out` as one JSON line, flushed at once (a crash loses nothing).
    """
    rng = random.Random(seed)
    started = time.monotonic()
    iteration = granted = 0
    with open(out, "a", encoding="utf-8") as log, httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:

        def record(**entry: Any) -> None:
            log.write(json.dumps({"client": name, **entry}) + "\n")
            log.flush()

        while not run.over(started) or crash_after is not None:
            iteration += 1
            path = rng.choice(LOCK_PATHS)
            ttl = 1
            response = api.post(ws_url(ws, "/locks"), json={
                "path": path, "ttl_seconds": ttl, "reason": f"{name}#{iteration}",
                "wait_seconds": rng.choice([0, 0, 0.3, 1.5])})
            if response.status_code == 423:
                record(op="acquire", status=423, path=path)
                time.sleep(rng.uniform(0, 0.05))
                continue
            if response.status_code != 201:
                record(op="acquire", status=response.status_code, path=path, body=response.text[:500])
                continue
            lock = response.json()
            granted += 1
            with run.grants.get_lock():
                run.grants.value += 1
            record(op="acquire", status=201, path=path, lock=lock["id"], token=lock["token"])
            target = path + rng.choice(["a.txt", "b.txt"]) if path.endswith("/") else path
            read = api.get(ws_url(ws, f"/files/{target}"))
            record(op="read", status=read.status_code, path=target)
            if crash_after is not None and granted >= crash_after:
                record(op="crash", lock=lock["id"])
                os._exit(3)  # dies holding the lock: only its TTL ends it
            roll = rng.random()
            if roll < 0.2:
                time.sleep(ttl + rng.uniform(0.05, 0.6))  # stalls past its TTL, then writes anyway
            body = f"{name} token={lock['token']} iteration={iteration}".encode()
            write = api.put(ws_url(ws, f"/files/{target}"), content=body,
                            headers={"X-Lock-Token": str(lock["token"])})
            entry: dict[str, Any] = {"op": "write", "status": write.status_code, "path": target,
                                     "token": lock["token"], "paused": roll < 0.2}
            if write.status_code in (200, 201):
                entry["version"] = write.json()["version"]
            else:
                entry["code"] = write.json().get("error", {}).get("code") if write.content else None
            record(**entry)
            if roll > 0.92:
                record(op="abandon", lock=lock["id"])
                continue
            released = api.delete(ws_url(ws, f"/locks/{lock['id']}"))
            record(op="release", status=released.status_code, lock=lock["id"])


def read_outcomes(directory: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(directory.glob("*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return rows
