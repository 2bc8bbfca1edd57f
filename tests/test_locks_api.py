"""Locks over HTTP against the live server (API.md "Locks"): grants, conflicts, fencing on
writes, renew, release, force release, expiry, validation, listing, batches and claims."""
from __future__ import annotations

import threading
import time

import pytest

from tests.test_locks_support import all_events, check_lock_log, make_team, parse_time, ws_url


@pytest.fixture
def team(live, make_user, make_agent):
    team = make_team(live, make_user, make_agent)
    yield team
    team.close()


def lock(client, ws, path, **body):
    return client.post(ws_url(ws, "/locks"), json={"path": path, **body})


def test_acquire_returns_the_grant_and_records_it(team):
    """GIVEN an editor agent WHEN it locks a file and a subtree THEN each answer is 201 with the
    grant, fencing tokens grow, both are listed, and each grant is a `lock.acquired` event with
    holder, on_behalf_of, token, reason and held duration."""
    first = lock(team.ada, team.ws, "docs/a.md", ttl_seconds=30, reason="editing the intro")
    second = lock(team.ada, team.ws, "src/", reason="refactor")
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    grant = first.json()
    assert {"id", "path", "token", "holder", "reason", "acquired_at", "expires_at"} <= set(grant)
    assert grant["path"] == "docs/a.md" and grant["holder"] == "ada" and grant["reason"] == "editing the intro"
    assert grant["on_behalf_of"] == "olivia" and grant["subtree"] is False and grant["state"] == "active"
    assert (parse_time(grant["expires_at"]) - parse_time(grant["acquired_at"])).total_seconds() == 30
    assert first.headers["Location"] == ws_url(team.ws, f"/locks/{grant['id']}")
    assert second.json()["subtree"] is True
    assert second.json()["token"] > grant["token"]
    assert (parse_time(second.json()["expires_at"]) - parse_time(second.json()["acquired_at"])).total_seconds() == 60

    listed = team.vera.get(ws_url(team.ws, "/locks")).json()["results"]
    assert [row["path"] for row in listed] == ["docs/a.md", "src/"]
    assert team.vera.get(ws_url(team.ws, f"/locks/{grant['id']}")).json()["token"] == grant["token"]

    acquired = all_events(team.owner, team.ws, types="lock.acquired")
    assert [e["data"]["path"] for e in acquired] == ["docs/a.md", "src/"]
    data = acquired[0]["data"]
    assert acquired[0]["actor"] == "ada" and acquired[0]["on_behalf_of"] == "olivia"
    assert data["holder"] == "ada" and data["on_behalf_of"] == "olivia" and data["token"] == grant["token"]
    assert data["reason"] == "editing the intro" and data["held_seconds"] == 0.0 and data["lock"] == grant["id"]


