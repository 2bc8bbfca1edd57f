"""Authorization matrix (issue 9): every API route × {anonymous, revoked token, member of another
workspace, viewer, editor, admin, owner} gets exactly the access API.md grants.

Roles: owner ⊃ admin ⊃ editor (write files, take locks and tasks) ⊃ viewer (read, search). A role
below the one an operation needs gets 403; a stranger gets 404 for anything in the workspace (never
403); no credentials or a revoked token get 401. An allowed caller may still get a 4xx from the
operation itself (409 not_claimant, 423 locked, 204 nothing to claim...), but never 401, 403 or 404.

One test walks the whole table over one shared workspace and reports every mismatch at once;
per-case fixtures (a transactional flush each) would take minutes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.helpers import create_workspace

ANON, REVOKED, STRANGER, VIEWER, EDITOR, ADMIN, OWNER = (
    "anonymous", "revoked", "stranger", "viewer", "editor", "admin", "owner")
# Lowest first: callers who must be refused go before those whose request may change state.
CALLERS = [ANON, REVOKED, STRANGER, VIEWER, EDITOR, ADMIN, OWNER]
MEMBER_ROLES = [VIEWER, EDITOR, ADMIN, OWNER]
ANY = "any authenticated account"  # not a workspace route: members and strangers alike

Setup = Callable[["World", str], dict[str, str]]


@dataclass
class Op:
    method: str
    path: str  # formatted with the world's ids and what `setup` returns for the caller
    minimum: str  # a member role, or ANY
    body: Any = None
    raw: bytes | None = None
    setup: Setup | None = None
    # Callers whose expected outcome is not the role rule's (e.g. parties to a transfer).
    expect: dict[str, str] = field(default_factory=dict)

    @property
    def in_workspace(self) -> bool:
        return "{ws}" in self.path


@dataclass
class World:
    api: str
    ws: str
    tokens: dict[str, str]
    users: dict[str, str]
    ids: dict[str, str]
    counter: int = 0
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, caller: str) -> httpx.Client:
        # One connection pool per caller: building an httpx client (its TLS context) costs tens of ms.
        if caller not in self.clients:
            token = self.tokens.get(caller)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            self.clients[caller] = httpx.Client(base_url=self.api, headers=headers, timeout=30)
        return self.clients[caller]

    def call(self, caller: str, method: str, path: str, *, json: Any = None, raw: bytes | None = None,
             ok: tuple[int, ...] = (200, 201, 204)) -> httpx.Response:
        response = self.client(caller).request(method, path.format(ws=self.ws, **self.ids), json=json, content=raw)
        assert response.status_code in ok, (caller, method, path, response.status_code, response.text[:300])
        return response

    def fresh(self) -> int:
        self.counter += 1
        return self.counter


# -- per-caller setup: the caller's own target, so each allowed caller acts on something real ------
def own_lock(world: World, caller: str) -> dict[str, str]:
    """A lock held by the caller when it may take locks, else by the owner (whose lock it may not touch)."""
    holder = caller if caller in (EDITOR, ADMIN, OWNER) else OWNER
    lock = world.call(holder, "POST", "/workspaces/{ws}/locks",
                      json={"path": f"locked/{world.fresh()}.txt", "ttl_seconds": 120}).json()
    return {"lock": lock["id"]}


def fresh_task(world: World, caller: str) -> dict[str, str]:
    """A task the caller created when it may create tasks (cancel: its creator or an admin), else the owner's."""
    creator = caller if caller in (EDITOR, ADMIN, OWNER) else OWNER
    task = world.call(creator, "POST", "/workspaces/{ws}/tasks",
                      json={"title": f"t{world.fresh()}", "kind": "k", "queue": "cancel"}).json()
    return {"task": task["id"]}


def fresh_file(world: World, caller: str) -> dict[str, str]:
    name = f"victim/{world.fresh()}.txt"
    world.call(OWNER, "PUT", f"/workspaces/{{ws}}/files/{name}", raw=b"doomed")
    return {"victim": name, "moved": f"moved/{world.counter}.txt"}


