"""Hostile input (issue 9): every case is a 4xx with API.md's error body, and the database is unchanged.

The corpus covers path traversal and its encodings, unicode look-alikes, NUL and control characters,
overlong UTF-8, oversized bodies and headers, deep and malformed JSON, wrong content types, huge and
negative numbers, and forged cursors, against every endpoint family that takes such input.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from django.apps import apps

from tests.helpers import create_workspace, put_file, raw_request


@dataclass
class Case:
    name: str
    method: str
    path: str  # raw, sent as is; {ws} is the workspace id
    status: int | tuple[int, ...]
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    json: bool = False


def J(name: str, method: str, path: str, body: str | bytes, status: int | tuple[int, ...] = 400,
      headers: dict[str, str] | None = None) -> Case:
    data = body.encode() if isinstance(body, str) else body
    return Case(name, method, path, status, data, {"Content-Type": "application/json", **(headers or {})}, True)


F = "/api/v1/workspaces/{ws}/files/"
PATHS = [
    "..", "../x", "a/..", "a/../b", "./a", "a/./b", "a//b", "a/b/", "%2e%2e/x", "%2E%2E/x", "a/%2e%2e/b",
    "%2e/x", "..%2fx", "a%2f..%2fb", "a%5cb", "a%5c..%5cb", "%00", "a%00b", "a%01b", "a%1bb", "a%7fb",
    "a%c2%85b", "a%c0%ae%c0%ae/x", "%c0%af", "%ff%fe", "%ed%a0%80", "%ef%bc%8e%ef%bc%8e/x", "%ef%bc%8e/x",
    "a%ef%bc%8fb", "a%e2%88%95b", "a%e2%81%84b", "a%ef%b9%a8b", "e%cc%81.txt", "A%cc%8a.txt",
    "x" * 1025, ("%e2%82%ac" * 342) + "x",
]
CASES: list[Case] = [Case(f"path {p[:40]}", "PUT", F + p, 400, b"x") for p in PATHS]
CASES += [Case(f"read path {p}", "GET", F + p, 400) for p in ("..", "a/../b", "%2e%2e/x", "a%00b", "%ff")]
CASES += [Case(f"delete path {p}", "DELETE", F + p, 400) for p in ("..", "a%00b", "%ef%bc%8e%ef%bc%8e/x")]
CASES += [Case(f"history path {p}", "GET", "/api/v1/workspaces/{ws}/history/" + p, 400) for p in ("..", "a%00b")]
CASES += [Case(f"diff path {p}", "GET", "/api/v1/workspaces/{ws}/diff/" + p + "?from=1&to=1", 400)
          for p in ("a/../b", "a%01b")]
CASES += [
    Case("absolute path", "PUT", F + "/etc/passwd", 400, b"x"),
    Case("tree prefix traversal", "GET", "/api/v1/workspaces/{ws}/tree?prefix=../", 400),
    Case("tree prefix NUL", "GET", "/api/v1/workspaces/{ws}/tree?prefix=a%00/", 400),
    J("move from traversal", "POST", "/api/v1/workspaces/{ws}/moves", '{"from": "../x", "to": "y"}'),
    J("move to traversal", "POST", "/api/v1/workspaces/{ws}/moves", '{"from": "seed.txt", "to": "a/../../y"}'),
    J("move to NUL", "POST", "/api/v1/workspaces/{ws}/moves", '{"from": "seed.txt", "to": "a\\u0000b"}'),
    J("move to backslash", "POST", "/api/v1/workspaces/{ws}/moves", '{"from": "seed.txt", "to": "a\\\\b"}'),
    J("move same path", "POST", "/api/v1/workspaces/{ws}/moves", '{"from": "seed.txt", "to": "seed.txt"}'),
    J("move if_match negative", "POST", "/api/v1/workspaces/{ws}/moves", '{"from": "seed.txt", "to": "z", "if_match": -1}'),
    J("move from not string", "POST", "/api/v1/workspaces/{ws}/moves", '{"from": 7, "to": "z"}'),
    J("rule prefix traversal", "PUT", "/api/v1/workspaces/{ws}/rules/../", '{"writers": []}'),
    J("rule writers not list", "PUT", "/api/v1/workspaces/{ws}/rules/r/", '{"writers": "me"}'),
    J("layout agents not list", "POST", "/api/v1/workspaces/{ws}/layout", '{"agents": {"a": 1}}'),
]
# Oversized bodies and headers.
CASES += [
    Case("file over the size limit", "PUT", F + "big.bin", 413, b"b" * (25 * 1024 * 1024 + 1)),
    J("JSON body over 2 MiB", "POST", "/api/v1/workspaces", b'{"name": "' + b"x" * (3 * 1024 * 1024) + b'"}', 413),
    Case("headers over 32 KiB", "GET", "/api/v1/workspaces/{ws}/tree", 431, b"", {"X-Padding": "p" * 40000}),
]
# Malformed JSON and wrong types.
W = "/api/v1/workspaces"
CASES += [
    J("truncated JSON", "POST", W, '{"name":'),
    J("not JSON", "POST", W, "name=x"),
    J("JSON array", "POST", W, "[1, 2, 3]"),
    J("JSON string", "POST", W, '"hello"'),
    J("JSON null", "POST", W, "null"),
    J("JSON number", "POST", W, "42"),
    J("NaN", "POST", W, '{"name": NaN}'),
    J("Infinity", "POST", W, '{"name": "x", "intelligence": Infinity}'),
    J("deep JSON", "POST", W, '{"name": ' + "[" * 5000 + "]" * 5000 + "}"),
    J("deep JSON objects", "POST", W, '{"a":' * 200 + "1" + "}" * 200),
    J("invalid UTF-8", "POST", W, b'{"name": "\xff\xfe"}'),
    J("lone surrogate", "POST", W, '{"name": "x\\ud800"}'),
    J("NUL in name", "POST", W, '{"name": "a\\u0000b"}'),
    J("name too long", "POST", W, '{"name": "' + "n" * 201 + '"}'),
    J("empty name", "POST", W, '{"name": ""}'),
    J("name is object", "POST", W, '{"name": {"x": 1}}'),
    J("intelligence not bool", "POST", W, '{"name": "x", "intelligence": "sometimes"}'),
    J("duplicate keys tricks", "POST", W, '{"name": "", "name": ""}'),
    Case("form content type", "POST", W, 415, b"name=x", {"Content-Type": "application/x-www-form-urlencoded"}),
    Case("multipart content type", "POST", W, 415, b"--b\r\n\r\n--b--", {"Content-Type": "multipart/form-data; boundary=b"}),
    Case("text content type", "POST", W, 415, b'{"name": "x"}', {"Content-Type": "text/plain"}),
    Case("xml content type", "POST", W, 415, b"<name>x</name>", {"Content-Type": "application/xml"}),
    J("member role bogus", "PUT", "/api/v1/workspaces/{ws}/members/nobody", '{"role": "god"}'),
    J("member role owner", "PUT", "/api/v1/workspaces/{ws}/members/nobody", '{"role": "owner"}'),
    J("agent name injection", "POST", "/api/v1/agents", '{"name": "../../etc"}'),
    J("agent name NUL", "POST", "/api/v1/agents", '{"name": "a\\u0000"}'),
    J("agent name too long", "POST", "/api/v1/agents", '{"name": "' + "a" * 65 + '"}'),
    J("token name not string", "POST", "/api/v1/tokens", '{"name": ["x"]}'),
]
# Numbers, limits and cursors.
T = "/api/v1/workspaces/{ws}/tree"
E = "/api/v1/workspaces/{ws}/events"
CASES += [Case(f"limit {v}", "GET", f"{T}?limit={v}", 400)
          for v in ("0", "-1", "501", "99999999999999999999999", "1e3", "abc", "%00", "1.5", "NaN")]
CASES += [Case(f"events after {v}", "GET", f"{E}?after={v}", 400)
          for v in ("-1", "abc", "99999999999999999999999999", "1.5")]
CASES += [Case(f"cursor {name}", "GET", f"{T}?cursor={v}", 400) for name, v in (
    ("forged", "eyJzIjoidHJlZSIsImsiOiJ6In0:1abcde:forgedsignature"),
    ("garbage", "not-a-cursor"), ("NUL", "%00"), ("empty signature", "abc:"), ("huge", "A" * 4000),
)]
CASES += [
    Case("events cursor forged", "GET", f"{E}?cursor=eyJzIjoiZXZlbnRzIiwiayI6MX0:1x:bad", 400),
    Case("version zero", "GET", F + "seed.txt?version=0", 400),
    Case("version negative", "GET", F + "seed.txt?version=-3", 400),
    Case("version huge", "GET", F + "seed.txt?version=99999999999999999999999", 400),
    Case("version text", "GET", F + "seed.txt?version=latest", 400),
    Case("diff from missing", "GET", "/api/v1/workspaces/{ws}/diff/seed.txt?to=1", 400),
    Case("diff from text", "GET", "/api/v1/workspaces/{ws}/diff/seed.txt?from=a&to=1", 400),
    Case("If-Match garbage", "PUT", F + "seed.txt", 400, b"x", {"If-Match": "garbage"}),
    Case("If-Match huge", "PUT", F + "seed.txt", 400, b"x", {"If-Match": '"99999999999999999999"'}),
    Case("If-None-Match version on write", "PUT", F + "seed.txt", 400, b"x", {"If-None-Match": '"1"'}),
    Case("lock token garbage", "PUT", F + "seed.txt", 400, b"x", {"X-Lock-Token": "abc"}),
    Case("lock token negative", "PUT", F + "seed.txt", 400, b"x", {"X-Lock-Token": "-1"}),
    Case("lock token huge", "PUT", F + "seed.txt", 400, b"x", {"X-Lock-Token": "9" * 40}),
    Case("task id injection", "PUT", F + "seed.txt", 400, b"x", {"X-Task-Id": "'; DROP TABLE x; --"}),
    Case("idempotency key too long", "PUT", F + "seed.txt", 400, b"x", {"Idempotency-Key": "k" * 201}),
]
# Locks: TTLs and waits out of range.
L = "/api/v1/workspaces/{ws}/locks"
CASES += [J(f"lock ttl {v}", "POST", L, f'{{"path": "seed.txt", "ttl_seconds": {v}}}')
          for v in ("-1", "0", "301", "99999999999999999999", '"sixty"', "null", "[60]")]
CASES += [J(f"lock wait {v}", "POST", L, f'{{"path": "seed.txt", "wait_seconds": {v}}}')
          for v in ("-1", "100000", '"forever"')]
CASES += [
    J("lock path traversal", "POST", L, '{"path": "../seed.txt"}'),
    J("lock path missing", "POST", L, '{"ttl_seconds": 60}'),
    J("lock batch not list", "POST", L + "/batch", '{"paths": "seed.txt"}'),
    J("lock batch traversal", "POST", L + "/batch", '{"paths": ["a", "../b"]}'),
]
# Tasks.
TK = "/api/v1/workspaces/{ws}/tasks"
CASES += [
    J("task priority huge", "POST", TK, '{"title": "t", "priority": 99999999999999999999999}'),
    J("task max_attempts zero", "POST", TK, '{"title": "t", "max_attempts": 0}'),
    J("task lease negative", "POST", TK, '{"title": "t", "lease_seconds": -5}'),
    J("task depends on garbage", "POST", TK, '{"title": "t", "depends_on": "x"}'),
    J("task payload not object", "POST", TK, '{"title": "t", "payload": [1]}'),
    J("task claim lease huge", "POST", TK + "/claim", '{"lease_seconds": 99999999999}'),
    J("task claim kinds not list", "POST", TK + "/claim", '{"kinds": "a"}'),
]
# Messages.
TP = "/api/v1/workspaces/{ws}/topics"
CASES += [
    J("topic name bad", "POST", TP + "/Bad%20Topic!/messages", '{"body": {}}'),
    J("topic name too long", "POST", TP + "/" + "t" * 101 + "/messages", '{"body": {}}'),
    J("message body not object", "POST", TP + "/t/messages", '{"body": "x"}'),
    J("pull max huge", "POST", TP + "/t/groups/g/pull", '{"max": 100000}'),
    J("pull visibility negative", "POST", TP + "/t/groups/g/pull", '{"visibility_seconds": -1}'),
    J("ack offsets not list", "POST", TP + "/t/groups/g/ack", '{"offsets": 5}'),
    Case("read after negative", "GET", TP + "/t/messages?after=-2", 400),
]


def _row_counts() -> dict[str, int]:
    counted = {}
    for label in ("agents", "workspace", "search"):
        for model in apps.get_app_config(label).get_models():
            if model._meta.db_table.endswith("idempotencyrecord"):
                continue
            counted[model._meta.label] = model.objects.count()
    return counted


def test_corpus_has_at_least_a_hundred_cases():
    """GIVEN the hostile corpus THEN it has at least 100 distinct cases."""
    assert len({c.name for c in CASES}) == len(CASES) >= 100


def test_every_hostile_request_is_a_4xx_with_error_body_and_changes_nothing(live, make_user):
    """GIVEN a workspace with one file WHEN each hostile request is sent exactly as written THEN its status is
    the expected 4xx, its body is API.md's error body, and no row anywhere changed. Every case runs; the
    failure lists all cases that misbehaved."""
    owner = make_user("hostile-owner")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "hostile")
        assert put_file(api, ws, "seed.txt", "seed").status_code == 201
    before = _row_counts()
    failures = []
    for case in CASES:
        try:
            status, body = raw_request(live.url, case.method, case.path.replace("{ws}", ws), token=owner.token,
                                       body=case.body, headers=dict(case.headers))
        except OSError as exc:
            failures.append(f"{case.name}: {exc!r}")
            continue
        expected = case.status if isinstance(case.status, tuple) else (case.status,)
        well_formed = (isinstance(body, dict) and set(body) == {"error"}
                       and bool(body["error"].get("code")) and bool(body["error"].get("message")))
        if status not in expected or not well_formed:
            failures.append(f"{case.name}: {status} {str(body)[:160]}")
            continue
        after = _row_counts()
        if after != before:
            changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
            failures.append(f"{case.name}: changed rows {changed}")
            before = after
    assert not failures, "\n".join(failures)
