"""The lock manager against a live server, beside the authenticated no-op in the same run.

- Uncontended: one client acquires and releases a lock, and calls `GET /api/v1/me`, alternately
  (so both see the same machine load); the acquire+release round trip is compared with one no-op.
  A 4 KB file write, and two no-ops in a row, are measured after that loop, for reference (see
  `uncontended`).
- Contended: 1, 8 and 32 clients (each its own agent account and HTTP connection) loop
  acquire (waiting up to 30 s, first come first served) -> release, either all on one path or
  each on its own of 32 distinct paths; grants per second and the pair's latency. The client
  counts take turns in BENCH_ROUNDS rounds (1, 8, 32, then 32, 8, 1, ...), each run a share of
  BENCH_SECONDS, so that a change in the machine's speed during the run (it has moved grants per
  second by half between one run of 5 s and the next) falls on all of them alike. A count's
  ratio to 1 client is the median of the rounds' own ratios; its figures pool its runs.
Targets (issue 3): an uncontended acquire+release costs at most 2.5x one no-op request at p50,
and 32 clients on one path reach at least half the grants per second of 1 client.

    python bench/locks.py                    # starts its own server
    SWITCHYARD_URL=... SWITCHYARD_TOKEN=... python bench/locks.py
    BENCH_N=300 BENCH_SECONDS=6 BENCH_ROUNDS=3   # samples for the uncontended pair; seconds per client
                                                 # count and layout, split over the rounds
"""
from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, bench_server, emit, summarize_ms, target  # noqa: E402

N = int(os.environ.get("BENCH_N", "300"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))
ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", "3")))
CLIENTS = (1, 8, 32)


def pair(api: Any, ws: str, path: str, *, wait: float = 0) -> None:
    response = api.post(f"/api/v1/workspaces/{ws}/locks",
                        json={"path": path, "ttl_seconds": 60, "wait_seconds": wait, "reason": "bench"})
    response.raise_for_status()
    api.delete(f"/api/v1/workspaces/{ws}/locks/{response.json()['id']}").raise_for_status()


def uncontended(server: Server, ws: str) -> dict[str, dict[str, float]]:
    """The no-op and an acquire+release pair, alternately, so both see the same load; then, for
    reference, 4 KB file writes (another mutating request that records an event) alternated with
    no-ops of their own. The reference is kept out of the first loop: a no-op that follows a write
    pays for what the write leaves behind (its announcement, a changed WAL), and with the write in
    that loop the pair came out 0.1-0.2 lower against the no-op than without it. Last, also for
    reference, two no-ops in a row timed as one: the floor of the target's measure, a pair of
    requests that do nothing."""
    noop_samples: list[float] = []
    pair_samples: list[float] = []
    write_samples: list[float] = []
    two_noop_samples: list[float] = []
    body = os.urandom(2048).hex().encode()
    with server.client() as api:
        for _ in range(20):
            api.get("/api/v1/me").raise_for_status()
            pair(api, ws, "warm.txt")
        for _ in range(N):
            start = time.perf_counter()
            api.get("/api/v1/me").raise_for_status()
            noop_samples.append(time.perf_counter() - start)
            start = time.perf_counter()
            pair(api, ws, "solo.txt")
            pair_samples.append(time.perf_counter() - start)
        for i in range(N):
            api.get("/api/v1/me").raise_for_status()
            start = time.perf_counter()
            api.put(f"/api/v1/workspaces/{ws}/files/ref/{i % 50}.bin", content=body).raise_for_status()
            write_samples.append(time.perf_counter() - start)
        for _ in range(N):
            api.get("/api/v1/me").raise_for_status()
            start = time.perf_counter()
            api.get("/api/v1/me").raise_for_status()
            api.get("/api/v1/me").raise_for_status()
            two_noop_samples.append(time.perf_counter() - start)
    return {"noop": summarize_ms(noop_samples), "acquire_release": summarize_ms(pair_samples),
            "reference_write_4k": summarize_ms(write_samples), "reference_two_noops": summarize_ms(two_noop_samples)}


