"""The live event stream over Channels: replay, then live, across processes (API.md "Events")."""
from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers import create_workspace, put_file


def ws_url(live, ws: str, after: int = 0) -> str:
    return f"{live.url.replace('http', 'ws', 1)}/ws/workspaces/{ws}/events/?after={after}"


def receive(conn, n: int, timeout: float = 10) -> list[dict]:
    return [json.loads(conn.recv(timeout=timeout)) for _ in range(n)]


def test_stream_replays_then_continues_live_without_gaps_or_duplicates(live, make_user):
    """GIVEN a workspace with history WHEN a client connects with ?after=1 THEN it first gets events 2..N from
    the database, then new events live, in seq order with no duplicate."""
    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api)
        for i in range(3):
            put_file(api, ws, f"f{i}.txt", "x")
        with connect(ws_url(live, ws, after=1), additional_headers=owner.headers, open_timeout=10) as conn:
            replayed = receive(conn, 3)
            assert [e["seq"] for e in replayed] == [2, 3, 4]
            assert replayed[0]["type"] == "file.written" and replayed[0]["data"]["path"] == "f0.txt"
            assert set(replayed[0]) == {"seq", "type", "actor", "on_behalf_of", "workspace", "target", "data", "at"}
            for i in range(5):
                put_file(api, ws, f"live{i}.txt", "y")
            live_events = receive(conn, 5)
            assert [e["seq"] for e in live_events] == [5, 6, 7, 8, 9]
            assert [e["target"] for e in live_events] == [f"live{i}.txt" for i in range(5)]


def test_reconnecting_client_resumes_from_its_last_seq(live, make_user):
    """GIVEN a client that saw events up to seq 3 and disconnected WHEN events happen and it reconnects with
    ?after=3 THEN it gets exactly the events it missed."""
    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api)
        put_file(api, ws, "a.txt", "1")
        with connect(ws_url(live, ws), additional_headers=owner.headers) as conn:
            seen = receive(conn, 2)
        assert [e["seq"] for e in seen] == [1, 2]
        put_file(api, ws, "b.txt", "2")
        put_file(api, ws, "c.txt", "3")
        with connect(ws_url(live, ws, after=2), additional_headers=owner.headers) as conn:
            assert [e["seq"] for e in receive(conn, 2)] == [3, 4]


def test_non_members_and_anonymous_clients_are_refused(live, make_user):
    """GIVEN a workspace WHEN a stranger or an anonymous client opens its stream THEN the upgrade is refused."""
    owner, stranger = make_user(), make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api)
    for headers in (stranger.headers, {}, {"Authorization": "Bearer syd_wrong"}):
        with pytest.raises(InvalidStatus) as refused:
            with connect(ws_url(live, ws), additional_headers=headers, open_timeout=10) as conn:
                conn.recv(timeout=5)
        assert refused.value.response.status_code == 403


def test_session_stream_from_another_origin_is_refused(live, make_user):
    """GIVEN a signed-in browser session WHEN a page on another origin opens the stream with its cookie THEN
    the upgrade is refused (no cross-site WebSocket hijacking); from our own origin it works."""
    import httpx

    owner = make_user("sess", password="a long test password")
    with live.client(owner.token) as api:
        ws = create_workspace(api)
    with httpx.Client(base_url=live.url) as browser:
        page = browser.get("/login/")
        csrf = browser.cookies["csrftoken"]
        response = browser.post("/login/", data={"username": "sess", "password": "a long test password",
                                                 "csrfmiddlewaretoken": csrf}, headers={"Referer": f"{live.url}/login/"})
        assert response.status_code == 302, page.text[:200]
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    host = live.url.split("//", 1)[1]
    with connect(ws_url(live, ws), additional_headers={"Cookie": cookie}, origin=f"http://{host}") as conn:
        assert receive(conn, 1)[0]["type"] == "workspace.created"
    with pytest.raises(InvalidStatus):
        with connect(ws_url(live, ws), additional_headers={"Cookie": cookie}, origin="http://evil.example") as conn:
            conn.recv(timeout=5)


def test_removed_member_stops_receiving_events(live, make_user):
    """GIVEN a member streaming events WHEN the owner removes them THEN the stream closes before any later
    event reaches them."""
    owner, member = make_user(), make_user("leaver")
    with live.client(owner.token) as api:
        ws = create_workspace(api)
        api.put(f"/api/v1/workspaces/{ws}/members/leaver", json={"role": "viewer"})
        with connect(ws_url(live, ws), additional_headers=member.headers) as conn:
            receive(conn, 2)
            api.delete(f"/api/v1/workspaces/{ws}/members/leaver")
            put_file(api, ws, "secret.txt", "after removal")
            frames = []
            try:
                while True:
                    frames.append(json.loads(conn.recv(timeout=5)))
            except Exception:
                pass
            assert all(e.get("target") != "secret.txt" for e in frames)
