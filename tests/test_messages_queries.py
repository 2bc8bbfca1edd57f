"""The list endpoints of messages run a fixed number of queries, however long the page."""
from __future__ import annotations

from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient


def _queries(client: APIClient, url: str) -> tuple[int, dict[str, Any]]:
    client.get(url)  # warm: the token's once-a-while "last used" update is not the list's cost
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(captured.captured_queries), response.json()


def test_list_endpoints_cost_the_same_queries_for_few_rows_and_many(db, make_user, make_agent):
    """GIVEN a workspace WHEN its topic log, topic list and trigger list are read with few rows and again
    with ten times as many THEN each read runs the same number of queries, and the pages are complete."""
    from workspace.access import workspace_for
    from workspace.services.messages import message_publish
    from workspace.services.triggers import trigger_set
    from workspace.services.workspaces import member_set, workspace_create

    owner = make_user()
    publishers = [make_agent() for _ in range(3)]
    ws = workspace_create(user=owner.user, name="queries", intelligence=False)
    access = workspace_for(owner.user, ws.id)
    for agent in publishers:
        member_set(access=access, username=agent.username, role="editor")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.token}")
    base = f"/api/v1/workspaces/{ws.id}"

    def grow(count: int) -> None:
        for i in range(count):
            agent_access = workspace_for(publishers[i % 3].user, ws.id)
            message_publish(access=agent_access, topic="log", body={"i": i}, key=f"k{i}")
            message_publish(access=agent_access, topic=f"t{i:03d}-{count}", body={})
            trigger_set(access=access, name=f"trig-{count}-{i}", on={"topic": "log"}, create_task={"title": "x"})

    grow(3)
    few = {url: _queries(client, f"{base}{url}") for url in ("/topics/log/messages", "/topics", "/triggers")}
    grow(30)
    many = {url: _queries(client, f"{base}{url}") for url in ("/topics/log/messages", "/topics", "/triggers")}
    for url in few:
        assert few[url][0] == many[url][0], (url, few[url][0], many[url][0])
    assert len(many["/topics/log/messages"][1]["results"]) == 33
    assert {m["publisher"] for m in many["/topics/log/messages"][1]["results"]} == {a.username for a in publishers}
    assert len(many["/topics"][1]["results"]) == 34
    assert len(many["/triggers"][1]["results"]) == 33