def fresh_approval(world: World, caller: str) -> dict[str, str]:
    approval = world.call(OWNER, "POST", "/workspaces/{ws}/approvals",
                          json={"title": f"a{world.fresh()}", "description": "d"}).json()
    return {"approval": approval["id"]}


def spare_member(world: World, caller: str) -> dict[str, str]:
    world.call(OWNER, "PUT", "/workspaces/{ws}/members/{spare}", json={"role": "viewer"})
    return {}


def fresh_trigger(world: World, caller: str) -> dict[str, str]:
    name = f"trig{world.fresh()}"
    world.call(OWNER, "PUT", f"/workspaces/{{ws}}/triggers/{name}",
               json={"on": {"topic": "jobs"}, "create_task": {"title": "from trigger", "kind": "k"}})
    return {"trigger": name}


def fresh_rule(world: World, caller: str) -> dict[str, str]:
    prefix = f"owned{world.fresh()}/"
    world.call(OWNER, "PUT", f"/workspaces/{{ws}}/rules/{prefix}", json={"writers": [world.users[OWNER]]})
    return {"prefix": prefix}


def own_token(world: World, caller: str) -> dict[str, str]:
    if caller not in world.tokens or caller == REVOKED:
        return {"token_id": "tok_none"}
    return {"token_id": world.call(caller, "POST", "/tokens", json={"name": "spare"}).json()["id"]}


def no_pending_transfer(world: World, caller: str) -> dict[str, str]:
    for transfer in world.call(OWNER, "GET", "/workspaces/{ws}/transfers?limit=500").json()["results"]:
        if transfer["status"] == "pending":
            world.call(OWNER, "POST", f"/transfers/{transfer['id']}/cancel")
    return {}


def fresh_transfer(world: World, caller: str) -> dict[str, str]:
    no_pending_transfer(world, caller)
    transfer = world.call(OWNER, "POST", "/workspaces/{ws}/transfers",
                          json={"to": world.users["spare"], "message": "yours?"}).json()
    world.ids["transfer"] = transfer["id"]
    return {"transfer": transfer["id"]}


def fresh_run(world: World, caller: str) -> dict[str, str]:
    """A run the caller started when it may (cancel: its creator or an admin), else the owner's."""
    creator = caller if caller in (EDITOR, ADMIN, OWNER) else OWNER
    run = world.call(creator, "POST", "/workspaces/{ws}/pipelines", json={"spec": SLEEPY_SPEC}).json()
    return {"run": run["id"]}


SLEEPY_SPEC = {"name": "authz", "steps": [{"id": "nap", "agent": "sleep", "outputs": ["out"],
                                          "params": {"seconds": 30, "text": "z"}}]}
W = "/workspaces/{ws}"
T = W + "/topics/jobs"
SENDER_SIDE = {VIEWER: "404", EDITOR: "404"}  # a transfer is visible to its parties and the ws admins only
OWNER_ONLY = {**SENDER_SIDE, ADMIN: "403"}  # an admin sees an offer but only the owner may withdraw it

