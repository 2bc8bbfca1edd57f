"""Versioned files through the real HTTP stack (API.md "Files")."""
from __future__ import annotations

import hashlib

import pytest

from tests.helpers import assert_error, create_workspace, put_file, raw_request


def test_write_creates_version_one_then_two(api, ws):
    """GIVEN an empty workspace WHEN a path is written twice THEN 201 v1, then 200 v2, with ETags."""
    first = put_file(api, ws, "notes/a.md", "one")
    assert first.status_code == 201
    assert first.headers["ETag"] == '"1"'
    body = first.json()
    assert body["version"] == 1 and body["size"] == 3 and body["author"] == "olga"
    assert body["sha256"] == hashlib.sha256(b"one").hexdigest()
    second = put_file(api, ws, "notes/a.md", "two")
    assert second.status_code == 200 and second.json()["version"] == 2


def test_read_latest_and_any_version(api, ws):
    """GIVEN two versions WHEN reading with and without ?version THEN each version's bytes come back."""
    put_file(api, ws, "a.txt", "v1")
    put_file(api, ws, "a.txt", "v2")
    latest = api.get(f"/api/v1/workspaces/{ws}/files/a.txt")
    assert latest.content == b"v2" and latest.headers["ETag"] == '"2"' and latest.headers["X-Version"] == "2"
    old = api.get(f"/api/v1/workspaces/{ws}/files/a.txt", params={"version": 1})
    assert old.content == b"v1" and old.headers["X-Version"] == "1"
    assert_error(api.get(f"/api/v1/workspaces/{ws}/files/a.txt", params={"version": 9}), 404, "not_found")
    assert_error(api.get(f"/api/v1/workspaces/{ws}/files/a.txt", params={"version": "x"}), 400)


def test_read_returns_304_on_matching_if_none_match(api, ws):
    """GIVEN a file at v1 WHEN read with If-None-Match "1" THEN 304 with no body."""
    put_file(api, ws, "a.txt", "v1")
    response = api.get(f"/api/v1/workspaces/{ws}/files/a.txt", headers={"If-None-Match": '"1"'})
    assert response.status_code == 304 and response.content == b""


def test_if_match_mismatch_is_412_with_current_content(api, ws):
    """GIVEN a file at v2 WHEN writing with If-Match "1" THEN 412 version_mismatch carrying v2 and its text."""
    put_file(api, ws, "a.txt", "v1")
    put_file(api, ws, "a.txt", "v2")
    error = assert_error(put_file(api, ws, "a.txt", "lost", **{"If-Match": '"1"'}), 412, "version_mismatch")
    assert error["current"]["version"] == 2
    assert error["current"]["content"] == "v2"
    assert error["current"]["author"] == "olga"
    assert api.get(f"/api/v1/workspaces/{ws}/files/a.txt").content == b"v2"
    ok = put_file(api, ws, "a.txt", "v3", **{"If-Match": '"2"'})
    assert ok.status_code == 200 and ok.json()["version"] == 3


def test_412_omits_content_for_binary_and_large_files(api, ws):
    """GIVEN a binary current version WHEN If-Match fails THEN `current` has no content."""
    put_file(api, ws, "b.bin", b"\x00\x01\x02")
    error = assert_error(put_file(api, ws, "b.bin", b"x", **{"If-Match": '"7"'}), 412, "version_mismatch")
    assert "content" not in error["current"]


def test_if_none_match_star_creates_only_once(api, ws):
    """GIVEN a live file WHEN writing with If-None-Match * THEN 412 already_exists."""
    assert put_file(api, ws, "once.txt", "1", **{"If-None-Match": "*"}).status_code == 201
    assert_error(put_file(api, ws, "once.txt", "2", **{"If-None-Match": "*"}), 412, "already_exists")
    assert_error(put_file(api, ws, "once.txt", "2", **{"If-None-Match": '"1"'}), 400, "invalid_precondition")


def test_delete_leaves_a_tombstone_and_history(api, ws):
    """GIVEN a file WHEN deleted THEN reads 404, history keeps both versions, a rewrite is 201 v3."""
    put_file(api, ws, "d.txt", "x")
    deleted = api.delete(f"/api/v1/workspaces/{ws}/files/d.txt")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True and deleted.json()["version"] == 2
    assert_error(api.get(f"/api/v1/workspaces/{ws}/files/d.txt"), 404, "not_found")
    assert_error(api.delete(f"/api/v1/workspaces/{ws}/files/d.txt"), 404, "not_found")
    history = api.get(f"/api/v1/workspaces/{ws}/history/d.txt").json()["results"]
    assert [(v["version"], v["deleted"]) for v in history] == [(2, True), (1, False)]
    assert api.get(f"/api/v1/workspaces/{ws}/files/d.txt", params={"version": 1}).content == b"x"
    again = put_file(api, ws, "d.txt", "back")
    assert again.status_code == 201 and again.json()["version"] == 3
    assert_error(api.get(f"/api/v1/workspaces/{ws}/history/never.txt"), 404)


