"""End to end in headless Chromium against the live server (two web processes, RQ workers, the
sweeper): people sign in, browse, and watch agents' work arrive over the event stream without
reloading; hostile names and contents never run. Each test saves screenshots under tests/artifacts/.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.browser_fixtures import ARTIFACTS, Browser, Remote, browser_fixture  # noqa: F401 - the session fixture
from tests.helpers import create_workspace, put_file

pytestmark = pytest.mark.browser

PASSWORD = "a long test password"
WAIT_MS = 30_000
MODEL_LOAD_MS = 120_000

# Runs before any page script: counts CSP violations (an injected script or handler that the
# policy stopped is still an escaping failure) and keeps the XSS flag unset.
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""

# Elements and attributes that would run script if markup got through.
DOM_AUDIT = """() => {
  const bad = [];
  for (const el of document.querySelectorAll("*")) {
    for (const a of el.attributes) {
      if (a.name.startsWith("on") || /^\\s*javascript:/i.test(a.value) || (a.name === "srcdoc")) {
        bad.push(el.tagName + " " + a.name + "=" + a.value);
      }
    }
    if (["IFRAME", "OBJECT", "EMBED"].includes(el.tagName)) bad.push(el.tagName);
  }
  for (const s of document.scripts) if (!s.src.includes("/static/js/")) bad.push("SCRIPT " + s.text.slice(0, 40));
  return bad;
}"""


@pytest.fixture
def fast_accounts(settings: Any) -> None:
    """Accounts made here sign in with a session cookie, not their password: no slow hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Person:
    context: Remote
    page: Remote
    dialogs: list[str] = field(default_factory=list)

    def go(self, path: str) -> Remote:
        self.page.goto(path)
        return self.page

    def wait_live(self) -> None:
        self.page.wait_for_selector("body[data-live='live']", timeout=WAIT_MS)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.page.evaluate("window.__xss") is None
        assert self.page.evaluate("window.__violations") == []
        assert self.page.evaluate(DOM_AUDIT) == []


def open_as(browser: Browser, live: Any, user: Any | None = None) -> Person:
    """A browser context for one person, signed in with a session made for them (or anonymous)."""
    context = browser.context(live.url)
    context.set_default_timeout(WAIT_MS)
    context.add_init_script(WATCH)
    if user is not None:
        from django.test import Client

        client = Client()
        client.force_login(user)
        context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live.url}])
    page = context.new_page()
    person = Person(context=context, page=page)

    def on_dialog(dialog: Any) -> None:
        person.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return person


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def workspace_with_agent(live: Any, owner: Any, agent: Any, *, name: str = "Harbour",
                         intelligence: bool = False) -> str:
    with live.client(owner.token) as api:
        ws = create_workspace(api, name, intelligence=intelligence)
        assert api.put(f"/api/v1/workspaces/{ws}/members/{agent.username}", json={"role": "editor"}).status_code == 200
    return ws


def text_of(person: Person, selector: str) -> str:
    return str(person.page.locator(selector).first.inner_text())


