"""Rate limits and token hygiene (issue 9), against a launcher of its own with low limits.

The shared live server runs with a huge auth-failure limit (other tests send bad tokens on purpose),
so this module starts a second launcher with SWITCHYARD_AUTH_FAILURE_LIMIT=5 and
SWITCHYARD_TOKEN_RATE_LIMIT=5 on the same database and Redis.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, start_launcher, stop_launcher

AUTH_FAILURE_LIMIT = 5
TOKEN_RATE_LIMIT = 5


@pytest.fixture(scope="module")
def limited(live_server_process: LiveServer) -> Iterator[LiveServer]:
    server = start_launcher(workers=1, web_workers=2, extra_env={
        "SWITCHYARD_AUTH_FAILURE_LIMIT": str(AUTH_FAILURE_LIMIT),
        "SWITCHYARD_TOKEN_RATE_LIMIT": str(TOKEN_RATE_LIMIT),
    })
    yield server
    stop_launcher(server)


def _flush_limits() -> None:
    """Forget earlier counters (other tests share this Redis), so each test starts from zero."""
    from workspace.redis import get_redis

    redis = get_redis()
    for pattern in ("sy:authfail:*", "sy:rate:*"):
        for key in redis.scan_iter(pattern):
            redis.delete(key)


def _log_files(server: LiveServer) -> list[Path]:
    return [p for p in [*server.data_dir.glob("launcher-*.log"), *(server.data_dir / "logs").glob("*")]
            if p.is_file()]


def test_auth_failures_past_the_limit_get_429_with_retry_after(limited, transactional_db, make_user):
    """GIVEN a server allowing 5 authentication failures a minute per address WHEN a client sends 8 requests with
    a wrong token THEN the first 5 are 401 and the rest 429 with the error body and a Retry-After of at most 60
    seconds; a valid token still works meanwhile (good requests are not failures)."""
    _flush_limits()
    good = make_user("limit-good")
    statuses = []
    with httpx.Client(base_url=limited.api, timeout=30) as client:
        for i in range(AUTH_FAILURE_LIMIT + 3):
            response = client.get("/me", headers={"Authorization": f"Bearer syd_wrong{i}"})
            statuses.append(response.status_code)
            last = response
        assert statuses == [401] * AUTH_FAILURE_LIMIT + [429] * 3, statuses
        assert last.json()["error"]["code"] == "rate_limited", last.text
        retry_after = int(last.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert client.get("/me", headers=good.headers).status_code == 200
    _flush_limits()


def test_requests_past_the_per_token_rate_get_429(limited, transactional_db, make_user):
    """GIVEN a limit of 5 requests a second per account WHEN one token sends 20 requests back to back THEN some
    are refused with 429 rate_limited and Retry-After: 1, no more than 5 succeed within any one second, and
    another account is not affected; after a second's pause the token works again."""
    _flush_limits()
    busy, other = make_user("limit-busy"), make_user("limit-other")
    ok_by_second: dict[int, int] = {}
    refused = []
    with httpx.Client(base_url=limited.api, headers=busy.headers, timeout=30) as client:
        for _ in range(20):
            response = client.get("/me")
            second = int(time.time())
            if response.status_code == 200:
                ok_by_second[second] = ok_by_second.get(second, 0) + 1
            else:
                refused.append(response)
        assert refused, "20 requests in a burst should exceed 5 a second"
        for response in refused:
            assert response.status_code == 429, response.text
            assert response.json()["error"]["code"] == "rate_limited"
            assert response.headers["Retry-After"] == "1"
        # The server counts per wall-clock second; allow one second of skew between client and server.
        assert max(ok_by_second.values()) <= 2 * TOKEN_RATE_LIMIT, ok_by_second
        with httpx.Client(base_url=limited.api, headers=other.headers, timeout=30) as second_client:
            assert second_client.get("/me").status_code == 200
        time.sleep(1.1)
        assert client.get("/me").status_code == 200
    _flush_limits()


def test_tokens_are_never_logged_and_stored_only_hashed(limited, transactional_db, make_user):
    """GIVEN a valid token and a wrong one WHEN both are used (and a new token is issued through the API) THEN
    no log file of the launcher contains either secret, and the database holds only their SHA-256 digest:
    no column of any token row (nor, on SQLite, any byte of the database file) contains a secret."""
    from django.conf import settings

    from agents import tokens
    from agents.models import ApiToken

    _flush_limits()
    user = make_user("limit-secret")
    wrong = tokens.new_secret()
    with httpx.Client(base_url=limited.api, timeout=30) as client:
        assert client.get("/me", headers=user.headers).status_code == 200
        assert client.get("/me", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        issued = client.post("/tokens", json={"name": "issued"}, headers=user.headers)
        assert issued.status_code == 201, issued.text
        new_secret = issued.json()["token"]
        assert client.get("/me", headers={"Authorization": f"Bearer {new_secret}"}).status_code == 200
    time.sleep(0.5)  # let the servers' log handlers flush
    secrets_used = [user.token, wrong, new_secret]
    logs = _log_files(limited)
    assert logs, "the launcher writes logs"
    for path in logs:
        text = path.read_bytes()
        for secret in secrets_used:
            assert secret.encode() not in text, f"{path} contains a token"
            assert secret[12:].encode() not in text, f"{path} contains most of a token"
    rows = list(ApiToken.objects.filter(user__username="limit-secret").values())
    assert len(rows) == 2
    for row in rows:
        assert row["digest"] in {tokens.digest(user.token), tokens.digest(new_secret)}
        for value in row.values():
            for secret in secrets_used:
                assert secret not in str(value)
                assert secret[12:] not in str(value)
    if settings.IS_SQLITE:
        from django.db import connection

        connection.close()  # make sure everything is on disk, not only in this connection
        database = Path(settings.DATABASES["default"]["NAME"]).read_bytes()
        wal = Path(str(settings.DATABASES["default"]["NAME"]) + "-wal")
        if wal.exists():
            database += wal.read_bytes()
        for secret in (user.token, new_secret):
            assert secret.encode() not in database
    _flush_limits()
