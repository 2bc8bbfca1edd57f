"""Small helpers shared by API tests."""
from __future__ import annotations

from typing import Any

import httpx


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response has `status` and API.md's error body (with `code` when given)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def create_workspace(api: httpx.Client, name: str = "ws", *, intelligence: bool = False) -> str:
    response = api.post("/api/v1/workspaces", json={"name": name, "intelligence": intelligence})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def put_file(api: httpx.Client, ws: str, path: str, content: bytes | str, **headers: str) -> httpx.Response:
    data = content.encode() if isinstance(content, str) else content
    return api.put(f"/api/v1/workspaces/{ws}/files/{path}", content=data, headers=headers)


def raw_request(base_url: str, method: str, raw_path: str, *, token: str | None = None, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None]:
    """Send a request with the path exactly as given (httpx would normalise '..' and '.' away),
    and return the status and the JSON body (None when the body is not JSON)."""
    import http.client
    import json
    from urllib.parse import urlparse

    parsed = urlparse(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    all_headers = {"Content-Length": str(len(body)), **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    conn.putrequest(method, raw_path, skip_accept_encoding=True)
    for key, value in all_headers.items():
        conn.putheader(key, value)
    conn.endheaders(body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, None


def wait_workers_idle(live: Any, *, workers: int = 2, timeout: float = 120.0) -> None:
    """Wait until the live server's RQ workers are all registered and idle and no job is queued.

    A test that asserts on parallelism (two steps overlapping on two workers) needs a free pool to
    start from; a job left by an earlier test (a retry back-off, a cancelled step winding down) would
    otherwise hold a worker. The launcher names its workers `<host>-<launcher pid>-w<n>`; a worker
    SIGKILLed by an earlier test stays registered (busy) until its TTL, so only live processes count.
    """
    import time

    import django_rq
    from rq import Queue, Worker

    connection = django_rq.get_connection("pipeline")
    marker = f"-{live.proc.pid}-w"
    deadline = time.monotonic() + timeout
    while True:
        mine = [w for w in Worker.all(connection=connection) if marker in w.name and _alive(w.pid)]
        busy = [w.name for w in mine if w.get_state() != "idle"]
        queued = {name: Queue(name, connection=connection).count for name in ("pipeline", "index", "default")}
        if len(mine) >= workers and not busy and not any(queued.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"workers not idle after {timeout}s: {len(mine)} up, busy {busy}, queued {queued}")
        time.sleep(0.05)


def _alive(pid: int | None) -> bool:
    import os

    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def redis_url_with_db(url: str, db: int) -> str:
    """`url` pointing at Redis database `db` (django_rq ignores a "DB" setting when the URL names one)."""
    from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

    parts = urlparse(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}?{urlencode({**dict(parse_qsl(parts.query)), 'db': str(db)})}"
    return urlunparse(parts._replace(path=f"/{db}"))
