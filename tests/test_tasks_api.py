"""Tasks through the real HTTP stack (API.md "Tasks"): creation, dependencies, claims, leases,
the claimant rule, stale inputs, idempotency, failure and cancellation."""
from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.helpers import assert_error, put_file


@pytest.fixture
def agents(live, api, ws, make_agent, owner):
    """Two agent accounts, editors of the workspace, each with its own client."""
    clients = []
    for name in ("ada", "bob"):
        agent = make_agent(name, created_by=owner.user)
        assert api.put(f"/api/v1/workspaces/{ws}/members/{name}", json={"role": "editor"}).status_code == 200
        clients.append(live.client(agent.token))
    yield clients
    for client in clients:
        client.close()


def tasks_url(ws: str, *parts: str) -> str:
    return "/".join([f"/api/v1/workspaces/{ws}/tasks", *parts])


def create(api: httpx.Client, ws: str, **fields: Any) -> dict[str, Any]:
    response = api.post(tasks_url(ws), json={"title": fields.pop("title", "a task"), **fields})
    assert response.status_code == 201, response.text
    return response.json()


def claim(api: httpx.Client, ws: str, **fields: Any) -> httpx.Response:
    return api.post(tasks_url(ws, "claim"), json=fields)


def events(api: httpx.Client, ws: str, *types: str) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/workspaces/{ws}/events", params={"type": ",".join(types), "limit": 500})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_create_get_and_list(api, ws):
    """GIVEN a workspace WHEN a task is created with every field THEN 201 echoes them, GET returns it,
    the list filters by status and queue, and a task.created event is recorded."""
    body = create(api, ws, title="Summarise", kind="summary", queue="research", payload={"doc": "a.md"},
                  priority=5, max_attempts=2, lease_seconds=30)
    assert body["status"] == "queued" and body["attempts"] == 0 and body["claimed_by"] is None
    assert (body["kind"], body["queue"], body["payload"], body["priority"], body["max_attempts"],
            body["lease_seconds"], body["created_by"]) == ("summary", "research", {"doc": "a.md"}, 5, 2, 30, "olga")
    assert api.get(tasks_url(ws, body["id"])).json()["title"] == "Summarise"
    create(api, ws, title="other")
    listed = api.get(tasks_url(ws), params={"queue": "research"}).json()
    assert [t["id"] for t in listed["results"]] == [body["id"]] and listed["next"] is None
    assert len(api.get(tasks_url(ws), params={"status": "queued"}).json()["results"]) == 2
    assert [e["target"] for e in events(api, ws, "task.created")][0] == body["id"]


BAD_TASKS = [
    ({"title": ""}, "title"),
    ({"title": "x", "priority": "high"}, "priority"),
    ({"title": "x", "max_attempts": 0}, "max_attempts"),
    ({"title": "x", "lease_seconds": 100000}, "lease_seconds"),
    ({"title": "x", "payload": [1, 2]}, "payload"),
    ({"title": "x", "queue": "has space"}, None),
    ({"title": "x", "depends_on": "task_1"}, "depends_on"),
    ({"title": "x", "payload": {"k": "nul\u0000"}}, None),
    (["not", "an", "object"], None),
]