def test_conflicting_lock_and_writes_get_423_with_holder_and_retry_after(team):
    """GIVEN ada's lock on a file WHEN bert locks it, writes it, deletes it or moves it either way
    THEN each is `423 locked` naming ada, the expiry and a Retry-After; reads are never blocked."""
    assert team.ada.put(ws_url(team.ws, "/files/docs/a.md"), content=b"v1").status_code == 201
    assert team.ada.put(ws_url(team.ws, "/files/docs/free.md"), content=b"x").status_code == 201
    batch = team.ada.post(ws_url(team.ws, "/locks/batch"),
                          json={"paths": ["docs/a.md", "docs/new.md"], "ttl_seconds": 30, "reason": "intro"})
    assert batch.status_code == 201, batch.text
    held = batch.json()["locks"][0]

    attempts = {
        "lock": lock(team.bert, team.ws, "docs/a.md"),
        "put": team.bert.put(ws_url(team.ws, "/files/docs/a.md"), content=b"mine"),
        "delete": team.bert.delete(ws_url(team.ws, "/files/docs/a.md")),
        "move from": team.bert.post(ws_url(team.ws, "/moves"), json={"from": "docs/a.md", "to": "docs/b.md"}),
        "move to": team.bert.post(ws_url(team.ws, "/moves"), json={"from": "docs/free.md", "to": "docs/new.md"}),
    }
    for what, response in attempts.items():
        assert response.status_code == 423, (what, response.text)
        error = response.json()["error"]
        assert error["code"] == "locked" and error["holder"] == "ada", what
        assert error["expires_at"] == held["expires_at"], what
        assert error["path"] == ("docs/new.md" if what == "move to" else "docs/a.md"), what
        assert "ada" in error["message"], what
        assert 1 <= int(response.headers["Retry-After"]) <= 30, what

    # The refused move changed nothing: docs/free.md is still there.
    assert team.bert.get(ws_url(team.ws, "/files/docs/free.md")).content == b"x"
    read = team.bert.get(ws_url(team.ws, "/files/docs/a.md"))
    assert read.status_code == 200 and read.content == b"v1"
    tree = team.bert.get(ws_url(team.ws, "/tree")).json()["results"]
    state = {row["path"]: row["lock"] for row in tree}
    assert state["docs/a.md"]["holder"] == "ada" and state["docs/a.md"]["id"] == held["id"]
    assert state["docs/free.md"] is None
    assert [e["type"] for e in all_events(team.owner, team.ws)].count("file.written") == 2


def test_subtree_locks_conflict_in_both_directions(team):
    """GIVEN locks on a subtree and on a file WHEN others lock inside, above, or beside them THEN
    everything inside a locked subtree and every ancestor subtree of a lock is refused, while
    siblings and a same-named file outside the subtree are not."""
    assert lock(team.ada, team.ws, "src/").status_code == 201
    assert lock(team.ada, team.ws, "lib/core/io.py").status_code == 201
    for path in ("src/a.py", "src/deep/b.py", "src/deep/", "src/", "lib/", "lib/core/", "lib/core/io.py"):
        response = lock(team.bert, team.ws, path)
        assert response.status_code == 423, (path, response.text)
        assert response.json()["error"]["holder"] == "ada"
    for path in ("srcs/", "src", "lib/core/io.pyc", "lib/other/", "lib/core/x/"):
        assert lock(team.bert, team.ws, path).status_code == 201, path
    # A subtree lock blocks writes to every file inside it, not beside it.
    assert team.bert.put(ws_url(team.ws, "/files/src/deep/x.py"), content=b"x").status_code == 423
    assert team.bert.put(ws_url(team.ws, "/files/srcx/y.py"), content=b"y").status_code == 201
    # A holder is not re-entrant: its own overlapping request is refused too, naming itself.
    mine = lock(team.ada, team.ws, "src/z.py")
    assert mine.status_code == 423 and mine.json()["error"]["holder"] == "ada"
    assert "you" in mine.json()["error"]["message"]


def test_the_holder_writes_only_with_its_current_token(team):
    """GIVEN ada's lock on a subtree WHEN ada writes inside it without a token, with a wrong token
    and with its token THEN the first two are `409 stale_lock_token` and the last is accepted and
    recorded with the token."""
    grant = lock(team.ada, team.ws, "notes/").json()
    url = ws_url(team.ws, "/files/notes/n.md")
    missing = team.ada.put(url, content=b"a")
    wrong = team.ada.put(url, content=b"a", headers={"X-Lock-Token": str(grant["token"] + 7)})
    bogus = team.ada.put(url, content=b"a", headers={"X-Lock-Token": "seven"})
    assert missing.status_code == 409 and missing.json()["error"]["code"] == "stale_lock_token"
    assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "stale_lock_token"
    assert bogus.status_code == 400 and bogus.json()["error"]["code"] == "invalid_lock_token"
    ok = team.ada.put(url, content=b"a", headers={"X-Lock-Token": str(grant["token"])})
    assert ok.status_code == 201, ok.text
    gone = team.ada.delete(ws_url(team.ws, "/files/notes/n.md"))
    assert gone.status_code == 409
    written = all_events(team.owner, team.ws, types="file.written")
    assert [e["data"]["lock_token"] for e in written] == [grant["token"]]
    # A token of ada's is not a pass for paths it never covered.
    elsewhere = team.ada.put(ws_url(team.ws, "/files/other.md"), content=b"o",
                             headers={"X-Lock-Token": str(grant["token"])})
    assert elsewhere.status_code == 409 and elsewhere.json()["error"]["code"] == "stale_lock_token"
    check_lock_log(all_events(team.owner, team.ws))


