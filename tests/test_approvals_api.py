"""Approvals (API.md "Approvals"): gating a task's dependents, rejection with a comment, staleness."""
from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.helpers import assert_error, put_file


@pytest.fixture
def ada(live, api, ws, make_agent, owner):
    agent = make_agent("ada", created_by=owner.user)
    api.put(f"/api/v1/workspaces/{ws}/members/ada", json={"role": "editor"})
    with live.client(agent.token) as client:
        yield client


def url(ws: str, *parts: str) -> str:
    return "/".join([f"/api/v1/workspaces/{ws}", *parts])


def task_of(api: httpx.Client, ws: str, task_id: str) -> dict[str, Any]:
    return api.get(url(ws, "tasks", task_id)).json()


def test_requires_approval_gates_dependents_until_approved(api, ws, ada):
    """GIVEN draft (requires_approval) and publish depending on it WHEN ada completes draft THEN an approval
    is requested automatically, draft waits in `blocked` and publish stays blocked and unclaimable; WHEN the
    owner approves THEN draft is done and publish is queued."""
    draft = api.post(url(ws, "tasks"), json={"title": "draft", "requires_approval": True}).json()
    publish = api.post(url(ws, "tasks"), json={"title": "publish", "depends_on": [draft["id"]]}).json()
    assert ada.post(url(ws, "tasks", "claim"), json={}).json()["id"] == draft["id"]
    done = ada.post(url(ws, "tasks", draft["id"], "complete"), json={"result": "v1 of the text"}).json()
    assert done["status"] == "blocked" and done["approval"]["status"] == "pending"
    approval_id = done["approval"]["id"]
    approval = api.get(url(ws, "approvals", approval_id)).json()
    assert approval["task"] == draft["id"] and approval["automatic"] is True and approval["requested_by"] == "ada"
    assert [a["id"] for a in api.get(url(ws, "approvals"), params={"status": "pending"}).json()["results"]] \
        == [approval_id]
    assert task_of(api, ws, publish["id"])["status"] == "blocked"
    assert ada.post(url(ws, "tasks", "claim"), json={}).status_code == 204
    decided = api.post(url(ws, "approvals", approval_id, "decide"), json={"decision": "approve", "comment": "ok"})
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    assert decided.json()["decided_by"] == "olga"
    assert task_of(api, ws, draft["id"])["status"] == "done"
    assert task_of(api, ws, publish["id"])["status"] == "queued"
    assert ada.post(url(ws, "tasks", "claim"), json={}).json()["id"] == publish["id"]
    assert_error(api.post(url(ws, "approvals", approval_id, "decide"), json={"decision": "reject"}), 409,
                 "already_decided")


def test_rejection_requeues_the_task_with_the_comment(api, ws, ada):
    """GIVEN a completed task awaiting approval WHEN the owner rejects it with a comment THEN the task is
    queued again, its JSON carries the comment as `review`, the agent can claim it again and its next
    completion requests a new approval."""
    task = api.post(url(ws, "tasks"), json={"title": "draft", "requires_approval": True}).json()
    ada.post(url(ws, "tasks", "claim"), json={})
    first = ada.post(url(ws, "tasks", task["id"], "complete"), json={"result": "v1"}).json()["approval"]["id"]
    rejected = api.post(url(ws, "approvals", first, "decide"),
                        json={"decision": "reject", "comment": "Cite your sources."})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert rejected.json()["comment"] == "Cite your sources."
    again = task_of(api, ws, task["id"])
    assert again["status"] == "queued" and again["completed_at"] is None
    assert again["review"]["decision"] == "reject" and again["review"]["comment"] == "Cite your sources."
    assert again["review"]["by"] == "olga"
    reclaimed = ada.post(url(ws, "tasks", "claim"), json={}).json()
    assert reclaimed["id"] == task["id"] and reclaimed["review"]["comment"] == "Cite your sources."
    second = ada.post(url(ws, "tasks", task["id"], "complete"), json={"result": "v2"}).json()["approval"]["id"]
    assert second != first
    types = [e["type"] for e in api.get(url(ws, "events"), params={
        "type": "approval.requested,approval.decided,task.requeued"}).json()["results"]]
    assert types == ["approval.requested", "approval.decided", "task.requeued", "approval.requested"]


