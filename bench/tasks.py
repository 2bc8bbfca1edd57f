"""Task claims under contention, beside the authenticated no-op in the same run.

Measures claim+complete round trips per second with 1, 8 and 32 claimers on one queue (each claimer
its own agent account), the same concurrency against `GET /api/v1/me`, and the server-side time of
the claim itself (its `Server-Timing` header: the transaction, including any wait for the workspace
lock). Every claimed task id is checked: a task handed to two claimers is a double claim; the event
log is checked the same way afterwards.

Targets (issue 4): at 32 claimers, zero double claims and at least 60% of the single-claimer throughput.

    python bench/tasks.py                                  # starts its own server (SQLite)
    DATABASE_URL=postgres://.../fresh_db python bench/tasks.py   # its own server on PostgreSQL
    SWITCHYARD_URL=... SWITCHYARD_TOKEN=... python bench/tasks.py
Environment: BENCH_SECONDS (per level, default 8), BENCH_LEVELS (default "1,8,32"), BENCH_WEB_WORKERS (2).
"""
from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, bench_server, emit, percentile, summarize_ms, target  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
LEVELS = [int(x) for x in os.environ.get("BENCH_LEVELS", "1,8,32").split(",")]
WEB_WORKERS = int(os.environ.get("BENCH_WEB_WORKERS", "2"))
BATCH = 1000
_TIMING = re.compile(r"claim;dur=([0-9.]+)")


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:300]}")
    return response


def setup(server: Server, claimers: int, run: str) -> tuple[str, list[str]]:
    """A workspace with `claimers` agent accounts as editors."""
    with server.client() as api:
        ws = _ok(api.post("/api/v1/workspaces", json={"name": f"bench-tasks-{claimers}", "intelligence": False}))
        ws_id = ws.json()["id"]
        tokens = []
        for i in range(claimers):
            name = f"bt-{run}-{claimers}-{i}"
            tokens.append(server.new_agent_token(name))
            _ok(api.put(f"/api/v1/workspaces/{ws_id}/members/{name}", json={"role": "editor"}))
    return ws_id, tokens


def fill(server: Server, ws: str, count: int) -> None:
    with server.client() as api:
        for start in range(0, count, BATCH):
            tasks = [{"title": f"t{n}", "queue": "bench", "payload": {"n": n}}
                     for n in range(start, min(count, start + BATCH))]
            _ok(api.post(f"/api/v1/workspaces/{ws}/tasks/batch", json={"tasks": tasks}))


async def _claimers(server: Server, ws: str, tokens: list[str], seconds: float) -> dict[str, Any]:
    claimed: list[str] = []
    claim_ms: list[float] = []
    server_ms: list[float] = []
    complete_ms: list[float] = []
    empty = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def claimer(token: str) -> None:
        nonlocal empty
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=60, limits=limits) as api:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                got = await api.post(f"/api/v1/workspaces/{ws}/tasks/claim", json={"queue": "bench"})
                t1 = time.perf_counter()
                if got.status_code == 204:
                    empty += 1
                    await asyncio.sleep(0.01)
                    continue
                _ok(got)
                match = _TIMING.search(got.headers.get("Server-Timing", ""))
                if match:
                    server_ms.append(float(match.group(1)))
                task = got.json()
                _ok(await api.post(f"/api/v1/workspaces/{ws}/tasks/{task['id']}/complete",
                                   json={"result": task["payload"]["n"], "lease_id": task["lease_id"]}))
                t2 = time.perf_counter()
                claimed.append(task["id"])
                claim_ms.append((t1 - t0) * 1000)
                complete_ms.append((t2 - t1) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(claimer(t) for t in tokens))
    elapsed = time.perf_counter() - started
    doubles = sum(n - 1 for n in Counter(claimed).values() if n > 1)
    return {
        "claimers": len(tokens), "round_trips": len(claimed), "seconds": round(elapsed, 2),
        "round_trips_per_s": round(len(claimed) / elapsed, 1), "double_claims": doubles, "empty_claims": empty,
        "claim_p50_ms": round(percentile(claim_ms, 50), 2), "claim_p99_ms": round(percentile(claim_ms, 99), 2),
        "complete_p50_ms": round(percentile(complete_ms, 50), 2),
        "complete_p99_ms": round(percentile(complete_ms, 99), 2),
        "claim_server_p50_ms": round(percentile(server_ms, 50), 2),
        "claim_server_p99_ms": round(percentile(server_ms, 99), 2),
    }