def test_a_holder_that_stalled_past_its_ttl_is_fenced_off(team):
    """GIVEN ada's 1 s lock WHEN ada stalls past it, bert takes the lock and writes, and ada wakes
    up and writes with its old token THEN ada gets 423 while bert holds it and `409
    stale_lock_token` after bert released it; ada's lock is gone for renew and release (410)."""
    url = ws_url(team.ws, "/files/report.md")
    old = lock(team.ada, team.ws, "report.md", ttl_seconds=1).json()
    time.sleep(1.3)
    new = lock(team.bert, team.ws, "report.md", ttl_seconds=30)
    assert new.status_code == 201 and new.json()["token"] > old["token"]
    assert team.bert.put(url, content=b"bert", headers={"X-Lock-Token": str(new.json()["token"])}).status_code == 201
    while_held = team.ada.put(url, content=b"ada", headers={"X-Lock-Token": str(old["token"])})
    assert while_held.status_code == 423 and while_held.json()["error"]["holder"] == "bert"
    assert team.bert.delete(ws_url(team.ws, f"/locks/{new.json()['id']}")).status_code == 204

    stale = team.ada.put(url, content=b"ada", headers={"X-Lock-Token": str(old["token"])})
    assert stale.status_code == 409, stale.text
    assert stale.json()["error"]["code"] == "stale_lock_token"
    assert team.ada.get(url).content == b"bert"
    renew = team.ada.post(ws_url(team.ws, f"/locks/{old['id']}/renew"), json={"ttl_seconds": 30})
    assert renew.status_code == 410 and renew.json()["error"]["code"] == "lock_gone"
    assert team.ada.delete(ws_url(team.ws, f"/locks/{old['id']}")).status_code == 410
    report = check_lock_log(all_events(team.owner, team.ws))
    assert report.ends == {"lock.expired": 1, "lock.released": 1}


def test_renew_extends_only_a_live_lock_of_ones_own(team):
    """GIVEN ada's lock WHEN ada renews it, bert tries to, and ada renews after release and after
    expiry THEN the first extends it (with a `lock.renewed` event), bert gets 403, and an ended
    lock is `410 lock_gone` and is not re-created."""
    grant = lock(team.ada, team.ws, "a.txt", ttl_seconds=5).json()
    renewed = team.ada.post(ws_url(team.ws, f"/locks/{grant['id']}/renew"), json={"ttl_seconds": 120})
    assert renewed.status_code == 200, renewed.text
    body = renewed.json()
    assert body["token"] == grant["token"] and body["renewals"] == 1 and body["ttl_seconds"] == 120
    assert parse_time(body["expires_at"]) > parse_time(grant["expires_at"])
    assert team.ada.post(ws_url(team.ws, f"/locks/{grant['id']}/renew"), json={}).json()["ttl_seconds"] == 120
    other = team.bert.post(ws_url(team.ws, f"/locks/{grant['id']}/renew"), json={})
    assert other.status_code == 403 and other.json()["error"]["code"] == "not_holder"
    bad = team.ada.post(ws_url(team.ws, f"/locks/{grant['id']}/renew"), json={"ttl_seconds": 301})
    assert bad.status_code == 400
    assert team.ada.delete(ws_url(team.ws, f"/locks/{grant['id']}")).status_code == 204
    after_release = team.ada.post(ws_url(team.ws, f"/locks/{grant['id']}/renew"), json={})
    assert after_release.status_code == 410 and after_release.json()["error"]["state"] == "released"

    short = lock(team.ada, team.ws, "b.txt", ttl_seconds=1).json()
    time.sleep(1.2)
    expired = team.ada.post(ws_url(team.ws, f"/locks/{short['id']}/renew"), json={"ttl_seconds": 60})
    assert expired.status_code == 410 and expired.json()["error"]["code"] == "lock_gone"
    assert expired.json()["error"]["state"] == "expired"
    assert team.ada.get(ws_url(team.ws, "/locks")).json()["results"] == []
    assert team.ada.get(ws_url(team.ws, f"/locks/{short['id']}")).json()["state"] == "expired"
    renewals = all_events(team.owner, team.ws, types="lock.renewed")
    assert len(renewals) == 2 and renewals[0]["data"]["previous_expires_at"] == grant["expires_at"]
    check_lock_log(all_events(team.owner, team.ws))