def test_tree_lists_live_files_with_prefix_and_pagination(api, ws):
    """GIVEN files in two directories WHEN listing the tree THEN live files only, filtered, paginated."""
    for name in ("r/a.md", "r/b.md", "r/c.md", "w/x.md"):
        put_file(api, ws, name, name)
    api.delete(f"/api/v1/workspaces/{ws}/files/r/b.md")
    tree = api.get(f"/api/v1/workspaces/{ws}/tree").json()
    assert [f["path"] for f in tree["results"]] == ["r/a.md", "r/c.md", "w/x.md"]
    assert tree["results"][0]["lock"] is None and tree["results"][0]["author"] == "olga"
    page = api.get(f"/api/v1/workspaces/{ws}/tree", params={"prefix": "r/", "limit": 1}).json()
    assert [f["path"] for f in page["results"]] == ["r/a.md"] and page["next"]
    rest = api.get(f"/api/v1/workspaces/{ws}/tree", params={"prefix": "r/", "limit": 1, "cursor": page["next"]}).json()
    assert [f["path"] for f in rest["results"]] == ["r/c.md"] and rest["next"] is None
    assert_error(api.get(f"/api/v1/workspaces/{ws}/tree", params={"cursor": "forged"}), 400, "invalid_cursor")
    assert_error(api.get(f"/api/v1/workspaces/{ws}/tree", params={"limit": 501}), 400, "invalid_limit")
    assert_error(api.get(f"/api/v1/workspaces/{ws}/tree", params={"limit": 0}), 400, "invalid_limit")


def test_unified_diff_between_versions(api, ws):
    """GIVEN two versions WHEN diffing THEN a unified diff of exactly the changed line."""
    put_file(api, ws, "p.txt", "alpha\nbeta\ngamma\n")
    put_file(api, ws, "p.txt", "alpha\nBETA\ngamma\n")
    diff = api.get(f"/api/v1/workspaces/{ws}/diff/p.txt", params={"from": 1, "to": 2}).json()
    assert diff["binary"] is False
    assert "-beta\n+BETA\n" in diff["diff"] and diff["diff"].startswith("--- a/p.txt@1\n+++ b/p.txt@2\n")
    assert_error(api.get(f"/api/v1/workspaces/{ws}/diff/p.txt", params={"from": 1, "to": 5}), 404)
    assert_error(api.get(f"/api/v1/workspaces/{ws}/diff/p.txt", params={"from": 1}), 400)


def test_move_is_atomic_and_keeps_content(api, ws):
    """GIVEN inbox/x WHEN moved to agent-a/x THEN the source is a tombstone and the target has the bytes."""
    put_file(api, ws, "inbox/x.md", "job")
    moved = api.post(f"/api/v1/workspaces/{ws}/moves", json={"from": "inbox/x.md", "to": "agent-a/x.md"})
    assert moved.status_code == 201
    assert moved.json()["from"]["deleted"] is True and moved.json()["to"]["version"] == 1
    assert api.get(f"/api/v1/workspaces/{ws}/files/agent-a/x.md").content == b"job"
    assert_error(api.post(f"/api/v1/workspaces/{ws}/moves", json={"from": "inbox/x.md", "to": "agent-b/x.md"}),
                 404)
    put_file(api, ws, "inbox/y.md", "y")
    assert_error(api.post(f"/api/v1/workspaces/{ws}/moves", json={"from": "inbox/y.md", "to": "agent-a/x.md"}),
                 412, "already_exists")
    assert_error(api.post(f"/api/v1/workspaces/{ws}/moves",
                          json={"from": "inbox/y.md", "to": "z.md", "if_match": 4}), 412, "version_mismatch")


def test_size_limit_is_413_and_writes_nothing(live, make_user):
    """GIVEN a body over the limit WHEN written THEN 413 and no version exists."""
    from django.conf import settings

    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api)
        big = b"x" * (settings.MAX_FILE_SIZE + 1)
        assert_error(put_file(api, ws, "big.bin", big), 413, "too_large")
        assert_error(api.get(f"/api/v1/workspaces/{ws}/files/big.bin"), 404)


