"""Operator commands and start-up configuration."""
from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parent.parent


def test_create_agent_prints_a_working_token(live, make_user):
    """GIVEN `manage.py create_agent` WHEN its printed token is used THEN the API knows the agent and whom
    it acts for."""
    make_user("creator")
    out = StringIO()
    call_command("create_agent", "builder", "--created-by", "creator", stdout=out)
    token = out.getvalue().strip()
    assert token.startswith("syd_")
    with live.client(token) as api:
        assert api.get("/api/v1/me").json() == {
            "id": api.get("/api/v1/me").json()["id"], "username": "builder", "kind": "agent", "on_behalf_of": "creator"}
    with pytest.raises(CommandError):
        call_command("create_agent", "builder", stdout=StringIO())


def test_create_user_prints_a_personal_token_and_can_sign_in(live):
    """GIVEN `manage.py create_user NAME --email E --password P` WHEN used THEN the token works and the
    account signs in through the sign-in page."""
    import httpx

    out = StringIO()
    call_command("create_user", "carol", "--email", "carol@example.com", "--password", "a long password here",
                 stdout=out)
    with live.client(out.getvalue().strip()) as api:
        assert api.get("/api/v1/me").json()["kind"] == "human"
    with httpx.Client(base_url=live.url) as browser:
        browser.get("/login/")
        response = browser.post("/login/", data={"username": "carol", "password": "a long password here",
                                                 "csrfmiddlewaretoken": browser.cookies["csrftoken"]})
        assert response.status_code == 302 and response.headers["Location"] == "/"
        home = browser.get("/")
        assert home.status_code == 200 and "Workspaces" in home.text
        refused = browser.post("/login/", data={"username": "carol", "password": "wrong"})
        assert refused.status_code == 403  # no CSRF token: refused before checking the password


def test_fsck_is_clean_then_reports_a_corrupted_and_a_missing_blob(live, make_user):
    """GIVEN stored versions WHEN a blob is altered on disk and another removed THEN fsck reports both (and
    exits non-zero), and reading the altered version fails loudly instead of returning wrong bytes."""
    from tests.helpers import create_workspace, put_file
    from workspace.blobs import blob_path

    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api)
        a = put_file(api, ws, "a.txt", "alpha content").json()
        b = put_file(api, ws, "b.txt", "beta content").json()
        call_command("fsck", stdout=StringIO())
        blob_path(a["sha256"]).write_bytes(b"tampered")
        blob_path(b["sha256"]).unlink()
        out = StringIO()
        with pytest.raises(CommandError):
            call_command("fsck", "--json", stdout=out)
        import json

        report = json.loads(out.getvalue())
        kinds = {(p["path"], p["kind"]) for p in report["problems"]}
        assert kinds == {("a.txt", "blob_mismatch"), ("b.txt", "blob_missing")}
        response = api.get(f"/api/v1/workspaces/{ws}/files/a.txt")
        assert response.status_code == 500 and response.json()["error"]["code"] == "blob_corrupt"


def _run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "SWITCHYARD_ENV"}}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("secret", [None, "", "change-me", "django-insecure-abcdefghijklmnopqrstuvwxyz0123456789"])
def test_production_refuses_to_start_without_a_real_secret_key(secret):
    """GIVEN SWITCHYARD_ENV=production WHEN SECRET_KEY is missing or a default THEN start-up fails, naming it."""
    env = {"SWITCHYARD_ENV": "production"}
    if secret is not None:
        env["SECRET_KEY"] = secret
    result = _run_check(env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_starts_with_a_real_secret_key_and_rejects_malformed_settings():
    """GIVEN production with a random SECRET_KEY THEN it starts; GIVEN a malformed typed setting THEN start-up
    fails naming the variable."""
    assert _run_check({"SWITCHYARD_ENV": "production", "SECRET_KEY": "k" * 20 + "Zq8vN3xL0pR7tY2w"}).returncode == 0
    bad = _run_check({"SWITCHYARD_MAX_FILE_SIZE": "lots"})
    assert bad.returncode != 0 and "SWITCHYARD_MAX_FILE_SIZE" in bad.stderr