def contended(server: Server, ws: str, tokens: list[str], clients: int, *, one_path: bool,
              seconds: float) -> dict[str, Any]:
    samples: list[float] = []
    failures: list[str] = []
    guard = threading.Lock()
    ready = threading.Barrier(clients + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        path = "hot.txt" if one_path else f"distinct/{i % 32}.txt"
        local: list[float] = []
        with server.client(tokens[i]) as api:
            pair(api, ws, f"warm/{i}.txt")
            ready.wait()
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    pair(api, ws, path, wait=30)
                except Exception as exc:  # a timeout or error is reported, not hidden
                    with guard:
                        failures.append(repr(exc)[:200])
                    continue
                local.append(time.perf_counter() - start)
        with guard:
            samples.extend(local)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"samples": samples, "elapsed": elapsed, "failures": failures}


def pooled(clients: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [s for run in runs for s in run["samples"]]
    failures = [f for run in runs for f in run["failures"]]
    elapsed = sum(run["elapsed"] for run in runs)
    return {"clients": clients, **summarize_ms(samples), "grants_per_second": round(len(samples) / elapsed, 1),
            "failures": len(failures), **({"first_failure": failures[0]} if failures else {})}


def contended_rounds(server: Server, ws: str, tokens: list[str], *,
                     one_path: bool) -> tuple[dict[str, Any], dict[int, float]]:
    """Every client count in each of ROUNDS rounds, in turn (reversed every other round). Returns
    the pooled figures per count and, per count, the median over the rounds of its grants per
    second over 1 client's in the same round."""
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in CLIENTS}
    for r in range(ROUNDS):
        for n in (CLIENTS if r % 2 == 0 else tuple(reversed(CLIENTS))):
            runs[n].append(contended(server, ws, tokens, n, one_path=one_path, seconds=SECONDS / ROUNDS))
    rate = {n: [len(run["samples"]) / run["elapsed"] for run in runs[n]] for n in CLIENTS}
    over_one = {n: statistics.median(many / one if one else 0.0 for many, one in zip(rate[n], rate[1], strict=True))
                for n in CLIENTS}
    return {f"clients_{n}": pooled(n, runs[n]) for n in CLIENTS}, over_one


def main() -> None:
    with bench_server(workers=1, web_workers=2) as server:
        with server.client() as api:
            ws = api.post("/api/v1/workspaces", json={"name": "bench-locks", "intelligence": False}).json()["id"]
        tokens = []
        stamp = int(time.time())
        for i in range(max(CLIENTS)):
            token = server.new_agent_token(f"lock-bench-{stamp}-{i}")
            with server.client(token) as agent:
                name = agent.get("/api/v1/me").json()["username"]
            with server.client() as api:
                api.put(f"/api/v1/workspaces/{ws}/members/{name}", json={"role": "editor"}).raise_for_status()
            tokens.append(token)
        single = uncontended(server, ws)
        one_path, one_path_over_one = contended_rounds(server, ws, tokens, one_path=True)
        distinct, distinct_over_one = contended_rounds(server, ws, tokens, one_path=False)
        runs = {"one_path": one_path, "distinct_paths": distinct}
    pair_ratio = single["acquire_release"]["p50_ms"] / single["noop"]["p50_ms"]
    scale_ratio = one_path_over_one[32]
    emit({
        "benchmark": "locks",
        "database": "postgresql" if os.environ.get("DATABASE_URL") else "sqlite",
        "uncontended": single,
        "contended": runs,
        "contended_rounds": ROUNDS,
        "ratios": {
            "acquire_release_p50_over_noop_p50": round(pair_ratio, 3),
            "reference_write_4k_p50_over_noop_p50": round(single["reference_write_4k"]["p50_ms"]
                                                          / single["noop"]["p50_ms"], 3),
            "reference_two_noops_p50_over_noop_p50": round(single["reference_two_noops"]["p50_ms"]
                                                           / single["noop"]["p50_ms"], 3),
            "acquire_release_p50_over_reference_write_4k_p50": round(
                single["acquire_release"]["p50_ms"] / single["reference_write_4k"]["p50_ms"], 3),
            # Against 1 client: the median over the rounds of each round's own ratio.
            "one_path_32_over_1_grants_per_second": round(scale_ratio, 3),
            "one_path_8_over_1_grants_per_second": round(one_path_over_one[8], 3),
            "distinct_32_over_1_grants_per_second": round(distinct_over_one[32], 3),
        },
    }, [
        target("acquire+release p50 / no-op p50 (1 client)", pair_ratio, 2.5, "x", pair_ratio <= 2.5),
        target("grants/s, 32 clients on one path / 1 client", scale_ratio, 0.5, "x", scale_ratio >= 0.5),
    ])


if __name__ == "__main__":
    main()
