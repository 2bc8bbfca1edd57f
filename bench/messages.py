"""Messages: publish and pull+ack throughput, and publish -> delivery latency.

- publish throughput with 1 and 8 concurrent publishers (messages/s);
- pull+ack throughput of one consumer group with 1, 8 and 32 concurrent consumers (acks/s), each
  consumer pulling up to 10 unkeyed messages and acking them, until a pre-published backlog is gone;
- publish -> delivery latency (p50/p99), from sending the publish request to the message arriving,
  over the topic WebSocket and over a long-polling pull (`wait_seconds`);
- beside the authenticated no-op `GET /api/v1/me` in the same run.

    python bench/messages.py                  # starts its own server (launcher, temp data dir)
    SWITCHYARD_URL=... SWITCHYARD_TOKEN=... python bench/messages.py

Targets: publish -> delivery p50 under 20 ms (both ways); 32 consumers reach at least 60% of one
consumer's acks per second. The last line is one JSON object with a `targets` list.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, bench_server, emit, noop_baseline, summarize_ms, target  # noqa: E402

BACKLOG = int(os.environ.get("BENCH_MESSAGES_BACKLOG", "1500"))
PUBLISHES = int(os.environ.get("BENCH_MESSAGES_PUBLISHES", "400"))
LATENCY_SAMPLES = int(os.environ.get("BENCH_MESSAGES_LATENCY_SAMPLES", "200"))
CONSUMERS = (1, 8, 32)


def _topic(ws: str, name: str) -> str:
    return f"/api/v1/workspaces/{ws}/topics/{name}"


def publish_throughput(server: Server, ws: str, topic: str, publishers: int, count: int) -> dict[str, Any]:
    """`count` publishes split over `publishers` threads, each with its own connection."""
    def run(share: int) -> None:
        with server.client() as api:
            for i in range(share):
                api.post(f"{_topic(ws, topic)}/messages", json={"body": {"i": i}}).raise_for_status()

    shares = [count // publishers + (1 if i < count % publishers else 0) for i in range(publishers)]
    started = time.perf_counter()
    with ThreadPoolExecutor(publishers) as pool:
        list(pool.map(run, shares))
    elapsed = time.perf_counter() - started
    return {"publishers": publishers, "messages": count, "seconds": round(elapsed, 3),
            "per_second": round(count / elapsed, 1)}


async def _drain(server: Server, ws: str, topic: str, consumers: int, expected: int) -> dict[str, Any]:
    """`consumers` concurrent pull+ack loops on one group until `expected` messages are acked."""
    acked = 0
    pulls = 0
    url = f"{server.url}{_topic(ws, topic)}/groups/bench"
    headers = {"Authorization": f"Bearer {server.token}"}
    limits = httpx.Limits(max_connections=consumers + 4, max_keepalive_connections=consumers + 4)
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as api:
        async def consumer() -> None:
            nonlocal acked, pulls
            while acked < expected:
                response = await api.post(f"{url}/pull", json={"max": 10, "visibility_seconds": 60,
                                                               "wait_seconds": 0.5})
                response.raise_for_status()
                pulls += 1
                offsets = [m["offset"] for m in response.json()["results"]]
                if not offsets:
                    continue
                done = await api.post(f"{url}/ack", json={"offsets": offsets})
                done.raise_for_status()
                acked += len(done.json()["acked"])

        started = time.perf_counter()
        await asyncio.gather(*(consumer() for _ in range(consumers)))
        elapsed = time.perf_counter() - started
    return {"consumers": consumers, "acked": acked, "pulls": pulls, "seconds": round(elapsed, 3),
            "acks_per_second": round(acked / elapsed, 1)}


def consume_throughput(server: Server, ws: str, consumers: int) -> dict[str, Any]:
    topic = f"drain-{consumers}"
    publish_throughput(server, ws, topic, 8, BACKLOG)
    return asyncio.run(_drain(server, ws, topic, consumers, BACKLOG))


def _paced_publishes(server: Server, ws: str, topic: str, sent: dict[int, float], listening: threading.Event) -> None:
    """One publish at a time, each once the receiver is listening again: this measures delivery,
    not a queue building up behind a slow receiver."""
    with server.client() as api:
        for i in range(LATENCY_SAMPLES + 10):
            if not listening.wait(30):
                raise SystemExit("the receiver stopped listening")
            listening.clear()
            time.sleep(0.03)  # the receiver's request reaches the server and starts waiting
            sent[i] = time.perf_counter()
            api.post(f"{_topic(ws, topic)}/messages", json={"body": {"i": i}}).raise_for_status()


def websocket_latency(server: Server, ws: str) -> dict[str, float]:
    from websockets.sync.client import connect

    topic = "latency-ws"
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    listening = threading.Event()
    url = server.url.replace("http", "ws", 1) + f"/ws/workspaces/{ws}/topics/{topic}/?after=0"
    with connect(url, additional_headers={"Authorization": f"Bearer {server.token}"}, open_timeout=30) as conn:
        publisher = threading.Thread(target=_paced_publishes, args=(server, ws, topic, sent, listening))
        publisher.start()
        listening.set()
        while len(got) < LATENCY_SAMPLES + 10:
            frame = json.loads(conn.recv(timeout=30))
            got[frame["body"]["i"]] = time.perf_counter()
            listening.set()
        publisher.join()
    return summarize_ms([got[i] - sent[i] for i in range(10, LATENCY_SAMPLES + 10)])


def long_poll_latency(server: Server, ws: str) -> dict[str, float]:
    topic = "latency-lp"
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    listening = threading.Event()
    publisher = threading.Thread(target=_paced_publishes, args=(server, ws, topic, sent, listening))
    publisher.start()
    url = f"{_topic(ws, topic)}/groups/latency"
    with server.client() as api:
        while len(got) < LATENCY_SAMPLES + 10:
            listening.set()
            response = api.post(f"{url}/pull", json={"max": 10, "wait_seconds": 10})
            response.raise_for_status()
            now = time.perf_counter()
            results = response.json()["results"]
            for message in results:
                got[message["body"]["i"]] = now
            if results:
                api.post(f"{url}/ack", json={"offsets": [m["offset"] for m in results]}).raise_for_status()
    publisher.join()
    return summarize_ms([got[i] - sent[i] for i in range(10, LATENCY_SAMPLES + 10)])


def main() -> None:
    with bench_server(workers=2, web_workers=2) as server:
        with server.client() as api:
            response = api.post("/api/v1/workspaces", json={"name": "bench-messages", "intelligence": False})
            response.raise_for_status()
            ws = response.json()["id"]
        noop = noop_baseline(server)
        publish = [publish_throughput(server, ws, f"publish-{n}", n, PUBLISHES) for n in (1, 8)]
        drain = {n: consume_throughput(server, ws, n) for n in CONSUMERS}
        ws_latency = websocket_latency(server, ws)
        lp_latency = long_poll_latency(server, ws)
    single = drain[1]["acks_per_second"]
    scaling = drain[32]["acks_per_second"] / single if single else 0.0
    figures = {
        "benchmark": "messages",
        "server": "started" if server.started else server.url,
        "database": "postgresql" if "postgres" in os.environ.get("DATABASE_URL", "") else "sqlite",
        "noop_me": noop,
        "publish": publish,
        "pull_ack": [drain[n] for n in CONSUMERS],
        "delivery_latency_websocket": ws_latency,
        "delivery_latency_long_poll": lp_latency,
        # The machine's load in one number: each p50 in units of the no-op request's p50.
        "p50_over_noop_p50": {
            "publish_mean_1_publisher": round(1000 / publish[0]["per_second"] / noop["p50_ms"], 2),
            "websocket": round(ws_latency["p50_ms"] / noop["p50_ms"], 2),
            "long_poll": round(lp_latency["p50_ms"] / noop["p50_ms"], 2),
        },
    }
    emit(figures, [
        target("publish->delivery p50, WebSocket", ws_latency["p50_ms"], 20.0, "ms", ws_latency["p50_ms"] < 20.0),
        target("publish->delivery p50, long-poll", lp_latency["p50_ms"], 20.0, "ms", lp_latency["p50_ms"] < 20.0),
        target("pull+ack acks/s, 32 consumers / 1 consumer", scaling, 0.6, "ratio", scaling >= 0.6),
    ])


if __name__ == "__main__":
    main()
