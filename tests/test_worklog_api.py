"""The worklog (API.md "Worklog"): append-only, hash-chained, verifiable, tamper-evident."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from tests.helpers import assert_error


def log_url(ws: str, *parts: str) -> str:
    return "/".join([f"/api/v1/workspaces/{ws}/worklog", *parts])


def test_append_chains_each_entry_to_the_previous(api, ws, owner):
    """GIVEN an empty worklog WHEN two entries are appended THEN they get seq 1 and 2, the first chains from
    64 zeros, each hash is sha256(previous hash + canonical JSON) and the second's prev_hash is the first's."""
    first = api.post(log_url(ws), json={"message": "started research", "data": {"b": 2, "a": [1, "x"]}})
    second = api.post(log_url(ws), json={"message": "done"})
    assert first.status_code == second.status_code == 201
    one, two = first.json(), second.json()
    assert (one["seq"], two["seq"]) == (1, 2)
    assert one["prev_hash"] == "0" * 64 and two["prev_hash"] == one["hash"]
    assert one["author"] == "olga" and one["data"] == {"b": 2, "a": [1, "x"]} and two["data"] is None
    body = json.dumps({"v": 1, "workspace": ws, "seq": 1, "author": str(owner.user.pk), "on_behalf_of": None,
                       "task": None, "message": "started research", "data": '{"a":[1,"x"],"b":2}',
                       "at": datetime.fromisoformat(one["at"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert one["hash"] == hashlib.sha256(("0" * 64 + body).encode()).hexdigest()
    assert api.get(log_url(ws, "verify")).json() == {"ok": True, "entries": 2}


def test_list_filters_by_task_author_and_after(live, api, ws, make_agent, owner):
    """GIVEN entries by two authors, one linked to a task WHEN listed with task, author or after THEN only
    the matching entries come back, in seq order; an unknown task is a 400."""
    agent = make_agent("ada", created_by=owner.user)
    api.put(f"/api/v1/workspaces/{ws}/members/ada", json={"role": "editor"})
    task = api.post(f"/api/v1/workspaces/{ws}/tasks", json={"title": "t"}).json()
    api.post(log_url(ws), json={"message": "one"})
    with live.client(agent.token) as ada:
        linked = ada.post(log_url(ws), json={"message": "two", "task": task["id"]}).json()
        assert linked["task"] == task["id"] and linked["author"] == "ada" and linked["on_behalf_of"] == "olga"
        assert_error(ada.post(log_url(ws), json={"message": "x", "task": "task_nope"}), 400, "unknown_task")
    api.post(log_url(ws), json={"message": "three"})
    seqs = lambda **params: [e["seq"] for e in api.get(log_url(ws), params=params).json()["results"]]  # noqa: E731
    assert seqs() == [1, 2, 3]
    assert seqs(task=task["id"]) == [2]
    assert seqs(author="olga") == [1, 3]
    assert seqs(after=1) == [2, 3]
    page = api.get(log_url(ws), params={"limit": 2}).json()
    assert [e["seq"] for e in page["results"]] == [1, 2] and page["next"]
    assert [e["seq"] for e in api.get(log_url(ws), params={"limit": 2, "cursor": page["next"]}).json()["results"]] == [3]
    assert_error(api.get(log_url(ws), params={"after": "x"}), 400)


def test_no_update_or_delete_path_exists(api, ws):
    """GIVEN an entry WHEN anyone tries PUT, PATCH or DELETE on the worklog or an entry THEN 405 or 404:
    there is no such path, and the entry is unchanged."""
    api.post(log_url(ws), json={"message": "keep me"})
    for method in ("PUT", "PATCH", "DELETE"):
        assert api.request(method, log_url(ws), json={"message": "x"}).status_code == 405
        assert api.request(method, log_url(ws, "1"), json={"message": "x"}).status_code in (404, 405)
    assert api.get(log_url(ws)).json()["results"][0]["message"] == "keep me"


def test_bad_input_is_400_and_viewer_cannot_write(live, api, ws, make_user):
    """GIVEN bad bodies and a viewer WHEN appending THEN 400s and a 403, and nothing is appended."""
    assert_error(api.post(log_url(ws), json={"message": ""}), 400)
    assert_error(api.post(log_url(ws), json={}), 400)
    assert_error(api.post(log_url(ws), json={"message": "x", "data": {"k": "\u0000"}}), 400)
    assert_error(api.post(log_url(ws), json=["not", "an", "object"]), 400)
    viewer = make_user("vera")
    api.put(f"/api/v1/workspaces/{ws}/members/vera", json={"role": "viewer"})
    with live.client(viewer.token) as v:
        assert_error(v.post(log_url(ws), json={"message": "x"}), 403, "forbidden")
        assert v.get(log_url(ws, "verify")).json() == {"ok": True, "entries": 0}


def test_tampering_with_a_row_is_found_by_verify_and_the_command(api, ws):
    """GIVEN three entries WHEN the second's message is altered with a raw SQL UPDATE THEN verify reports
    entry 2 as the first broken one (hash_mismatch), and `manage.py verify_worklog` exits non-zero naming it;
    WHEN instead the last entry is deleted THEN verify reports it missing."""
    for message in ("one", "two", "three"):
        api.post(log_url(ws), json={"message": message})
    call_command("verify_worklog", "--workspace", ws)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE workspace_worklogentry SET message = %s WHERE workspace_id = %s AND seq = 2",
                       ["two (edited)", ws])
    report = api.get(log_url(ws, "verify")).json()
    assert report["ok"] is False and report["entries"] == 1
    assert report["broken"]["seq"] == 2 and report["broken"]["reason"] == "hash_mismatch"
    with pytest.raises(CommandError, match="1 worklog"):
        call_command("verify_worklog", "--workspace", ws)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE workspace_worklogentry SET message = %s WHERE workspace_id = %s AND seq = 2",
                       ["two", ws])
        assert api.get(log_url(ws, "verify")).json()["ok"] is True
        cursor.execute("DELETE FROM workspace_worklogentry WHERE workspace_id = %s AND seq = 3", [ws])
    report = api.get(log_url(ws, "verify")).json()
    assert report["ok"] is False and report["broken"] == {**report["broken"], "seq": 3, "reason": "missing"}


def test_rechained_rows_are_caught_by_the_recorded_events(api, ws):
    """GIVEN two entries WHEN someone rewrites entry 2 and recomputes its hash so the chain itself is
    consistent THEN verify still finds it: the hash differs from the one its worklog.appended event recorded."""
    from workspace.models import WorklogEntry
    from workspace.services.worklog import entry_hash

    api.post(log_url(ws), json={"message": "one"})
    api.post(log_url(ws), json={"message": "two"})
    entry = WorklogEntry.objects.get(workspace_id=ws, seq=2)
    entry.message = "forged"
    forged = entry_hash(entry)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE workspace_worklogentry SET message = %s, hash = %s WHERE id = %s",
                       ["forged", forged, entry.pk])
    report = api.get(log_url(ws, "verify")).json()
    assert report["ok"] is False and report["broken"]["seq"] == 2 and report["broken"]["reason"] == "event_mismatch"


def test_orm_refuses_updates_and_deletes(db, make_user):
    """GIVEN a worklog entry WHEN code saves it again, updates or deletes it through the ORM THEN each is
    refused with AppendOnlyViolation and the row is unchanged."""
    from workspace.access import workspace_for
    from workspace.models import AppendOnlyViolation, WorklogEntry
    from workspace.services.worklog import worklog_append
    from workspace.services.workspaces import workspace_create

    owner = make_user("olga")
    ws = workspace_create(user=owner.user, name="w", intelligence=False)
    entry = worklog_append(access=workspace_for(owner.user, ws.id), message="fixed")
    entry.message = "changed"
    with pytest.raises(AppendOnlyViolation):
        entry.save()
    with pytest.raises(AppendOnlyViolation):
        entry.delete()
    with pytest.raises(AppendOnlyViolation):
        WorklogEntry.objects.filter(pk=entry.pk).update(message="changed")
    with pytest.raises(AppendOnlyViolation):
        WorklogEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(AppendOnlyViolation):
        WorklogEntry.objects.bulk_update([entry], ["message"])
    assert WorklogEntry.objects.get(pk=entry.pk).message == "fixed"


def test_django_admin_is_read_only_for_the_worklog(db, make_user, client):
    """GIVEN a superuser in the Django admin WHEN it opens a worklog entry THEN it may view it but not add,
    change or delete it (no form posts through)."""
    from workspace.access import workspace_for
    from workspace.models import WorklogEntry
    from workspace.services.worklog import worklog_append
    from workspace.services.workspaces import workspace_create

    admin = make_user("root", is_staff=True, is_superuser=True)
    ws = workspace_create(user=admin.user, name="w", intelligence=False)
    entry = worklog_append(access=workspace_for(admin.user, ws.id), message="fixed")
    client.force_login(admin.user)
    base = "/admin/workspace/worklogentry/"
    assert client.get(base).status_code == 200
    assert client.get(f"{base}{entry.pk}/change/").status_code == 200  # view-only page
    assert client.get(f"{base}add/").status_code == 403
    assert client.post(f"{base}{entry.pk}/change/", {"message": "changed"}).status_code == 403
    assert client.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert WorklogEntry.objects.get(pk=entry.pk).message == "fixed"


def test_worklog_list_query_count_is_constant(db, make_user, make_agent, django_assert_max_num_queries):
    """GIVEN 40 entries by a human and an agent WHEN the list is read in-process THEN a fixed number of
    queries run, whatever the number of entries and authors."""
    from rest_framework.test import APIClient

    from workspace.access import workspace_for
    from workspace.services.worklog import worklog_append
    from workspace.services.workspaces import member_set, workspace_create

    owner = make_user("olga")
    agent = make_agent("ada", created_by=owner.user)
    ws = workspace_create(user=owner.user, name="w", intelligence=False)
    member_set(access=workspace_for(owner.user, ws.id), username="ada", role="editor")
    for i in range(20):
        worklog_append(access=workspace_for(owner.user, ws.id), message=f"h{i}")
        worklog_append(access=workspace_for(agent.user, ws.id), message=f"a{i}", data={"i": i})
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.token}")
    with django_assert_max_num_queries(4):
        response = client.get(f"/api/v1/workspaces/{ws.id}/worklog", {"limit": 100})
    assert response.status_code == 200 and len(response.json()["results"]) == 40
    assert {e["on_behalf_of"] for e in response.json()["results"]} == {None, "olga"}
