"""The browser pages through Django's test client: every page renders what the services hold,
forms are CSRF-protected and act through the services, user content is escaped or sanitised, and
the pages stay within a fixed number of queries and 300 ms with 1,000 files and 10,000 events."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from workspace.access import workspace_for
from workspace.models import Event, File, FileVersion, Lock, Membership, Role
from workspace.models.tasks import Approval, ApprovalStatus, Task, TaskStatus, Transfer
from workspace.services import approvals, files, locks, tasks, transfers, worklog, workspaces

PASSWORD = "a long test password"


@pytest.fixture(autouse=True)
def fast_hashing(settings: Any) -> None:
    """Accounts are made with a password; hashing it the production way takes seconds here."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Scene:
    ws: str
    owner: Any
    agent: Any
    viewer: Any
    gated: Task
    dependent: Task
    approval: Approval
    lock: Lock

    def access(self, user: Any) -> Any:
        return workspace_for(user, self.ws)


def build_scene(owner: Any, agent: Any, viewer: Any) -> Scene:
    """A workspace with versioned files, an agent's lock, a gated task with a dependent, its pending
    approval, and worklog entries; everything made through the services."""
    ws = workspaces.workspace_create(user=owner, name="Harbour", intelligence=False)
    own = workspace_for(owner, ws.id)
    workspaces.member_set(access=own, username=agent.username, role="editor")
    workspaces.member_set(access=own, username=viewer.username, role="viewer")
    act = workspace_for(agent, ws.id)
    files.file_write(access=act, path="notes/plan.md", content=b"# Plan\n\nLoad the *first* ship.\n")
    files.file_write(access=act, path="notes/plan.md", content=b"# Plan\n\nLoad the *second* ship.\n")
    files.file_write(access=act, path="src/crane.py", content=b"def lift(weight):\n    return weight * 2\n")
    files.file_write(access=act, path="data/blob.bin", content=b"\x00\x01\x02binary")
    lock = locks.lock_acquire(access=act, paths=["src/crane.py"], ttl_seconds=120, reason="refactoring lift")[0]
    gated = tasks.task_create(access=own, title="Draft the berth plan", requires_approval=True)
    dependent = tasks.task_create(access=own, title="Publish the berth plan", depends_on=[gated.pk])
    claimed = tasks.task_claim(access=act)
    assert claimed is not None and claimed.pk == gated.pk
    files.file_write(access=act, path="output/berths.md", content=b"# Berths\n\nBerth 4 for the *Aurora*.\n",
                     task_id=gated.pk)
    tasks.task_complete(access=act, task_id=gated.pk, result={"berths": 4}, outputs=["output/berths.md"])
    approval = Approval.objects.get(task_id=gated.pk)
    worklog.worklog_append(access=act, message="Measured berth 4", task_id=gated.pk)
    worklog.worklog_append(access=act, message="Checked the tide tables")
    return Scene(ws=ws.id, owner=owner, agent=agent, viewer=viewer, gated=gated, dependent=dependent,
                 approval=approval, lock=lock)


@pytest.fixture
def scene(make_user, make_agent) -> Scene:
    owner = make_user("owner", password=PASSWORD).user
    return build_scene(owner, make_agent("scout", created_by=owner).user, make_user("watcher", password=PASSWORD).user)