def test_bad_input_is_400_and_creates_nothing(api, ws):
    """GIVEN malformed tasks WHEN each is created THEN 400 with the error body naming the field, and no
    task exists afterwards."""
    for fields, field in BAD_TASKS:
        error = assert_error(api.post(tasks_url(ws), json=fields), 400)
        if field:
            assert field in error.get("fields", {}), (fields, error)
    assert_error(api.post(tasks_url(ws), content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    assert_error(claim(api, ws, kinds="k1"), 400)
    assert_error(claim(api, ws, lease_seconds=0), 400)
    assert_error(api.get(tasks_url(ws), params={"status": "sleeping"}), 400)
    assert api.get(tasks_url(ws)).json()["results"] == []


def test_unknown_dependency_is_400(api, ws):
    """GIVEN no task task_nope WHEN a task depends on it THEN 400 unknown_dependency naming it."""
    error = assert_error(api.post(tasks_url(ws), json={"title": "x", "depends_on": ["task_nope"]}), 400,
                         "unknown_dependency")
    assert error["dependencies"] == ["task_nope"]


def test_dependency_cycle_is_400(api, ws):
    """GIVEN a batch whose tasks depend on each other in a ring WHEN created THEN 400 dependency_cycle
    naming the cycle, and nothing is created; the same batch without the back edge is created."""
    ring = [{"ref": "a", "title": "A", "depends_on": ["c"]}, {"ref": "b", "title": "B", "depends_on": ["a"]},
            {"ref": "c", "title": "C", "depends_on": ["b"]}]
    error = assert_error(api.post(tasks_url(ws, "batch"), json={"tasks": ring}), 400, "dependency_cycle")
    assert set(error["cycle"]) == {"a", "b", "c"} and error["cycle"][0] == error["cycle"][-1]
    selfish = [{"ref": "a", "title": "A", "depends_on": ["a"]}]
    assert_error(api.post(tasks_url(ws, "batch"), json={"tasks": selfish}), 400, "dependency_cycle")
    assert api.get(tasks_url(ws)).json()["results"] == []
    ring[0]["depends_on"] = []
    created = api.post(tasks_url(ws, "batch"), json={"tasks": ring})
    assert created.status_code == 201
    statuses = [t["status"] for t in created.json()["tasks"]]
    assert statuses == ["queued", "blocked", "blocked"]


def test_claim_order_priority_then_oldest_and_filters(api, ws):
    """GIVEN tasks of two priorities, kinds and queues WHEN claimed THEN the highest priority comes first,
    then the oldest; kinds and queue filter; an empty queue answers 204."""
    low = create(api, ws, title="low", kind="k1")
    high1 = create(api, ws, title="high1", kind="k2", priority=9)
    high2 = create(api, ws, title="high2", kind="k1", priority=9)
    other = create(api, ws, title="elsewhere", queue="q2")
    assert claim(api, ws, kinds=["k1"]).json()["id"] == high2["id"]
    assert claim(api, ws).json()["id"] == high1["id"]
    got = claim(api, ws)
    assert got.json()["id"] == low["id"] and got.json()["status"] == "claimed" and got.json()["claimed_by"] == "olga"
    empty = claim(api, ws)
    assert empty.status_code == 204 and empty.content == b""
    assert claim(api, ws, queue="q2").json()["id"] == other["id"]


def test_dependencies_release_on_complete(api, ws):
    """GIVEN B depending on A WHEN A is claimed and completed THEN B goes from blocked to queued in the
    same step, and only then can be claimed."""
    a = create(api, ws, title="A")
    b = create(api, ws, title="B", depends_on=[a["id"]])
    assert b["status"] == "blocked" and b["depends_on"] == [a["id"]]
    assert claim(api, ws).json()["id"] == a["id"]
    assert claim(api, ws).status_code == 204
    done = api.post(tasks_url(ws, a["id"], "complete"), json={"result": {"ok": True}, "outputs": ["out/a.md"]})
    assert done.status_code == 200 and done.json()["status"] == "done" and done.json()["outputs"] == ["out/a.md"]
    assert api.get(tasks_url(ws, b["id"])).json()["status"] == "queued"
    assert claim(api, ws).json()["id"] == b["id"]
    ready = events(api, ws, "task.ready")
    assert ready[0]["target"] == b["id"] and ready[0]["data"]["released_by"] == [a["id"]]


def test_only_the_claimant_may_act(api, ws, agents):
    """GIVEN a task claimed by ada WHEN bob heartbeats, completes or fails it THEN 409 not_claimant each
    time and the task stays ada's."""
    ada, bob = agents
    task = create(api, ws)
    assert claim(ada, ws).json()["claimed_by"] == "ada"
    for action, body in (("heartbeat", {}), ("complete", {"result": 1}), ("fail", {"error": "x"})):
        assert_error(bob.post(tasks_url(ws, task["id"], action), json=body), 409, "not_claimant")
    unclaimed = create(api, ws, title="nobody's", queue="other")
    assert_error(ada.post(tasks_url(ws, unclaimed["id"], "complete"), json={}), 409, "not_claimant")
    assert_error(ada.post(tasks_url(ws, "task_unknown", "complete"), json={}), 404, "not_found")
    assert api.get(tasks_url(ws, task["id"])).json()["claimed_by"] == "ada"


def test_heartbeat_extends_and_lost_lease_refuses_late_complete(api, ws, agents):
    """GIVEN ada's 1 s lease WHEN she heartbeats THEN it extends; WHEN she then stops, the lease runs out,
    the task returns with attempts 1 and bob claims it THEN ada's late complete is refused (409) and
    bob's succeeds."""
    ada, bob = agents
    task = create(api, ws, lease_seconds=1)
    first = claim(ada, ws).json()
    beat = ada.post(tasks_url(ws, task["id"], "heartbeat"), json={"lease_seconds": 2})
    assert beat.status_code == 200 and beat.json()["lease_expires_at"] > first["lease_expires_at"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = claim(bob, ws)
        if got.status_code == 200:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the task never came back to the queue")
    assert got.json()["attempts"] == 1 and got.json()["history"][0]["reason"] == "lease_expired"
    late = assert_error(ada.post(tasks_url(ws, task["id"], "complete"), json={"result": "late"}), 409,
                        "not_claimant")
    assert late["reason"] == "not_claimant"
    # Even the same account cannot finish a claim that was replaced, if it names its old lease.
    assert_error(bob.post(tasks_url(ws, task["id"], "heartbeat"), json={"lease_id": first["lease_id"]}), 409,
                 "not_claimant")
    assert bob.post(tasks_url(ws, task["id"], "complete"), json={"result": "bob"}).json()["status"] == "done"
    kinds = [e["type"] for e in events(api, ws, "task.claimed", "task.heartbeat-lost", "task.requeued",
                                      "task.completed")]
    assert kinds == ["task.claimed", "task.heartbeat-lost", "task.requeued", "task.claimed", "task.completed"]


def test_stale_inputs_refused_unless_accepted(api, ws, agents):
    """GIVEN ada read a.md@1 (by X-Task-Id on her GET) and b.md@1 (recorded by POST reads) WHEN someone
    writes a.md v2 THEN her complete is 409 stale_inputs listing a.md with version 2, and nothing changes;
    with accept_stale it completes."""
    ada, _ = agents
    put_file(api, ws, "a.md", "one")
    put_file(api, ws, "b.md", "one")
    task = create(api, ws)
    claim(ada, ws)
    got = ada.get(f"/api/v1/workspaces/{ws}/files/a.md", headers={"X-Task-Id": task["id"]})
    assert got.status_code == 200
    reads = ada.post(tasks_url(ws, task["id"], "reads"), json={"files": [{"path": "b.md", "version": 1}]})
    assert reads.status_code == 200 and reads.json()["files"] == [{"path": "b.md", "version": 1}]
    assert ada.post(tasks_url(ws, task["id"], "complete"), json={"result": 1, "lease_id": "x"}).status_code == 409
    put_file(api, ws, "a.md", "two")
    error = assert_error(ada.post(tasks_url(ws, task["id"], "complete"), json={"result": 1}), 409, "stale_inputs")
    assert error["files"] == [{"path": "a.md", "read_version": 1, "current_version": 2, "deleted": False}]
    assert api.get(tasks_url(ws, task["id"])).json()["status"] == "claimed"
    done = ada.post(tasks_url(ws, task["id"], "complete"), json={"result": 1, "accept_stale": True})
    assert done.status_code == 200 and done.json()["status"] == "done"
    completed = events(api, ws, "task.completed")[0]["data"]
    assert completed["stale_inputs_accepted"][0]["path"] == "a.md"


def test_reads_only_by_the_claimant_and_only_real_versions(api, ws, agents):
    """GIVEN a task claimed by ada WHEN bob records reads, or ada records a version that does not exist,
    or anyone names an unknown task THEN 409 not_claimant, 400 unknown_version, 404."""
    ada, bob = agents
    put_file(api, ws, "a.md", "one")
    task = create(api, ws)
    claim(ada, ws)
    files = {"files": [{"path": "a.md", "version": 1}]}
    assert_error(bob.post(tasks_url(ws, task["id"], "reads"), json=files), 409, "not_claimant")
    assert_error(bob.get(f"/api/v1/workspaces/{ws}/files/a.md", headers={"X-Task-Id": task["id"]}), 409,
                 "not_claimant")
    assert_error(ada.post(tasks_url(ws, task["id"], "reads"), json={"files": [{"path": "a.md", "version": 7}]}),
                 400, "unknown_version")
    assert_error(ada.post(tasks_url(ws, "task_unknown", "reads"), json=files), 404)
    assert_error(ada.get(f"/api/v1/workspaces/{ws}/files/a.md", headers={"X-Task-Id": "task_unknown"}), 404)


def test_idempotent_create_and_complete(api, ws):
    """GIVEN an Idempotency-Key WHEN create and complete are each retried with the same key and body THEN
    the retry replays the first answer and nothing happens twice; the key with another body is 422."""
    key = {"Idempotency-Key": "create-1"}
    first = api.post(tasks_url(ws), json={"title": "once"}, headers=key)
    again = api.post(tasks_url(ws), json={"title": "once"}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert len(api.get(tasks_url(ws)).json()["results"]) == 1
    assert_error(api.post(tasks_url(ws), json={"title": "different"}, headers=key), 422, "idempotency_key_reused")
    task_id = first.json()["id"]
    claim(api, ws)
    done_key = {"Idempotency-Key": "complete-1"}
    done = api.post(tasks_url(ws, task_id, "complete"), json={"result": 42}, headers=done_key)
    retry = api.post(tasks_url(ws, task_id, "complete"), json={"result": 42}, headers=done_key)
    assert done.status_code == retry.status_code == 200 and retry.json() == done.json()
    assert retry.json()["status"] == "done" and retry.json()["result"] == 42
    assert len(events(api, ws, "task.completed")) == 1
    assert_error(api.post(tasks_url(ws, task_id, "complete"), json={"result": 42}), 409, "not_claimant")


def test_fail_with_retry_requeues_with_backoff_then_fails_and_writes_log(api, ws, agents):
    """GIVEN a task with max_attempts 2 WHEN its claimant fails it with retry THEN it is queued with attempts 1
    and a not_before in the future; WHEN failed again THEN it is failed, its dependent is cancelled and
    failed/<id>.log holds both errors."""
    ada, _ = agents
    task = create(api, ws, max_attempts=2)
    dependent = create(api, ws, title="after", depends_on=[task["id"]])
    claim(ada, ws)
    first = ada.post(tasks_url(ws, task["id"], "fail"), json={"error": "first problem", "retry": True}).json()
    assert first["status"] == "queued" and first["attempts"] == 1 and first["not_before"] is not None
    assert first["error"] == "first problem" and first["claimed_by"] is None
    deadline = time.monotonic() + 5
    while (got := claim(ada, ws)).status_code == 204 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got.status_code == 200 and got.json()["id"] == task["id"]
    final = ada.post(tasks_url(ws, task["id"], "fail"), json={"error": "second problem"}).json()
    assert final["status"] == "failed" and final["attempts"] == 2
    assert api.get(tasks_url(ws, dependent["id"])).json()["status"] == "cancelled"
    log = api.get(f"/api/v1/workspaces/{ws}/files/failed/{task['id']}.log")
    assert log.status_code == 200
    assert "first problem" in log.text and "second problem" in log.text and "attempts: 2 of 2" in log.text
    failed = events(api, ws, "task.failed")[0]["data"]
    assert failed["log"] == f"failed/{task['id']}.log"


def test_lease_running_out_on_the_last_attempt_fails_the_task_and_writes_its_log(api, ws, agents):
    """GIVEN a task with max_attempts 1 and a 1 s lease WHEN its claimant goes silent THEN the sweeper fails it
    (no retry left), records heartbeat-lost then failed, and writes failed/<id>.log naming the expiry."""
    ada, _ = agents
    task = create(api, ws, max_attempts=1, lease_seconds=1)
    claim(ada, ws)
    deadline = time.monotonic() + 10
    while api.get(tasks_url(ws, task["id"])).json()["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.1)
    body = api.get(tasks_url(ws, task["id"])).json()
    assert body["status"] == "failed" and body["attempts"] == 1 and body["claimed_by"] is None
    assert body["history"][0]["reason"] == "lease_expired" and body["history"][0]["by"] == "ada"
    log = api.get(f"/api/v1/workspaces/{ws}/files/failed/{task['id']}.log")
    assert log.status_code == 200 and "lease_expired" in log.text and "attempts: 1 of 1" in log.text
    assert [e["type"] for e in events(api, ws, "task.heartbeat-lost", "task.requeued", "task.failed")] == [
        "task.heartbeat-lost", "task.failed"]


def test_fail_without_retry_fails_at_once(api, ws):
    """GIVEN a claimed task with attempts left WHEN failed with retry false THEN it is failed right away."""
    task = create(api, ws, max_attempts=5)
    claim(api, ws)
    body = api.post(tasks_url(ws, task["id"], "fail"), json={"error": "hopeless", "retry": False}).json()
    assert body["status"] == "failed" and body["attempts"] == 1


def test_cancel_by_creator_or_admin_only_and_cascades(api, ws, agents):
    """GIVEN A and B depending on A, created by the owner WHEN bob (an editor) cancels A THEN 403; WHEN the
    owner does THEN A and B are cancelled; cancelling again is 409."""
    _, bob = agents
    a = create(api, ws, title="A")
    b = create(api, ws, title="B", depends_on=[a["id"]])
    assert_error(bob.post(tasks_url(ws, a["id"], "cancel"), json={}), 403, "forbidden")
    cancelled = api.post(tasks_url(ws, a["id"], "cancel"), json={"reason": "changed plans"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_reason"] == "changed plans"
    assert api.get(tasks_url(ws, b["id"])).json()["status"] == "cancelled"
    assert_error(api.post(tasks_url(ws, a["id"], "cancel"), json={}), 409, "not_cancellable")
    assert_error(api.post(tasks_url(ws), json={"title": "late", "depends_on": [a["id"]]}), 409, "dependency_ended")


def test_viewer_cannot_create_or_claim_and_strangers_see_nothing(live, api, ws, make_user):
    """GIVEN a viewer and a stranger WHEN they create or claim THEN 403 for the viewer, 404 for the stranger."""
    viewer, stranger = make_user("vera"), make_user("sam")
    api.put(f"/api/v1/workspaces/{ws}/members/vera", json={"role": "viewer"})
    create(api, ws)
    with live.client(viewer.token) as v, live.client(stranger.token) as s:
        assert_error(v.post(tasks_url(ws), json={"title": "x"}), 403, "forbidden")
        assert_error(claim(v, ws), 403, "forbidden")
        assert v.get(tasks_url(ws)).status_code == 200
        assert_error(s.get(tasks_url(ws)), 404, "not_found")
        assert_error(claim(s, ws), 404, "not_found")


def test_task_list_query_count_is_constant(db, make_user, django_assert_max_num_queries):
    """GIVEN 30 tasks with dependencies WHEN the list is read in-process THEN a fixed number of queries run."""
    from rest_framework.test import APIClient

    from workspace.access import workspace_for
    from workspace.services.tasks import TaskSpec, task_create_many
    from workspace.services.workspaces import workspace_create

    owner = make_user("quinn")
    ws = workspace_create(user=owner.user, name="q", intelligence=False)
    access = workspace_for(owner.user, ws.id)
    specs = [TaskSpec(title=f"t{i}", ref=str(i), depends_on=[str(i - 1)] if i else ()) for i in range(30)]
    task_create_many(access=access, specs=specs)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.token}")
    with django_assert_max_num_queries(6):
        response = client.get(f"/api/v1/workspaces/{ws.id}/tasks", {"limit": 100})
    assert response.status_code == 200 and len(response.json()["results"]) == 30
    assert response.json()["results"][5]["depends_on"] == [response.json()["results"][4]["id"]]
