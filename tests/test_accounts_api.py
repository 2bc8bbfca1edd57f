"""Accounts, tokens, workspaces, members and the API conventions (API.md "Conventions", "Accounts",
"Workspaces", "Health")."""
from __future__ import annotations

import json
import re

from tests.helpers import assert_error, create_workspace, put_file


def test_missing_and_wrong_tokens_are_401_with_the_error_body(live):
    """GIVEN no or a bad credential WHEN calling the API THEN 401 with the error body and WWW-Authenticate."""
    with live.client() as anon:
        error = assert_error(anon.get("/api/v1/me"), 401, "not_authenticated")
        assert error["message"]
        response = anon.get("/api/v1/me", headers={"Authorization": "Bearer syd_not-a-token"})
        assert_error(response, 401, "authentication_failed")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(anon.get("/api/v1/me", headers={"Authorization": "Basic abc"}), 401)
        assert_error(anon.post("/api/v1/workspaces", json={"name": "x"}), 401)


def test_me_for_humans_and_agents_names_on_behalf_of(live, make_user):
    """GIVEN a human who creates an agent over the API WHEN the agent calls /me THEN it is an agent acting
    for that human, and its token was shown once."""
    human = make_user("hana")
    with live.client(human.token) as api:
        me = api.get("/api/v1/me").json()
        assert me == {"id": str(human.user.pk), "username": "hana", "kind": "human", "on_behalf_of": None}
        created = api.post("/api/v1/agents", json={"name": "scout"})
        assert created.status_code == 201
        agent_token = created.json()["token"]
        assert_error(api.post("/api/v1/agents", json={"name": "scout"}), 409, "name_taken")
        assert_error(api.post("/api/v1/agents", json={"name": "bad name!"}), 400, "invalid_username")
        assert_error(api.post("/api/v1/agents", json={}), 400)
    with live.client(agent_token) as agent:
        me = agent.get("/api/v1/me").json()
        assert me["kind"] == "agent" and me["on_behalf_of"] == "hana"
        assert_error(agent.post("/api/v1/agents", json={"name": "sub"}), 403, "humans_only")


def test_events_caused_by_an_agent_carry_on_behalf_of(live, make_user, make_agent):
    """GIVEN an agent created by a human WHEN it writes THEN the event names the human as on_behalf_of."""
    human = make_user("boss")
    agent = make_agent("worker", created_by=human.user)
    with live.client(human.token) as api, live.client(agent.token) as bot:
        ws = create_workspace(api)
        api.put(f"/api/v1/workspaces/{ws}/members/worker", json={"role": "editor"})
        put_file(bot, ws, "out.md", "done")
        events = api.get(f"/api/v1/workspaces/{ws}/events").json()["results"]
    written = [e for e in events if e["type"] == "file.written"]
    assert written[-1]["actor"] == "worker" and written[-1]["on_behalf_of"] == "boss"


def test_personal_tokens_are_listed_without_secrets_and_revocable(live, make_user):
    """GIVEN a new personal token WHEN listed THEN no secret is shown; once revoked it is refused."""
    user = make_user()
    with live.client(user.token) as api:
        created = api.post("/api/v1/tokens", json={"name": "laptop"})
        assert created.status_code == 201
        secret, token_id = created.json()["token"], created.json()["id"]
        listed = api.get("/api/v1/tokens").json()["results"]
        assert {t["id"] for t in listed} >= {token_id}
        assert all("token" not in t and "digest" not in t for t in listed)
    with live.client(secret) as second:
        assert second.get("/api/v1/me").status_code == 200
        assert second.delete(f"/api/v1/tokens/{token_id}").status_code == 204
        assert_error(second.get("/api/v1/me"), 401, "authentication_failed")
    with live.client(user.token) as api:
        assert_error(api.delete("/api/v1/tokens/tok_nope"), 404)


def test_tokens_are_stored_hashed(live, make_user):
    """GIVEN an issued token WHEN looking at the database THEN only its sha256 digest is there."""
    from agents.models import ApiToken

    user = make_user()
    stored = ApiToken.objects.get(user=user.user)
    assert user.token not in (stored.digest, stored.prefix, stored.id)
    import hashlib

    assert stored.digest == hashlib.sha256(user.token.encode()).hexdigest()


def test_a_strangers_workspace_is_404_never_403(live, make_user):
    """GIVEN a workspace of someone else WHEN a non-member touches it THEN 404, like a missing one."""
    owner, stranger = make_user(), make_user()
    with live.client(owner.token) as api, live.client(stranger.token) as other:
        ws = create_workspace(api)
        put_file(api, ws, "secret.md", "x")
        for response in (
            other.get(f"/api/v1/workspaces/{ws}"),
            other.get(f"/api/v1/workspaces/{ws}/files/secret.md"),
            other.get(f"/api/v1/workspaces/{ws}/tree"),
            other.get(f"/api/v1/workspaces/{ws}/events"),
            put_file(other, ws, "secret.md", "overwrite"),
            other.get("/api/v1/workspaces/ws_doesnotexist"),
        ):
            assert_error(response, 404, "not_found")
        assert api.get(f"/api/v1/workspaces/{ws}/files/secret.md").content == b"x"
        assert ws not in {w["id"] for w in other.get("/api/v1/workspaces").json()["results"]}


