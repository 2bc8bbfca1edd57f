"""Pipeline orchestration overhead, with `sleep` steps standing in for model latency (so the figures
measure the engine, not CPU): every step is a real task, claimed by an RQ worker with a lease and a
lock, writes its output as a new file version, completes, and releases its dependents.

(a) 100 independent 0.5 s steps on 8 workers: makespan / ideal, ideal = ceil(100 / 8) * 0.5 s.
(b) the four-wave DAG (research A/B/C -> write A/B/C -> review A/B/C -> merge+publish), 0.5 s steps,
    on 8 workers: makespan / critical path (4 * 0.5 s).
(c) the same DAG on 1 worker: the speed-up of 8 workers over 1 (its makespan / (b)'s).
A run's makespan is measured by the run itself on the database clock: from its submission to its
last step's end. Per-step overhead = (makespan - ideal) / steps.

    .venv/bin/python bench/pipeline.py            # starts its own servers (8 workers, then 1)
    SWITCHYARD_URL=... SWITCHYARD_TOKEN=... .venv/bin/python bench/pipeline.py   # an existing server;
        (c) then needs SWITCHYARD_URL_1WORKER (a server with one worker) or is skipped

The last line is one JSON object with a `targets` list.
"""
from __future__ import annotations

import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Server, bench_server, emit, target  # noqa: E402

STEP_SECONDS = 0.5
INDEPENDENT = 100
WORKERS = 8
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


def independent_spec(n: int, seconds: float) -> dict[str, Any]:
    return {"name": f"independent-{n}", "defaults": {"retries": 0},
            "steps": [{"id": f"s{i}", "agent": "sleep", "params": {"seconds": seconds}, "outputs": [f"o{i}"]}
                      for i in range(n)]}


def dag_spec(seconds: float) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for topic in ("a", "b", "c"):
        steps += [
            {"id": f"research-{topic}", "agent": "sleep", "params": {"seconds": seconds}, "outputs": [f"notes-{topic}"]},
            {"id": f"write-{topic}", "agent": "sleep", "params": {"seconds": seconds}, "inputs": [f"notes-{topic}"],
             "outputs": [f"draft-{topic}"]},
            {"id": f"review-{topic}", "agent": "sleep", "params": {"seconds": seconds}, "inputs": [f"draft-{topic}"],
             "outputs": [f"section-{topic}"]},
        ]
    steps.append({"id": "merge-publish", "agent": "sleep", "params": {"seconds": seconds},
                  "inputs": ["section-a", "section-b", "section-c"], "outputs": ["article"],
                  "publish": {"article": "output/article-{run}.md"}})
    return {"name": "four-waves", "defaults": {"retries": 0}, "steps": steps}


def run(api: httpx.Client, ws: str, spec: dict[str, Any], *, timeout: float = 300) -> dict[str, Any]:
    started = time.perf_counter()
    response = api.post(f"/api/v1/workspaces/{ws}/pipelines", json={"spec": spec})
    response.raise_for_status()
    run_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    # Poll the light list item, not the detail: the bench must not load the server it measures
    # (the makespan is the run's own measurement, so polling only adds to client_seconds).
    while True:
        latest = api.get(f"/api/v1/workspaces/{ws}/pipelines", params={"limit": 1}).json()["results"][0]
        assert latest["id"] == run_id
        if latest["finished_at"]:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} did not finish within {timeout}s: {latest['counts']}")
        time.sleep(0.1)
    detail = api.get(f"/api/v1/workspaces/{ws}/pipelines/{run_id}").json()
    if detail["status"] != "succeeded":
        raise SystemExit(f"run {run_id} {detail['status']}: {[(s['key'], s['error']) for s in detail['steps'] if s['error']]}")
    detail["client_seconds"] = time.perf_counter() - started
    return detail


def server_processes(server: Server) -> list[Any]:
    """The launcher serving `server` and all its children, when it runs on this machine."""
    import psutil

    port = f"--port {server.url.rsplit(':', 1)[1]}"
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "switchyard.launcher" in cmdline and port in cmdline:
            return [proc, *proc.children(recursive=True)]
    return []