async def _noop(server: Server, clients: int, seconds: float) -> dict[str, Any]:
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                                     timeout=60, limits=limits) as api:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                _ok(await api.get("/api/v1/me"))
                samples.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {"clients": clients, "requests_per_s": round(len(samples) / elapsed, 1), **summarize_ms(samples)}


def event_log_doubles(server: Server, ws: str) -> int:
    """Claims of a task while an earlier claim of it was still open, read back from the event log."""
    holder: dict[str, str] = {}
    doubles = 0
    params: dict[str, Any] = {"type": "task.claimed,task.completed,task.requeued,task.failed", "limit": 500}
    with server.client() as api:
        while True:
            body = _ok(api.get(f"/api/v1/workspaces/{ws}/events", params=params)).json()
            for event in body["results"]:
                if event["type"] == "task.claimed":
                    doubles += event["target"] in holder
                    holder[event["target"]] = event["actor"]
                else:
                    holder.pop(event["target"], None)
            if not body["next"]:
                return doubles
            params["cursor"] = body["next"]


def main() -> None:
    run = uuid.uuid4().hex[:6]
    levels: dict[str, Any] = {}
    noop: dict[str, Any] = {}
    with bench_server(workers=1, web_workers=WEB_WORKERS) as server:
        for claimers in LEVELS:
            ws, tokens = setup(server, claimers, run)
            # Enough for the whole measurement at a generous rate, so the queue never runs dry.
            fill(server, ws, int(max(400, 150 * SECONDS)) if claimers == 1 else int(max(1000, 400 * SECONDS)))
            asyncio.run(_claimers(server, ws, tokens, 1.0))  # warm-up: connections, caches
            result = asyncio.run(_claimers(server, ws, tokens, SECONDS))
            result["event_log_double_claims"] = event_log_doubles(server, ws)
            noop_result = asyncio.run(_noop(server, claimers, min(SECONDS, 5.0)))
            result["noop_requests_per_s"] = noop_result["requests_per_s"]
            # A round trip is two requests; against two no-op requests it shows what a claim costs.
            result["round_trip_vs_noop_pair"] = round(
                result["round_trips_per_s"] / (noop_result["requests_per_s"] / 2), 3)
            levels[str(claimers)] = result
            noop[str(claimers)] = noop_result
            print(f"{claimers:>3} claimers: {result['round_trips_per_s']} round trips/s "
                  f"(no-op {noop_result['requests_per_s']} req/s), claim server p50 "
                  f"{result['claim_server_p50_ms']} ms, double claims {result['double_claims']}", flush=True)
    top, one = levels[str(max(LEVELS))], levels[str(min(LEVELS))]
    scaling = top["round_trips_per_s"] / one["round_trips_per_s"] if one["round_trips_per_s"] else 0.0
    for result in levels.values():
        result["vs_single_claimer"] = round(result["round_trips_per_s"] / one["round_trips_per_s"], 3)
    doubles = top["double_claims"] + top["event_log_double_claims"]
    # How claims scale next to how the no-op scales on the same server in the same run: below 1,
    # claims lose more to concurrency than plain requests do; above 1, less.
    noop_top, noop_one = noop[str(max(LEVELS))]["requests_per_s"], noop[str(min(LEVELS))]["requests_per_s"]
    noop_scaling = noop_top / noop_one if noop_one else 0.0
    emit({
        "benchmark": "tasks", "database": os.environ.get("DATABASE_URL", "").split("://")[0] or "sqlite",
        "web_workers": WEB_WORKERS, "seconds_per_level": SECONDS, "levels": levels, "noop": noop,
        "claim_scaling": round(scaling, 3), "noop_scaling": round(noop_scaling, 3),
        "claim_scaling_vs_noop_scaling": round(scaling / noop_scaling, 3) if noop_scaling else None,
    }, [
        target(f"double claims at {max(LEVELS)} claimers", doubles, 0, "claims", doubles == 0),
        target(f"throughput at {max(LEVELS)} claimers / 1 claimer", scaling, 0.6, "ratio", scaling >= 0.6),
    ])


if __name__ == "__main__":
    main()