def test_workspace_create_list_get_and_roles(live, make_user):
    """GIVEN a new workspace WHEN listed and fetched THEN the caller is owner; members get roles."""
    owner, ed = make_user("own"), make_user("ed")
    with live.client(owner.token) as api, live.client(ed.token) as editor:
        created = api.post("/api/v1/workspaces", json={"name": "Research", "intelligence": False})
        assert created.status_code == 201
        body = created.json()
        assert body["role"] == "owner" and body["intelligence"] is False and body["id"].startswith("ws_")
        ws = body["id"]
        assert api.get(f"/api/v1/workspaces/{ws}").json()["name"] == "Research"
        assert_error(api.post("/api/v1/workspaces", json={"name": ""}), 400)
        assert_error(api.post("/api/v1/workspaces", json={"name": "x", "intelligence": "maybe"}), 400)
        assert_error(api.put(f"/api/v1/workspaces/{ws}/members/ed", json={"role": "owner"}), 400)
        assert_error(api.put(f"/api/v1/workspaces/{ws}/members/ghost", json={"role": "editor"}), 404)
        assert api.put(f"/api/v1/workspaces/{ws}/members/ed", json={"role": "editor"}).json()["role"] == "editor"
        assert editor.get(f"/api/v1/workspaces/{ws}").json()["role"] == "editor"
        assert_error(editor.put(f"/api/v1/workspaces/{ws}/members/own", json={"role": "viewer"}), 403)
        assert_error(api.delete(f"/api/v1/workspaces/{ws}/members/own"), 403, "owner_role")
        members = {m["username"]: m["role"] for m in api.get(f"/api/v1/workspaces/{ws}/members").json()["results"]}
        assert members == {"own": "owner", "ed": "editor"}
        assert api.delete(f"/api/v1/workspaces/{ws}/members/ed").status_code == 204
        assert_error(editor.get(f"/api/v1/workspaces/{ws}"), 404)