def test_expiry_is_recorded_within_two_seconds_without_any_request(team):
    """GIVEN a 1 s lock nobody touches again WHEN time passes THEN it holds until its expiry (a
    write by another is refused just before), and a `lock.expired` event appears within 2 s of the
    expiry, recorded by the sweeper alone (only the event log is read meanwhile)."""
    grant = lock(team.ada, team.ws, "quiet.txt", ttl_seconds=1, reason="nap").json()
    expires_at = parse_time(grant["expires_at"])
    assert team.bert.put(ws_url(team.ws, "/files/quiet.txt"), content=b"b").status_code == 423
    deadline = time.monotonic() + 6
    expired = []
    while not expired and time.monotonic() < deadline:
        time.sleep(0.1)
        expired = all_events(team.owner, team.ws, types="lock.expired")
    assert expired, "no lock.expired event within 6 s"
    seen = time.time()
    event = expired[0]
    lag = (parse_time(event["at"]) - expires_at).total_seconds()
    assert 0 <= lag <= 2.0, lag
    assert seen - expires_at.timestamp() <= 2.5
    assert event["actor"] is None
    assert event["data"]["holder"] == "ada" and event["data"]["on_behalf_of"] == "olivia"
    assert event["data"]["token"] == grant["token"] and event["data"]["reason"] == "nap"
    assert event["data"]["held_seconds"] == 1.0
    assert team.owner.get(ws_url(team.ws, f"/locks/{grant['id']}")).json()["ended_at"] == grant["expires_at"]


def test_admins_force_release_and_editors_cannot(team):
    """GIVEN ada's lock WHEN bert (editor) deletes it THEN 403 not_holder; WHEN adam (admin) does
    THEN it is released as a force release naming both; the owner may too; ada's own release then
    finds it gone (410)."""
    grant = lock(team.ada, team.ws, "shared.txt", reason="long job").json()
    denied = team.bert.delete(ws_url(team.ws, f"/locks/{grant['id']}"))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "not_holder"
    assert team.vera.delete(ws_url(team.ws, f"/locks/{grant['id']}")).status_code == 403
    forced = team.admin.delete(ws_url(team.ws, f"/locks/{grant['id']}"))
    assert forced.status_code == 204
    assert team.ada.delete(ws_url(team.ws, f"/locks/{grant['id']}")).status_code == 410
    assert team.owner.get(ws_url(team.ws, f"/locks/{grant['id']}")).json()["state"] == "force_released"
    second = lock(team.bert, team.ws, "shared.txt").json()
    assert team.owner.delete(ws_url(team.ws, f"/locks/{second['id']}")).status_code == 204

    ends = all_events(team.owner, team.ws, types="lock.force_released,lock.released")
    assert [e["type"] for e in ends] == ["lock.force_released", "lock.force_released"]
    first = ends[0]
    assert first["actor"] == "adam" and first["data"]["holder"] == "ada"
    assert first["data"]["forced_by"] == "adam" and first["data"]["token"] == grant["token"]
    assert first["data"]["held_seconds"] >= 0
    assert ends[1]["actor"] == "olivia" and ends[1]["data"]["holder"] == "bert"


