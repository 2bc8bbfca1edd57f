"""Topics and consumer groups over HTTP, end to end against the live server (API.md "Messages")."""
from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.helpers import assert_error, create_workspace, raw_request


def topic_url(ws: str, topic: str) -> str:
    return f"/api/v1/workspaces/{ws}/topics/{topic}"


def publish(api: httpx.Client, ws: str, topic: str, body: dict[str, Any], key: str | None = None) -> int:
    payload: dict[str, Any] = {"body": body}
    if key is not None:
        payload["key"] = key
    response = api.post(f"{topic_url(ws, topic)}/messages", json=payload)
    assert response.status_code == 201, response.text
    return int(response.json()["offset"])


def pull(api: httpx.Client, ws: str, topic: str, group: str, **body: Any) -> list[dict[str, Any]]:
    response = api.post(f"{topic_url(ws, topic)}/groups/{group}/pull", json=body)
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def ack(api: httpx.Client, ws: str, topic: str, group: str, offsets: list[int]) -> dict[str, Any]:
    response = api.post(f"{topic_url(ws, topic)}/groups/{group}/ack", json={"offsets": offsets})
    assert response.status_code == 200, response.text
    return dict(response.json())


def events_of(api: httpx.Client, ws: str, types: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.get(f"/api/v1/workspaces/{ws}/events", params={"after": after, "type": types, "limit": 500})
        assert page.status_code == 200, page.text
        rows = page.json()["results"]
        out.extend(rows)
        if len(rows) < 500:
            return out
        after = rows[-1]["seq"]


def add_member(api: httpx.Client, ws: str, username: str, role: str) -> None:
    response = api.put(f"/api/v1/workspaces/{ws}/members/{username}", json={"role": role})
    assert response.status_code in (200, 201), response.text


@pytest.fixture
def owner(make_user: Any) -> Any:
    return make_user("olivia")


def test_publish_returns_gap_free_offsets_and_the_log_replays_from_any_offset(live, owner):
    """GIVEN a workspace WHEN an editor publishes 7 messages THEN the offsets are 1..7, the log
    replays from any offset in pages, and each publish is a `message.published` event with the offset."""
    with live.client(owner.token) as api:
        ws = create_workspace(api, "msgs")
        offsets = [publish(api, ws, "work.items", {"n": i}, key=f"k{i % 2}") for i in range(7)]
        assert offsets == list(range(1, 8))

        page = api.get(f"{topic_url(ws, 'work.items')}/messages", params={"after": 2, "limit": 3}).json()
        assert [m["offset"] for m in page["results"]] == [3, 4, 5]
        assert page["results"][0]["body"] == {"n": 2} and page["results"][0]["key"] == "k0"
        assert page["results"][0]["publisher"] == "olivia"
        rest = api.get(f"{topic_url(ws, 'work.items')}/messages", params={"cursor": page["next"]}).json()
        assert [m["offset"] for m in rest["results"]] == [6, 7] and rest["next"] is None

        published = events_of(api, ws, "message.published")
        assert [(e["data"]["topic"], e["data"]["offset"]) for e in published] == [("work.items", i) for i in offsets]
        assert "body" not in published[0]["data"]
        topics = api.get(f"/api/v1/workspaces/{ws}/topics").json()["results"]
        assert [(t["name"], t["last_offset"]) for t in topics] == [("work.items", 7)]


def test_bad_input_is_a_4xx_with_the_error_body_and_changes_nothing(live, owner, make_agent):
    """GIVEN a workspace with a viewer WHEN topics, bodies, keys and pull parameters are invalid, or a
    viewer publishes, or a stranger reads THEN each gets its 4xx with the error body and nothing is published."""
    viewer = make_agent("viewer1")
    stranger = make_agent("stranger1")
    with live.client(owner.token) as api, live.client(viewer.token) as as_viewer, \
            live.client(stranger.token) as as_stranger:
        ws = create_workspace(api, "bad")
        add_member(api, ws, "viewer1", "viewer")
        for name in ("Upper", "has space", "x" * 101, "star*", "...", "ü"):
            assert_error(api.post(f"{topic_url(ws, name)}/messages", json={"body": {}}), 400, "invalid_topic")
        status, body = raw_request(live.url, "POST", f"{topic_url(ws, '..')}/messages", token=owner.token,
                                   body=b'{"body": {}}', headers={"Content-Type": "application/json"})
        assert (status, body["error"]["code"]) == (400, "invalid_topic")
        assert_error(api.get(f"{topic_url(ws, 'UP')}/messages"), 400, "invalid_topic")
        assert_error(api.post(f"{topic_url(ws, 't')}/messages", json={"body": [1, 2]}), 400, "invalid_body")
        assert_error(api.post(f"{topic_url(ws, 't')}/messages", json={}), 400)
        assert_error(api.post(f"{topic_url(ws, 't')}/messages", json={"body": {"a": "nul\x00"}}), 400, "invalid_body")
        assert_error(api.post(f"{topic_url(ws, 't')}/messages", content=b'{"body": {"a": "\\ud800"}}',
                              headers={"Content-Type": "application/json"}), 400, "invalid_body")
        assert_error(api.post(f"{topic_url(ws, 'x' * 101 + '.dead')}/messages", json={"body": {}}), 400,
                     "invalid_topic")
        assert_error(api.post(f"{topic_url(ws, 't')}/messages", json={"body": {}, "key": "x" * 201}), 400)
        assert_error(api.post(f"{topic_url(ws, 't')}/messages", content=b"{not json",
                              headers={"Content-Type": "application/json"}), 400)
        assert_error(api.get(f"{topic_url(ws, 't')}/messages", params={"after": "x"}), 400)
        assert_error(api.post(f"{topic_url(ws, 't')}/groups/g/pull", json={"max": 0}), 400)
        assert_error(api.post(f"{topic_url(ws, 't')}/groups/g/pull", json={"max": 101}), 400)
        assert_error(api.post(f"{topic_url(ws, 't')}/groups/g/pull", json={"wait_seconds": 31}), 400)
        assert_error(api.post(f"{topic_url(ws, 't')}/groups/g/pull", json={"visibility_seconds": 0}), 400)
        assert_error(api.post(f"{topic_url(ws, 't')}/groups/g/pull", json={"max_deliveries": 0}), 400)
        assert_error(api.post(f"{topic_url(ws, 't')}/groups/BAD/pull", json={}), 400, "invalid_group")
        assert_error(api.post(f"{topic_url(ws, 't')}/groups/g/ack", json={"offsets": []}), 400)
        assert_error(api.post(f"{topic_url(ws, 't')}/groups/g/ack", json={"offsets": ["one"]}), 400)
        assert_error(api.post(f"{topic_url(ws, 't')}/groups/g/ack", json={"offsets": [1]}), 404)
        assert_error(as_viewer.post(f"{topic_url(ws, 't')}/messages", json={"body": {}}), 403, "forbidden")
        assert_error(as_viewer.post(f"{topic_url(ws, 't')}/groups/g/pull", json={}), 403, "forbidden")
        assert_error(as_stranger.get(f"{topic_url(ws, 't')}/messages"), 404, "not_found")
        assert_error(as_stranger.post(f"{topic_url(ws, 't')}/messages", json={"body": {}}), 404, "not_found")
        assert api.get(f"/api/v1/workspaces/{ws}/topics").json()["results"] == []
        assert events_of(api, ws, "message.published") == []
        # A viewer reads the log; it is an empty log, not an error, before the first publish.
        assert as_viewer.get(f"{topic_url(ws, 't')}/messages").json() == {"results": [], "next": None}


def test_a_retried_publish_with_an_idempotency_key_returns_the_same_offset(live, owner):
    """GIVEN a publish sent with an Idempotency-Key WHEN it is retried THEN the same offset comes back
    and the topic holds one message."""
    with live.client(owner.token) as api:
        ws = create_workspace(api, "idem")
        headers = {"Idempotency-Key": "pub-1"}
        first = api.post(f"{topic_url(ws, 't')}/messages", json={"body": {"a": 1}}, headers=headers)
        again = api.post(f"{topic_url(ws, 't')}/messages", json={"body": {"a": 1}}, headers=headers)
        assert first.status_code == again.status_code == 201
        assert first.json()["offset"] == again.json()["offset"] == 1
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert len(api.get(f"{topic_url(ws, 't')}/messages").json()["results"]) == 1


def test_an_unacked_message_comes_back_after_its_visibility_time_with_its_count_raised(live, owner):
    """GIVEN a message pulled with a 1 s visibility WHEN it is not acked THEN nobody gets it during
    the lease, it comes back after it with deliveries 2 (a `message.redelivered` event), and once acked
    it never comes back."""
    with live.client(owner.token) as api:
        ws = create_workspace(api, "redeliver")
        publish(api, ws, "jobs", {"job": 1})
        first = pull(api, ws, "jobs", "workers", visibility_seconds=1)
        assert [(m["offset"], m["deliveries"], m["body"]) for m in first] == [(1, 1, {"job": 1})]
        assert pull(api, ws, "jobs", "workers") == []
        state = api.get(f"{topic_url(ws, 'jobs')}/groups/workers").json()
        assert (state["in_flight"], state["backlog"]) == (1, 1)
        time.sleep(1.2)
        second = pull(api, ws, "jobs", "workers", visibility_seconds=30)
        assert [(m["offset"], m["deliveries"]) for m in second] == [(1, 2)]
        assert ack(api, ws, "jobs", "workers", [1, 2]) == {"acked": [1], "skipped": [2]}
        assert ack(api, ws, "jobs", "workers", [1]) == {"acked": [], "skipped": [1]}
        assert pull(api, ws, "jobs", "workers", wait_seconds=1.2) == []
        state = api.get(f"{topic_url(ws, 'jobs')}/groups/workers").json()
        assert (state["in_flight"], state["backlog"]) == (0, 0)
        redelivered = events_of(api, ws, "message.redelivered")
        assert [(e["data"]["offsets"], e["data"]["deliveries"]) for e in redelivered] == [([1], [2])]
        assert [e["data"]["offsets"] for e in events_of(api, ws, "message.pulled")] == [[1], [1]]
        assert [e["data"]["offsets"] for e in events_of(api, ws, "message.acked")] == [[1]]


def test_a_message_past_its_delivery_limit_moves_to_the_dead_letter_topic(live, owner):
    """GIVEN a group with max_deliveries 2 WHEN a message is pulled twice and never acked THEN after
    its second lease ends it is in `<topic>.dead` with where it came from, the group no longer has it,
    and a `message.dead_lettered` event says so (the sweeper does this without anyone pulling)."""
    with live.client(owner.token) as api:
        ws = create_workspace(api, "dead")
        publish(api, ws, "jobs", {"poison": True}, key="p")
        publish(api, ws, "jobs", {"fine": True}, key="p")
        for count in (1, 2):
            got = pull(api, ws, "jobs", "g", max=1, visibility_seconds=0.5, max_deliveries=2, wait_seconds=2)
            assert [(m["offset"], m["deliveries"]) for m in got] == [(1, count)]
        deadline = time.monotonic() + 10
        dead: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not dead:
            dead = api.get(f"{topic_url(ws, 'jobs.dead')}/messages").json()["results"]
            time.sleep(0.1)
        assert [(m["offset"], m["body"], m["key"]) for m in dead] == [(1, {"poison": True}, "p")]
        assert dead[0]["meta"]["dead_letter"] == {"topic": "jobs", "offset": 1, "group": "g", "deliveries": 2,
                                                 "published_at": dead[0]["meta"]["dead_letter"]["published_at"]}
        events = events_of(api, ws, "message.dead_lettered")
        assert [(e["data"]["offset"], e["data"]["dead_topic"], e["data"]["dead_offset"]) for e in events] == \
            [(1, "jobs.dead", 1)]
        # The key is no longer blocked by the dead message.
        got = pull(api, ws, "jobs", "g")
        assert [(m["offset"], m["deliveries"]) for m in got] == [(2, 1)]
        # A dead-letter topic has no dead-letter topic: its group gives a failing message up.
        assert len(pull(api, ws, "jobs.dead", "triage", visibility_seconds=0.5, max_deliveries=1)) == 1
        deadline = time.monotonic() + 10
        while api.get(f"{topic_url(ws, 'jobs.dead')}/groups/triage").json()["backlog"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert api.get(f"{topic_url(ws, 'jobs.dead')}/groups/triage").json()["backlog"] == 0
        given_up = events_of(api, ws, "message.dead_lettered")[-1]["data"]
        assert (given_up["topic"], given_up["dead_topic"], given_up["dead_offset"]) == ("jobs.dead", None, None)
        assert [t["name"] for t in api.get(f"/api/v1/workspaces/{ws}/topics").json()["results"]] == ["jobs", "jobs.dead"]


def test_messages_sharing_a_key_go_out_in_order_one_at_a_time_per_group(live, owner):
    """GIVEN keyed and unkeyed messages WHEN a group pulls THEN only the oldest unacked message of each
    key is out at a time, unkeyed ones flow freely, and acking one releases the next of its key."""
    with live.client(owner.token) as api:
        ws = create_workspace(api, "keys")
        for key, n in [("a", 1), ("a", 2), ("b", 3), (None, 4), ("a", 5), (None, 6), ("b", 7)]:
            publish(api, ws, "t", {"n": n}, key=key)
        assert [m["offset"] for m in pull(api, ws, "t", "g", max=10)] == [1, 3, 4, 6]
        assert pull(api, ws, "t", "g", max=10) == []
        ack(api, ws, "t", "g", [3, 4])
        assert [m["offset"] for m in pull(api, ws, "t", "g", max=10)] == [7]
        ack(api, ws, "t", "g", [1])
        assert [m["offset"] for m in pull(api, ws, "t", "g", max=10)] == [2]
        ack(api, ws, "t", "g", [2, 6, 7])
        assert [(m["offset"], m["key"]) for m in pull(api, ws, "t", "g", max=10)] == [(5, "a")]


def test_two_groups_on_one_topic_each_see_every_message(live, owner):
    """GIVEN 5 messages WHEN two groups pull and ack THEN each group gets all 5."""
    with live.client(owner.token) as api:
        ws = create_workspace(api, "groups")
        for i in range(5):
            publish(api, ws, "t", {"i": i})
        for group in ("alpha", "beta"):
            got = pull(api, ws, "t", group, max=10)
            assert [m["offset"] for m in got] == [1, 2, 3, 4, 5]
            assert ack(api, ws, "t", group, [m["offset"] for m in got])["acked"] == [1, 2, 3, 4, 5]


def test_a_long_poll_returns_as_soon_as_a_message_is_published(live, owner, make_agent):
    """GIVEN a consumer long-polling an empty topic for 10 s WHEN a message is published 0.5 s later
    THEN the pull returns it well before the wait ends."""
    with live.client(owner.token) as api:
        ws = create_workspace(api, "longpoll")
        result: dict[str, Any] = {}

        def consumer() -> None:
            with live.client(owner.token) as mine:
                started = time.monotonic()
                result["got"] = pull(mine, ws, "t", "g", wait_seconds=10)
                result["took"] = time.monotonic() - started

        thread = threading.Thread(target=consumer)
        thread.start()
        time.sleep(0.5)
        publish(api, ws, "t", {"hello": "world"})
        thread.join(timeout=15)
        assert [m["body"] for m in result["got"]] == [{"hello": "world"}]
        assert result["took"] < 3, result["took"]
        # A long-poll that finds nothing waits its time out and returns an empty list.
        started = time.monotonic()
        assert pull(api, ws, "t", "g", wait_seconds=1) == []
        assert 0.9 <= time.monotonic() - started < 5


def test_a_pull_with_an_idempotency_key_returns_the_same_lease_on_retry(live, owner):
    """GIVEN a pull sent with an Idempotency-Key WHEN it is retried THEN the same messages come back and
    no second lease is taken (the message's delivery count stays 1)."""
    with live.client(owner.token) as api:
        ws = create_workspace(api, "idem-pull")
        publish(api, ws, "t", {"x": 1})
        publish(api, ws, "t", {"x": 2})
        url = f"{topic_url(ws, 't')}/groups/g/pull"
        first = api.post(url, json={"max": 1, "wait_seconds": 1}, headers={"Idempotency-Key": "p1"})
        again = api.post(url, json={"max": 1, "wait_seconds": 1}, headers={"Idempotency-Key": "p1"})
        assert first.json() == again.json()
        assert [(m["offset"], m["deliveries"]) for m in first.json()["results"]] == [(1, 1)]
        assert [m["offset"] for m in pull(api, ws, "t", "g", max=10)] == [2]


def test_an_inbox_is_private_to_its_account_and_the_admins(live, owner, make_agent):
    """GIVEN `inbox.alice` in a workspace where bob and carol are editors WHEN bob leaves alice a note
    THEN alice and the owner can read, pull and ack it, while carol (a member) gets 404 for reading,
    pulling and acking, and her topic list leaves the inbox out."""
    alice, bob, carol = make_agent("alice"), make_agent("bob"), make_agent("carol")
    with live.client(owner.token) as api, live.client(alice.token) as as_alice, \
            live.client(bob.token) as as_bob, live.client(carol.token) as as_carol:
        ws = create_workspace(api, "inbox")
        for name in ("alice", "bob", "carol"):
            add_member(api, ws, name, "editor")
        offset = publish(as_bob, ws, "inbox.alice", {"handoff": "draft.md"})
        publish(as_carol, ws, "shared", {"ok": True})
        url = topic_url(ws, "inbox.alice")

        for path in ("/messages", "/groups/g"):
            assert_error(as_carol.get(url + path), 404, "not_found")
        assert_error(as_carol.post(url + "/groups/g/pull", json={}), 404, "not_found")
        assert_error(as_carol.post(url + "/groups/g/ack", json={"offsets": [offset]}), 404, "not_found")
        assert_error(as_carol.get(topic_url(ws, "inbox.alice.dead") + "/messages"), 404, "not_found")
        assert [t["name"] for t in as_carol.get(f"/api/v1/workspaces/{ws}/topics").json()["results"]] == ["shared"]

        assert [m["body"] for m in as_alice.get(url + "/messages").json()["results"]] == [{"handoff": "draft.md"}]
        assert [m["body"] for m in api.get(url + "/messages").json()["results"]] == [{"handoff": "draft.md"}]
        note = pull(as_alice, ws, "inbox.alice", "me")
        assert [m["offset"] for m in note] == [offset]
        assert ack(as_alice, ws, "inbox.alice", "me", [offset])["acked"] == [offset]
        assert {t["name"] for t in api.get(f"/api/v1/workspaces/{ws}/topics").json()["results"]} == \
            {"inbox.alice", "shared"}


def test_a_note_persists_until_it_is_read_and_acked(live, owner, make_agent):
    """GIVEN a note in `inbox.dave` WHEN dave pulls it without acking THEN it comes back on his next
    pull after the lease, and once acked his inbox group is empty."""
    dave = make_agent("dave")
    with live.client(owner.token) as api, live.client(dave.token) as as_dave:
        ws = create_workspace(api, "note")
        add_member(api, ws, "dave", "viewer")
        publish(api, ws, "inbox.dave", {"please": "review"})
        assert [m["deliveries"] for m in pull(as_dave, ws, "inbox.dave", "me", visibility_seconds=0.5)] == [1]
        again = pull(as_dave, ws, "inbox.dave", "me", wait_seconds=3)
        assert [(m["body"], m["deliveries"]) for m in again] == [({"please": "review"}, 2)]
        ack(as_dave, ws, "inbox.dave", "me", [again[0]["offset"]])
        assert pull(as_dave, ws, "inbox.dave", "me", wait_seconds=0.7) == []