def test_bad_json_and_wrong_shapes_are_400_and_change_nothing(live, make_user):
    """GIVEN malformed bodies WHEN posted THEN 400 with the error body, and no workspace is created."""
    user = make_user()
    with live.client(user.token) as api:
        for body, ctype in ((b'{"name":', "application/json"), (b"[1, 2]", "application/json"),
                            (b'"just a string"', "application/json")):
            response = api.post("/api/v1/workspaces", content=body, headers={"Content-Type": ctype})
            assert_error(response, 400)
        assert_error(api.post("/api/v1/workspaces", content=b"name=x",
                              headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
        assert api.get("/api/v1/workspaces").json()["results"] == []


def test_idempotency_key_replays_the_first_response(live, make_user):
    """GIVEN a create with an Idempotency-Key WHEN retried with the same key and body THEN the same
    response comes back and nothing new is created; a different body with that key is 422."""
    user = make_user()
    with live.client(user.token) as api:
        headers = {"Idempotency-Key": "create-1"}
        first = api.post("/api/v1/workspaces", json={"name": "once"}, headers=headers)
        second = api.post("/api/v1/workspaces", json={"name": "once"}, headers=headers)
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json()
        assert second.headers.get("Idempotent-Replayed") == "true"
        assert len(api.get("/api/v1/workspaces").json()["results"]) == 1
        assert_error(api.post("/api/v1/workspaces", json={"name": "other"}, headers=headers), 422,
                     "idempotency_key_reused")
        ws = first.json()["id"]
        put1 = put_file(api, ws, "f.txt", "a", **{"Idempotency-Key": "w1"})
        put2 = put_file(api, ws, "f.txt", "a", **{"Idempotency-Key": "w1"})
        assert put1.json() == put2.json() and put2.headers["ETag"] == '"1"'
        assert len(api.get(f"/api/v1/workspaces/{ws}/history/f.txt").json()["results"]) == 1
        failed = api.post("/api/v1/workspaces", json={"name": ""}, headers={"Idempotency-Key": "bad"})
        assert failed.status_code == 400
        fixed = api.post("/api/v1/workspaces", json={"name": ""}, headers={"Idempotency-Key": "bad"})
        assert fixed.status_code == 400  # errors are not stored: a retry runs again


def test_request_id_is_echoed_or_generated(live):
    """GIVEN any request WHEN answered THEN X-Request-Id is echoed when sent and generated otherwise."""
    with live.client() as anon:
        assert anon.get("/api/v1/health", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"
        generated = anon.get("/api/v1/health").headers["X-Request-Id"]
        assert len(generated) == 32
        assert anon.get("/api/v1/nope").headers["X-Request-Id"]


def test_unknown_api_path_is_json_404(live):
    """GIVEN a path outside the API WHEN requested THEN 404 with the error body."""
    with live.client() as anon:
        assert_error(anon.get("/api/v1/definitely/not/here"), 404, "not_found")


def test_health_reports_each_check(live):
    """GIVEN the running stack WHEN /health is called without auth THEN it reports database, redis, workers."""
    with live.client() as anon:
        response = anon.get("/api/v1/health")
    body = response.json()
    assert body["checks"]["database"] == "ok" and body["checks"]["redis"] == "ok"
    assert body["checks"]["workers"] >= 1
    assert response.status_code == (200 if body["checks"]["index"] == "ok" else 503)


def test_health_is_503_naming_the_failing_check(db, client, settings):
    """GIVEN a Chroma address where nothing listens WHEN /health is called THEN 503 names `index`."""
    settings.CHROMA_URL = "http://127.0.0.1:9"
    response = client.get("/api/v1/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["index"].startswith("error")
    assert body["checks"]["database"] == "ok"


def test_openapi_schema_and_offline_docs(live):
    """GIVEN the server WHEN fetching the schema and the docs page THEN both are served, the docs from our
    own static files (works offline)."""
    with live.client() as anon:
        schema = anon.get("/api/schema/", headers={"Accept": "application/json"})
        assert schema.status_code == 200
        spec = json.loads(schema.text) if schema.text.lstrip().startswith("{") else None
        if spec is None:
            import yaml

            spec = yaml.safe_load(schema.text)
        paths = spec["paths"]
        for expected in ("/api/v1/workspaces/{ws}/files/{path}", "/api/v1/workspaces/{ws}/moves",
                         "/api/v1/workspaces/{ws}/events", "/api/v1/health", "/api/v1/me"):
            assert expected in paths, expected
        docs = anon.get("/api/docs/")
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text
        # Every asset is ours (a relative URL), none from a CDN. (Not a search for "cdn" in the page:
        # the random CSRF token in it contains those letters now and then.)
        assets = re.findall(r'(?:src|href)="([^"]*)"', docs.text)
        assert assets and all(url.startswith("/") and not url.startswith("//") for url in assets), assets
        assert any(url.startswith("/static/drf_spectacular_sidecar/") for url in assets), assets


def test_idempotency_records_never_keep_a_token_secret(live, make_user):
    """GIVEN an agent created with an Idempotency-Key WHEN the stored response is inspected and the call is
    replayed THEN the secret is not in the database, and the replay answers the same agent without it."""
    from workspace.models import IdempotencyRecord

    human = make_user()
    with live.client(human.token) as api:
        first = api.post("/api/v1/agents", json={"name": "once"}, headers={"Idempotency-Key": "agent-1"})
        replay = api.post("/api/v1/agents", json={"name": "once"}, headers={"Idempotency-Key": "agent-1"})
    secret = first.json()["token"]
    assert secret.startswith("syd_")
    stored = IdempotencyRecord.objects.get(key="agent-1")
    assert secret not in str(stored.response) and stored.response["token"] is None
    assert replay.status_code == 201 and replay.json()["username"] == "once" and replay.json()["token"] is None


def test_workspace_settings_services_refuse_an_editor(db, make_user):
    """GIVEN an editor's access WHEN it calls the member, rule, layout or update services directly (as pages,
    MCP tools and jobs do) THEN each refuses with 403, and nothing changes."""
    import pytest

    from workspace.access import workspace_for
    from workspace.errors import Forbidden
    from workspace.models import Membership
    from workspace.services import workspaces as svc

    owner, editor, other = make_user(), make_user(), make_user()
    ws = svc.workspace_create(user=owner.user, name="guarded")
    Membership.objects.create(workspace=ws, user=editor.user, role="editor")
    Membership.objects.create(workspace=ws, user=other.user, role="viewer")
    access = workspace_for(editor.user, ws.id)
    for call in (
        lambda: svc.member_set(access=access, username=other.username, role="editor"),
        lambda: svc.member_remove(access=access, username=other.username),
        lambda: svc.rule_set(access=access, prefix="r/", writers=[editor.username]),
        lambda: svc.rule_delete(access=access, prefix="r/"),
        lambda: svc.layout_create(access=access, agents=[]),
        lambda: svc.workspace_update(access=access, name="renamed"),
    ):
        with pytest.raises(Forbidden):
            call()
    assert Membership.objects.get(workspace=ws, user=other.user).role == "viewer"
    ws.refresh_from_db()
    assert ws.name == "guarded" and not ws.rules.exists()