TABLE: list[Op] = [
    # Accounts.
    Op("GET", "/me", ANY),
    Op("POST", "/agents", ANY, {"name": "authz-bot"}),
    Op("GET", "/tokens", ANY),
    Op("POST", "/tokens", ANY, {"name": "extra"}),
    Op("DELETE", "/tokens/{token_id}", ANY, setup=own_token),
    # Workspaces and membership.
    Op("GET", "/workspaces", ANY),
    Op("POST", "/workspaces", ANY, {"name": "another", "intelligence": False}),
    Op("GET", W, VIEWER),
    Op("PATCH", W, ADMIN, {"name": "renamed"}),
    Op("GET", W + "/members", VIEWER),
    Op("PUT", W + "/members/{spare}", ADMIN, {"role": "viewer"}),
    Op("DELETE", W + "/members/{spare}", ADMIN, setup=spare_member),
    Op("GET", W + "/rules", VIEWER),
    Op("PUT", W + "/rules/team/", ADMIN, {"writers": []}),
    Op("DELETE", W + "/rules/{prefix}", ADMIN, setup=fresh_rule),
    Op("POST", W + "/layout", ADMIN, {"agents": []}),
    # Files.
    Op("GET", W + "/files/seed.txt", VIEWER),
    Op("PUT", W + "/files/written.txt", EDITOR, raw=b"new content"),
    Op("DELETE", W + "/files/{victim}", EDITOR, setup=fresh_file),
    Op("GET", W + "/tree", VIEWER),
    Op("GET", W + "/history/seed.txt", VIEWER),
    Op("GET", W + "/diff/seed.txt?from=1&to=1", VIEWER),
    Op("POST", W + "/moves", EDITOR, setup=fresh_file),  # body filled in from the setup (see _body)
    Op("GET", W + "/events", VIEWER),
    # Locks.
    Op("GET", W + "/locks", VIEWER),
    Op("POST", W + "/locks", EDITOR, {"path": "locks/single.txt", "ttl_seconds": 5}),
    Op("POST", W + "/locks/batch", EDITOR, {"paths": ["locks/b1.txt", "locks/b2.txt"], "ttl_seconds": 5}),
    Op("GET", W + "/locks/{lock}", VIEWER, setup=own_lock),
    Op("POST", W + "/locks/{lock}/renew", EDITOR, {"ttl_seconds": 60}, setup=own_lock),
    Op("DELETE", W + "/locks/{lock}", EDITOR, setup=own_lock),
    # Tasks and worklog.
    Op("GET", W + "/tasks", VIEWER),
    Op("POST", W + "/tasks", EDITOR, {"title": "new", "kind": "k"}),
    Op("POST", W + "/tasks/batch", EDITOR, {"tasks": [{"title": "b", "kind": "k", "queue": "batch"}]}),
    Op("POST", W + "/tasks/claim", EDITOR, {"queue": "nothing-here"}),
    Op("GET", W + "/tasks/{task_main}", VIEWER),
    Op("POST", W + "/tasks/{task_main}/heartbeat", EDITOR, {}),
    Op("POST", W + "/tasks/{task_main}/reads", EDITOR, {"files": [{"path": "seed.txt", "version": 1}]}),
    Op("POST", W + "/tasks/{task_main}/complete", EDITOR, {"result": {}}),
    Op("POST", W + "/tasks/{task_main}/fail", EDITOR, {"error": "no", "retry": True}),
    Op("POST", W + "/tasks/{task}/cancel", EDITOR, {}, setup=fresh_task),
    Op("GET", W + "/worklog", VIEWER),
    Op("POST", W + "/worklog", EDITOR, {"message": "did a thing"}),
    Op("GET", W + "/worklog/verify", VIEWER),
    # Approvals.
    Op("GET", W + "/approvals", VIEWER),
    Op("POST", W + "/approvals", EDITOR, {"title": "please", "description": "look"}),
    Op("GET", W + "/approvals/{approval_main}", VIEWER),
    Op("POST", W + "/approvals/{approval}/decide", ADMIN, {"decision": "approve", "comment": "ok"},
       setup=fresh_approval),
    # Ownership transfer (owner only; the transfer itself is seen by its parties and the admins).
    Op("GET", W + "/transfers", ADMIN),
    Op("POST", W + "/transfers", OWNER, {"to": "{spare}", "message": "m"}, setup=no_pending_transfer),
    Op("GET", "/transfers/{transfer}", ANY, setup=fresh_transfer, expect={STRANGER: "404", **SENDER_SIDE}),
    Op("POST", "/transfers/{transfer}/cancel", ANY, setup=fresh_transfer, expect={STRANGER: "404", **OWNER_ONLY}),
    # To anyone but the recipient the transfer does not exist: nobody in the matrix may accept it.
    Op("POST", "/transfers/{transfer}/accept", ANY, {}, setup=fresh_transfer,
       expect={STRANGER: "404", VIEWER: "404", EDITOR: "404", ADMIN: "404", OWNER: "404"}),
    # Messages.
    Op("GET", W + "/topics", VIEWER),
    Op("GET", T + "/messages", VIEWER),
    Op("POST", T + "/messages", EDITOR, {"body": {"n": 1}}),
    Op("GET", T + "/groups/workers", VIEWER),
    Op("POST", T + "/groups/workers/pull", EDITOR, {"max": 1, "visibility_seconds": 5}),
    Op("POST", T + "/groups/workers/ack", EDITOR, {"offsets": [1]}),
    Op("GET", W + "/triggers", ADMIN),
    Op("GET", W + "/triggers/{trigger_main}", ADMIN),
    Op("PUT", W + "/triggers/made", ADMIN, {"on": {"topic": "jobs"}, "create_task": {"title": "x", "kind": "k"}}),
    Op("DELETE", W + "/triggers/{trigger}", ADMIN, setup=fresh_trigger),
    # Intelligence (the workspace has it off: an allowed caller gets the operation's own answer).
    Op("POST", "/search", ANY, {"query": "seed", "mode": "keyword"}),
    Op("POST", W + "/search", VIEWER, {"query": "seed", "mode": "keyword"}),
    Op("POST", W + "/ask", VIEWER, {"question": "what is the seed?"}),
    Op("GET", W + "/index", VIEWER),
    # Pipelines.
    Op("GET", W + "/pipelines", VIEWER),
    Op("POST", W + "/pipelines", EDITOR, {"spec": {"name": "tiny", "steps": [
        {"id": "nap", "agent": "sleep", "outputs": ["out"], "params": {"seconds": 0.1, "text": "z"}}]}}),
    Op("GET", W + "/pipelines/{run_main}", VIEWER),
    Op("POST", W + "/pipelines/{run}/cancel", EDITOR, {}, setup=fresh_run),
]


