"""Shared benchmark harness.

Every benchmark either targets a running server (SWITCHYARD_URL, with SWITCHYARD_TOKEN for an
account that may create workspaces) or starts its own with the real launcher on a temporary data
directory, measures a baseline (the authenticated no-op `GET /api/v1/me`) in the same run, and
prints as its last line one JSON object with a `targets` list.

    with bench_server(workers=4) as server:
        token = server.token
        ...
    emit({"figures": ...}, [target("write p50 / no-op p50", ratio, 3.0, "x", ratio <= 3.0)])
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    url: str
    token: str
    started: bool

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token or self.token}"},
                            timeout=kwargs.pop("timeout", 60), **kwargs)

    def new_agent_token(self, name: str) -> str:
        """An agent account created by the benchmark's account (so each client has its own token)."""
        with self.client() as api:
            response = api.post("/api/v1/agents", json={"name": name})
            response.raise_for_status()
            return str(response.json()["token"])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def bench_server(*, workers: int = 2, web_workers: int = 2, chroma: bool = False,
                 extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """SWITCHYARD_URL if set, else a fresh launcher on a temp data dir (stopped afterwards)."""
    url = os.environ.get("SWITCHYARD_URL")
    if url:
        token = os.environ.get("SWITCHYARD_TOKEN", "")
        if not token:
            raise SystemExit("SWITCHYARD_URL is set: set SWITCHYARD_TOKEN to a human account's token too")
        yield Server(url=url.rstrip("/"), token=token, started=False)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    env = dict(os.environ)
    env["SWITCHYARD_DATA_DIR"] = str(data_dir)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra_env or {})
    for name in ("REDIS_URL", "CHROMA_URL"):
        if name in os.environ and not os.environ.get(f"BENCH_KEEP_{name}"):
            env.pop(name, None)
    port = _free_port()
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    token = subprocess.run([py, "manage.py", "create_user", "bench", "--email", "bench@localhost"], cwd=ROOT,
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    argv = [py, "-m", "switchyard.launcher", "--port", str(port), "--workers", str(workers),
            "--web-workers", str(web_workers), "--no-migrate", "--no-admin", "--no-seed"]
    if not chroma:
        argv.append("--no-chroma")
    log = open(data_dir / "launcher.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(url=f"http://127.0.0.1:{port}", token=token, started=True)
    try:
        deadline = time.monotonic() + float(os.environ.get("SWITCHYARD_START_TIMEOUT", "300"))
        while True:
            try:
                httpx.get(f"{server.api}/health", timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start; see {data_dir}/launcher.log") from None
                time.sleep(0.2)
        yield server
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3), "p99_ms": round(percentile(ms, 99), 3),
            "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan")}


def time_calls(fn: Callable[[], Any], n: int, *, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def noop_baseline(server: Server, n: int = 300) -> dict[str, float]:
    """The authenticated no-op: `GET /api/v1/me` (token lookup + a tiny JSON body)."""
    with server.client() as api:
        def call() -> None:
            api.get("/api/v1/me").raise_for_status()

        return summarize_ms(time_calls(call, n))


def target(name: str, value: float, goal: float, unit: str, ok: bool) -> dict[str, Any]:  # noqa: FBT001
    return {"name": name, "value": round(value, 4), "target": goal, "unit": unit, "ok": bool(ok)}


def emit(figures: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    """Print the figures, then (last line) the one JSON object with the targets."""
    print(json.dumps({**figures, "targets": targets}))