# -- sign in, browse, history, diff ----------------------------------------------------------------------
def test_sign_in_browse_a_file_its_history_and_a_diff(browser, live, make_user, make_agent, settings):
    """GIVEN an agent that wrote two versions of a plan WHEN a person signs in with the form, opens the
    workspace, the file, its history and the diff THEN each page shows it, and signing out ends it."""
    ada = make_user("ada", password=PASSWORD)  # a real password hash: she signs in with the form
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    scout = make_agent("scout", created_by=ada.user)
    ws = workspace_with_agent(live, ada, scout)
    with live.client(scout.token) as agent:
        put_file(agent, ws, "notes/plan.md", "# Plan\n\nLoad the *first* ship.\n")
        put_file(agent, ws, "notes/plan.md", "# Plan\n\nLoad the *second* ship.\n\n- berth 4\n- berth 5\n")
        put_file(agent, ws, "src/crane.py", "def lift(weight):\n    return weight * 2\n")

    ada_browser = open_as(browser, live)
    page = ada_browser.go("/")
    assert "/login/" in page.url
    ada_browser.shot("01-sign-in")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("h1:has-text('Workspaces')")
    ada_browser.shot("02-workspaces")

    page.click("a:has-text('Harbour')")
    page.wait_for_selector("ul.tree")
    ada_browser.wait_live()
    assert "plan.md" in text_of(ada_browser, "ul.tree") and "crane.py" in text_of(ada_browser, "ul.tree")
    ada_browser.shot("03-tree")

    page.click("ul.tree a:has-text('plan.md')")
    page.wait_for_selector(".content.markdown")
    assert page.locator(".content.markdown em").inner_text() == "second"
    ada_browser.shot("04-file-markdown")
    page.click("a:has-text('History')")
    page.wait_for_selector("table.versions")
    assert page.locator("table.versions tbody tr").count() == 2
    ada_browser.shot("05-history")
    page.click("a:has-text('Diff with v1')")
    page.wait_for_selector("pre.diff")
    assert page.locator("pre.diff .del").all_inner_texts() == ["-Load the *first* ship."]
    assert "+Load the *second* ship." in page.locator("pre.diff .add").all_inner_texts()
    ada_browser.shot("06-diff")
    page.click("a:has-text('View version 1')")
    page.wait_for_selector(".content.markdown")
    assert page.locator(".content.markdown em").inner_text() == "first"
    assert "not the newest" in text_of(ada_browser, "dl.facts")

    page.goto(f"/w/{ws}/files/src/crane.py")
    assert page.locator(".hl .k").first.inner_text() == "def"
    ada_browser.shot("07-file-code")
    page.click("button:has-text('Sign out')")
    page.wait_for_selector("h1:has-text('Sign in')")
    assert "/login/" in page.goto(f"/w/{ws}/").url
    ada_browser.assert_clean()
    ada_browser.context.close()


# -- locks, live -------------------------------------------------------------------------------------------
def test_a_lock_appears_live_in_the_tree_and_an_admin_force_releases_it(browser, live, make_user, make_agent,
                                                                        fast_accounts):
    """GIVEN the owner looking at the tree WHEN an agent takes a lock over the API THEN its badge (holder,
    time left) appears without a reload; on the locks page the owner force-releases it and the lock
    disappears from the tree, live again."""
    owner = make_user("olga")
    scout = make_agent("scout", created_by=owner.user)
    ws = workspace_with_agent(live, owner, scout)
    with live.client(scout.token) as agent:
        put_file(agent, ws, "src/crane.py", "def lift(weight):\n    return weight * 2\n")
        put_file(agent, ws, "src/quay.py", "QUAYS = 4\n")
    olga = open_as(browser, live, owner.user)
    tree = olga.go(f"/w/{ws}/")
    olga.wait_live()
    tree.evaluate("window.__sameDocument = true")
    crane = tree.locator("li.file", has_text="crane.py")
    assert crane.locator(".lock-badge").count() == 0

    with live.client(scout.token) as agent:
        response = agent.post(f"/api/v1/workspaces/{ws}/locks",
                              json={"path": "src/crane.py", "ttl_seconds": 90, "reason": "refactoring lift"})
        assert response.status_code == 201, response.text
    browser.expect(crane.locator(".lock-badge")).to_contain_text("Locked by scout", timeout=WAIT_MS)
    badge = crane.locator(".lock-badge").inner_text()
    assert re.search(r"(1 min \d\d s|\d+ s) left", badge), badge
    assert tree.evaluate("window.__sameDocument") is True
    assert tree.locator("li.file", has_text="quay.py").locator(".lock-badge").count() == 0
    olga.shot("08-tree-lock-live")

    locks = olga.context.new_page()
    locks.goto(f"/w/{ws}/locks/")
    row = locks.locator("table.locks tbody tr", has_text="src/crane.py")
    assert "scout" in row.inner_text() and "refactoring lift" in row.inner_text()
    locks.screenshot(path=str(ARTIFACTS / "09-locks.png"), full_page=True)
    row.locator("button:has-text('Force release')").click()
    locks.wait_for_selector(".message.success")
    assert "Released the lock on src/crane.py held by scout" in locks.locator(".message.success").inner_text()
    assert locks.locator("table.locks tbody").inner_text().strip() == "Nothing is locked."
    browser.expect(crane.locator(".lock-badge")).to_have_count(0, timeout=WAIT_MS)
    assert tree.evaluate("window.__sameDocument") is True
    olga.assert_clean()
    olga.context.close()


