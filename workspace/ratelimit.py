"""Rate limits held in Redis, so every web process shares them.

- Authentication failures per client address: past AUTH_FAILURE_LIMIT a minute, 429.
- Requests per token per second (SWITCHYARD_TOKEN_RATE_LIMIT, off by default).
A Redis outage disables limiting rather than failing requests.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import redis
from django.conf import settings

from workspace.errors import TooManyRequests
from workspace.redis import get_redis

log = logging.getLogger(__name__)
_WINDOW = 60


def _client_address(request: Any) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


# INCR, and set the window's expiry on the first hit; one script, so a crash between the two
# can never leave a counter that never expires. (EXPIRE ... NX would need Redis 7; the bundled
# server is 6.2.)
_INCR_WITH_EXPIRY = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


def _incr(key: str, window: int) -> int:
    return int(get_redis().eval(_INCR_WITH_EXPIRY, 1, key, window))


def auth_failure_record(request: Any) -> None:
    key = f"sy:authfail:{_client_address(request)}:{int(time.time()) // _WINDOW}"
    try:
        count = _incr(key, _WINDOW)
    except redis.RedisError as exc:
        log.warning("auth failure limiter unavailable: %s", exc)
        return
    if count > settings.AUTH_FAILURE_LIMIT:
        retry = _WINDOW - int(time.time()) % _WINDOW
        raise TooManyRequests("rate_limited", "Too many failed authentication attempts; wait and retry.",
                              headers={"Retry-After": str(retry)}, retry_after=retry)


def token_rate_check(user_id: Any) -> None:
    limit = settings.TOKEN_RATE_LIMIT
    if not limit:
        return
    second = int(time.time())
    try:
        count = _incr(f"sy:rate:{user_id}:{second}", 2)
    except redis.RedisError as exc:
        log.warning("token limiter unavailable: %s", exc)
        return
    if count > limit:
        raise TooManyRequests("rate_limited", f"At most {limit} requests a second per account.",
                              headers={"Retry-After": "1"}, retry_after=1)
