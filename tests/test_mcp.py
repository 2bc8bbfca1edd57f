"""The MCP server (issue 8) through the official `mcp` client, over both transports.

- "http": streamable HTTP at /mcp of the live server (the real launcher, uvicorn with two processes),
  with `ClientSession` and the initialize handshake;
- "http-2026": the same endpoint through the SDK's `Client`, which negotiates the 2026-07-28 protocol
  (one self-contained request per call, no handshake);
- "stdio": `python manage.py mcp --token ...` spawned by the SDK's stdio client, on the same test
  database (env from `live_env()`).
Every scenario runs with its agent under test on each transport; the other agents of a scenario talk
over HTTP (one stdio process per scenario keeps the suite fast). Tests are transactional (the `live`
fixture), so both servers see the accounts and workspaces the test creates.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from django.utils import timezone
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from tests.conftest import ROOT, Account, LiveServer, live_env

TRANSPORTS = ["http", "http-2026", "stdio"]
CONTENT_MARKER = "--- current content"
EXPECTED_TOOLS = {
    "workspace_list", "workspace_create", "file_read", "file_write", "file_delete", "file_list", "file_history",
    "file_diff", "file_move", "lock_acquire", "lock_renew", "lock_release", "lock_list", "task_create",
    "task_claim", "task_heartbeat", "task_complete", "task_fail", "task_list", "worklog_append", "worklog_read",
    "approval_request", "approval_status", "search", "ask", "events",
}


@asynccontextmanager
async def mcp_session(transport: str, live: LiveServer, token: str,
                      statuses: list[int] | None = None) -> AsyncIterator[ClientSession | Client]:
    """A connected MCP client acting as `token`'s account (HTTP statuses go to `statuses`)."""
    if transport.startswith("http"):
        async def record(response: httpx2.Response) -> None:
            if statuses is not None:
                statuses.append(response.status_code)

        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, event_hooks={"response": [record]},
                                  timeout=httpx2.Timeout(30, read=120))
        if transport == "http-2026":
            async with http, Client(streamable_http_client(f"{live.url}/mcp", http_client=http)) as client:
                assert client.protocol_version == "2026-07-28"
                yield client
            return
        async with http, streamable_http_client(f"{live.url}/mcp", http_client=http) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session
        return
    params = StdioServerParameters(command=sys.executable, args=["manage.py", "mcp", "--token", token],
                                   env=live_env(), cwd=str(ROOT))
    with open(live.data_dir / "mcp-stdio.log", "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    anyio.run(scenario)


def data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text if result.content else result
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return result.content[0].text


def error_details(text: str) -> dict[str, Any]:
    line = next(line for line in text.splitlines() if line.startswith("Details: "))
    return json.loads(line.removeprefix("Details: "))


def shared_workspace(live: LiveServer, owner: Account, *editors: Account) -> str:
    with live.client(owner.token) as api:
        response = api.post("/api/v1/workspaces", json={"name": "mcp", "intelligence": False})
        assert response.status_code == 201, response.text
        ws = response.json()["id"]
        for editor in editors:
            assert api.put(f"/api/v1/workspaces/{ws}/members/{editor.username}",
                           json={"role": "editor"}).status_code == 200
    return str(ws)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_tool_has_an_input_schema_with_descriptions(live, make_agent, transport):
    """GIVEN an agent connected over the transport
    WHEN it lists the tools
    THEN the whole day is covered, and every tool has a description and an object input schema whose
    every property has a description a model can follow."""
    agent = make_agent()

    async def scenario() -> None:
        async with mcp_session(transport, live, agent.token) as session:
            tools = (await session.list_tools()).tools
        assert {t.name for t in tools} >= EXPECTED_TOOLS
        for tool in tools:
            assert tool.description and len(tool.description) > 30, tool.name
            assert tool.input_schema["type"] == "object", tool.name
            for name, prop in tool.input_schema.get("properties", {}).items():
                assert prop.get("description"), f"{tool.name}.{name} has no description"

    run(scenario)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stale_write_gets_the_current_content_and_the_merge_succeeds(live, make_agent, transport):
    """GIVEN two agents that both read notes.md at version 1, and the first writes version 2
    WHEN the second writes with expected_version=1
    THEN it gets a version_mismatch tool error carrying version 2 and its content and saying what to do,
    and writing the merge with expected_version=2 succeeds, keeping both changes."""
    alice, bob = make_agent(), make_agent()
    ws = shared_workspace(live, alice, bob)

    async def scenario() -> None:
        async with mcp_session("http", live, alice.token) as a, mcp_session(transport, live, bob.token) as b:
            created = data(await a.call_tool("file_write", {"workspace": ws, "path": "notes.md",
                                                            "content": "# Notes\n", "create_only": True}))
            assert created["version"] == 1 and created["created"] is True
            seen = data(await b.call_tool("file_read", {"workspace": ws, "path": "notes.md"}))
            assert (seen["version"], seen["content"]) == (1, "# Notes\n")
            data(await a.call_tool("file_write", {"workspace": ws, "path": "notes.md",
                                                  "content": "# Notes\n- alice's point\n", "expected_version": 1}))

            stale = await b.call_tool("file_write", {"workspace": ws, "path": "notes.md",
                                                     "content": "# Notes\n- bob's point\n", "expected_version": 1})
            text = error_text(stale)
            assert "version_mismatch (HTTP 412)" in text
            assert "Next: " in text and "expected_version=2" in text
            current = error_details(text)["current"]
            assert (current["version"], current["author"]) == (2, alice.username)
            marker, _, content = text.partition(f"{CONTENT_MARKER} of notes.md at version 2 ---\n")
            assert marker and content == "# Notes\n- alice's point\n"

            merged = content + "- bob's point\n"
            written = data(await b.call_tool("file_write", {"workspace": ws, "path": "notes.md", "content": merged,
                                                            "expected_version": current["version"]}))
            assert (written["version"], written["author"]) == (3, bob.username)
            final = data(await a.call_tool("file_read", {"workspace": ws, "path": "notes.md"}))
            assert (final["version"], final["content"]) == (3, "# Notes\n- alice's point\n- bob's point\n")
            history = data(await a.call_tool("file_history", {"workspace": ws, "path": "notes.md"}))
            assert [v["author"] for v in history["versions"]] == [bob.username, alice.username, alice.username]

    run(scenario)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_lock_holder_is_named_and_a_waiter_gets_the_lock_after_release(live, make_agent, transport):
    """GIVEN alice holds the lock on report.md
    WHEN bob asks for it without waiting, then with wait_seconds while alice releases it a second later
    THEN the first is a 'locked' tool error naming alice and when her lock ends; the second succeeds once
    she releases, with a newer fencing token that bob's write uses, and alice's write is now refused."""
    alice, bob = make_agent(), make_agent()
    ws = shared_workspace(live, alice, bob)

    async def scenario() -> None:
        async with mcp_session("http", live, alice.token) as a, mcp_session(transport, live, bob.token) as b:
            held = data(await a.call_tool("lock_acquire", {"workspace": ws, "path": "report.md", "ttl_seconds": 60,
                                                           "reason": "drafting"}))
            assert held["holder"] == alice.username

            refused = error_text(await b.call_tool("lock_acquire", {"workspace": ws, "path": "report.md"}))
            assert "locked (HTTP 423)" in refused
            details = error_details(refused)
            assert details["holder"] == alice.username
            assert details["expires_at"] == held["expires_at"]
            assert 0 < details["retry_after_seconds"] <= 60
            next_line = next(line for line in refused.splitlines() if line.startswith("Next: "))
            assert alice.username in next_line and "wait_seconds" in next_line

            granted: dict[str, Any] = {}

            async def wait_for_lock() -> None:
                started = time.monotonic()
                granted.update(data(await b.call_tool("lock_acquire", {
                    "workspace": ws, "path": "report.md", "ttl_seconds": 30, "wait_seconds": 20})))
                granted["waited"] = time.monotonic() - started

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for_lock)
                await anyio.sleep(1.0)
                assert not granted, "bob got the lock while alice still held it"
                data(await a.call_tool("lock_release", {"workspace": ws, "lock_id": held["id"]}))

            assert granted["holder"] == bob.username
            assert granted["token"] > held["token"]
            assert 0.9 < granted["waited"] < 15
            wrote = data(await b.call_tool("file_write", {"workspace": ws, "path": "report.md", "content": "bob\n",
                                                          "lock_token": granted["token"]}))
            assert wrote["version"] == 1
            blocked = error_text(await a.call_tool("file_write", {"workspace": ws, "path": "report.md",
                                                                  "content": "alice\n", "expected_version": 1}))
            assert "locked (HTTP 423)" in blocked and error_details(blocked)["holder"] == bob.username
            locks = data(await a.call_tool("lock_list", {"workspace": ws}))["locks"]
            assert [(lock["path"], lock["holder"]) for lock in locks] == [("report.md", bob.username)]

    run(scenario)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_task_is_claimed_worked_logged_and_completed(live, make_agent, transport):
    """GIVEN a workspace created through the tools, with a task in it
    WHEN an agent claims it, heartbeats, writes its output, logs and completes it, and looks at the events
    THEN each step goes through the services (the task is done with its outputs, the worklog entry is
    linked to it, the events list the claim and completion after the cursor) and a stranger sees nothing."""
    agent, stranger = make_agent(), make_agent()

    async def scenario() -> None:
        async with mcp_session(transport, live, agent.token) as s, \
                mcp_session("http", live, stranger.token) as other:
            ws = data(await s.call_tool("workspace_create", {"name": "pipeline", "intelligence": False}))["id"]
            assert ws in [w["id"] for w in data(await s.call_tool("workspace_list", {}))["workspaces"]]
            cursor = data(await s.call_tool("events", {"workspace": ws}))["next_after"]
            made = data(await s.call_tool("task_create", {"workspace": ws, "title": "Summarise", "kind": "sum",
                                                          "payload": {"source": "in.md"}}))
            claimed = data(await s.call_tool("task_claim", {"workspace": ws, "kinds": ["sum"]}))["task"]
            assert claimed["id"] == made["id"] and claimed["claimed_by"] == agent.username
            assert data(await s.call_tool("task_claim", {"workspace": ws}))["task"] is None
            beat = data(await s.call_tool("task_heartbeat", {"workspace": ws, "task_id": claimed["id"],
                                                             "lease_id": claimed["lease_id"]}))
            assert beat["lease_expires_at"] >= claimed["lease_expires_at"]
            data(await s.call_tool("file_write", {"workspace": ws, "path": "out/summary.md", "content": "short\n",
                                                  "task": claimed["id"]}))
            entry = data(await s.call_tool("worklog_append", {"workspace": ws, "message": "summarised in.md",
                                                              "task": claimed["id"], "data": {"words": 1}}))
            done = data(await s.call_tool("task_complete", {"workspace": ws, "task_id": claimed["id"],
                                                            "result": {"ok": True}, "outputs": ["out/summary.md"],
                                                            "lease_id": claimed["lease_id"]}))
            assert (done["status"], done["outputs"]) == ("done", ["out/summary.md"])
            again = error_text(await s.call_tool("task_complete", {"workspace": ws, "task_id": claimed["id"]}))
            assert "not_claimant (HTTP 409)" in again and "Next: " in again
            log = data(await s.call_tool("worklog_read", {"workspace": ws, "task": claimed["id"]}))["entries"]
            assert [(e["seq"], e["message"], e["author"]) for e in log] == [
                (entry["seq"], "summarised in.md", agent.username)]
            seen = data(await s.call_tool("events", {"workspace": ws, "after": cursor}))
            types = [e["type"] for e in seen["events"]]
            assert types.index("task.claimed") < types.index("file.written") < types.index("task.completed")
            assert all(e["seq"] > cursor for e in seen["events"]) and seen["next_after"] == seen["events"][-1]["seq"]

            hidden = error_text(await other.call_tool("file_read", {"workspace": ws, "path": "out/summary.md"}))
            assert "not_found (HTTP 404)" in hidden
            off = error_text(await s.call_tool("search", {"workspace": ws, "query": "short"}))
            assert "intelligence_off (HTTP 409)" in off

    run(scenario)


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "not_authenticated"),
    ({"Authorization": "Bearer not-a-real-token"}, "authentication_failed"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "authentication_failed"),
])
def test_mcp_over_http_needs_a_valid_bearer_token(live, headers, code):
    """GIVEN the live server
    WHEN /mcp is called without a token, with an unknown one, or with another scheme
    THEN it answers 401 with API.md's error body and a Bearer challenge, before any MCP handling."""
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    with httpx.Client(base_url=live.url, timeout=30) as client:
        response = client.post("/mcp", json=initialize, headers={
            **headers, "Accept": "application/json, text/event-stream", "X-Request-Id": "mcp-auth-check"})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["X-Request-Id"] == "mcp-auth-check"


