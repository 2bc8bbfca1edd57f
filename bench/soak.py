"""Soak (issue 9): 64 simulated agents against one server for SOAK_SECONDS, then the invariants.

Each agent (a thread with its own agent account, token and HTTP connection) loops:
create a task -> claim one -> lock its own file -> write it with the fencing token -> release ->
append to the worklog -> complete the task -> search -> increment a shared counter file with
If-Match (retrying on 412 from the current content in its body, with jittered back-off, as the
Python client's `ws.update` does). At the end:
- no lost update: the counter file's value equals the number of acknowledged increments;
- no double claim: in the event log each task has at most one `task.claimed`, and no task id was
  handed to two agents;
- the worklog's hash chain verifies (`GET worklog/verify`);
- with intelligence on (SOAK_INTELLIGENCE=1, the default), after a drain `GET index` counts no file
  `pending` or in `error`.
Prints requests per second, p50/p99 per operation, errors by kind (zero 5xx required); the last line
is one JSON object with a `targets` list.

    python bench/soak.py                                 # starts its own server (with Chroma)
    SOAK_SECONDS=60 SOAK_AGENTS=64 python bench/soak.py
    SWITCHYARD_URL=... SWITCHYARD_TOKEN=... python bench/soak.py
"""
from __future__ import annotations

import collections
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, bench_server, emit, summarize_ms, target  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
AGENTS = int(os.environ.get("SOAK_AGENTS", "64"))
INTELLIGENCE = os.environ.get("SOAK_INTELLIGENCE", "1") == "1"
DRAIN_SECONDS = float(os.environ.get("SOAK_DRAIN_SECONDS", "300"))
COUNTER = "shared/counter.txt"


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.increments = 0
        self.claimed: list[str] = []
        self.conflicts = 0

    def record(self, op: str, seconds: float, response: httpx.Response | None, error: str | None = None) -> None:
        with self.lock:
            self.requests += 1
            self.latency[op].append(seconds)
            if error is not None:
                self.errors[f"{op}: {error}"] += 1
            elif response is not None and response.status_code >= 500:
                self.errors[f"{op}: {response.status_code}"] += 1


class Agent(threading.Thread):
    def __init__(self, n: int, server: Server, token: str, ws: str, stats: Stats, stop_at: float) -> None:
        super().__init__(daemon=True)
        self.n, self.ws, self.stats, self.stop_at = n, ws, stats, stop_at
        self.api = httpx.Client(base_url=f"{server.api}/workspaces/{ws}",
                                headers={"Authorization": f"Bearer {token}"}, timeout=60)
        self.step = 0

    def call(self, op: str, method: str, path: str, ok: tuple[int, ...], **kwargs: Any) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            response = self.api.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.stats.record(op, time.perf_counter() - start, None, type(exc).__name__)
            return None
        elapsed = time.perf_counter() - start
        if response.status_code not in ok:
            self.stats.record(op, elapsed, response,
                              None if response.status_code >= 500 else f"{response.status_code} "
                              f"{_code(response)}")
            return None
        self.stats.record(op, elapsed, response)
        return response

    def run(self) -> None:
        while time.monotonic() < self.stop_at:
            self.step += 1
            self.cycle()
        self.api.close()

    def cycle(self) -> None:
        self.call("task.create", "POST", "/tasks", (201,),
                  json={"title": f"a{self.n}-{self.step}", "kind": "soak", "queue": "soak", "lease_seconds": 120})
        claim = self.call("task.claim", "POST", "/tasks/claim", (200, 204), json={"queue": "soak"})
        task = claim.json()["id"] if claim is not None and claim.status_code == 200 else None
        if task is not None:
            with self.stats.lock:
                self.stats.claimed.append(task)
        path = f"agents/{self.n}/note-{self.step % 20}.txt"
        lock = self.call("lock.acquire", "POST", "/locks", (201,), json={"path": path, "ttl_seconds": 60})
        if lock is not None:
            body = f"agent {self.n} step {self.step}: the soak writes a few words about ledgers and gardens.\n"
            self.call("file.write", "PUT", f"/files/{path}", (200, 201), content=body.encode(),
                      headers={"X-Lock-Token": str(lock.json()["token"])})
            self.call("lock.release", "DELETE", f"/locks/{lock.json()['id']}", (204,))
        self.call("worklog.append", "POST", "/worklog", (201,),
                  json={"message": f"agent {self.n} step {self.step}", **({"task": task} if task else {})})
        if task is not None:
            self.call("task.complete", "POST", f"/tasks/{task}/complete", (200,),
                      json={"result": {"step": self.step}, "outputs": [path]})
        if INTELLIGENCE:
            self.call("search", "POST", "/search", (200,), json={"query": "ledgers", "k": 5, "mode": "keyword"})
        self.increment()

    def increment(self) -> None:
        """What `switchyard.client`'s `ws.update` does: read once, write with If-Match, and on 412
        retry from the current version and content in the error body (no extra read), spreading
        the writers out with a jittered back-off after the second conflict."""
        current = self.call("counter.read", "GET", f"/files/{COUNTER}", (200,))
        if current is None:
            return
        value, etag = int(current.content), current.headers["ETag"]
        for attempt in range(1, 51):
            put = self.call("counter.write", "PUT", f"/files/{COUNTER}", (200, 201, 412),
                            content=str(value + 1).encode(), headers={"If-Match": etag})
            if put is None:
                return
            if put.status_code != 412:
                with self.stats.lock:
                    self.stats.increments += 1
                return
            with self.stats.lock:
                self.stats.conflicts += 1
            server = put.json()["error"]["current"]
            value, etag = int(server["content"]), f'"{server["version"]}"'
            if attempt > 2:
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2 ** min(attempt, 10))))


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


