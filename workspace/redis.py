"""One Redis client per process, for the things that live in Redis (rate limits, wake-ups)."""
from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2,
                                health_check_interval=30)


def redis_ok() -> bool:
    try:
        return bool(get_redis().ping())
    except redis.RedisError:
        return False
