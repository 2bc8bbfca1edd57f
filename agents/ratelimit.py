"""A token bucket per named resource (an LLM endpoint, an API), shared by every worker process.

The bucket lives in one Redis hash and one Lua script refills and takes from it, so a grant is
atomic across processes and hosts and is decided on the Redis server's clock, never a worker's.
A denied caller learns how long until enough tokens are back and sleeps that long plus jitter,
so a crowd of denied workers does not come back at the same instant (thundering herd).

Buckets: the server's (settings PIPELINE_RATE_LIMITS, default `llm` at 5/s with a burst of 5),
shared by every workspace, and a spec's own `rate_limits`, scoped to its workspace so that one
run cannot retune a bucket that others share.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

import redis

from workspace.errors import ServiceError

DEFAULT_LIMITS: dict[str, dict[str, float]] = {"llm": {"rate": 5.0, "burst": 5.0}}
MAX_RATE = 10_000.0
MAX_BURST = 10_000.0

# KEYS[1] the bucket; ARGV rate (tokens/s), burst (capacity), tokens wanted.
# Returns {1, "0"} on a grant, else {0, "<seconds until enough tokens>"} (a string: Lua numbers
# returned to Redis are truncated to integers).
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
end
local granted = 0
local wait = 0
if tokens >= want then
  tokens = tokens - want
  granted = 1
else
  wait = (want - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate) * 1000) + 60000)
return {granted, string.format('%.6f', wait)}
"""


class RateLimitTimeout(ServiceError):
    status = 429
    code = "rate_limited"


@dataclass(frozen=True)
class Limit:
    rate: float
    burst: float


class TokenBucket:
    """One named bucket on a Redis connection. Usable without Django (tests use it from plain
    processes)."""

    def __init__(self, client: redis.Redis, key: str, *, rate: float, burst: float) -> None:
        if not (0 < rate <= MAX_RATE) or not (1 <= burst <= MAX_BURST):
            raise ValueError("rate must be in (0, 10000] tokens/s and burst in [1, 10000]")
        self.client = client
        self.key = key
        self.rate = float(rate)
        self.burst = float(burst)
        self._script = client.register_script(_SCRIPT)

    def try_take(self, tokens: float = 1.0) -> tuple[bool, float]:
        """(granted, seconds to wait before enough tokens are back)."""
        granted, wait = self._script(keys=[self.key], args=[self.rate, self.burst, tokens])
        return bool(int(granted)), float(wait)

    def take(self, tokens: float = 1.0, *, timeout: float = 60.0, jitter: float = 0.2,
             stop: Any = None) -> float:
        """Block until granted; returns the seconds waited. Raises RateLimitTimeout after `timeout`,
        or returns early with -1 when `stop` (a threading.Event) is set."""
        if tokens > self.burst:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.burst}")
        started = time.monotonic()
        while True:
            granted, wait = self.try_take(tokens)
            if granted:
                return time.monotonic() - started
            # Sleep until enough tokens are back, plus up to `jitter` of that again (at least a
            # millisecond's worth), so that denied callers spread out instead of colliding.
            pause = wait + random.uniform(0, max(wait * jitter, 0.001))  # noqa: S311 - jitter
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                raise RateLimitTimeout(message=f"No token from the rate limit {self.key!r} within {timeout:g}s.",
                                       resource=self.key, retry_after=math.ceil(wait))
            if stop is not None:
                if stop.wait(min(pause, remaining)):
                    return -1.0
            else:
                time.sleep(min(pause, remaining))


def server_limits() -> dict[str, Limit]:
    from django.conf import settings

    raw = getattr(settings, "PIPELINE_RATE_LIMITS", None) or DEFAULT_LIMITS
    return {name: Limit(rate=float(v["rate"]), burst=float(v.get("burst", v["rate"]))) for name, v in raw.items()}


def bucket_for(*, name: str, workspace_id: str, spec_limits: dict[str, Any] | None = None) -> TokenBucket:
    """The bucket a step names: the server's if configured there, else the spec's own (scoped to
    the workspace). The spec was checked at submission, so an unknown name cannot get here."""
    from workspace.redis import get_redis

    shared = server_limits()
    if name in shared:
        limit = shared[name]
        key = f"sy:bucket:{name}"
    else:
        own = (spec_limits or {})[name]
        limit = Limit(rate=float(own["rate"]), burst=float(own.get("burst", 1)))
        key = f"sy:bucket:{workspace_id}:{name}"
    return TokenBucket(get_redis(), key, rate=limit.rate, burst=limit.burst)
