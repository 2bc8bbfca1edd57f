"""Production mode (SWITCHYARD_ENV=production): the browser-facing protections are on.

Settings are read once per process, so the checks run in a child process with production's
environment: a real SECRET_KEY, its own SQLite file, `manage.py check --deploy`, and a sign-in
through Django's test client over HTTPS (as behind the TLS-terminating proxy).
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, os, django
os.environ["DJANGO_SETTINGS_MODULE"] = "switchyard.settings"
django.setup()
from django.core.management import call_command
from django.test import Client
from agents.services import user_create

call_command("migrate", verbosity=0)
user_create(username="pat", password="a long enough password 1")
out = {}
# Over HTTPS Django also checks the Referer: a real browser sends it, so both POSTs do.
client = Client(enforce_csrf_checks=True, HTTP_HOST="localhost", HTTP_REFERER="https://localhost/login/")
page = client.get("/login/", secure=True)
out["login_status"] = page.status_code
out["headers"] = {k: page.headers.get(k) for k in (
    "Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy",
    "Strict-Transport-Security")}
csrf = page.cookies["csrftoken"]
out["csrf_cookie"] = {"secure": bool(csrf["secure"]), "samesite": csrf["samesite"]}
refused = client.post("/login/", {"username": "pat", "password": "a long enough password 1"}, secure=True)
out["post_without_token"] = refused.status_code
signed_in = client.post("/login/", {"username": "pat", "password": "a long enough password 1",
                                    "csrfmiddlewaretoken": csrf.value}, secure=True)
out["post_with_token"] = signed_in.status_code
session = signed_in.cookies.get("sessionid")
out["session_cookie"] = session and {"secure": bool(session["secure"]), "httponly": bool(session["httponly"]),
                                     "samesite": session["samesite"]}
out["wrong_host"] = Client(HTTP_HOST="evil.example").get("/login/", secure=True).status_code
print("RESULT " + json.dumps(out))
'''


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "DEBUG", "SWITCHYARD_TEST_FAST_PASSWORDS"}}
    env.update({"SWITCHYARD_ENV": "production", "SECRET_KEY": secrets.token_urlsafe(48),
                "SWITCHYARD_DATA_DIR": str(tmp_path), "SWITCHYARD_SQLITE_PATH": str(tmp_path / "db.sqlite3"),
                "ALLOWED_HOSTS": "localhost"})
    env.update(extra)
    return env


def _child(tmp_path: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=_production_env(tmp_path),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


def test_production_pages_send_secure_cookies_csp_and_refuse_forged_posts(tmp_path):
    """GIVEN production settings WHEN a person signs in over HTTPS THEN the CSRF and session cookies are
    Secure (and the session HttpOnly, SameSite=Lax), every page carries the Content-Security-Policy, framing
    and sniffing are refused, HSTS is sent, a POST without the CSRF token is a 403, and an unknown host a 400."""
    out = _child(tmp_path)
    assert out["login_status"] == 200
    headers = out["headers"]
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Strict-Transport-Security"] and "max-age=" in headers["Strict-Transport-Security"]
    assert out["csrf_cookie"] == {"secure": True, "samesite": "Lax"}
    assert out["post_without_token"] == 403
    assert out["post_with_token"] == 302
    assert out["session_cookie"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert out["wrong_host"] == 400


def test_production_passes_django_deploy_checks(tmp_path):
    """GIVEN production settings WHEN `manage.py check --deploy` runs THEN it reports nothing but the SSL
    redirect, which the TLS-terminating proxy does (README)."""
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=_production_env(tmp_path, SECURE_SSL_REDIRECT="true"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_production_refuses_a_default_secret_key(tmp_path):
    """GIVEN production and a placeholder SECRET_KEY WHEN the settings load THEN startup fails, naming it."""
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT,
                          env=_production_env(tmp_path, SECRET_KEY="change-me"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "SECRET_KEY" in done.stderr