def _pages(api: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
        page = api.get(path, params=query)
        page.raise_for_status()
        body = page.json()
        results.extend(body["results"])
        cursor = body.get("next")
        if not cursor:
            return results


def _events(api: httpx.Client, ws: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.get(f"/api/v1/workspaces/{ws}/events", params={"after": after, "limit": 500})
        page.raise_for_status()
        batch = page.json()["results"]
        if not batch:
            return events
        events.extend(batch)
        after = batch[-1]["seq"]


def invariants(server: Server, ws: str, stats: Stats) -> dict[str, Any]:
    with server.client() as api:
        counter = api.get(f"/api/v1/workspaces/{ws}/files/{COUNTER}")
        counter.raise_for_status()
        counter_value = int(counter.content)
        claims = collections.Counter(str(e["target"]) for e in _events(api, ws) if e["type"] == "task.claimed")
        double_claims = {task: n for task, n in claims.items() if n > 1}
        handed_twice = [t for t, n in collections.Counter(stats.claimed).items() if n > 1]
        verify = api.get(f"/api/v1/workspaces/{ws}/worklog/verify").json()
        index: dict[str, Any] = {}
        if INTELLIGENCE:
            deadline = time.monotonic() + DRAIN_SECONDS
            while True:
                index = api.get(f"/api/v1/workspaces/{ws}/index").json().get("counts", {})
                if not index.get("pending") or time.monotonic() > deadline:
                    break
                time.sleep(2)
    return {"counter_value": counter_value, "acknowledged_increments": stats.increments,
            "task_claimed_events": sum(claims.values()), "double_claims": len(double_claims) + len(handed_twice),
            "worklog_verify": verify, "index_counts": index}


def main() -> None:
    with bench_server(workers=4, web_workers=4, chroma=INTELLIGENCE) as server:
        with server.client() as api:
            created = api.post("/api/v1/workspaces", json={"name": f"soak-{int(time.time())}",
                                                           "intelligence": INTELLIGENCE})
            created.raise_for_status()
            ws = created.json()["id"]
            api.put(f"/api/v1/workspaces/{ws}/files/{COUNTER}", content=b"0").raise_for_status()
        tokens = []
        for n in range(AGENTS):
            token = server.new_agent_token(f"soak-{ws[-6:]}-{n}")
            with server.client() as api:
                me = httpx.get(f"{server.api}/me", headers={"Authorization": f"Bearer {token}"}).json()
                api.put(f"/api/v1/workspaces/{ws}/members/{me['username']}",
                        json={"role": "editor"}).raise_for_status()
            tokens.append(token)
        stats = Stats()
        started = time.monotonic()
        agents = [Agent(n, server, tokens[n], ws, stats, started + SECONDS) for n in range(AGENTS)]
        for agent in agents:
            agent.start()
        for agent in agents:
            agent.join()
        elapsed = time.monotonic() - started
        checks = invariants(server, ws, stats)
    server_errors = sum(n for kind, n in stats.errors.items() if kind.split(": ")[1][:1] == "5")
    operations = {op: summarize_ms(samples) for op, samples in sorted(stats.latency.items())}
    rps = stats.requests / elapsed
    print(f"agents {AGENTS}, {elapsed:.0f} s, {stats.requests} requests, {rps:.1f} requests/s, "
          f"{stats.increments} counter increments ({stats.conflicts} If-Match conflicts retried)")
    for op, figures in operations.items():
        print(f"  {op:16} n={figures['n']:6}  p50 {figures['p50_ms']:8.1f} ms  p99 {figures['p99_ms']:8.1f} ms")
    print("errors by kind:", dict(stats.errors) or "none")
    print("invariants:", checks)
    index = checks["index_counts"]
    targets = [
        target("5xx responses", server_errors, 0, "responses", server_errors == 0),
        target("lost counter updates", checks["acknowledged_increments"] - checks["counter_value"], 0, "updates",
               checks["counter_value"] == checks["acknowledged_increments"]),
        target("double claims", checks["double_claims"], 0, "tasks", checks["double_claims"] == 0),
        target("worklog chain valid", 1 if checks["worklog_verify"].get("ok") else 0, 1, "bool",
               bool(checks["worklog_verify"].get("ok"))),
    ]
    if INTELLIGENCE:
        stuck = int(index.get("pending", 0)) + int(index.get("error", 0))
        targets.append(target("files pending or in error after drain", stuck, 0, "files", stuck == 0 and bool(index)))
    emit({"seconds": round(elapsed, 1), "agents": AGENTS, "requests": stats.requests,
          "requests_per_second": round(rps, 1), "operations": operations, "errors": dict(stats.errors),
          "invariants": checks}, targets)


if __name__ == "__main__":
    main()