# -- approvals and the board -------------------------------------------------------------------------------
def test_approving_a_gated_task_starts_its_dependent_on_the_live_board(browser, live, make_user, make_agent,
                                                                        fast_accounts):
    """GIVEN a gated task an agent completed and its blocked dependent WHEN the owner approves it in the
    inbox (the version it wrote beside it) THEN the board, open in another tab, shows the dependent
    queued and then claimed by the agent, without a reload."""
    owner = make_user("olga")
    scout = make_agent("scout", created_by=owner.user)
    ws = workspace_with_agent(live, owner, scout)
    with live.client(owner.token) as api:
        gated = api.post(f"/api/v1/workspaces/{ws}/tasks", json={"title": "Draft the berth plan",
                                                                 "requires_approval": True}).json()
        dependent = api.post(f"/api/v1/workspaces/{ws}/tasks", json={"title": "Publish the berth plan",
                                                                     "depends_on": [gated["id"]]}).json()
    with live.client(scout.token) as agent:
        claimed = agent.post(f"/api/v1/workspaces/{ws}/tasks/claim", json={}).json()
        assert claimed["id"] == gated["id"]
        put_file(agent, ws, "output/berths.md", "# Berths\n\nBerth 4 for the *Aurora*.\n", **{"X-Task-Id": gated["id"]})
        done = agent.post(f"/api/v1/workspaces/{ws}/tasks/{gated['id']}/complete",
                          json={"result": {"berths": 4}, "outputs": ["output/berths.md"]})
        assert done.status_code == 200, done.text
        logged = agent.post(f"/api/v1/workspaces/{ws}/worklog", json={
            "message": "Measured berths 4 and 5; berth 4 fits the Aurora.", "task": gated["id"],
            "data": {"berths": [4, 5]}})
        assert logged.status_code == 201, logged.text

    olga = open_as(browser, live, owner.user)
    board = olga.go(f"/w/{ws}/tasks/")
    olga.wait_live()
    board.evaluate("window.__sameDocument = true")
    blocked = board.locator("section.column-blocked")
    assert "Done, awaiting approval" in blocked.inner_text() and "Publish the berth plan" in blocked.inner_text()
    assert "Depends on (1 not done)" in board.locator(f"#task-{dependent['id']}").inner_text()

    inbox = olga.context.new_page()
    inbox.goto(f"/w/{ws}/approvals/")
    card = inbox.locator("article.approval", has_text="Draft the berth plan")
    assert card.locator(".preview-body em").inner_text() == "Aurora"
    card.locator("textarea").fill("Berth 4 is right.")
    with live.client(scout.token) as agent:  # the inbox refreshes under the typing hand...
        assert agent.post(f"/api/v1/workspaces/{ws}/approvals", json={"title": "Rename berth 5"}).status_code == 201
    browser.expect(inbox.locator("article.approval", has_text="Rename berth 5")).to_have_count(1, timeout=WAIT_MS)
    assert card.locator("textarea").input_value() == "Berth 4 is right."  # ...and keeps what was typed
    inbox.screenshot(path=str(ARTIFACTS / "10-approvals.png"), full_page=True)
    card.locator("button:has-text('Approve')").click()
    inbox.wait_for_selector(".message.success")

    queued = board.locator("section.column-queued")
    browser.expect(queued).to_contain_text("Publish the berth plan", timeout=WAIT_MS)
    browser.expect(board.locator("section.column-done")).to_contain_text("Draft the berth plan")
    with live.client(scout.token) as agent:
        assert agent.post(f"/api/v1/workspaces/{ws}/tasks/claim", json={}).json()["id"] == dependent["id"]
    claimed_column = board.locator("section.column-claimed")
    browser.expect(claimed_column).to_contain_text("Publish the berth plan", timeout=WAIT_MS)
    assert "Claimed by scout" in claimed_column.inner_text()
    assert re.search(r"Lease: (1 min \d\d s|\d+ s) left", claimed_column.inner_text())
    assert board.evaluate("window.__sameDocument") is True
    olga.shot("11-task-board-live")
    for path, name in ((f"/w/{ws}/tasks/{gated['id']}/", "11b-task"), (f"/w/{ws}/worklog/", "11c-worklog"),
                       (f"/w/{ws}/activity/", "11d-activity"), (f"/w/{ws}/members/", "11e-members")):
        olga.go(path)
        olga.shot(name)
    worklog = olga.go(f"/w/{ws}/worklog/")
    browser.expect(worklog.locator(".verified")).to_contain_text("all 1 entry verified", timeout=WAIT_MS)
    assert "berth 4 fits the Aurora" in worklog.locator("table.worklog").inner_text()
    olga.shot("11c-worklog")
    olga.assert_clean()
    olga.context.close()


