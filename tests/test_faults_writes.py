"""Crash safety of writes (issue 9): SIGKILL the web server at random points during uploads."""
from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import start_launcher, stop_launcher
from tests.helpers import create_workspace

ROOT = Path(__file__).resolve().parent.parent
UPLOADS = 200
KILLS = 6


def web_processes(launcher_pid: int) -> list[psutil.Process]:
    """The web tier: the uvicorn supervisor under the launcher and its worker processes."""
    found = []
    for proc in psutil.Process(launcher_pid).children():
        try:  # a process killed a moment ago is a zombie (or gone) until its parent reaps it
            if proc.status() != psutil.STATUS_ZOMBIE and "uvicorn" in " ".join(proc.cmdline()):
                found += [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.slow
def test_sigkilled_web_server_loses_no_acknowledged_write_and_leaves_no_partial_version(
        live_server_process, transactional_db, make_user):
    """GIVEN 200 uploads from 4 clients WHEN the web tier is SIGKILLed at random moments (and restarted by
    the launcher) THEN every acknowledged write reads back with its sha256, and fsck finds no partial
    version, no version without its blob and no blob that does not match."""
    owner = make_user()
    server = start_launcher(workers=1, web_workers=2)
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()
    try:
        with server.client(owner.token) as api:
            ws = create_workspace(api, "crash")
        todo = list(range(UPLOADS))
        todo_lock = threading.Lock()

        def uploader() -> None:
            with httpx.Client(base_url=server.url, headers=owner.headers, timeout=10) as client:
                while True:
                    with todo_lock:
                        if not todo:
                            return
                        i = todo.pop()
                    body = os.urandom(random.randint(1, 256 * 1024))
                    path = f"up/{i}.bin"
                    for _attempt in range(100):
                        try:
                            response = client.put(f"/api/v1/workspaces/{ws}/files/{path}", content=body,
                                                  headers={"Idempotency-Key": f"up-{i}"})
                        except httpx.HTTPError:
                            time.sleep(0.2)
                            continue
                        if response.status_code in (200, 201):
                            with lock:
                                acknowledged[path] = hashlib.sha256(body).hexdigest()
                            break
                        assert response.status_code >= 500 or response.status_code == 409, response.text
                        time.sleep(0.2)

        threads = [threading.Thread(target=uploader) for _ in range(4)]
        for t in threads:
            t.start()
        # Kill points are random counts of acknowledged uploads, so the kills land mid-run however
        # fast the machine is; four uploaders always have requests in flight when one lands.
        kill_at = sorted(random.sample(range(5, UPLOADS - 20), KILLS))
        kills = 0
        while any(t.is_alive() for t in threads):
            if kill_at and len(acknowledged) >= kill_at[0]:
                time.sleep(random.uniform(0, 0.05))
                victims = web_processes(server.proc.pid)  # none while the launcher restarts the web tier
                for proc in victims:
                    try:
                        proc.send_signal(signal.SIGKILL)
                    except psutil.NoSuchProcess:
                        pass
                if victims:
                    kills += 1
                    kill_at.pop(0)
            time.sleep(0.01)
        for t in threads:
            t.join()
        assert kills == KILLS
        assert len(acknowledged) == UPLOADS
        with server.client(owner.token) as api:
            for path, sha in acknowledged.items():
                for _ in range(50):
                    try:
                        response = api.get(f"/api/v1/workspaces/{ws}/files/{path}")
                        break
                    except httpx.HTTPError:
                        time.sleep(0.2)
                assert response.status_code == 200, (path, response.text)
                assert hashlib.sha256(response.content).hexdigest() == sha
                history = api.get(f"/api/v1/workspaces/{ws}/history/{path}").json()["results"]
                assert len(history) == 1, f"{path}: a retried upload must not make a second version"
    finally:
        stop_launcher(server)
    fsck = subprocess.run([sys.executable, "manage.py", "fsck", "--json"], cwd=ROOT, env=server.env,
                          capture_output=True, text=True, timeout=120)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
