"""A hand-off end to end: a trigger creates the task, an agent claims it and reads its input, another
agent changes the input, and the first agent's stale result is refused until it accepts it knowingly."""
from __future__ import annotations

from tests.helpers import assert_error, create_workspace, put_file
from tests.test_messages_api import add_member
from tests.test_triggers import tasks_of, trigger_url, wait_for


def test_completing_on_a_stale_input_is_refused_unless_accepted(live, make_user, make_agent):
    """GIVEN a trigger that makes a review task for each file written under `in/`, and agent A claiming that
    task and reading in/doc.md version 1 with X-Task-Id WHEN agent B writes version 2 THEN A's complete is
    refused with 409 stale_inputs naming in/doc.md at version 2, and with accept_stale it goes through."""
    owner, agent_a, agent_b = make_user(), make_agent("reader"), make_agent("changer")
    with live.client(owner.token) as api, live.client(agent_a.token) as as_a, live.client(agent_b.token) as as_b:
        ws = create_workspace(api, "stale")
        add_member(api, ws, "reader", "editor")
        add_member(api, ws, "changer", "editor")
        assert api.put(trigger_url(ws, "review-input"), json={
            "on": {"event": "file.written", "prefix": "in/"},
            "create_task": {"title": "Review", "kind": "review", "queue": "reviews"}}).status_code == 201
        assert put_file(as_b, ws, "in/doc.md", "version one").status_code == 201
        wait_for(lambda: len(tasks_of(api, ws, "review")) == 1, 30, "the triggered task")

        claimed = as_a.post(f"/api/v1/workspaces/{ws}/tasks/claim", json={"queue": "reviews"})
        assert claimed.status_code == 200, claimed.text
        task = claimed.json()
        assert task["payload"]["trigger"]["event"]["data"]["path"] == "in/doc.md"
        read = as_a.get(f"/api/v1/workspaces/{ws}/files/in/doc.md", headers={"X-Task-Id": task["id"]})
        assert read.status_code == 200 and read.headers["X-Version"] == "1"

        assert put_file(as_b, ws, "in/doc.md", "version two").status_code == 200

        complete = f"/api/v1/workspaces/{ws}/tasks/{task['id']}/complete"
        error = assert_error(as_a.post(complete, json={"result": {"ok": True}}), 409, "stale_inputs")
        assert [(f["path"], f["read_version"], f["current_version"]) for f in error["files"]] == [("in/doc.md", 1, 2)]
        assert as_a.get(f"/api/v1/workspaces/{ws}/tasks/{task['id']}").json()["status"] == "claimed"

        done = as_a.post(complete, json={"result": {"ok": True}, "accept_stale": True})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "done"
        # Version 2 fired the trigger too: a fresh review task waits for it.
        wait_for(lambda: len(tasks_of(api, ws, "review")) == 2, 30, "the second triggered task")