def signed_in(user: Any, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def page(client: Client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.content[:500])
    return response.content.decode()


def url(name: str, scene: Scene, **kwargs: Any) -> str:
    """A page of the scene's workspace: "workspace" (its home) or a "ws-<name>" page."""
    return reverse(name if name == "workspace" else f"ws-{name}", kwargs={"ws": scene.ws, **kwargs})


# -- what the pages show --------------------------------------------------------------------------------
def test_tree_shows_files_and_the_lock_badge_with_holder_and_time_left(scene):
    """GIVEN files and an agent's lock WHEN the owner opens the workspace THEN the tree lists every live
    file by directory, and the locked file carries a badge with its holder and time left."""
    html = page(signed_in(scene.owner), url("workspace", scene))
    for name in ("plan.md", "crane.py", "blob.bin", "berths.md", "notes/", "src/"):
        assert name in html
    badge = re.search(r'<span class="lock-badge"[^>]*>(.*?)</span>\s*</li>', html, re.S)
    assert badge is not None
    assert "Locked by <strong>scout</strong>" in badge.group(1)
    assert re.search(r"data-countdown>(1 min \d\d s|\d+ s) left</time>", badge.group(1))
    assert 'data-live="tree"' in html and f'data-ws="{scene.ws}"' in html


def test_file_view_renders_markdown_highlights_code_and_offers_binary_as_download(scene):
    """GIVEN Markdown, Python and binary files WHEN each is opened THEN Markdown is rendered, code is
    highlighted by pygments, and the binary one is a download link; any version can be opened."""
    client = signed_in(scene.viewer)
    html = page(client, url("file", scene, path="notes/plan.md"))
    assert "<em>second</em>" in html and "Version</dt><dd>2 of 2" in html
    old = page(client, url("file", scene, path="notes/plan.md") + "?version=1")
    assert "<em>first</em>" in old and "not the newest" in old and "view version 2" in old
    source = page(client, url("file", scene, path="notes/plan.md") + "?view=source")
    assert "<em>second</em>" not in source and "*second*" in source
    code = page(client, url("file", scene, path="src/crane.py"))
    assert 'class="hl"' in code and '<span class="k">def</span>' in code
    assert "refactoring lift" in code
    binary = page(client, url("file", scene, path="data/blob.bin"))
    assert "binary" in binary and url("raw", scene, path="data/blob.bin") in binary


def test_raw_download_is_an_attachment_that_cannot_run_as_a_page(scene):
    """GIVEN a file WHEN it is downloaded THEN it is an attachment, sandboxed and never sniffed."""
    response = signed_in(scene.viewer).get(url("raw", scene, path="notes/plan.md") + "?version=1")
    assert response.status_code == 200
    assert response.content == b"# Plan\n\nLoad the *first* ship.\n"
    assert response["Content-Disposition"].startswith("attachment")
    assert response["Content-Security-Policy"].startswith("sandbox")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Type"].startswith("text/plain")


def test_history_lists_every_version_and_the_diff_page_shows_the_change(scene):
    """GIVEN a file with two versions WHEN its history and the diff are opened THEN both versions are
    listed, linked, and the diff marks the removed and the added line."""
    client = signed_in(scene.viewer)
    html = page(client, url("history", scene, path="notes/plan.md"))
    assert "Version 2" in html and "Version 1" in html
    assert url("diff", scene, path="notes/plan.md") + "?from=1&amp;to=2" in html
    diff = page(client, url("diff", scene, path="notes/plan.md") + "?from=1&to=2")
    assert '<span class="del">-Load the *first* ship.</span>' in diff
    assert '<span class="add">+Load the *second* ship.</span>' in diff
    missing = page(client, url("diff", scene, path="notes/plan.md") + "?from=1&to=9", status=404)
    assert "has no version 9" in missing


def test_locks_page_shows_holder_reason_and_expiry_and_admins_force_release(scene):
    """GIVEN an agent's lock WHEN a viewer and the owner open the locks page THEN both see who holds
    what and why; only the owner gets the force-release button, and using it ends the lock as forced."""
    html = page(signed_in(scene.viewer), url("locks", scene))
    assert "src/crane.py" in html and "scout" in html and "refactoring lift" in html
    assert "Force release" not in html
    viewer_try = signed_in(scene.viewer).post(url("lock-release", scene, lock_id=scene.lock.pk), follow=True)
    assert "only its holder or a workspace admin" in viewer_try.content.decode()
    assert Lock.objects.get(pk=scene.lock.pk).state == Lock.State.ACTIVE

    owner = signed_in(scene.owner)
    assert "Force release" in page(owner, url("locks", scene))
    done = owner.post(url("lock-release", scene, lock_id=scene.lock.pk), follow=True)
    assert "Released the lock on src/crane.py held by scout" in done.content.decode()
    assert Lock.objects.get(pk=scene.lock.pk).state == Lock.State.FORCE_RELEASED
    assert Event.objects.filter(workspace_id=scene.ws, type="lock.force_released").exists()


def test_task_board_shows_columns_dependencies_attempts_and_approval_gate(scene):
    """GIVEN a gated task awaiting approval and a dependent WHEN the board opens THEN the gated task is
    blocked awaiting approval, the dependent shows what it waits on, and a claimed task its claimant
    and lease."""
    own = scene.access(scene.owner)
    third = tasks.task_create(access=own, title="Survey the quay")
    tasks.task_claim(access=scene.access(scene.agent))
    html = page(signed_in(scene.viewer), url("tasks", scene))
    blocked = html.split('id="col-blocked"')[1].split('id="col-queued"')[0]
    assert "Draft the berth plan" in blocked and "Done, awaiting approval" in blocked
    assert "Publish the berth plan" in blocked and "Depends on (1 not done)" in blocked
    claimed = html.split('id="col-claimed"')[1].split('id="col-done"')[0]
    assert "Survey the quay" in claimed and "Claimed by <strong>scout</strong>" in claimed
    assert "attempt 1 of 3" in claimed and re.search(r"data-countdown>\d+ s left", claimed)
    detail = page(signed_in(scene.viewer), url("task", scene, task_id=third.pk))
    assert "Survey the quay" in detail and "Claimant" in detail


def test_approving_from_the_inbox_releases_the_dependents(scene):
    """GIVEN a pending gate WHEN the owner approves it with a comment from the inbox (with the file
    version it concerns shown beside it) THEN the task is done and its dependent queued."""
    client = signed_in(scene.owner)
    html = page(client, url("approvals", scene))
    assert f'id="approval-{scene.approval.pk}"' in html
    assert "output/berths.md" in html and "Berth 4 for the <em>Aurora</em>" in html
    response = client.post(url("approval-decide", scene, approval_id=scene.approval.pk),
                           {"decision": "approve", "comment": "Looks right"}, follow=True)
    assert "Approved: " in response.content.decode()
    assert Task.objects.get(pk=scene.gated.pk).status == TaskStatus.DONE
    assert Task.objects.get(pk=scene.dependent.pk).status == TaskStatus.QUEUED
    assert Approval.objects.get(pk=scene.approval.pk).comment == "Looks right"
    feed = page(client, url("activity", scene) + "?type=approval.decided")
    assert f'href="{url("approvals", scene)}#approval-{scene.approval.pk}">approved: Looks right</a>' in feed


def test_a_viewer_cannot_decide_and_sees_why(scene):
    """GIVEN a viewer WHEN they post a decision anyway THEN the service refuses, the message says so and
    the approval stays pending."""
    html = page(signed_in(scene.viewer), url("approvals", scene))
    assert "Only admins and the owner decide approvals" in html and 'name="decision"' not in html
    response = signed_in(scene.viewer).post(url("approval-decide", scene, approval_id=scene.approval.pk),
                                            {"decision": "approve"}, follow=True)
    assert "Only admins and the owner decide approvals." in response.content.decode()
    assert Approval.objects.get(pk=scene.approval.pk).status == ApprovalStatus.PENDING


def test_file_version_approvals_show_that_version_beside_the_form(scene):
    """GIVEN an approval about notes/plan.md@2 WHEN the inbox opens THEN that version is rendered next to it."""
    approvals.approval_request(access=scene.access(scene.agent), title="Sign off the plan", path="notes/plan.md",
                               version=2)
    html = page(signed_in(scene.owner), url("approvals", scene))
    card = html.split("Sign off the plan")[1].split("</article>")[0]
    assert "notes/plan.md</a> · version 2" in card and "<em>second</em>" in card


def test_worklog_filters_by_task_and_author_and_reports_the_chain(scene):
    """GIVEN entries with and without a task WHEN filtered THEN only the matching ones show, and the
    verification fragment reports the chain intact."""
    client = signed_in(scene.viewer)
    html = page(client, url("worklog", scene))
    assert "Measured berth 4" in html and "Checked the tide tables" in html
    only_task = page(client, url("worklog", scene) + f"?task={scene.gated.pk}")
    assert "Measured berth 4" in only_task and "Checked the tide tables" not in only_task
    nobody = page(client, url("worklog", scene) + "?author=owner")
    assert "Measured berth 4" not in nobody
    verify = page(client, url("worklog", scene) + "?fragment=verify")
    assert "Chain intact" in verify and "all 2 entries verified" in verify


def test_activity_feed_filters_by_type_and_actor_and_links_each_event(scene):
    """GIVEN the scene's events WHEN the feed is filtered by type and by actor THEN only those events
    show, each linking to what it concerns."""
    client = signed_in(scene.viewer)
    html = page(client, url("activity", scene) + "?type=lock.acquired")
    assert "scout locked src/crane.py for 120 s: refactoring lift" in html
    assert "file.written" not in html.split("<tbody>")[1]
    assert f'href="{url("locks", scene)}"' in html
    written = page(client, url("activity", scene) + "?type=file.written&actor=scout")
    assert url("file", scene, path="notes/plan.md") + "?version=2" in written
    assert "task.created" not in written.split("<tbody>")[1]
    by_owner = page(client, url("activity", scene) + "?actor=owner")
    assert "task.created" in by_owner and "file.written" not in by_owner.split("<tbody>")[1]


def test_live_fragments_render_alone_and_unknown_ones_are_404(scene):
    """GIVEN a page with live regions WHEN a region is asked for THEN only its markup comes back."""
    client = signed_in(scene.viewer)
    tree = page(client, url("workspace", scene) + "?fragment=tree")
    assert "<html" not in tree and "crane.py" in tree
    nav = page(client, url("tasks", scene) + "?fragment=nav")
    assert "Approvals" in nav and "<html" not in nav
    page(client, url("tasks", scene) + "?fragment=nope", status=404)


def test_members_rules_and_layout_forms_call_the_services(scene):
    """GIVEN the owner WHEN they change a role, set a rule and remove a member THEN the page shows each
    change; a viewer gets the services' refusal."""
    client = signed_in(scene.owner)
    action = url("members-action", scene)
    client.post(action, {"action": "member_set", "username": "watcher", "role": "editor"})
    assert Membership.objects.get(workspace_id=scene.ws, user=scene.viewer).role == Role.EDITOR
    response = client.post(action, {"action": "rule_set", "prefix": "notes/", "writers": "scout, watcher"},
                           follow=True)
    assert "Only the listed writers may now write under notes/." in response.content.decode()
    assert "<code>notes/</code>" in response.content.decode()
    refused = signed_in(scene.agent).post(action, {"action": "member_remove", "username": "watcher"}, follow=True)
    assert Membership.objects.filter(workspace_id=scene.ws, user=scene.viewer).exists()
    assert "This needs the admin role in the workspace; you are editor." in refused.content.decode()
    client.post(action, {"action": "member_remove", "username": "watcher"})
    assert not Membership.objects.filter(workspace_id=scene.ws, user=scene.viewer).exists()


def test_ownership_offer_shows_the_link_once_and_the_recipient_accepts_from_the_list(scene, make_user):
    """GIVEN the owner WHEN they offer the workspace to another account THEN the accept link is shown
    once; the recipient sees the offer on their list, accepts, and the workspace shows where it came from."""
    heir = make_user("heir", password=PASSWORD).user
    response = signed_in(scene.owner).post(url("transfer-offer", scene), {"to": "heir", "message": "All yours"})
    assert response.status_code == 201
    link = re.search(r'id="accept-link" class="mono" value="([^"]+)"', response.content.decode()).group(1)
    transfer = Transfer.objects.get(workspace_id=scene.ws)
    assert f"/transfers/{transfer.pk}/accept?token=" in link
    assert link not in page(signed_in(scene.owner), url("members", scene))

    recipient = signed_in(heir)
    listing = page(recipient, reverse("home"))
    assert "Harbour" in listing and "All yours" in listing
    accepted = recipient.post(reverse("offer-respond", kwargs={"transfer_id": transfer.pk}), {"action": "accept"},
                              follow=True)
    html = accepted.content.decode()
    assert "You now own Harbour." in html and "Transferred from <strong>owner</strong>" in html
    assert Membership.objects.get(workspace_id=scene.ws, user=heir).role == Role.OWNER
    assert Membership.objects.get(workspace_id=scene.ws, user=scene.owner).role == Role.ADMIN


def test_workspace_creation_from_the_list(make_user):
    """GIVEN a person WHEN they create a workspace (and then one with a blank name) THEN the first opens
    as theirs; the second is refused with the service's message."""
    person = make_user("maker", password=PASSWORD).user
    client = signed_in(person)
    response = client.post(reverse("home"), {"name": "Quay", "intelligence": "on"}, follow=True)
    assert response.status_code == 200 and "Quay" in response.content.decode()
    assert Membership.objects.get(user=person).role == Role.OWNER
    refused = client.post(reverse("home"), {"name": "   "})
    assert refused.status_code == 400 and "1-200 characters" in refused.content.decode()


def test_strangers_and_anonymous_visitors_learn_nothing(scene, make_user):
    """GIVEN a workspace WHEN a non-member opens any of its pages THEN it is a 404; signed out, a redirect
    to sign in."""
    stranger = signed_in(make_user("stranger").user)
    for name, extra in [("workspace", {}), ("file", {"path": "notes/plan.md"}), ("history", {"path": "notes/plan.md"}),
                        ("locks", {}), ("tasks", {}), ("worklog", {}), ("approvals", {}), ("activity", {}),
                        ("search", {}), ("members", {}), ("pipelines", {}), ("raw", {"path": "notes/plan.md"})]:
        assert stranger.get(url(name, scene, **extra)).status_code == 404, name
    anonymous = Client().get(url("workspace", scene))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")


# -- CSRF ------------------------------------------------------------------------------------------------
def test_every_form_needs_its_csrf_token(scene):
    """GIVEN a signed-in owner WHEN a form is posted without the CSRF token THEN it is a 403 and nothing
    changes; with the token from the page it goes through."""
    client = signed_in(scene.owner, csrf=True)
    posts = [
        (reverse("home"), {"name": "Sneaky"}),
        (url("approval-decide", scene, approval_id=scene.approval.pk), {"decision": "approve"}),
        (url("lock-release", scene, lock_id=scene.lock.pk), {}),
        (url("members-action", scene), {"action": "member_remove", "username": "watcher"}),
        (url("transfer-offer", scene), {"to": "watcher"}),
        (reverse("logout"), {}),
    ]
    for target, data in posts:
        assert client.post(target, data).status_code == 403, target
    assert Approval.objects.get(pk=scene.approval.pk).status == ApprovalStatus.PENDING
    assert Lock.objects.get(pk=scene.lock.pk).state == Lock.State.ACTIVE
    assert Membership.objects.filter(workspace_id=scene.ws, user=scene.viewer).exists()
    assert not Transfer.objects.exists()

    html = page(client, url("approvals", scene))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    ok = client.post(url("approval-decide", scene, approval_id=scene.approval.pk),
                     {"decision": "approve", "csrfmiddlewaretoken": token})
    assert ok.status_code == 302
    assert Approval.objects.get(pk=scene.approval.pk).status == ApprovalStatus.APPROVED


def test_sign_in_and_out(make_user):
    """GIVEN an account WHEN the person signs in with the form THEN they reach their workspaces; signing
    out (a POST) ends the session."""
    make_user("sailor", password=PASSWORD)
    client = Client(enforce_csrf_checks=True)
    login = page(client, reverse("login"))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
    wrong = client.post(reverse("login"), {"username": "sailor", "password": "nope", "csrfmiddlewaretoken": token})
    assert "did not match" in wrong.content.decode()
    response = client.post(reverse("login"), {"username": "sailor", "password": PASSWORD,
                                              "csrfmiddlewaretoken": token}, follow=True)
    assert "Signed in as <strong>sailor</strong>" in response.content.decode()
    token = client.cookies["csrftoken"].value
    client.post(reverse("logout"), {"csrfmiddlewaretoken": token})
    assert client.get(reverse("home")).status_code == 302


# -- escaping --------------------------------------------------------------------------------------------
XSS_NAME = '<img src=x onerror=alert(1)>.md'
XSS_CONTENT = (
    "# Hi <script>window.__xss=1</script>\n\n"
    "[click](javascript:window.__xss=2) <img src=x onerror=\"window.__xss=3\">\n\n"
    "<a href=\"javascript:alert(1)\">raw link</a> <svg onload=alert(1)></svg>\n"
)


class _Markup(HTMLParser):
    """Every element and attribute the browser would build from a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))


def assert_inert(html: str) -> None:
    """No script but our own, no event handler attribute, no `javascript:` URL, no foreign element."""
    parser = _Markup()
    parser.feed(html)
    for tag, attrs in parser.elements:
        assert tag not in {"svg", "iframe", "object", "embed", "base", "form"} or tag == "form" and \
            not attrs.get("action", "").lower().startswith("javascript"), (tag, attrs)
        if tag == "script":
            assert attrs.get("src", "").startswith("/static/js/"), attrs
        if tag == "img":
            assert attrs.get("src") != "x" or "onerror" not in attrs, attrs
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, attrs)
            assert not value.strip().lower().startswith("javascript:"), (tag, attrs)


def test_hostile_names_and_contents_are_escaped_on_every_page(scene):
    """GIVEN file names, contents, lock reasons, task titles, worklog messages and approval texts
    carrying script WHEN every page shows them THEN none of it survives as markup."""
    act = scene.access(scene.agent)
    own = scene.access(scene.owner)
    files.file_write(access=act, path=f"xss/{XSS_NAME}", content=XSS_CONTENT.encode())
    files.file_write(access=act, path=f"xss/{XSS_NAME}", content=(XSS_CONTENT + "more\n").encode())
    files.file_write(access=act, path="xss/code.py", content=XSS_CONTENT.encode())
    locks.lock_acquire(access=act, paths=[f"xss/{XSS_NAME}"], reason='<script>window.__xss=4</script>')
    task = tasks.task_create(access=own, title='<img src=x onerror=alert(5)>')
    worklog.worklog_append(access=act, message='<script>window.__xss=6</script>', task_id=task.pk)
    approval = approvals.approval_request(access=act, title="<script>window.__xss=7</script>",
                                          description='<img src=x onerror=alert(8)>', path=f"xss/{XSS_NAME}",
                                          version=2)
    transfers.transfer_offer(access=own, to="watcher", message="<script>window.__xss=9</script>")
    client = signed_in(scene.owner)
    pages = [
        url("workspace", scene), url("file", scene, path=f"xss/{XSS_NAME}"),
        url("file", scene, path=f"xss/{XSS_NAME}") + "?view=source", url("file", scene, path="xss/code.py"),
        url("history", scene, path=f"xss/{XSS_NAME}"), url("diff", scene, path=f"xss/{XSS_NAME}") + "?from=1&to=2",
        url("locks", scene), url("tasks", scene), url("task", scene, task_id=task.pk), url("worklog", scene),
        url("approvals", scene), url("activity", scene), url("members", scene),
    ]
    for target in pages:
        html = page(client, target)
        assert_inert(html)
    listing = page(signed_in(scene.viewer), reverse("home"))
    assert_inert(listing)
    rendered = page(client, url("file", scene, path=f"xss/{XSS_NAME}"))
    assert "&lt;img src=x onerror=alert(1)&gt;.md" in rendered  # the name, as text
    assert '<a rel="noopener noreferrer nofollow">click</a>' in rendered  # the javascript: link is gone
    assert approval.pk in page(client, url("approvals", scene))


# -- size and speed --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big(django_db_setup: Any, django_db_blocker: Any) -> Any:
    """The scene plus 1,000 files (each with a version) and 10,000 events inserted directly, built once
    for the module inside a transaction that is rolled back at its end (each test runs in a savepoint)."""
    from django.db import transaction

    from agents.models import User

    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            people = {}
            for name, kind in (("big-owner", User.Kind.HUMAN), ("big-agent", User.Kind.AGENT),
                               ("big-viewer", User.Kind.HUMAN)):
                user = User(username=name, kind=kind)
                user.set_unusable_password()  # signed in with force_login; no hashing to wait for
                user.save()
                people[name] = user
            scene = build_scene(people["big-owner"], people["big-agent"], people["big-viewer"])
            _fill(scene)
            yield scene
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


def _fill(scene: Scene) -> None:
    now = timezone.now()
    heads, versions = [], []
    for i in range(1000):
        path = f"dir{i % 20:02d}/sub{i % 7}/file{i:04d}.txt"
        heads.append(File(workspace_id=scene.ws, path=path, version=1, sha256="0" * 64, size=i, author=scene.agent,
                          updated_at=now))
        versions.append(FileVersion(workspace_id=scene.ws, path=path, version=1, sha256="0" * 64, size=i,
                                    author=scene.agent, created_at=now))
    File.objects.bulk_create(heads, batch_size=500)
    FileVersion.objects.bulk_create(versions, batch_size=500)
    from workspace.models import Workspace

    start = Workspace.objects.get(pk=scene.ws).event_seq
    kinds = ["file.written", "lock.acquired", "task.claimed", "worklog.appended", "file.indexed"]
    Event.objects.bulk_create([
        Event(workspace_id=scene.ws, seq=start + i + 1, type=kinds[i % 5], actor=scene.agent if i % 3 else None,
              target=f"dir{i % 20:02d}/sub{i % 7}/file{i % 1000:04d}.txt",
              data={"path": f"dir{i % 20:02d}/sub{i % 7}/file{i % 1000:04d}.txt", "version": 1, "size": 1},
              at=now - timedelta(seconds=10000 - i))
        for i in range(10000)], batch_size=1000)
    Workspace.objects.filter(pk=scene.ws).update(event_seq=start + 10000)
    own = scene.access(scene.owner)
    tasks.task_create_many(access=own, specs=[
        tasks.TaskSpec(title=f"Task {i}", depends_on=[scene.dependent.pk] if i % 2 else []) for i in range(30)])
    for i in range(20):
        locks.lock_acquire(access=scene.access(scene.agent), paths=[f"dir{i:02d}/sub0/"], reason=f"batch {i}")
    for i in range(30):
        worklog.worklog_append(access=scene.access(scene.agent), message=f"step {i}")


PAGE_BUDGETS = [
    ("workspace", {}, 14),
    ("file", {"path": "notes/plan.md"}, 14),
    ("history", {"path": "notes/plan.md"}, 12),
    ("diff", {"path": "notes/plan.md"}, 12),
    ("locks", {}, 10),
    ("tasks", {}, 18),
    ("worklog", {}, 14),
    ("approvals", {}, 18),
    ("activity", {}, 12),
    ("members", {}, 14),
    ("search", {}, 10),
    ("pipelines", {}, 10),
]


@pytest.mark.parametrize(("name", "extra", "budget"), PAGE_BUDGETS, ids=[p[0] for p in PAGE_BUDGETS])
def test_pages_stay_within_their_query_budget_and_300ms_at_scale(db, big, name, extra, budget,
                                                                 django_assert_max_num_queries):
    """GIVEN 1,000 files and 10,000 events WHEN each page is rendered THEN it takes a fixed number of
    queries (no N+1 over files, events, tasks or locks) and under 300 ms of server time."""
    client = signed_in(big.owner)
    target = url(name, big, **extra)
    client.get(target)  # warm: the session, template loading
    with django_assert_max_num_queries(budget):
        response = client.get(target)
    assert response.status_code == 200
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        assert client.get(target).status_code == 200
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.3, (name, timings)


def test_the_tree_at_scale_lists_every_file_and_the_directory_locks(db, big):
    """GIVEN 1,000 files and 20 directory locks WHEN the tree renders THEN every file is there and each
    locked directory's files carry the badge of the directory lock."""
    html = page(signed_in(big.owner), url("workspace", big))
    assert html.count('<li class="file">') == 1000 + 4
    assert html.count("(via <code>dir00/sub0/</code>)") == len([i for i in range(1000) if i % 20 == 0 and i % 7 == 0])


def test_the_feed_at_scale_shows_the_newest_page_and_pages_back(db, big):
    """GIVEN 10,000 events WHEN the feed opens THEN it shows the newest 100 and links to older ones."""
    client = signed_in(big.owner)
    html = page(client, url("activity", big))
    assert html.count('<tr id="event-') == 100
    older = re.search(r'before=(\d+)">Older events', html)
    assert older is not None
    earlier = page(client, url("activity", big) + f"?before={older.group(1)}")
    assert f'id="event-{int(older.group(1)) - 1}"' in earlier and "data-frozen" in earlier


# -- pipelines -------------------------------------------------------------------------------------------
def test_pipeline_page_shows_stage_progress_a_gantt_chart_and_the_critical_path(scene):
    """GIVEN a run whose two branches ended (one in 2 s, one in 4 s) and whose aggregator is running
    WHEN its page renders THEN each stage has a progress bar, the chart has one bar per started step
    (the running one up to now), the longer branch and the aggregator are the marked critical path,
    and a step that has not started has no bar."""
    from agents.models import PipelineStep
    from agents.pipelines.services import pipeline_submit

    act = scene.access(scene.agent)
    spec = {"name": "berths", "inputs": {"plan": "notes/plan.md"}, "steps": [
        {"id": "rate", "inputs": ["plan"], "outputs": ["score"],
         "fan_out": {"agents": [{"agent": "sleep", "params": {"seconds": 0}},
                                {"agent": "sleep", "params": {"seconds": 0}}], "aggregate": "concat"}},
        {"id": "publish", "agent": "copy", "inputs": ["score"], "outputs": ["final"]},
    ]}
    run = pipeline_submit(access=act, spec=spec)
    steps = {s.key: s for s in PipelineStep.objects.filter(run=run).select_related("task")}
    assert set(steps) == {"rate.1", "rate.2", "rate", "publish"}
    from agents.models import PipelineRun

    start = timezone.now() - timedelta(seconds=10)
    PipelineRun.objects.filter(pk=run.pk).update(created_at=start)
    for key, began, ended in (("rate.1", 1, 3), ("rate.2", 1, 5)):
        PipelineStep.objects.filter(pk=steps[key].pk).update(started_at=start + timedelta(seconds=began),
                                                              finished_at=start + timedelta(seconds=ended))
        Task.objects.filter(pk=steps[key].task_id).update(status=TaskStatus.DONE,
                                                          completed_at=start + timedelta(seconds=ended))
    PipelineStep.objects.filter(pk=steps["rate"].pk).update(started_at=start + timedelta(seconds=5))
    Task.objects.filter(pk=steps["rate"].task_id).update(status=TaskStatus.CLAIMED, claimed_by=scene.agent)

    client = signed_in(scene.viewer)
    listing = page(client, url("pipelines", scene))
    assert "berths" in listing and "2 of 4 steps done" in listing
    html = page(client, reverse("ws-pipeline", kwargs={"ws": scene.ws, "run_id": run.pk}))
    assert '<progress id="stage-1" max="3" value="2">' in html and "2 of 3 done, 1 running" in html
    assert '<progress id="stage-2" max="1" value="0">' in html and "0 of 1 done, 1 waiting" in html
    chart = html.split('<svg class="gantt"')[1].split("</svg>")[0]
    assert chart.count("<rect ") == 3
    assert re.search(r'class="bar status-done critical"[^>]*><title>rate\.2 \(sleep\): done, 4\.00 s; on the '
                     r"critical path</title>", chart)
    assert re.search(r'class="bar status-done"[^>]*><title>rate\.1 \(sleep\): done, 2\.00 s</title>', chart)
    assert re.search(r'class="bar status-claimed running critical"[^>]*><title>rate \(concat\): claimed, [\d.]+ s '
                     r"so far", chart)
    assert "publish" not in chart
    assert "sleep #2" in chart  # the two branches overlapped: two lanes of one agent
    assert "rate.2 → rate" in html.replace("◆ ", "")
    assert 'data-live="run" data-on="task. pipeline." data-every="3"' in html and "data-running" in html


# -- search ----------------------------------------------------------------------------------------------
def test_search_page_without_intelligence_says_so_and_with_it_shows_the_index_and_the_query(scene):
    """GIVEN a workspace with intelligence off WHEN its search page opens THEN it says the files are not
    indexed; with intelligence on and nothing indexed yet, a query (hostile, here) comes back escaped
    with no results, and the index state is a live region."""
    client = signed_in(scene.owner)
    off = page(client, url("search", scene) + "?q=crane")
    assert "Intelligence is switched off for this workspace" in off and "Nothing matched" not in off
    ws = workspaces.workspace_create(user=scene.owner, name="Indexed", intelligence=True)
    html = page(client, reverse("ws-search", kwargs={"ws": ws.id}) + "?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in html and "Nothing matched." in html
    assert 'data-live="index" data-on="file."' in html and "Index: 0 files searchable." in html
    assert_inert(html)
    everywhere = page(client, reverse("global-search") + "?q=crane")
    assert "Nothing matched." in everywhere