# -- search and ask ----------------------------------------------------------------------------------------
def test_search_and_ask_with_citations_that_open_the_cited_version(browser, live, chroma, make_user, make_agent,
                                                                    fast_accounts):
    """GIVEN files indexed by the workers WHEN the owner searches and asks in the browser THEN a hit and
    an answer's citation each open the exact version cited, with the passage marked."""
    owner = make_user("olga")
    scout = make_agent("scout", created_by=owner.user)
    ws = workspace_with_agent(live, owner, scout, intelligence=True)
    cranes = ("# Cranes\n\nThe gantry crane at berth four lifts containers from the ships onto the quay.\n\n"
              "## Maintenance\n\nThe crane's cables are inspected every Monday by the harbour engineers.\n")
    with live.client(scout.token) as agent:
        put_file(agent, ws, "docs/cranes.md", "# Cranes\n\nDraft.\n")
        put_file(agent, ws, "docs/cranes.md", cranes)
        put_file(agent, ws, "docs/tides.md", "# Tides\n\nHigh tide floods the lower quay twice a day.\n")
    with live.client(owner.token) as api:
        def indexed() -> bool:
            body = api.get(f"/api/v1/workspaces/{ws}/index").json()
            states = {row["path"]: row for row in body["results"]}
            return bool(states.get("docs/cranes.md", {}).get("indexed_version") == 2
                        and states.get("docs/tides.md", {}).get("status") == "indexed")
        eventually(indexed, "the workers to index both files", timeout=200)

    olga = open_as(browser, live, owner.user)
    page = olga.go(f"/w/{ws}/search/")
    page.fill("#q", "who inspects the crane cables")
    # A web process loads the embedding model on its first semantic query: that page may take a while.
    page.click("form[role=search] button:has-text('Search')", timeout=MODEL_LOAD_MS)
    page.wait_for_selector("ol.hits li a")
    first = page.locator("ol.hits li").first
    assert first.locator("a").inner_text() == "docs/cranes.md" and "version 2" in first.inner_text()
    olga.shot("12-search-results")
    first.locator("a").click()
    page.wait_for_selector("mark#cited")
    assert f"/w/{ws}/files/docs/cranes.md?version=2" in page.url
    assert "inspected every Monday" in page.locator("mark#cited").inner_text()
    olga.shot("13-search-hit-cited")

    page.goto(f"/w/{ws}/search/")
    page.fill("#question", "When are the crane cables inspected?")
    page.click("button:has-text('Ask')", timeout=MODEL_LOAD_MS)
    page.wait_for_selector(".answer-text a.cite")
    assert "Monday" in page.locator(".answer-text").inner_text()
    olga.shot("14-ask-answer")
    page.locator(".answer-text a.cite").first.click()
    page.wait_for_selector("mark#cited")
    assert "?version=2" in page.url and "docs/cranes.md" in page.url
    assert "Monday" in page.locator("mark#cited").inner_text()
    olga.assert_clean()
    olga.context.close()


