"""Tasks under real concurrency against the live server: racing claimer processes, a claimant killed
mid-task, and a four-wave DAG run by parallel workers. Correctness is read back from the event log."""
from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import datetime
from typing import Any

import httpx

from tests.helpers import create_workspace

SPAWN = multiprocessing.get_context("spawn")


def _client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


# -- worker processes (module level, so that spawned children can import them) -------------------
def drain_queue(url: str, token: str, ws: str, out: Any) -> None:
    """Claim and complete until the queue answers 204; report what was claimed and any error."""
    claimed: list[str] = []
    errors: list[str] = []
    with _client(url, token) as api:
        while True:
            got = api.post(f"/api/v1/workspaces/{ws}/tasks/claim", json={"queue": "drain"})
            if got.status_code == 204:
                break
            if got.status_code != 200:
                errors.append(f"claim: {got.status_code} {got.text[:200]}")
                break
            task = got.json()
            claimed.append(task["id"])
            done = api.post(f"/api/v1/workspaces/{ws}/tasks/{task['id']}/complete",
                            json={"result": {"n": task["payload"]["n"]}, "lease_id": task["lease_id"]})
            if done.status_code != 200:
                errors.append(f"complete {task['id']}: {done.status_code} {done.text[:200]}")
    out.put({"claimed": claimed, "errors": errors})


def claim_then_hang(url: str, token: str, ws: str, out: Any) -> None:
    """Claim one task, say which, then work forever (until SIGKILL)."""
    with _client(url, token) as api:
        got = api.post(f"/api/v1/workspaces/{ws}/tasks/claim", json={"queue": "crash"})
        out.put(got.json() if got.status_code == 200 else {"error": got.status_code})
        time.sleep(3600)


# -- helpers ------------------------------------------------------------------------------------------
def add_agents(live: Any, api: httpx.Client, ws: str, make_agent: Any, owner: Any, names: list[str]) -> list[Any]:
    agents = []
    for name in names:
        agent = make_agent(name, created_by=owner.user)
        assert api.put(f"/api/v1/workspaces/{ws}/members/{name}", json={"role": "editor"}).status_code == 200
        agents.append(agent)
    return agents


