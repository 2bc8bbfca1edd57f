"""The shared rate limiter: one token bucket in Redis that every process respects (agents/ratelimit.py),
tested from separate processes and through the pipeline workers."""
from __future__ import annotations

import multiprocessing
import time
import uuid
from typing import Any

from tests.helpers import create_workspace
from tests.test_pipeline_helpers import submit, wait_run, when

SPAWN = multiprocessing.get_context("spawn")


def hammer(url: str, key: str, rate: float, burst: float, seconds: float, ready: Any, go: Any, start: Any,
           out: Any) -> None:
    """Take tokens as fast as the bucket allows for `seconds` from the common start; report each grant."""
    import redis

    from agents.ratelimit import TokenBucket

    bucket = TokenBucket(redis.Redis.from_url(url), key, rate=rate, burst=burst)
    bucket.client.ping()
    ready.put(True)
    go.wait(60)
    start_at = start.value
    grants = []
    while time.time() < start_at:
        time.sleep(0.0005)
    while time.time() < start_at + seconds:
        granted, wait = bucket.try_take()
        if granted:
            grants.append(time.time())
        else:
            time.sleep(min(wait, 0.002))
    out.put(grants)


def take_blocking(url: str, key: str, count: int, out: Any) -> None:
    import redis

    from agents.ratelimit import TokenBucket

    bucket = TokenBucket(redis.Redis.from_url(url), key, rate=10, burst=1)
    out.put([bucket.take(timeout=30) for _ in range(count)])


def run_processes(target: Any, args_list: list[tuple[Any, ...]]) -> list[Any]:
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*args, out)) for args in args_list]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return results


def test_three_processes_never_get_more_than_rate_times_time_plus_burst(redis_server):
    """GIVEN a bucket of 20 tokens/s with a burst of 5 and three processes taking as fast as they can
    WHEN they hammer it for 2 s THEN together they get at most 20 * 2 + 5 tokens, and close to that."""
    rate, burst, seconds = 20.0, 5.0, 2.0
    key = f"sy:bucket:test:{uuid.uuid4().hex}"
    ready, out, go, start = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event(), SPAWN.Value("d", 0.0)
    procs = [SPAWN.Process(target=hammer, args=(redis_server, key, rate, burst, seconds, ready, go, start, out))
             for _ in range(3)]
    for proc in procs:
        proc.start()
    for _ in procs:  # every process has imported and connected: start together
        ready.get(timeout=120)
    start.value = start_at = time.time() + 0.2
    go.set()
    results = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    grants = [t for r in results for t in r if start_at <= t <= start_at + seconds]
    assert len(grants) <= rate * seconds + burst, len(grants)
    assert len(grants) >= 0.8 * rate * seconds, len(grants)
    assert all(len(r) > 0 for r in results), "every process got some tokens"
    # And at any moment: no one-second window holds more than rate + burst grants.
    ordered = sorted(grants)
    for i, t in enumerate(ordered):
        window = [u for u in ordered[i:] if u < t + 1.0]
        assert len(window) <= rate + burst


def test_blocking_takes_wait_their_turn_across_processes(redis_server):
    """GIVEN a bucket of 10 tokens/s with a burst of 1 WHEN three processes each take 5 tokens, blocking
    THEN the 15 grants need at least 1.4 s in all, and most takes had to wait."""
    key = f"sy:bucket:test:{uuid.uuid4().hex}"
    started = time.monotonic()
    results = run_processes(take_blocking, [(redis_server, key, 5)] * 3)
    elapsed = time.monotonic() - started
    waits = [w for r in results for w in r]
    assert len(waits) == 15
    assert elapsed >= 1.4
    assert sum(w > 0.01 for w in waits) >= 10


def test_pipeline_steps_on_every_worker_share_one_bucket(live, make_user):
    """GIVEN six steps that each take a token from a bucket of 2 tokens/s with a burst of 1 WHEN both
    workers run them THEN the steps end at least 2.5 s apart in all (one token every half second),
    and the steps report the time they spent throttled."""
    owner = make_user("rita")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "limits", intelligence=False)
        spec = {"name": "throttled", "rate_limits": {"slow-api": {"rate": 2, "burst": 1}},
                "steps": [{"id": f"call{i}", "agent": "sleep", "rate_limit": "slow-api",
                           "params": {"seconds": 0}} for i in range(6)]}
        detail = wait_run(api, ws, submit(api, ws, spec)["id"], timeout=60)
        assert detail["status"] == "succeeded", detail
        ends = sorted(when(s["ended_at"]) for s in detail["steps"])
        assert (ends[-1] - ends[0]).total_seconds() >= 2.3
        throttled = [api.get(f"/api/v1/workspaces/{ws}/tasks/{s['task']}").json()["result"]["throttled_seconds"]
                     for s in detail["steps"]]
        assert sum(t > 0 for t in throttled) >= 3