def test_roles_and_membership(team, live, make_user):
    """GIVEN a viewer, a stranger and no credentials WHEN they lock THEN 403, 404 and 401."""
    viewer = lock(team.vera, team.ws, "a.txt")
    assert viewer.status_code == 403 and viewer.json()["error"]["code"] == "forbidden"
    assert team.vera.post(ws_url(team.ws, "/locks/batch"), json={"paths": ["a.txt"]}).status_code == 403
    with live.client(make_user("stranger").token) as stranger:
        assert lock(stranger, team.ws, "a.txt").status_code == 404
        assert stranger.get(ws_url(team.ws, "/locks")).status_code == 404
    with live.client() as anonymous:
        assert lock(anonymous, team.ws, "a.txt").status_code == 401
    grant = lock(team.ada, team.ws, "a.txt").json()
    with live.client(make_user("stranger2").token) as stranger:
        assert stranger.delete(ws_url(team.ws, f"/locks/{grant['id']}")).status_code == 404
    assert team.ada.get(ws_url(team.ws, "/locks/lk_nosuchlock")).status_code == 404
    assert team.ada.delete(ws_url(team.ws, "/locks/lk_nosuchlock")).status_code == 404
    assert team.ada.post(ws_url(team.ws, "/locks/lk_nosuchlock/renew"), json={}).status_code == 404


