"""Schemathesis against the live server's own OpenAPI schema (issue 9): no 5xx, no response that
contradicts the schema.

Requests carry an owner's token and `{ws}` is pinned to a real workspace (schemathesis.toml's
`[parameters]`), so they reach real handlers instead of stopping at 401 or 404. The CLI runs in a
subprocess; its NDJSON report counts the requests actually sent.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import create_workspace, put_file

ST = Path(sys.executable).parent / "st"
CHECKS = "not_a_server_error,response_schema_conformance"


def _run(live: Any, owner: Any, tmp_path: Path, *, max_examples: int, phases: str) -> tuple[int, str, int]:
    """Run schemathesis; return its exit code, its output and the number of HTTP requests it sent."""
    with live.client(owner.token) as api:
        ws = create_workspace(api, "fuzzed")
        assert put_file(api, ws, "notes/a.txt", "alpha\n").status_code == 201
        # The fuzzer would otherwise find the owner's own token id (GET /tokens) and revoke it, and
        # every later request would be a 401: it may revoke this spare token instead.
        spare_token = api.post("/api/v1/tokens", json={"name": "fuzz-spare"}).json()["id"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.ws" = "{ws}"\n"path.token_id" = "{spare_token}"\n')
    ndjson = tmp_path / "events.ndjson"
    command = [
        str(ST), "--config-file", str(config), "run", f"{live.url}/api/schema/",
        "--url", live.url,
        "-H", f"Authorization: Bearer {owner.token}",
        "--checks", CHECKS,
        # Health is a 503 by design while a dependency is down, and the test server runs without Chroma.
        "--exclude-path", "/api/v1/health",
        "--max-examples", str(max_examples),
        "--phases", phases,
        "--seed", "20261128",
        "--workers", "4",
        # Above the longest legitimate wait: a lock request may block up to 60 s, a pull up to 30 s.
        "--request-timeout", "90",
        "--suppress-health-check", "all",
        "--report", "ndjson", "--report-ndjson-path", str(ndjson),
        "--no-color",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    output = done.stdout + done.stderr
    if done.returncode != 0 and _TOOL_CRASH in output:
        # CPython 3.11.7's ast.parse is not thread-safe, and hypothesis parses lambda sources on
        # schemathesis's worker threads: the tool itself crashed. Run it once more, same checks.
        ndjson.unlink(missing_ok=True)
        done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
        output = done.stdout + done.stderr
    return done.returncode, output, _count_requests(ndjson)


_TOOL_CRASH = "SystemError: AST constructor recursion depth mismatch"


def _count_requests(ndjson: Path) -> int:
    """Requests sent, from the run's event stream (each recorded interaction is one request)."""
    if not ndjson.exists():
        return 0
    count = 0
    for line in ndjson.read_text().splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        count += json.dumps(event).count('"request": {')
    return count


def _assert_clean(code: int, output: str, requests: int, minimum: int) -> None:
    assert code == 0, output[-15000:]
    assert "FAILURES" not in output, output[-15000:]
    assert requests >= minimum, f"only {requests} requests were sent:\n{output[-3000:]}"


@pytest.mark.timeout(900)
def test_schema_fuzzing_finds_no_server_error_or_schema_mismatch(live, make_user, tmp_path):
    """GIVEN the live server, an owner's token and a workspace pinned as `{ws}` WHEN schemathesis sends at least
    200 generated requests to every operation of /api/schema/ THEN none gets a 5xx and every response matches
    the schema (status declared, body valid)."""
    owner = make_user("fuzz-owner")
    code, output, requests = _run(live, owner, tmp_path, max_examples=3, phases="examples,fuzzing")
    _assert_clean(code, output, requests, 200)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_schema_fuzzing_two_thousand_requests(live, make_user, tmp_path):
    """GIVEN the same setup WHEN schemathesis sends at least 2,000 requests (every phase: examples, coverage of
    boundaries, fuzzing and stateful sequences) THEN still no 5xx and no response contradicting the schema."""
    owner = make_user("fuzz-owner-long")
    code, output, requests = _run(live, owner, tmp_path, max_examples=40, phases="examples,coverage,fuzzing,stateful")
    _assert_clean(code, output, requests, 2000)
