"""Versioned file I/O against a live server, beside the authenticated no-op in the same run.

Measures write and read latency (p50, p99) and throughput with 1 and 16 clients for 4 KB files,
and the same for `GET /api/v1/me` (token lookup and a tiny JSON body). Target (issue 2): a 4 KB
versioned write costs at most 3x the no-op request at p50.

    python bench/files.py                    # starts its own server
    SWITCHYARD_URL=... SWITCHYARD_TOKEN=... python bench/files.py
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_server, emit, summarize_ms, target  # noqa: E402

N = int(os.environ.get("BENCH_N", "400"))
BODY = os.urandom(2048).hex().encode()[:4096]


def run(clients: int, server, op, per_client: int) -> dict[str, float]:
    samples: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker(i: int) -> None:
        local = []
        with server.client() as api:
            for j in range(5):
                op(api, i, -j - 1)
            barrier.wait()
            for j in range(per_client):
                start = time.perf_counter()
                op(api, i, j)
                local.append(time.perf_counter() - start)
        with lock:
            samples.extend(local)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {**summarize_ms(samples), "per_second": round(len(samples) / elapsed, 1)}


def main() -> None:
    with bench_server(workers=1, web_workers=2) as server:
        with server.client() as api:
            ws = api.post("/api/v1/workspaces", json={"name": "bench-files", "intelligence": False}).json()["id"]

        def noop(api, i, j):
            api.get("/api/v1/me").raise_for_status()

        def write(api, i, j):
            api.put(f"/api/v1/workspaces/{ws}/files/c{i}/f{j % 50}.bin", content=BODY).raise_for_status()

        def read(api, i, j):
            api.get(f"/api/v1/workspaces/{ws}/files/c{i}/f{abs(j) % 50}.bin").raise_for_status()

        figures: dict[str, dict[str, dict[str, float]]] = {}
        for clients in (1, 16):
            per_client = max(20, N // clients)
            figures[f"clients_{clients}"] = {
                "noop": run(clients, server, noop, per_client),
                "write_4k": run(clients, server, write, per_client),
                "read_4k": run(clients, server, read, per_client),
            }
    one = figures["clients_1"]
    ratio_write = one["write_4k"]["p50_ms"] / one["noop"]["p50_ms"]
    ratio_read = one["read_4k"]["p50_ms"] / one["noop"]["p50_ms"]
    sixteen = figures["clients_16"]
    emit({
        "benchmark": "files",
        "database": "postgresql" if os.environ.get("DATABASE_URL") else "sqlite",
        "figures": figures,
        "ratios": {
            "write_p50_over_noop_p50": round(ratio_write, 3),
            "read_p50_over_noop_p50": round(ratio_read, 3),
            "write_16_clients_per_second_over_noop": round(sixteen["write_4k"]["per_second"]
                                                           / sixteen["noop"]["per_second"], 3),
        },
    }, [target("4 KB write p50 / no-op p50 (1 client)", ratio_write, 3.0, "x", ratio_write <= 3.0)])


if __name__ == "__main__":
    main()