def expected(op: Op, caller: str) -> str:
    if caller in op.expect:
        return op.expect[caller]
    if caller in (ANON, REVOKED):
        return "401"
    if op.minimum == ANY:
        return "allowed"
    if caller == STRANGER:
        return "404"
    return "allowed" if MEMBER_ROLES.index(caller) >= MEMBER_ROLES.index(op.minimum) else "403"


def outcome(status: int) -> str:
    if status in (401, 403, 404):
        return str(status)
    if status >= 500:
        return f"server error {status}"
    return "allowed"


def _format(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _format(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_format(v, names) for v in value]
    return value


def _body(op: Op, names: dict[str, str]) -> Any:
    if op.path.endswith("/moves"):
        return {"from": names["victim"], "to": names["moved"]}
    return _format(op.body, names)


def _build_world(live: Any, make_user: Callable[..., Any]) -> World:
    accounts = {role: make_user(f"authz-{role}") for role in (OWNER, ADMIN, EDITOR, VIEWER, STRANGER, REVOKED)}
    spare = make_user("authz-spare")
    tokens = {role: account.token for role, account in accounts.items()}
    users = {role: account.username for role, account in accounts.items()}
    users["spare"] = spare.username
    world = World(api=live.api, ws="", tokens=tokens, users=users, ids={"spare": spare.username})
    with live.client(tokens[OWNER]) as api:
        world.ws = create_workspace(api, "authz")
    with live.client(tokens[STRANGER]) as api:
        create_workspace(api, "elsewhere")
    for role in (ADMIN, EDITOR, VIEWER):
        world.call(OWNER, "PUT", f"/workspaces/{{ws}}/members/{users[role]}", json={"role": role})
    # The revoked caller revokes its own token through the API.
    token_id = world.call(REVOKED, "GET", "/tokens").json()["results"][0]["id"]
    world.call(REVOKED, "DELETE", f"/tokens/{token_id}")
    world.call(OWNER, "PUT", "/workspaces/{ws}/files/seed.txt", raw=b"seed content")
    world.ids["task_main"] = world.call(OWNER, "POST", "/workspaces/{ws}/tasks",
                                        json={"title": "main", "kind": "k", "queue": "main"}).json()["id"]
    world.ids["approval_main"] = fresh_approval(world, OWNER)["approval"]
    world.ids["trigger_main"] = fresh_trigger(world, OWNER)["trigger"]
    world.ids["run_main"] = fresh_run(world, OWNER)["run"]
    world.call(OWNER, "POST", "/workspaces/{ws}/topics/jobs/messages", json={"body": {"n": 0}})
    world.call(OWNER, "POST", "/workspaces/{ws}/topics/jobs/groups/workers/pull", json={"max": 1})
    return world


def test_every_route_grants_exactly_the_access_api_md_describes(live, make_user):
    """GIVEN one workspace with an owner, an admin, an editor and a viewer, a member of another workspace,
    a revoked token and no token at all WHEN every API operation is sent by each of them THEN anonymous and
    revoked callers get 401, the stranger 404 on anything in the workspace, a member below the operation's
    role 403, and every caller with the role an answer that is not 401/403/404 (nor a 5xx). All mismatches
    are listed together."""
    world = _build_world(live, make_user)
    routes = {(op.method, op.path.split("?")[0]) for op in TABLE}
    assert len(routes) == len(TABLE), "each operation appears once"
    mismatches: list[str] = []
    checked = 0
    for op in TABLE:
        for caller in CALLERS:
            names = {"ws": world.ws, **world.ids}
            if op.setup is not None:
                names.update(op.setup(world, caller))
            api = world.client(caller)
            path = op.path.format(**names)
            if op.raw is not None:
                response = api.request(op.method, path, content=op.raw)
            else:
                response = api.request(op.method, path, json=_body(op, names))

            checked += 1
            want, got = expected(op, caller), outcome(response.status_code)
            if got != want:
                mismatches.append(f"{op.method} {op.path} as {caller}: expected {want}, got "
                                  f"{response.status_code} {response.text[:200]}")
                continue
            if got in ("401", "403", "404"):
                body = response.json()
                if set(body) != {"error"} or not body["error"].get("code"):
                    mismatches.append(f"{op.method} {op.path} as {caller}: error body {body}")
                if got == "401" and "Bearer" not in response.headers.get("WWW-Authenticate", ""):
                    mismatches.append(f"{op.method} {op.path} as {caller}: 401 without WWW-Authenticate: Bearer")
    assert checked == len(TABLE) * len(CALLERS)
    assert not mismatches, f"{len(mismatches)} of {checked} mismatched:\n" + "\n".join(mismatches)


def test_table_covers_every_api_route():
    """GIVEN the API's URL patterns THEN every route (but the unauthenticated health check) has at least one
    row in the matrix, so a new endpoint cannot slip past it."""
    from django.urls import URLPattern

    from workspace.api.urls import urlpatterns

    def shape(route: str) -> str:
        import re

        return re.sub(r"<[^>]+>", "*", route)

    def table_shape(path: str) -> str:
        import re

        path = path.split("?")[0].lstrip("/")
        path = re.sub(r"\{[^}]+\}", "*", path)
        return path

    covered = {table_shape(op.path) for op in TABLE}
    # Literal segments in the table (seed.txt, jobs, workers, team/...) stand for a parameter.
    literal = {"files/seed.txt": "files/*", "files/written.txt": "files/*", "history/seed.txt": "history/*",
               "diff/seed.txt": "diff/*", "rules/team/": "rules/*", "topics/jobs": "topics/*",
               "groups/workers": "groups/*", "triggers/made": "triggers/*"}
    normalised = set()
    for path in covered:
        for text, stand_in in literal.items():
            path = path.replace(text, stand_in)
        normalised.add(path)
    routes = {shape(str(p.pattern)) for p in urlpatterns if isinstance(p, URLPattern)} - {"health"}
    missing = routes - normalised
    assert not missing, f"routes without a row: {sorted(missing)}"
