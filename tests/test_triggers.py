"""Triggers: an event or a topic message creates a task, exactly once (API.md "Messages")."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import start_launcher, stop_launcher
from tests.helpers import assert_error, create_workspace, put_file
from tests.test_messages_api import add_member, events_of, publish


def trigger_url(ws: str, name: str = "") -> str:
    return f"/api/v1/workspaces/{ws}/triggers" + (f"/{name}" if name else "")


def tasks_of(api: httpx.Client, ws: str, kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = api.get(f"/api/v1/workspaces/{ws}/tasks", params=params)
        assert page.status_code == 200, page.text
        out += [t for t in page.json()["results"] if t["kind"] == kind]
        cursor = page.json()["next"]
        if not cursor:
            return out


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_triggers_are_defined_replaced_listed_and_deleted_by_admins(live, make_user, make_agent):
    """GIVEN a workspace with an editor WHEN the owner PUTs a trigger, PUTs it again, lists, reads and
    deletes it THEN it is 201 then 200, shows its definition and creator, is gone after DELETE, each change
    is an event, and the editor (403) and a stranger (404) can do none of it."""
    owner, editor, stranger = make_user("tess"), make_agent("ed"), make_agent()
    spec = {"on": {"event": "file.written", "prefix": "research/"},
            "create_task": {"title": "Summarise", "kind": "summary", "payload": {"style": "short"}}}
    with live.client(owner.token) as api, live.client(editor.token) as as_editor, \
            live.client(stranger.token) as as_stranger:
        ws = create_workspace(api, "trig")
        add_member(api, ws, "ed", "editor")
        created = api.put(trigger_url(ws, "summarise"), json=spec)
        assert created.status_code == 201, created.text
        body = created.json()
        assert (body["name"], body["on"], body["create_task"], body["created_by"], body["enabled"]) == \
            ("summarise", spec["on"], spec["create_task"], "tess", True)
        replaced = api.put(trigger_url(ws, "summarise"), json={**spec, "create_task": {"title": "Again"}})
        assert replaced.status_code == 200 and replaced.json()["create_task"] == {"title": "Again"}
        assert [t["name"] for t in api.get(trigger_url(ws)).json()["results"]] == ["summarise"]
        assert api.get(trigger_url(ws, "summarise")).json()["create_task"] == {"title": "Again"}

        assert_error(as_editor.put(trigger_url(ws, "mine"), json=spec), 403, "forbidden")
        assert_error(as_editor.get(trigger_url(ws)), 403)
        assert_error(as_editor.delete(trigger_url(ws, "summarise")), 403)
        assert_error(as_stranger.get(trigger_url(ws)), 404)
        assert_error(as_stranger.put(trigger_url(ws, "x"), json=spec), 404)

        assert api.delete(trigger_url(ws, "summarise")).status_code == 204
        assert_error(api.get(trigger_url(ws, "summarise")), 404, "not_found")
        assert_error(api.delete(trigger_url(ws, "summarise")), 404, "not_found")
        assert [e["type"] for e in events_of(api, ws, "trigger.set,trigger.deleted")] == \
            ["trigger.set", "trigger.set", "trigger.deleted"]


BAD_DEFINITIONS = [
    ("Bad Name", {"on": {"topic": "t"}, "create_task": {"title": "x"}}, "invalid_name"),
    ("t", {"on": {"topic": "t", "event": "file.written"}, "create_task": {"title": "x"}}, "invalid_on"),
    ("t", {"on": {}, "create_task": {"title": "x"}}, "invalid_on"),
    ("t", {"on": {"topic": "No Way"}, "create_task": {"title": "x"}}, "invalid_topic"),
    ("t", {"on": {"event": "trigger.fired"}, "create_task": {"title": "x"}}, "invalid_on"),
    ("t", {"on": {"event": "task.created"}, "create_task": {"title": "x"}}, "invalid_on"),
    ("t", {"on": {"event": "file.written", "prefix": 3}, "create_task": {"title": "x"}}, "invalid_on"),
    ("t", {"on": {"event": "file.written", "glob": "*"}, "create_task": {"title": "x"}}, "invalid_on"),
    ("t", {"on": "file.written", "create_task": {"title": "x"}}, "invalid_on"),
    ("t", {"on": {"topic": "t"}, "create_task": {}}, "invalid_create_task"),
    ("t", {"on": {"topic": "t"}, "create_task": {"title": "x", "colour": "red"}}, "invalid_create_task"),
    ("t", {"on": {"topic": "t"}, "create_task": {"title": "x", "priority": "high"}}, "invalid_create_task"),
    ("t", {"on": {"topic": "t"}, "create_task": {"title": "x", "payload": {"trigger": 1}}}, "invalid_create_task"),
    ("t", {"on": {"topic": "t"}, "create_task": ["title"]}, "invalid_create_task"),
    ("t", {"on": {"topic": "t"}, "create_task": {"title": "x", "payload": {"a": "\x00"}}}, "invalid_create_task"),
    ("t", {"on": {"topic": "t"}}, "invalid"),
]


def test_a_bad_trigger_definition_is_a_400_and_defines_nothing(live, make_user):
    """GIVEN a workspace WHEN an admin PUTs each of a list of malformed triggers THEN each is a 400 with
    the error body and its code, and the workspace has no trigger."""
    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api, "bad-trig")
        for name, body, code in BAD_DEFINITIONS:
            assert_error(api.put(trigger_url(ws, name), json=body), 400, code)
        assert api.get(trigger_url(ws)).json()["results"] == []
        assert events_of(api, ws, "trigger.set") == []


def _fire_once(live: Any, make_user: Any, make_agent: Any, servers: list[Any]) -> None:
    owner, writer = make_user("trudy"), make_agent("writer")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "fire-once")
        add_member(api, ws, "writer", "editor")
        response = api.put(trigger_url(ws, "research"), json={
            "on": {"event": "file.written", "prefix": "research/"},
            "create_task": {"title": "Review new research", "kind": "review", "queue": "reviews",
                            "payload": {"checklist": ["sources"]}, "priority": 3}})
        assert response.status_code == 201, response.text
        put_file(api, ws, "research/first.md", "one")

        paths = [f"research/r{i}.md" for i in range(29)] + [f"notes/n{i}.md" for i in range(10)]

        def write(i: int, path: str) -> None:
            with servers[i % len(servers)].client(writer.token) as mine:
                assert put_file(mine, ws, path, f"content {i}").status_code == 201

        threads = [threading.Thread(target=write, args=(i, p)) for i, p in enumerate(paths)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        wait_for(lambda: len(tasks_of(api, ws, "review")) >= 30, 60, "30 review tasks")
        time.sleep(2.0)  # several sweep intervals: a duplicate would show up by now
        tasks = tasks_of(api, ws, "review")
        written = [e for e in events_of(api, ws, "file.written") if e["target"].startswith("research/")]
        assert len(written) == 30
        seqs = Counter(t["payload"]["trigger"]["event"]["seq"] for t in tasks)
        assert sorted(seqs) == sorted(e["seq"] for e in written)
        assert set(seqs.values()) == {1}
        sample = tasks[0]
        assert (sample["title"], sample["queue"], sample["priority"], sample["created_by"]) == \
            ("Review new research", "reviews", 3, "trudy")
        assert sample["payload"]["checklist"] == ["sources"]
        assert sample["payload"]["trigger"]["name"] == "research"
        event = sample["payload"]["trigger"]["event"]
        assert event["type"] == "file.written" and event["target"].startswith("research/")
        fired = events_of(api, ws, "trigger.fired")
        assert sorted(e["data"]["event"] for e in fired) == sorted(seqs)
        assert {e["data"]["task"] for e in fired} == {t["id"] for t in tasks}


def test_a_file_trigger_fires_exactly_once_per_matching_event_across_processes(live, make_user, make_agent):
    """GIVEN a trigger on `file.written` under `research/`, with the live server's 2 web processes (which
    enqueue catch-ups after commit), 2 RQ workers and the sweeper racing to fire it WHEN 40 files are
    written concurrently, 30 of them under research/ THEN exactly 30 tasks are created, one per matching
    event, each carrying its event under payload.trigger, created as the trigger's creator, and nothing
    fires later."""
    _fire_once(live, make_user, make_agent, [live])


@pytest.mark.slow
def test_a_file_trigger_fires_exactly_once_with_two_launchers(live, make_user, make_agent):
    """GIVEN the same trigger with a second launcher running too (4 web processes, 4 RQ workers, 2
    sweepers) WHEN 40 files are written concurrently through both THEN exactly 30 tasks are created,
    one per matching event."""
    second = start_launcher(workers=2, web_workers=2)
    try:
        _fire_once(live, make_user, make_agent, [live, second])
    finally:
        stop_launcher(second)


def test_a_topic_trigger_creates_a_task_per_message_with_the_message_in_its_payload(live, make_user):
    """GIVEN a trigger on topic `requests` WHEN 5 messages are published there (and one elsewhere) THEN
    5 tasks are created, each with its message (offset, key, body) under payload.trigger.message."""
    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api, "topic-trig")
        publish(api, ws, "requests", {"before": True})  # history: the trigger starts after it
        assert api.put(trigger_url(ws, "on-request"), json={
            "on": {"topic": "requests"}, "create_task": {"title": "Handle request", "kind": "request"}},
        ).status_code == 201
        for i in range(5):
            publish(api, ws, "requests", {"n": i}, key=f"c{i}")
        publish(api, ws, "other", {"n": 99})
        wait_for(lambda: len(tasks_of(api, ws, "request")) >= 5, 30, "5 request tasks")
        time.sleep(1.0)
        tasks = tasks_of(api, ws, "request")
        messages = sorted((t["payload"]["trigger"]["message"] for t in tasks), key=lambda m: m["offset"])
        assert [(m["offset"], m["key"], m["body"]) for m in messages] == \
            [(i + 2, f"c{i}", {"n": i}) for i in range(5)]
        fired = events_of(api, ws, "trigger.fired")
        assert sorted((e["data"]["topic"], e["data"]["offset"]) for e in fired) == [("requests", i) for i in range(2, 7)]


def test_the_sweep_fires_what_the_fast_path_missed_exactly_once(db, make_user):
    """GIVEN a trigger and matching file writes whose after-commit hooks never ran (the test transaction
    does not commit, as when a process dies between commit and hook) WHEN the sweep runs twice THEN the
    first run creates one task per event and the second finds nothing left to do."""
    from workspace.access import workspace_for
    from workspace.models import Task
    from workspace.services.files import file_write
    from workspace.services.triggers import trigger_set, triggers_sweep
    from workspace.services.workspaces import workspace_create

    owner = make_user()
    ws = workspace_create(user=owner.user, name="sweep", intelligence=False)
    access = workspace_for(owner.user, ws.id)
    trigger_set(access=access, name="t", on={"event": "file.written", "prefix": "in/"},
                create_task={"title": "Process", "kind": "process"})
    for i in range(3):
        file_write(access=access, path=f"in/{i}.txt", content=b"x")
    file_write(access=access, path="out/skip.txt", content=b"x")
    assert Task.objects.filter(workspace=ws).count() == 0
    assert triggers_sweep() == 3
    assert triggers_sweep() == 0
    paths = sorted(t.payload["trigger"]["event"]["target"] for t in Task.objects.filter(workspace=ws))
    assert paths == ["in/0.txt", "in/1.txt", "in/2.txt"]


def test_a_trigger_whose_creator_lost_access_is_disabled_instead_of_firing(db, make_user, make_agent):
    """GIVEN a trigger defined by an admin who is then removed from the workspace WHEN a matching message
    arrives and the sweep runs THEN no task is created, the trigger is disabled with the reason, and
    defining it again (by a current admin) fires for the waiting message."""
    from workspace.access import workspace_for
    from workspace.models import Task, Trigger
    from workspace.services.messages import message_publish
    from workspace.services.triggers import trigger_set, triggers_sweep
    from workspace.services.workspaces import member_remove, member_set, workspace_create

    owner, admin = make_user(), make_agent("adm")
    ws = workspace_create(user=owner.user, name="lost", intelligence=False)
    as_owner = workspace_for(owner.user, ws.id)
    member_set(access=as_owner, username="adm", role="admin")
    trigger_set(access=workspace_for(admin.user, ws.id), name="t", on={"topic": "jobs"},
                create_task={"title": "Job"})
    member_remove(access=as_owner, username="adm")
    message_publish(access=as_owner, topic="jobs", body={"n": 1})
    assert triggers_sweep() == 0
    trigger = Trigger.objects.get(workspace=ws, name="t")
    assert not trigger.enabled and "adm" in trigger.last_error
    assert Task.objects.filter(workspace=ws).count() == 0
    trigger_set(access=as_owner, name="t", on={"topic": "jobs"}, create_task={"title": "Job"})
    assert triggers_sweep() == 1
    assert Task.objects.get(workspace=ws).payload["trigger"]["message"]["body"] == {"n": 1}


def test_the_after_commit_fast_path_sees_a_trigger_set_here_at_once_and_one_set_elsewhere_within_its_ttl(
        db, make_user, monkeypatch, django_capture_on_commit_callbacks):
    """GIVEN a workspace whose trigger index this process has read (no triggers) WHEN a trigger is set
    through this process THEN the fast path knows it at once (its own trigger.set event drops the
    cached entry); WHEN another process adds one (a row this process never announced) THEN it is
    known once the entry's time to live has passed, not before (the sweep fires it meanwhile)."""
    from workspace.access import workspace_for
    from workspace.models import Trigger
    from workspace.services import triggers
    from workspace.services.workspaces import workspace_create

    monkeypatch.setattr(triggers, "_WATCHED_TTL", 0.3)
    owner = make_user()
    ws = workspace_create(user=owner.user, name="watched", intelligence=False)
    assert triggers._watched(ws.id) == (frozenset(), frozenset())
    with django_capture_on_commit_callbacks(execute=True):
        triggers.trigger_set(access=workspace_for(owner.user, ws.id), name="t", on={"event": "file.written"},
                             create_task={"title": "Review"})
    assert triggers._watched(ws.id) == (frozenset({"file.written"}), frozenset())
    Trigger.objects.create(workspace=ws, name="elsewhere", topic="jobs", created_by=owner.user,
                           create_task={"title": "Job"})
    assert triggers._watched(ws.id) == (frozenset({"file.written"}), frozenset())
    time.sleep(0.35)
    assert triggers._watched(ws.id) == (frozenset({"file.written"}), frozenset({"jobs"}))