# -- pipelines ---------------------------------------------------------------------------------------------
def test_a_pipeline_gantt_chart_fills_in_live(browser, live, make_user, fast_accounts):
    """GIVEN a fan-out of three timed steps and a final step WHEN the owner watches the run's page THEN
    bars appear in the Gantt chart as steps start, stage progress fills, and the finished run shows its
    critical path and the speed-up the engine measured, all without a reload."""
    owner = make_user("olga")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "Pipelines", intelligence=False)
        put_file(api, ws, "inbox/review.md", "The cranes are fast and the quay is clean.")
        spec = {"name": "review", "inputs": {"review": "inbox/review.md"}, "steps": [
            {"id": "rate", "inputs": ["review"], "outputs": ["score"],
             "fan_out": {"agents": [{"agent": "sleep", "params": {"seconds": s}} for s in (2.0, 3.0, 4.0)],
                         "aggregate": "concat"}},
            {"id": "publish", "agent": "copy", "inputs": ["score"], "outputs": ["final"]},
        ]}
        olga = open_as(browser, live, owner.user)
        olga.go(f"/w/{ws}/pipelines/")
        olga.wait_live()
        response = api.post(f"/api/v1/workspaces/{ws}/pipelines", json={"spec": spec})
        assert response.status_code == 201, response.text
        run = response.json()

    runs_page = olga.page
    browser.expect(runs_page.locator("table.runs")).to_contain_text("review", timeout=WAIT_MS)
    page = olga.go(f"/w/{ws}/pipelines/{run['id']}/")
    olga.wait_live()
    page.evaluate("window.__sameDocument = true")
    seen = []

    def finished() -> bool:
        seen.append(page.locator("svg.gantt rect").count())
        return "Running" not in page.locator("#run-title").inner_text()

    eventually(finished, "the run to end", timeout=120)
    with live.client(owner.token) as api:
        detail = api.get(f"/api/v1/workspaces/{ws}/pipelines/{run['id']}").json()
    assert "Succeeded" in page.locator("#run-title").inner_text(), detail
    assert detail["status"] == "succeeded"
    assert page.evaluate("window.__sameDocument") is True
    bars = page.locator("svg.gantt rect")
    assert bars.count() == 5
    assert seen == sorted(seen) and len(set(seen)) >= 2, seen  # it filled in, bar by bar
    assert page.locator("svg.gantt rect.critical").count() >= 3  # a branch, the aggregator, publish
    assert "◆ publish" in page.locator("table.steps").inner_text()
    # The page shows the speed-up the engine measured (sum of step durations over the makespan; on a
    # loaded machine dispatch latency can make it fall below 1, so its value is compared, not bounded).
    shown = re.search(r"([\d.]+)× over running the steps one after another", page.locator("dl.metrics").inner_text())
    assert shown is not None and detail["speedup"] is not None
    assert abs(float(shown.group(1)) - detail["speedup"]) <= 0.006
    work = re.search(r"([\d.]+) s of steps", page.locator("dl.metrics").inner_text())
    assert work is not None and abs(float(work.group(1)) - detail["sum_seconds"]) <= 0.006
    for i in (1, 2):
        progress = page.locator(f"#stage-{i}")
        assert progress.get_attribute("value") == progress.get_attribute("max")
    olga.shot("15-pipeline-gantt")
    olga.assert_clean()
    olga.context.close()


# -- ownership transfer -------------------------------------------------------------------------------------
def test_an_offered_workspace_is_accepted_and_shows_where_it_came_from(browser, live, make_user, fast_accounts):
    """GIVEN an owner WHEN they offer the workspace to another account in the browser and the recipient
    opens the link and accepts THEN the recipient owns it and it shows whom it came from."""
    owner = make_user("olga")
    heir = make_user("hugo")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "Finished report", intelligence=False)
        put_file(api, ws, "output/report.md", "# Report\n\nDone.\n")
    olga = open_as(browser, live, owner.user)
    page = olga.go(f"/w/{ws}/members/")
    page.fill("#t-to", "hugo")
    page.fill("#t-message", "It is all yours, Hugo.")
    page.click("button:has-text('Offer ownership')")
    link = page.locator("#accept-link").input_value()
    assert "/transfers/" in link and "token=" in link
    olga.shot("16-transfer-offered")

    hugo = open_as(browser, live, heir.user)
    listing = hugo.go("/")
    assert "Finished report" in listing.locator("section[aria-labelledby=offers-title]").inner_text()
    accept = hugo.go(link)
    accept.wait_for_selector("button:has-text('Accept ownership')")
    assert "It is all yours, Hugo." in accept.locator("main").inner_text()
    hugo.shot("17-transfer-accept")
    accept.click("button:has-text('Accept ownership')")
    accept.wait_for_selector("ul.tree")
    assert f"/w/{ws}/" in accept.url
    assert "Transferred from olga" in accept.locator(".provenance").inner_text()
    assert accept.locator(".ws-name .badge").inner_text() == "owner"
    hugo.shot("18-transferred-workspace")
    hugo.assert_clean()
    olga.assert_clean()
    hugo.context.close()
    olga.context.close()


# -- the XSS corpus -------------------------------------------------------------------------------------------
HOSTILE_NAMES = [
    "xss/<img src=x onerror=window.__xss=1>.md",
    "xss/<script>window.__xss=2<x/y.txt",
    'xss/" onmouseover="window.__xss=3" x=".md',
    "xss/javascript:window.__xss=4.md",
    "xss/<svg onload=alert(5)>.py",
]
HOSTILE_MARKDOWN = (
    "# Title <script>window.__xss=10</script>\n\n"
    "[click me](javascript:window.__xss=11) <img src=x onerror=\"window.__xss=12\">\n\n"
    "<a href=\"javascript:alert(13)\">raw link</a> <iframe srcdoc=\"<script>parent.__xss=14</script>\"></iframe>\n\n"
    "<svg><script>window.__xss=15</script></svg> <details open ontoggle=\"window.__xss=16\">x</details>\n\n"
    "```html\n<script>window.__xss=17</script>\n```\n"
)
HOSTILE_CODE = "</code></pre><script>window.__xss=20</script>\nx = '<img src=x onerror=alert(21)>'\n"
HOSTILE_TEXT = "<script>window.__xss=30</script><img src=x onerror=alert(31)>"