BAD_PATHS = [
    "a/../b", "../etc/passwd", "a/./b", "a//b", "a/b/", "a%00b", "a%01b", "a%7Fb", "a\\b",
    "e\u0301.txt",  # not NFC
    "x" * 1025,
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_are_400_invalid_path_and_write_nothing(live, owner, api, ws, path):
    """GIVEN a malformed path sent exactly as written WHEN written THEN 400 invalid_path, tree stays empty."""
    from urllib.parse import quote

    raw = path if "%" in path else quote(path, safe="/.\\")
    status, body = raw_request(live.url, "PUT", f"/api/v1/workspaces/{ws}/files/{raw}", token=owner.token,
                               body=b"x")
    assert status == 400, (status, body)
    assert body["error"]["code"] == "invalid_path"
    assert api.get(f"/api/v1/workspaces/{ws}/tree").json()["results"] == []


@pytest.mark.parametrize("raw", ["a/%2e%2e/b", "%2e%2e/x", "a/%2E/b", "a%5cb"])
def test_percent_encoded_traversal_is_refused(live, owner, api, ws, raw):
    """GIVEN dot segments or a backslash hidden by percent-encoding WHEN written THEN 400 invalid_path."""
    status, body = raw_request(live.url, "PUT", f"/api/v1/workspaces/{ws}/files/{raw}", token=owner.token,
                               body=b"x")
    assert status == 400 and body["error"]["code"] == "invalid_path", (status, body)


def test_absolute_path_via_double_slash_is_refused(live, owner, ws):
    """GIVEN a path starting with '/' WHEN written THEN 400 invalid_path."""
    status, body = raw_request(live.url, "PUT", f"/api/v1/workspaces/{ws}/files//etc/passwd", token=owner.token,
                               body=b"x")
    assert status == 400 and body["error"]["code"] == "invalid_path"


def test_viewer_reads_but_cannot_write(live, make_user):
    """GIVEN a viewer WHEN it writes THEN 403; reading works."""
    owner, viewer = make_user(), make_user()
    with live.client(owner.token) as api, live.client(viewer.token) as vapi:
        ws = create_workspace(api)
        put_file(api, ws, "a.txt", "x")
        assert api.put(f"/api/v1/workspaces/{ws}/members/{viewer.username}", json={"role": "viewer"}).status_code == 200
        assert vapi.get(f"/api/v1/workspaces/{ws}/files/a.txt").content == b"x"
        assert_error(put_file(vapi, ws, "a.txt", "y"), 403, "forbidden")
        assert_error(vapi.delete(f"/api/v1/workspaces/{ws}/files/a.txt"), 403, "forbidden")


def test_directory_ownership_refuses_other_writers(live, make_user):
    """GIVEN a rule on research/ for alice WHEN bob (even as admin) writes there THEN 403 not_owner."""
    owner, alice, bob = make_user(), make_user("alice"), make_user("bob")
    with live.client(owner.token) as api, live.client(alice.token) as a, live.client(bob.token) as b:
        ws = create_workspace(api)
        api.put(f"/api/v1/workspaces/{ws}/members/alice", json={"role": "editor"})
        api.put(f"/api/v1/workspaces/{ws}/members/bob", json={"role": "admin"})
        rule = api.put(f"/api/v1/workspaces/{ws}/rules/research/", json={"writers": ["alice"]})
        assert rule.status_code == 200 and rule.json() == {"prefix": "research/", "writers": ["alice"]}
        assert put_file(a, ws, "research/n.md", "ok").status_code == 201
        error = assert_error(put_file(b, ws, "research/n.md", "no"), 403, "not_owner")
        assert error["writers"] == ["alice"]
        assert_error(b.post(f"/api/v1/workspaces/{ws}/moves", json={"from": "research/n.md", "to": "x.md"}),
                     403, "not_owner")
        assert put_file(b, ws, "elsewhere.md", "fine").status_code == 201
        assert [r["prefix"] for r in api.get(f"/api/v1/workspaces/{ws}/rules").json()["results"]] == ["research/"]
        assert api.delete(f"/api/v1/workspaces/{ws}/rules/research/").status_code == 204
        assert put_file(b, ws, "research/n.md", "now").status_code == 200
        assert_error(api.put(f"/api/v1/workspaces/{ws}/rules/x/", json={"writers": ["nobody"]}), 404)


def test_layout_creates_standard_directories_and_rules(live, make_user, make_agent):
    """GIVEN two agents WHEN the layout is created THEN inbox/, output/, failed/, agent-<name>/ exist and
    only each agent may write its own directory."""
    owner = make_user()
    a1, _ = make_agent("a1"), make_agent("a2")
    with live.client(owner.token) as api, live.client(a1.token) as c1:
        ws = create_workspace(api)
        layout = api.post(f"/api/v1/workspaces/{ws}/layout", json={"agents": ["a1", "a2"]})
        assert layout.status_code == 201
        paths = {f["path"] for f in api.get(f"/api/v1/workspaces/{ws}/tree").json()["results"]}
        assert paths == {"inbox/.keep", "output/.keep", "failed/.keep", "agent-a1/.keep", "agent-a2/.keep"}
        assert put_file(c1, ws, "agent-a1/work.md", "mine").status_code == 201
        assert_error(put_file(c1, ws, "agent-a2/work.md", "theirs"), 403, "not_owner")