def test_mcp_client_with_a_revoked_token_is_refused(live, make_agent):
    """GIVEN an agent whose token has been revoked
    WHEN the official client connects to /mcp with it
    THEN the connection fails with a 401 and no session starts."""
    agent = make_agent()
    agent.user.tokens.update(revoked_at=timezone.now())

    async def scenario() -> None:
        statuses: list[int] = []
        with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK reports it wrapped in exception groups
            async with mcp_session("http", live, agent.token, statuses) as session:
                await session.list_tools()
        assert statuses == [401]

    run(scenario)


def test_stdio_server_refuses_an_invalid_token(live):
    """GIVEN an unknown token
    WHEN `manage.py mcp --token` starts with it
    THEN it exits non-zero at once, saying why, without serving."""
    result = subprocess.run([sys.executable, "manage.py", "mcp", "--token", "not-a-real-token"], cwd=ROOT,
                            env=live_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert "not valid" in result.stderr and result.stdout == ""


def test_the_rest_of_the_file_approval_and_task_tools(live, make_agent, make_user):
    """GIVEN an agent in a workspace with a human owner
    WHEN it round-trips a binary file, pages the file list, diffs, moves and deletes, requests an approval
    the owner decides, and fails a task for good
    THEN every tool returns what the HTTP API would: bytes intact, pages in path order, a unified diff,
    the move and deletion in the history, the decision in approval_status, the task failed with its log."""
    owner, agent = make_user(), make_agent()
    ws = shared_workspace(live, owner, agent)
    blob = bytes(range(256))

    async def scenario() -> None:
        async with mcp_session("http", live, agent.token) as s:
            data(await s.call_tool("file_write", {"workspace": ws, "path": "img/raw.bin", "encoding": "base64",
                                                  "content": base64.b64encode(blob).decode()}))
            raw = data(await s.call_tool("file_read", {"workspace": ws, "path": "img/raw.bin"}))
            assert raw["encoding"] == "base64" and base64.b64decode(raw["content"]) == blob
            for name in ("a.md", "b.md", "c.md"):
                data(await s.call_tool("file_write", {"workspace": ws, "path": f"docs/{name}", "content": name}))
            first = data(await s.call_tool("file_list", {"workspace": ws, "prefix": "docs", "limit": 2}))
            assert [f["path"] for f in first["files"]] == ["docs/a.md", "docs/b.md"]
            rest = data(await s.call_tool("file_list", {"workspace": ws, "prefix": "docs/",
                                                        "after": first["next_after"]}))
            assert [f["path"] for f in rest["files"]] == ["docs/c.md"] and rest["next_after"] is None

            data(await s.call_tool("file_write", {"workspace": ws, "path": "docs/a.md", "content": "a.md\nmore\n",
                                                  "expected_version": 1}))
            diff = data(await s.call_tool("file_diff", {"workspace": ws, "path": "docs/a.md", "from_version": 1,
                                                        "to_version": 2}))
            assert "+more" in diff["diff"] and diff["binary"] is False
            old = data(await s.call_tool("file_read", {"workspace": ws, "path": "docs/a.md", "version": 1}))
            assert old["content"] == "a.md"
            moved = data(await s.call_tool("file_move", {"workspace": ws, "from_path": "docs/b.md",
                                                         "to_path": "done/b.md", "expected_version": 1}))
            assert (moved["from"]["deleted"], moved["to"]["path"]) == (True, "done/b.md")
            data(await s.call_tool("file_delete", {"workspace": ws, "path": "docs/c.md", "expected_version": 1}))
            gone = error_text(await s.call_tool("file_read", {"workspace": ws, "path": "docs/c.md"}))
            assert "not_found (HTTP 404)" in gone
            history = data(await s.call_tool("file_history", {"workspace": ws, "path": "docs/c.md"}))["versions"]
            assert [v["deleted"] for v in history] == [True, False]

            asked = data(await s.call_tool("approval_request", {"workspace": ws, "title": "Publish a.md?",
                                                                "path": "docs/a.md"}))
            assert (asked["status"], asked["version"]) == ("pending", 2)
            with live.client(owner.token) as api:
                decided = api.post(f"/api/v1/workspaces/{ws}/approvals/{asked['id']}/decide",
                                   json={"decision": "approve", "comment": "ship it"})
                assert decided.status_code == 200, decided.text
            status = data(await s.call_tool("approval_status", {"workspace": ws, "approval_id": asked["id"]}))
            assert (status["status"], status["comment"], status["decided_by"]) == (
                "approved", "ship it", owner.username)

            data(await s.call_tool("task_create", {"workspace": ws, "title": "Doomed", "max_attempts": 1}))
            task = data(await s.call_tool("task_claim", {"workspace": ws}))["task"]
            failed = data(await s.call_tool("task_fail", {"workspace": ws, "task_id": task["id"],
                                                          "error": "no input", "retry": False}))
            assert failed["status"] == "failed"
            board = data(await s.call_tool("task_list", {"workspace": ws, "status": "failed"}))["tasks"]
            assert [t["id"] for t in board] == [task["id"]]
            logs = data(await s.call_tool("file_list", {"workspace": ws, "prefix": "failed/"}))["files"]
            assert any(task["id"] in f["path"] for f in logs)

    run(scenario)
