"""The live topic stream: replay from the database, then live from the channel layer (API.md "Messages")."""
from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers import create_workspace
from tests.test_messages_api import add_member, publish


def topic_ws(live: Any, ws: str, topic: str, after: int | str = 0) -> str:
    return f"{live.url.replace('http', 'ws', 1)}/ws/workspaces/{ws}/topics/{topic}/?after={after}"


def receive(conn: Any, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    return [json.loads(conn.recv(timeout=timeout)) for _ in range(n)]


def test_stream_replays_the_log_then_delivers_live_in_offset_order(live, make_user):
    """GIVEN a topic with 3 messages WHEN a client connects with ?after=1 THEN it gets 2 and 3 from the
    database, then every new message live (a body too big for the channel layer included, read back from
    the database), in offset order with no gap and no duplicate, and no message of another topic."""
    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api, "stream")
        for i in range(3):
            publish(api, ws, "feed", {"i": i}, key="k")
        with connect(topic_ws(live, ws, "feed", after=1), additional_headers=owner.headers, open_timeout=10) as conn:
            replayed = receive(conn, 2)
            assert [(m["offset"], m["body"], m["key"]) for m in replayed] == [(2, {"i": 1}, "k"), (3, {"i": 2}, "k")]
            assert set(replayed[0]) == {"topic", "offset", "key", "body", "meta", "publisher", "published_at"}
            publish(api, ws, "other", {"not": "this"})
            big = {"blob": "x" * 100_000}
            for i in range(3, 8):
                publish(api, ws, "feed", big if i == 5 else {"i": i})
            live_msgs = receive(conn, 5)
            assert [m["offset"] for m in live_msgs] == [4, 5, 6, 7, 8]
            assert live_msgs[2]["body"] == big
            assert all(m["topic"] == "feed" for m in live_msgs)
            conn.send("ping")
            assert json.loads(conn.recv(timeout=5)) == {"type": "pong", "offset": 8}


def test_a_reconnecting_stream_resumes_after_its_last_offset(live, make_user):
    """GIVEN a client that saw offsets 1-2 and disconnected WHEN two more are published and it reconnects
    with ?after=2 THEN it gets exactly 3 and 4."""
    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api, "resume")
        publish(api, ws, "t", {"n": 1})
        publish(api, ws, "t", {"n": 2})
        with connect(topic_ws(live, ws, "t"), additional_headers=owner.headers) as conn:
            assert [m["offset"] for m in receive(conn, 2)] == [1, 2]
        publish(api, ws, "t", {"n": 3})
        publish(api, ws, "t", {"n": 4})
        with connect(topic_ws(live, ws, "t", after=2), additional_headers=owner.headers) as conn:
            assert [m["body"]["n"] for m in receive(conn, 2)] == [3, 4]


def test_an_inbox_stream_is_refused_to_other_members_and_bad_requests(live, make_user, make_agent):
    """GIVEN `inbox.erin` WHEN frank (an editor), a stranger, or anyone with a bad topic name or offset opens
    a stream THEN the upgrade is refused; erin herself gets her notes."""
    owner, erin, frank, stranger = make_user(), make_agent("erin"), make_agent("frank"), make_agent()
    with live.client(owner.token) as api:
        ws = create_workspace(api, "inbox-ws")
        add_member(api, ws, "erin", "editor")
        add_member(api, ws, "frank", "editor")
        publish(api, ws, "inbox.erin", {"note": 1})
    refused = [(frank.headers, "inbox.erin", 0), (stranger.headers, "t", 0), ({}, "t", 0),
               (owner.headers, "Bad.Name", 0), (owner.headers, "t", "x")]
    for headers, topic, after in refused:
        with pytest.raises(InvalidStatus) as error:
            with connect(topic_ws(live, ws, topic, after), additional_headers=headers, open_timeout=10) as conn:
                conn.recv(timeout=5)
        assert error.value.response.status_code == 403
    with connect(topic_ws(live, ws, "inbox.erin"), additional_headers=erin.headers) as conn:
        assert [m["body"] for m in receive(conn, 1)] == [{"note": 1}]
