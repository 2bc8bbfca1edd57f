"""Pipelines under faults: an RQ worker killed mid-step (its step is retried on another worker once its
lease runs out), and a lost job (the sweep enqueues the step again)."""
from __future__ import annotations

import os
import signal
import time

import redis

from tests.helpers import create_workspace
from tests.test_pipeline_helpers import step, submit, task, wait_run


def worker_running(connection: redis.Redis, job_prefix: str, timeout: float = 30.0) -> tuple[int, str]:
    """The pid and name of the RQ worker whose current job starts with `job_prefix`."""
    from rq import Worker

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in Worker.all(connection=connection):
            current = worker.get_current_job_id()
            if current and current.startswith(job_prefix):
                return worker.pid, worker.name
        time.sleep(0.05)
    raise AssertionError(f"no worker picked up a job {job_prefix}*")


def test_a_worker_killed_mid_step_has_its_step_retried_elsewhere(live, make_user, settings):
    """GIVEN a 4 s step with a 3 s lease WHEN the RQ worker running it is SIGKILLed mid-step THEN the
    lease runs out, the step is requeued and runs again on another worker process, the run succeeds,
    and the orphan restarted within its lease plus a few seconds."""
    owner = make_user("kim")
    connection = redis.Redis.from_url(settings.REDIS_URL)
    with live.client(owner.token) as api:
        ws = create_workspace(api, "faults", intelligence=False)
        spec = {"name": "crash", "steps": [{"id": "long", "agent": "sleep", "lease_seconds": 3, "retries": 2,
                                            "params": {"seconds": 4, "text": "survived"}, "outputs": ["out"]}]}
        run = submit(api, ws, spec)
        task_id = step(run, "long")["task"]
        pid, name = worker_running(connection, f"pl-{task_id}-")
        # Only ever a worker of the live server this session started.
        assert os.getpgid(pid) == live.proc.pid, "the worker belongs to the test's launcher"
        wait_run(api, ws, run["id"], until=lambda d: step(d, "long")["status"] == "claimed", timeout=30)
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        detail = wait_run(api, ws, run["id"], timeout=60)
        assert detail["status"] == "succeeded", detail
        info = task(api, ws, task_id)
        assert info["history"][0]["reason"] == "lease_expired" and info["attempts"] == 1
        assert info["result"]["worker"].rsplit(":", 1)[1] != str(pid)
        assert info["result"]["attempt"] == 2
        # The lease (3 s), the back-off (at most 1 s), a sweep, and the 4 s step again, with room for load.
        assert time.monotonic() - killed_at < 25
        assert api.get(f"/api/v1/workspaces/{ws}/files/{step(detail, 'long')['outputs']['out']['path']}").text \
            == "survived\n"


def test_a_step_whose_job_was_lost_is_enqueued_by_the_sweep(live, make_user, monkeypatch):
    """GIVEN a run submitted while its jobs could not reach Redis (every enqueue lost) WHEN the live
    server's `pipelines.dispatch` sweep runs THEN it finds the ready steps without a live job, enqueues
    them, and the run succeeds: a lost job never stalls a run."""
    from agents.pipelines import dispatch
    from agents.pipelines.services import pipeline_submit
    from workspace.access import workspace_for
    from workspace.models import Role

    owner = make_user("lou")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "lost", intelligence=False)
        lost: list[object] = []
        monkeypatch.setattr(dispatch, "_enqueue_now", lambda items, at_front: lost.extend(items) or [])
        run = pipeline_submit(access=workspace_for(owner.user, ws, need=Role.EDITOR), spec={"name": "lost", "steps": [
            {"id": "a", "agent": "sleep", "params": {"seconds": 0}, "outputs": ["x"]},
            {"id": "b", "agent": "sleep", "params": {"seconds": 0}, "inputs": ["x"]}]})
        monkeypatch.undo()
        assert [item.task_id for item in lost] == [run.steps.get(key="a").task_id]
        detail = wait_run(api, ws, run.id, timeout=30)
        assert detail["status"] == "succeeded", detail
        assert task(api, ws, step(detail, "a")["task"])["attempts"] == 0