@pytest.mark.parametrize(("endpoint", "body", "code"), [
    ("/locks", {"path": "a.txt", "ttl_seconds": 0}, "invalid"),
    ("/locks", {"path": "a.txt", "ttl_seconds": 301}, "invalid"),
    ("/locks", {"path": "a.txt", "ttl_seconds": "soon"}, "invalid"),
    ("/locks", {"path": "a.txt", "ttl_seconds": True}, "invalid"),
    ("/locks", {"path": "a.txt", "ttl_seconds": 1.5}, "invalid"),
    ("/locks", {"path": "a.txt", "wait_seconds": -1}, "invalid"),
    ("/locks", {"path": "a.txt", "wait_seconds": 61}, "invalid"),
    ("/locks", {"path": "a.txt", "wait_seconds": 1e308}, "invalid"),
    ("/locks", {"path": "a.txt", "reason": "x" * 501}, "invalid"),
    ("/locks", {"path": "../etc/passwd"}, "invalid_path"),
    ("/locks", {"path": "/abs"}, "invalid_path"),
    ("/locks", {"path": "a//b"}, "invalid_path"),
    ("/locks", {"path": "a\u0001b"}, "invalid_path"),
    ("/locks", {"path": "a\u0000b"}, "invalid"),
    ("/locks", {"path": "caf\u0065\u0301"}, "invalid_path"),
    ("/locks", {"path": "x" * 1100}, "invalid_path"),
    ("/locks", {"path": ""}, "invalid"),
    ("/locks", {"path": 7}, "invalid"),
    ("/locks", {}, "invalid"),
    ("/locks", ["a.txt"], "invalid_body"),
    ("/locks/batch", {"paths": []}, "invalid"),
    ("/locks/batch", {"paths": "a.txt"}, "invalid"),
    ("/locks/batch", {"paths": ["a.txt", "a.txt"]}, "duplicate_paths"),
    ("/locks/batch", {"paths": ["src/", "src/a.py"]}, "overlapping_paths"),
    ("/locks/batch", {"paths": ["ok.txt", "../no"]}, "invalid_path"),
    ("/locks/batch", {"paths": [f"p{i}" for i in range(101)]}, "invalid"),
])
def test_bad_input_is_a_400_and_changes_nothing(team, endpoint, body, code):
    """GIVEN an editor WHEN it sends a malformed lock request THEN 400 with the error body, and no
    lock exists afterwards."""
    response = team.ada.post(ws_url(team.ws, endpoint), json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert team.ada.get(ws_url(team.ws, "/locks")).json()["results"] == []


def test_malformed_json_is_a_400(team):
    """GIVEN an editor WHEN it posts a body that is not JSON THEN 400 invalid_json."""
    response = team.ada.post(ws_url(team.ws, "/locks"), content=b"{not json",
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_list_is_cursor_paginated_and_shows_only_live_locks(team):
    """GIVEN five live locks and one that expired WHEN the list is read two at a time, and
    filtered THEN every live lock appears once in path order, the expired one never does."""
    for name in ("e", "c", "a", "d", "b"):
        assert lock(team.ada, team.ws, f"dir/{name}.txt").status_code == 201
    assert lock(team.bert, team.ws, "other/x.txt").status_code == 201
    short = lock(team.bert, team.ws, "zz.txt", ttl_seconds=1)
    assert short.status_code == 201
    time.sleep(1.1)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = team.vera.get(ws_url(team.ws, "/locks"), params=params).json()
        assert len(page["results"]) <= 2
        seen += [row["path"] for row in page["results"]]
        cursor = page["next"]
        if not cursor:
            break
    assert seen == ["dir/a.txt", "dir/b.txt", "dir/c.txt", "dir/d.txt", "dir/e.txt", "other/x.txt"]
    prefixed = team.vera.get(ws_url(team.ws, "/locks"), params={"prefix": "dir/"}).json()["results"]
    assert len(prefixed) == 5
    assert team.vera.get(ws_url(team.ws, "/locks"), params={"prefix": "DIR/"}).json()["results"] == []
    by_holder = team.vera.get(ws_url(team.ws, "/locks"), params={"holder": "bert"}).json()["results"]
    assert [row["path"] for row in by_holder] == ["other/x.txt"]
    assert team.vera.get(ws_url(team.ws, "/locks"), params={"cursor": "forged"}).status_code == 400
    assert team.vera.get(ws_url(team.ws, "/locks"), params={"limit": 0}).status_code == 400


def test_idempotency_key_replays_the_grant(team):
    """GIVEN a lock request sent with an Idempotency-Key WHEN it is retried THEN the same grant
    comes back and only one lock exists; the key with another body is 422."""
    headers = {"Idempotency-Key": "lock-once-1"}
    first = team.ada.post(ws_url(team.ws, "/locks"), json={"path": "once.txt"}, headers=headers)
    again = team.ada.post(ws_url(team.ws, "/locks"), json={"path": "once.txt"}, headers=headers)
    assert first.status_code == 201 and again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    other = team.ada.post(ws_url(team.ws, "/locks"), json={"path": "twice.txt"}, headers=headers)
    assert other.status_code == 422
    assert len(all_events(team.owner, team.ws, types="lock.acquired")) == 1
    # A 423 is not stored: once the path is free the same key grants.
    blocked_key = {"Idempotency-Key": "lock-later"}
    assert team.bert.post(ws_url(team.ws, "/locks"), json={"path": "once.txt"}, headers=blocked_key).status_code == 423
    assert team.ada.delete(ws_url(team.ws, f"/locks/{first.json()['id']}")).status_code == 204
    later = team.bert.post(ws_url(team.ws, "/locks"), json={"path": "once.txt"}, headers=blocked_key)
    assert later.status_code == 201 and later.json()["holder"] == "bert"


def test_batch_is_all_or_nothing_and_one_grant(team):
    """GIVEN ada holding one of three paths WHEN bert batch-locks all three THEN 423 and bert
    holds none; after ada releases, the batch is granted with one token for all, which also
    fences a move between two of the paths."""
    assert team.bert.put(ws_url(team.ws, "/files/b/1.txt"), content=b"one").status_code == 201
    held = lock(team.ada, team.ws, "b/2.txt").json()
    refused = team.bert.post(ws_url(team.ws, "/locks/batch"), json={"paths": ["b/3.txt", "b/2.txt", "b/1.txt"]})
    assert refused.status_code == 423 and refused.json()["error"]["holder"] == "ada"
    assert [row["path"] for row in team.bert.get(ws_url(team.ws, "/locks")).json()["results"]] == ["b/2.txt"]
    assert team.ada.delete(ws_url(team.ws, f"/locks/{held['id']}")).status_code == 204

    granted = team.bert.post(ws_url(team.ws, "/locks/batch"),
                             json={"paths": ["b/3.txt", "b/2.txt", "b/1.txt"], "reason": "reshuffle", "ttl_seconds": 30})
    assert granted.status_code == 201, granted.text
    locks = granted.json()["locks"]
    assert [row["path"] for row in locks] == ["b/1.txt", "b/2.txt", "b/3.txt"]
    assert len({row["token"] for row in locks}) == 1 and locks[0]["token"] > held["token"]
    moved = team.bert.post(ws_url(team.ws, "/moves"), json={"from": "b/1.txt", "to": "b/3.txt"},
                           headers={"X-Lock-Token": str(locks[0]["token"])})
    assert moved.status_code == 201, moved.text
    assert team.ada.put(ws_url(team.ws, "/files/b/3.txt"), content=b"x").status_code == 423
    report = check_lock_log(all_events(team.owner, team.ws))
    assert report.grants == 4


def test_two_agents_racing_to_claim_inbox_files_one_wins_each(team):
    """GIVEN the standard layout for ada and bert and ten inbox files WHEN both move each file into
    their own directory at the same moment THEN exactly one move of each file wins (the other gets
    404 or 412); directory ownership keeps bert out of agent-ada/; and a locked inbox file cannot
    be claimed by the other agent."""
    layout = team.owner.post(ws_url(team.ws, "/layout"), json={"agents": ["ada", "bert"]})
    assert layout.status_code == 201, layout.text
    names = [f"job{i}.json" for i in range(10)]
    for name in names:
        assert team.owner.put(ws_url(team.ws, f"/files/inbox/{name}"), content=name.encode()).status_code == 201
    results: dict[str, dict[str, int]] = {name: {} for name in names}
    for name in names:
        barrier = threading.Barrier(2)

        def claim(agent: str, name: str = name, barrier: threading.Barrier = barrier) -> None:
            client = getattr(team, agent)
            barrier.wait()
            response = client.post(ws_url(team.ws, "/moves"),
                                   json={"from": f"inbox/{name}", "to": f"agent-{agent}/{name}"})
            results[name][agent] = response.status_code

        threads = [threading.Thread(target=claim, args=(agent,)) for agent in ("ada", "bert")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for name, outcome in results.items():
        assert sorted(outcome.values()) in ([201, 404], [201, 412]), (name, outcome)
        winner = next(agent for agent, code in outcome.items() if code == 201)
        assert team.owner.get(ws_url(team.ws, f"/files/agent-{winner}/{name}")).content == name.encode()
    trespass = team.bert.put(ws_url(team.ws, "/files/agent-ada/mine.txt"), content=b"no")
    assert trespass.status_code == 403 and trespass.json()["error"]["code"] == "not_owner"

    assert team.owner.put(ws_url(team.ws, "/files/inbox/locked.json"), content=b"l").status_code == 201
    held = lock(team.ada, team.ws, "inbox/locked.json").json()
    stolen = team.bert.post(ws_url(team.ws, "/moves"), json={"from": "inbox/locked.json", "to": "agent-bert/l.json"})
    assert stolen.status_code == 423
    claimed = team.ada.post(ws_url(team.ws, "/moves"), json={"from": "inbox/locked.json", "to": "agent-ada/l.json"},
                            headers={"X-Lock-Token": str(held["token"])})
    assert claimed.status_code == 201, claimed.text