def cpu_seconds(processes: list[Any]) -> float:
    """User + system CPU time of the server's processes (the launcher's children: web, workers,
    sweeper, Redis)."""
    import psutil

    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def measure(server: Server, spec: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    with server.client(timeout=120) as api:
        ws = api.post("/api/v1/workspaces", json={"name": f"bench {spec['name']}", "intelligence": False})
        ws.raise_for_status()
        ws_id = ws.json()["id"]
        run(api, ws_id, independent_spec(2 * WORKERS, 0.05))  # warm every worker up
        processes = server_processes(server)
        details = []
        for _ in range(repeats):
            before = cpu_seconds(processes)
            detail = run(api, ws_id, spec)
            detail["server_cpu_seconds"] = cpu_seconds(processes) - before if processes else None
            details.append(detail)
        return details


def summary(details: list[dict[str, Any]], ideal: float, steps: int) -> dict[str, Any]:
    makespans = [d["makespan_seconds"] for d in details]
    median = statistics.median(makespans)
    return {
        "runs": len(details), "steps": steps, "ideal_seconds": ideal,
        "makespan_seconds": {"median": round(median, 4), "best": round(min(makespans), 4),
                             "all": [round(m, 4) for m in makespans]},
        "client_seconds_median": round(statistics.median(d["client_seconds"] for d in details), 4),
        "ratio": round(median / ideal, 4),
        "overhead_ms_per_step": round((median - ideal) / steps * 1000, 2),
        "speedup_over_sum": statistics.median(d["speedup"] for d in details),
        "critical_path_measured_seconds": statistics.median(d["critical_path"]["seconds"] for d in details),
        # All of the server's CPU (web, workers, sweeper, Redis) per step, polling included: what the
        # machine must supply, whatever else runs on it.
        "server_cpu_ms_per_step": round(statistics.median(d["server_cpu_seconds"] for d in details) / steps * 1000, 1)
        if all(d["server_cpu_seconds"] is not None for d in details) else None,
    }


def second_database() -> dict[str, str]:
    """With DATABASE_URL on PostgreSQL, the one-worker server gets a fresh database of its own next
    to it (`<name>_1worker`), so that both servers start from an empty schema."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return {}
    from urllib.parse import urlparse

    import psycopg

    parsed = urlparse(url)
    name = f"{parsed.path.lstrip('/')}_1worker"
    admin = parsed._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return {"DATABASE_URL": parsed._replace(path=f"/{name}").geturl()}


def main() -> None:
    ideal_a = math.ceil(INDEPENDENT / WORKERS) * STEP_SECONDS
    ideal_b = 4 * STEP_SECONDS
    with bench_server(workers=WORKERS, web_workers=2) as server:
        a = summary(measure(server, independent_spec(INDEPENDENT, STEP_SECONDS), REPEATS), ideal_a, INDEPENDENT)
        b = summary(measure(server, dag_spec(STEP_SECONDS), REPEATS), ideal_b, 10)
    c: dict[str, Any] = {"skipped": "targeting an existing server; set SWITCHYARD_URL_1WORKER to measure (c)"}
    one_url = os.environ.get("SWITCHYARD_URL_1WORKER")
    if not os.environ.get("SWITCHYARD_URL") or one_url:
        if one_url:
            os.environ["SWITCHYARD_URL"] = one_url
        with bench_server(workers=1, web_workers=1, extra_env=second_database()) as single:
            c = summary(measure(single, dag_spec(STEP_SECONDS), REPEATS), 10 * STEP_SECONDS, 10)
        c["speedup_8_over_1"] = round(c["makespan_seconds"]["median"] / b["makespan_seconds"]["median"], 4)
    targets = [
        target("(a) 100 steps on 8 workers: makespan / ideal", a["ratio"], 1.10, "x", a["ratio"] <= 1.10),
        target("(b) four-wave DAG: makespan / critical path", b["ratio"], 1.10, "x", b["ratio"] <= 1.10),
        target("(a) orchestration overhead per step", a["overhead_ms_per_step"], 25, "ms",
               a["overhead_ms_per_step"] < 25),
        target("(b) orchestration overhead per step", b["overhead_ms_per_step"], 25, "ms",
               b["overhead_ms_per_step"] < 25),
    ]
    emit({"benchmark": "pipeline", "step_seconds": STEP_SECONDS, "workers": WORKERS, "cpus": os.cpu_count(),
          "load_average": [round(x, 2) for x in os.getloadavg()],
          "a_independent": a, "b_dag": b, "c_dag_one_worker": c}, targets)


if __name__ == "__main__":
    main()