def test_the_xss_corpus_never_executes_on_any_page(browser, live, make_user, make_agent, fast_accounts):
    """GIVEN file names, Markdown, code, lock reasons, task titles, worklog messages, approval texts and
    comments carrying script WHEN the owner opens every page, and more arrives live while one is open,
    THEN no script runs: no dialog, no flag, no CSP violation, no handler or javascript: URL in the DOM."""
    owner = make_user("olga")
    scout = make_agent("scout", created_by=owner.user)
    ws = workspace_with_agent(live, owner, scout, name=HOSTILE_TEXT)
    with live.client(scout.token) as agent:
        for name in HOSTILE_NAMES:
            content = HOSTILE_CODE if name.endswith(".py") else HOSTILE_MARKDOWN
            assert put_file(agent, ws, quote(name, safe="/"), content).status_code == 201, name
            assert put_file(agent, ws, quote(name, safe="/"), content + "\nv2\n").status_code == 200, name
        lock = agent.post(f"/api/v1/workspaces/{ws}/locks", json={"path": HOSTILE_NAMES[0], "reason": HOSTILE_TEXT})
        assert lock.status_code == 201, lock.text
        task = agent.post(f"/api/v1/workspaces/{ws}/tasks", json={"title": HOSTILE_TEXT,
                                                                  "payload": {"x": HOSTILE_TEXT}}).json()
        assert agent.post(f"/api/v1/workspaces/{ws}/worklog", json={"message": HOSTILE_TEXT, "task": task["id"],
                                                                     "data": {"html": HOSTILE_TEXT}}).status_code == 201
        for title in (HOSTILE_TEXT, "second " + HOSTILE_TEXT):
            approval = agent.post(f"/api/v1/workspaces/{ws}/approvals", json={
                "title": title, "description": HOSTILE_MARKDOWN, "path": HOSTILE_NAMES[0]})
            assert approval.status_code == 201, approval.text
    with live.client(owner.token) as api:
        decided = api.post(f"/api/v1/workspaces/{ws}/approvals/{approval.json()['id']}/decide",
                           json={"decision": "reject", "comment": HOSTILE_TEXT})
        assert decided.status_code == 200, decided.text
        assert api.post(f"/api/v1/workspaces/{ws}/transfers",
                        json={"to": "scout", "message": HOSTILE_TEXT}).status_code == 201

    olga = open_as(browser, live, owner.user)
    first = quote(HOSTILE_NAMES[0], safe="/")
    pages = ["/", f"/w/{ws}/", f"/w/{ws}/files/{first}", f"/w/{ws}/files/{first}?view=source",
             f"/w/{ws}/files/{quote(HOSTILE_NAMES[4], safe='/')}", f"/w/{ws}/history/{first}",
             f"/w/{ws}/diff/{first}?from=1&to=2", f"/w/{ws}/locks/", f"/w/{ws}/tasks/", f"/w/{ws}/tasks/{task['id']}/",
             f"/w/{ws}/worklog/?verify=1", f"/w/{ws}/approvals/", f"/w/{ws}/activity/", f"/w/{ws}/members/",
             f"/w/{ws}/search/?q={quote(HOSTILE_TEXT)}", f"/search/?q={quote(HOSTILE_TEXT)}"]
    for path in pages:
        page = olga.go(path)
        assert page.locator("main").count() == 1, path
        olga.assert_clean()
    for name in HOSTILE_NAMES:  # every name shows as text in the tree
        short = name.split("/")[-1]
        assert olga.go(f"/w/{ws}/").locator("ul.tree a", has_text=short).count() == 1, name
    rendered = olga.go(f"/w/{ws}/files/{first}")
    assert rendered.locator(".content.markdown a:has-text('click me')").get_attribute("href") is None
    olga.shot("19-xss-markdown")

    feed = olga.go(f"/w/{ws}/activity/")
    olga.wait_live()
    with live.client(scout.token) as agent:
        put_file(agent, ws, quote("xss/live <img src=x onerror=window.__xss=40>.md", safe="/"), HOSTILE_MARKDOWN)
    browser.expect(feed.locator("table.feed tbody tr").first).to_contain_text("live <img src=x", timeout=WAIT_MS)
    olga.shot("20-xss-activity-live")
    olga.assert_clean()
    olga.context.close()