def test_only_admins_and_owners_decide(live, api, ws, ada, make_user):
    """GIVEN a pending approval WHEN an editor decides it THEN 403; an admin may; a bad decision is 400."""
    created = ada.post(url(ws, "approvals"), json={"title": "Delete the old drafts?", "description": "They're stale."})
    assert created.status_code == 201 and created.json()["status"] == "pending"
    approval_id = created.json()["id"]
    assert_error(ada.post(url(ws, "approvals", approval_id, "decide"), json={"decision": "approve"}), 403,
                 "forbidden")
    assert_error(api.post(url(ws, "approvals", approval_id, "decide"), json={"decision": "maybe"}), 400)
    admin = make_user("adam")
    api.put(url(ws, "members", "adam"), json={"role": "admin"})
    with live.client(admin.token) as adam:
        decided = adam.post(url(ws, "approvals", approval_id, "decide"), json={"decision": "reject", "comment": "no"})
    assert decided.status_code == 200 and decided.json()["decided_by"] == "adam"
    assert_error(api.post(url(ws, "approvals", "apr_nope", "decide"), json={"decision": "approve"}), 404)


def test_approval_of_a_file_version_goes_stale_when_the_file_changes(api, ws, ada):
    """GIVEN an approval for report.md@1 WHEN the file is written again THEN the approval becomes stale
    (an approval.stale event is recorded) and approving it is 409 approval_stale."""
    put_file(api, ws, "report.md", "v1")
    created = ada.post(url(ws, "approvals"), json={"title": "Publish the report?", "path": "report.md"})
    assert created.status_code == 201 and created.json()["version"] == 1
    approval_id = created.json()["id"]
    assert_error(ada.post(url(ws, "approvals"), json={"title": "x", "path": "report.md", "version": 7}), 409,
                 "stale_version")
    assert_error(ada.post(url(ws, "approvals"), json={"title": "x", "path": "missing.md"}), 404)
    put_file(ada, ws, "report.md", "v2")
    deadline = time.monotonic() + 10
    while api.get(url(ws, "approvals", approval_id)).json()["status"] != "stale" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.get(url(ws, "approvals", approval_id)).json()["status"] == "stale"
    stale_events = api.get(url(ws, "events"), params={"type": "approval.stale"}).json()["results"]
    assert stale_events[0]["data"]["current_version"] == 2
    assert_error(api.post(url(ws, "approvals", approval_id, "decide"), json={"decision": "approve"}), 409,
                 "approval_stale")


def test_decide_time_check_refuses_a_changed_file_even_before_the_listener(db, make_user):
    """GIVEN an approval for a.md@1 whose file changes without any listener running (in-process, no
    on-commit hooks) WHEN an admin approves THEN 409 approval_stale, and the approval is recorded stale."""
    from workspace.access import workspace_for
    from workspace.errors import Conflict
    from workspace.models import Approval
    from workspace.services.approvals import approval_decide, approval_request
    from workspace.services.files import file_write
    from workspace.services.workspaces import workspace_create

    owner = make_user("olga")
    ws = workspace_create(user=owner.user, name="w", intelligence=False)
    access = workspace_for(owner.user, ws.id)
    file_write(access=access, path="a.md", content=b"1")
    approval = approval_request(access=access, title="ok?", path="a.md")
    file_write(access=access, path="a.md", content=b"2")  # in a `db` test, on_commit listeners never run
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    with pytest.raises(Conflict) as refused:
        approval_decide(access=access, approval_id=approval.pk, decision="approve")
    assert refused.value.code == "approval_stale"
    assert Approval.objects.get(pk=approval.pk).status == "stale"


def test_bad_requests_are_4xx(api, ws):
    """GIVEN bad approval requests WHEN posted THEN 400 with the error body, and nothing is created."""
    assert_error(api.post(url(ws, "approvals"), json={"description": "no title"}), 400)
    assert_error(api.post(url(ws, "approvals"), json={"title": "x", "version": 2}), 400)
    assert_error(api.post(url(ws, "approvals"), json={"title": "x", "task": "task_nope"}), 400, "unknown_task")
    assert_error(api.post(url(ws, "approvals"), json={"title": "x", "path": "../etc"}), 400, "invalid_path")
    assert_error(api.get(url(ws, "approvals"), params={"status": "maybe"}), 400)
    assert api.get(url(ws, "approvals")).json()["results"] == []


def test_approval_list_query_count_is_constant(db, make_user, django_assert_max_num_queries):
    """GIVEN 25 approvals, some decided WHEN the list is read in-process THEN a fixed number of queries run."""
    from rest_framework.test import APIClient

    from workspace.access import workspace_for
    from workspace.services.approvals import approval_decide, approval_request
    from workspace.services.workspaces import workspace_create

    owner = make_user("olga")
    ws = workspace_create(user=owner.user, name="w", intelligence=False)
    access = workspace_for(owner.user, ws.id)
    for i in range(25):
        approval = approval_request(access=access, title=f"question {i}")
        if i % 2:
            approval_decide(access=access, approval_id=approval.pk, decision="approve")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.token}")
    with django_assert_max_num_queries(4):
        response = client.get(f"/api/v1/workspaces/{ws.id}/approvals", {"limit": 100})
    assert response.status_code == 200 and len(response.json()["results"]) == 25
    assert sum(a["status"] == "approved" for a in response.json()["results"]) == 12