def all_events(api: httpx.Client, ws: str, types: list[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    params: dict[str, Any] = {"type": ",".join(types), "limit": 500}
    while True:
        page = api.get(f"/api/v1/workspaces/{ws}/events", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        results.extend(body["results"])
        if not body["next"]:
            return results
        params["cursor"] = body["next"]


def holding_violations(events: list[dict[str, Any]]) -> list[str]:
    """Walk the task events in seq order: a claim while another claim of the same task is still
    open, or a completion by anyone but the open claim's holder, is a violation."""
    holder: dict[str, str] = {}
    problems = []
    for event in events:
        task = event["target"]
        if event["type"] == "task.claimed":
            if task in holder:
                problems.append(f"{task} claimed by {event['actor']} while held by {holder[task]}")
            holder[task] = event["actor"]
        elif event["type"] == "task.completed":
            if holder.pop(task, None) != event["actor"]:
                problems.append(f"{task} completed by {event['actor']}, who did not hold it")
        elif event["type"] in ("task.requeued", "task.failed", "task.cancelled"):
            holder.pop(task, None)
    return problems


# -- tests --------------------------------------------------------------------------------------------
def test_eight_claimer_processes_drain_500_tasks_exactly_once(live, make_user, make_agent):
    """GIVEN 500 queued tasks WHEN 8 claimer processes race to claim and complete them THEN every task is
    done exactly once, no claimer saw an error, and the event log never shows a task held by two
    claimants at once."""
    owner = make_user("olga")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "drain")
        agents = add_agents(live, api, ws, make_agent, owner, [f"claimer{i}" for i in range(8)])
        batch = [{"title": f"task {i}", "queue": "drain", "payload": {"n": i}} for i in range(500)]
        created = api.post(f"/api/v1/workspaces/{ws}/tasks/batch", json={"tasks": batch})
        assert created.status_code == 201, created.text
        ids = {t["id"] for t in created.json()["tasks"]}
        out = SPAWN.Queue()
        procs = [SPAWN.Process(target=drain_queue, args=(live.url, a.token, ws, out)) for a in agents]
        started = time.monotonic()
        for proc in procs:
            proc.start()
        reports = [out.get(timeout=240) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        elapsed = time.monotonic() - started
        claimed = [task for report in reports for task in report["claimed"]]
        assert [e for report in reports for e in report["errors"]] == []
        assert len(claimed) == 500 and set(claimed) == ids, "every task claimed exactly once"
        assert sum(1 for report in reports if report["claimed"]) >= 2, "the claimers really raced"
        done = api.get(f"/api/v1/workspaces/{ws}/tasks", params={"status": "done", "limit": 500}).json()
        assert len(done["results"]) == 500
        events = all_events(api, ws, ["task.claimed", "task.completed", "task.requeued", "task.failed"])
        assert holding_violations(events) == []
        assert sum(e["type"] == "task.claimed" for e in events) == 500
        assert sum(e["type"] == "task.completed" for e in events) == 500
    print(f"drained 500 tasks with 8 claimers in {elapsed:.1f}s")


def test_sigkilled_claimant_task_returns_after_its_lease_and_another_finishes_it(live, make_user, make_agent):
    """GIVEN a task with a 2 s lease claimed by a process WHEN that process is SIGKILLed mid-task THEN the
    sweeper puts the task back within 2 s of the lease's end with attempts 1, another agent claims and
    completes it, and the events tell the story: claimed, heartbeat-lost, requeued, claimed, completed."""
    owner = make_user("olga")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "crash")
        victim, rescuer = add_agents(live, api, ws, make_agent, owner, ["victim", "rescuer"])
        task = api.post(f"/api/v1/workspaces/{ws}/tasks",
                        json={"title": "fragile", "queue": "crash", "lease_seconds": 2}).json()
        out = SPAWN.Queue()
        proc = SPAWN.Process(target=claim_then_hang, args=(live.url, victim.token, ws, out))
        proc.start()
        held = out.get(timeout=60)
        assert held.get("id") == task["id"], held
        proc.kill()
        proc.join(timeout=10)
        assert proc.exitcode == -9
        with live.client(rescuer.token) as other:
            deadline = time.monotonic() + 20
            while (got := other.post(f"/api/v1/workspaces/{ws}/tasks/claim", json={"queue": "crash"})).status_code \
                    == 204 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert got.status_code == 200, "the task never came back"
            again = got.json()
            assert again["id"] == task["id"] and again["attempts"] == 1
            assert again["history"][0]["by"] == "victim" and again["history"][0]["reason"] == "lease_expired"
            done = other.post(f"/api/v1/workspaces/{ws}/tasks/{task['id']}/complete", json={"result": "rescued"})
            assert done.status_code == 200 and done.json()["status"] == "done"
        events = all_events(api, ws, ["task.claimed", "task.heartbeat-lost", "task.requeued", "task.completed"])
        assert [(e["type"], e["actor"]) for e in events] == [
            ("task.claimed", "victim"), ("task.heartbeat-lost", None), ("task.requeued", None),
            ("task.claimed", "rescuer"), ("task.completed", "rescuer")]
        lost = events[1]
        lease_end = datetime.fromisoformat(lost["data"]["lease_expires_at"])
        assert (datetime.fromisoformat(lost["at"]) - lease_end).total_seconds() < 2.0
        assert holding_violations(events) == []


WAVES = ("research", "write", "review")
TOPICS = ("A", "B", "C")


def test_four_waves_run_as_a_dag_with_parallel_workers(live, make_user, make_agent):
    """GIVEN research A/B/C -> write A/B/C -> review A/B/C -> merge -> publish as one batch WHEN three
    worker threads claim and complete (0.4 s of work each) THEN every task is claimed only after all its
    dependencies completed, independent tasks overlap in time, and the claimed intervals add up to well
    more than the run's span (a speed-up over doing them in sequence)."""
    owner = make_user("olga")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "waves")
        workers = add_agents(live, api, ws, make_agent, owner, ["w1", "w2", "w3"])
        spec: list[dict[str, Any]] = []
        for wave_index, wave in enumerate(WAVES):
            for topic in TOPICS:
                deps = [f"{WAVES[wave_index - 1]}-{topic}"] if wave_index else []
                spec.append({"ref": f"{wave}-{topic}", "title": f"{wave} {topic}", "kind": wave, "queue": "waves",
                             "depends_on": deps})
        spec.append({"ref": "merge", "title": "merge", "kind": "merge", "queue": "waves",
                     "depends_on": [f"review-{t}" for t in TOPICS]})
        spec.append({"ref": "publish", "title": "publish", "kind": "publish", "queue": "waves",
                     "depends_on": ["merge"]})
        created = api.post(f"/api/v1/workspaces/{ws}/tasks/batch", json={"tasks": spec})
        assert created.status_code == 201, created.text
        by_id = {t["id"]: t for t in created.json()["tasks"]}
        ref_of = {t["id"]: s["ref"] for t, s in zip(created.json()["tasks"], spec, strict=True)}
        assert sum(t["status"] == "queued" for t in by_id.values()) == 3
        finished = threading.Semaphore(0)
        stop = threading.Event()
        failures: list[str] = []

        def work(token: str) -> None:
            with _client(live.url, token) as client:
                while not stop.is_set():
                    got = client.post(f"/api/v1/workspaces/{ws}/tasks/claim", json={"queue": "waves"})
                    if got.status_code == 204:
                        time.sleep(0.05)
                        continue
                    if got.status_code != 200:
                        failures.append(got.text)
                        return
                    time.sleep(0.4)
                    done = client.post(f"/api/v1/workspaces/{ws}/tasks/{got.json()['id']}/complete",
                                       json={"result": ref_of[got.json()["id"]]})
                    if done.status_code != 200:
                        failures.append(done.text)
                    finished.release()

        threads = [threading.Thread(target=work, args=(w.token,)) for w in workers]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for _ in by_id:
            assert finished.acquire(timeout=60), "the DAG did not finish"
        elapsed = time.monotonic() - started
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        assert failures == []
        events = all_events(api, ws, ["task.claimed", "task.completed"])
        claimed = {e["target"]: e["seq"] for e in events if e["type"] == "task.claimed"}
        completed = {e["target"]: e["seq"] for e in events if e["type"] == "task.completed"}
        assert set(claimed) == set(completed) == set(by_id)
        for task_id, task in by_id.items():
            for dep in task["depends_on"]:
                assert claimed[task_id] > completed[dep], f"{ref_of[task_id]} started before {ref_of[dep]} finished"

        def overlap(a: str, b: str) -> bool:
            return claimed[a] < completed[b] and claimed[b] < completed[a]

        ids = {ref: task_id for task_id, ref in ref_of.items()}
        research = [ids[f"research-{t}"] for t in TOPICS]
        pairs = [(a, b) for i, a in enumerate(research) for b in research[i + 1:]]
        assert sum(overlap(a, b) for a, b in pairs) >= 2, "independent research tasks ran at the same time"
        # The speed-up over running them one after another, from the server's own timestamps: the
        # summed claimed intervals over the makespan (ideally 11/5: the critical path is 5 tasks long).
        at = {(e["type"], e["target"]): datetime.fromisoformat(e["at"]) for e in events}
        busy = sum((at["task.completed", t] - at["task.claimed", t]).total_seconds() for t in by_id)
        makespan = (max(at["task.completed", t] for t in by_id) - min(at["task.claimed", t] for t in by_id))
        assert busy / makespan.total_seconds() > 1.3, f"no speed-up: {busy:.1f}s of work in {makespan} ({elapsed:.1f}s)"
        assert holding_violations(events) == []