def test_a_stranger_gets_not_found_and_no_event_stream(browser, live, make_user, fast_accounts):
    """GIVEN a workspace WHEN a signed-in person who is not a member opens it THEN the page is the 404 page
    and a WebSocket to its events, opened from that page with their session, is refused; signed out, the
    page sends them to sign in."""
    owner, stranger = make_user("olga"), make_user("sam")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "Private", intelligence=False)
    sam = open_as(browser, live, stranger.user)
    response = sam.page.goto(f"/w/{ws}/")
    assert response.status == 404
    assert "Not found" in sam.page.locator("h1").inner_text()
    outcome = sam.page.evaluate("""(ws) => new Promise((resolve) => {
        const socket = new WebSocket(`ws://${location.host}/ws/workspaces/${ws}/events/?after=0`);
        socket.onmessage = () => resolve("message");
        socket.onclose = () => resolve("refused");
    })""", ws)
    assert outcome == "refused"
    with httpx.Client(base_url=live.url) as plain:
        response = plain.get(f"/w/{ws}/", follow_redirects=False)
        assert response.status_code == 302 and response.headers["location"].startswith("/login/")
    sam.context.close()


# -- the client's gap detection ---------------------------------------------------------------------------------
def test_a_gap_in_the_stream_is_refilled_from_the_events_api(browser, live, make_user, make_agent, fast_accounts):
    """GIVEN the tree open on a stream that (mocked here) skips events WHEN it delivers seq N+3 after N THEN
    the page fetches events after N from the API, and the skipped lock event (the only one the tree
    cares about) refreshes the tree; a repeated seq changes nothing."""
    owner = make_user("olga")
    scout = make_agent("scout", created_by=owner.user)
    ws = workspace_with_agent(live, owner, scout)
    with live.client(scout.token) as agent:
        put_file(agent, ws, "src/crane.py", "def lift(weight):\n    return weight * 2\n")
    olga = open_as(browser, live, owner.user)
    sockets: list[Any] = []

    def mock_stream(route: Any) -> None:  # the page's stream goes nowhere but here
        sockets.append(route)

    olga.page.route_web_socket(re.compile(r".*/ws/workspaces/.*"), mock_stream)
    refills: list[str] = []
    olga.page.on("request", lambda request: refills.append(request.url) if "/events?" in request.url else None)
    tree = olga.go(f"/w/{ws}/")
    start = int(tree.evaluate("document.body.dataset.seq"))
    eventually(lambda: sockets, "the page to open its stream", timeout=WAIT_MS / 1000)
    crane = tree.locator("li.file", has_text="crane.py")
    assert crane.locator(".lock-badge").count() == 0

    with live.client(scout.token) as agent:  # start+1: lock.acquired, start+2: worklog.appended
        assert agent.post(f"/api/v1/workspaces/{ws}/locks", json={"path": "src/crane.py"}).status_code == 201
        entry = agent.post(f"/api/v1/workspaces/{ws}/worklog", json={"message": "locked the crane"})
        assert entry.status_code == 201
    with live.client(owner.token) as api:
        events = api.get(f"/api/v1/workspaces/{ws}/events", params={"after": start}).json()["results"]
    assert [e["type"] for e in events] == ["lock.acquired", "worklog.appended"]

    send = sockets[0].send
    browser.runner.call(lambda: send(json.dumps(events[1])))
    browser.expect(crane.locator(".lock-badge")).to_contain_text("Locked by scout", timeout=WAIT_MS)
    assert tree.evaluate("document.body.dataset.lastSeq") == str(start + 2)
    assert [u for u in refills if f"/api/v1/workspaces/{ws}/events?" in u and f"after={start}" in u]
    count = len(refills)
    browser.runner.call(lambda: send(json.dumps(events[0])))  # an old seq: ignored
    time.sleep(1)
    assert len(refills) == count and tree.evaluate("document.body.dataset.lastSeq") == str(start + 2)
    olga.assert_clean()
    olga.context.close()
