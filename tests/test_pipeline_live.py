"""Pipelines end to end on real RQ workers: the live server (two workers, the sweeper) runs the steps
through the same services an HTTP agent uses. Each pattern, the failure policies (timeout, retry,
validation), create-only outputs, cancellation and `manage.py run_pipeline`."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import create_workspace, put_file, wait_workers_idle
from tests.test_pipeline_helpers import get_run, output, read, step, submit, task, tree, wait_run, when


@pytest.fixture
def owner(make_user):
    return make_user("petra")


@pytest.fixture
def ws(live, api):
    # Several tests assert that two steps ran side by side on the two workers: start each test from
    # an idle pool, not one still finishing an earlier test's job.
    wait_workers_idle(live)
    return create_workspace(api, "pipelines", intelligence=False)


@pytest.fixture
def root_api(live, make_user):
    """An operator (superuser): its runs may use `command` steps."""
    root = make_user("root", is_superuser=True)
    with live.client(root.token) as client:
        yield client


def events_of(api: httpx.Client, ws: str, kind: str) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/workspaces/{ws}/events", params={"type": kind, "limit": 500})
    assert response.status_code == 200, response.text
    return response.json()["results"]


# -- the three patterns -------------------------------------------------------------------------------
def test_fan_out_then_majority_vote_and_weighted_merge(api, ws):
    """GIVEN a review and a spec that fans it out to three classifiers (majority vote) and to two weighted
    recommenders (weighted merge) WHEN it runs on the workers THEN every branch reads the same input, the
    vote and the ranking are right, and each step is a done task on the board."""
    put_file(api, ws, "inbox/review.md", "The battery is great and the screen is great, but shipping was slow.")
    classifier = {"agent": "python", "params": {"function": "keyword_label",
                                                "labels": {"positive": ["great"], "negative": ["slow"]}}}
    pessimist = {"agent": "python", "params": {"function": "keyword_label",
                                               "labels": {"positive": ["excellent"], "negative": ["slow"]}}}
    spec = {"name": "fan", "inputs": {"review": "inbox/review.md"}, "steps": [
        {"id": "sentiment", "inputs": ["review"], "outputs": ["verdict"],
         "fan_out": {"agents": [classifier, pessimist, classifier], "aggregate": "vote"}},
        {"id": "picks", "inputs": ["review"], "outputs": ["ranking"],
         "fan_out": {"agents": [
             {"agent": "python", "weight": 3, "params": {"function": "keyword_scores",
                                                         "items": {"battery": ["battery"], "shipping": ["shipping", "fast"]}}},
             {"agent": "python", "weight": 1, "params": {"function": "keyword_scores",
                                                         "items": {"battery": ["charge"], "shipping": ["slow"]}}}],
                     "aggregate": {"agent": "weighted_merge", "params": {"top": 2}}}},
    ]}
    run = submit(api, ws, spec)
    detail = wait_run(api, ws, run["id"])
    assert detail["status"] == "succeeded", detail
    verdict = json.loads(output(api, ws, detail, "sentiment", "verdict"))
    assert verdict["label"] == "positive" and verdict["votes"] == {"positive": 2.0, "negative": 1.0}
    assert [b["from"] for b in verdict["ballots"]] == ["sentiment.1", "sentiment.2", "sentiment.3"]
    ranking = json.loads(output(api, ws, detail, "picks", "ranking"))["ranking"]
    # battery: (3*1 + 1*0)/4 = 0.75; shipping: (3*0.5 + 1*1)/4 = 0.625
    assert ranking == [{"item": "battery", "score": 0.75, "support": 2}, {"item": "shipping", "score": 0.625, "support": 2}]
    for key in ("sentiment.1", "sentiment.2", "sentiment.3"):
        assert step(detail, key)["status"] == "done"
        assert task(api, ws, step(detail, key)["task"])["result"]["pipeline"] == run["id"]
    board = api.get(f"/api/v1/workspaces/{ws}/tasks", params={"limit": 100}).json()["results"]
    assert len(board) == detail["steps_total"] == 7 and {t["status"] for t in board} == {"done"}
    assert detail["speedup"] > 0 and detail["makespan_seconds"] > 0


def test_staged_pipeline_overlaps_items_across_stages(api, ws):
    """GIVEN three items through two stages, each stage taking one item at a time WHEN it runs on two
    workers THEN item 2 is in stage 1 while item 1 is in stage 2, a stage never holds two items at
    once, and the collector joins the items in order."""
    spec = {"name": "staged", "steps": [{"id": "docs", "outputs": ["book"], "stages": {
        "items": ["one", "two", "three"], "concurrency": 1,
        "steps": [{"id": "draft", "agent": "sleep", "params": {"seconds": 0.8, "text": "draft of {item}"}},
                  {"id": "edit", "agent": "sleep", "params": {"seconds": 0.8, "text": "edited {item} (#{index})"}}]}}]}
    detail = wait_run(api, ws, submit(api, ws, spec)["id"])
    assert detail["status"] == "succeeded", detail

    def span(key: str) -> tuple[Any, Any]:
        s = step(detail, key)
        return when(s["started_at"]), when(s["ended_at"])

    draft2, edit1 = span("docs.2.draft"), span("docs.1.edit")
    assert draft2[0] < edit1[1] and edit1[0] < draft2[1], "item 2's draft overlaps item 1's edit"
    for stage in ("draft", "edit"):
        for i in (1, 2):
            assert span(f"docs.{i}.{stage}")[1] <= span(f"docs.{i + 1}.{stage}")[0]
    assert output(api, ws, detail, "docs", "book") == "edited one (#1)\n\nedited two (#2)\n\nedited three (#3)\n"
    assert detail["critical_path"]["steps"][-1] == "docs"
    assert detail["speedup"] == pytest.approx(detail["sum_seconds"] / detail["makespan_seconds"], abs=1e-3)


def test_competition_first_good_wins_stops_the_running_attempt(api, ws):
    """GIVEN three attempts where the first is quick and good and the others slow WHEN the first scores
    good enough THEN it wins at once: the running attempt is stopped and the queued one cancelled,
    the judge keeps the winner's output, and the run does not wait for the slow ones."""
    spec = {"name": "race", "steps": [{"id": "headline", "agent": "sleep", "outputs": ["title"], "compete": {
        "attempts": 3, "first_good_wins": True, "good_enough": 1.0,
        "scorer": {"name": "keywords", "params": {"keywords": ["solar", "cheap"]}},
        "vary": [{"seconds": 1.5, "text": "Solar is cheap"}, {"seconds": 20, "text": "Solar"},
                 {"seconds": 20, "text": "cheap"}]}}]}
    started = time.monotonic()
    detail = wait_run(api, ws, submit(api, ws, spec)["id"], timeout=30)
    assert time.monotonic() - started < 15
    assert detail["status"] == "succeeded", detail
    assert output(api, ws, detail, "headline", "title") == "Solar is cheap\n"
    judge = step(detail, "headline")
    assert judge["winner"] == "headline.try1" and step(detail, "headline.try1")["score"] == 1.0
    second, third = step(detail, "headline.try2"), step(detail, "headline.try3")
    assert second["status"] == third["status"] == "cancelled"
    assert "won the competition" in second["cancel_reason"]
    # The second attempt had started (two workers) and was stopped well before its 20 seconds.
    assert second["started_at"] is not None
    assert (when(second["ended_at"]) - when(second["started_at"])).total_seconds() < 5
    assert third["started_at"] is None
    result = task(api, ws, judge["task"])["result"]
    assert result["winner"] == "headline.try1" and result["first_good_wins"] is True


def test_competition_without_first_good_keeps_the_best_score(api, ws):
    """GIVEN three attempts that all finish WHEN the judge runs THEN it keeps the highest-scoring one."""
    spec = {"name": "best", "steps": [{"id": "pick", "agent": "sleep", "outputs": ["answer"], "compete": {
        "attempts": 3, "scorer": {"name": "keywords", "params": {"keywords": ["wind", "tide", "sun"]}},
        "vary": [{"seconds": 0.1, "text": "wind"}, {"seconds": 0.1, "text": "wind tide sun"},
                 {"seconds": 0.1, "text": "wind tide"}]}}]}
    detail = wait_run(api, ws, submit(api, ws, spec)["id"])
    assert detail["status"] == "succeeded", detail
    assert [step(detail, f"pick.try{i}")["score"] for i in (1, 2, 3)] == pytest.approx([1 / 3, 1.0, 2 / 3], abs=1e-4)
    assert output(api, ws, detail, "pick", "answer") == "wind tide sun\n"
    assert step(detail, "pick")["winner"] is None
    assert task(api, ws, step(detail, "pick")["task"])["result"]["winner"] == "pick.try2"


# -- failure policies -----------------------------------------------------------------------------------
def test_a_command_that_times_out_is_killed_and_retried(root_api, ws_root):
    """GIVEN a command step that would run for a minute, a 1 s timeout and one retry WHEN it runs THEN
    each attempt's process is killed at the timeout, the step is retried once with back-off, then
    fails with its error log under failed/ and its dependents cancelled."""
    api, ws = root_api, ws_root
    pids = Path(os.environ["SWITCHYARD_DATA_DIR"]) / f"pids-{ws}"
    spec = {"name": "slow", "steps": [
        {"id": "crunch", "agent": "command", "timeout": 1, "retries": 1, "outputs": ["x"],
         "params": {"argv": ["sh", "-c", 'echo $$ >> "$PIDS"; exec sleep 60'], "env": {"PIDS": str(pids)}}},
        {"id": "after", "agent": "sleep", "params": {"seconds": 0}, "inputs": ["x"]},
    ]}
    started = time.monotonic()
    detail = wait_run(api, ws, submit(api, ws, spec)["id"], timeout=40)
    assert time.monotonic() - started < 30
    crunch = step(detail, "crunch")
    assert detail["status"] == "failed" and crunch["status"] == "failed" and crunch["attempts"] == 2
    assert "timed out after 1s" in crunch["error"]
    assert step(detail, "after")["status"] == "cancelled"
    history = task(api, ws, crunch["task"])["history"]
    assert [h["attempt"] for h in history] == [1, 2] and all("timed out" in h["error"] for h in history)
    log = read(api, ws, f"failed/{crunch['task']}.log")
    assert "attempts: 2 of 2" in log and "timed out" in log
    killed = [int(p) for p in pids.read_text().split()]
    assert len(killed) == 2
    for pid in killed:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.fixture
def ws_root(root_api):
    return create_workspace(root_api, "operator", intelligence=False)


def test_a_python_agent_past_its_timeout_is_failed_by_the_watchdog(api, ws):
    """GIVEN a Python agent that would run for a minute and a 1 s timeout with no retry WHEN it runs THEN
    the watchdog fails the task after about a second instead of waiting for it."""
    spec = {"name": "watchdog", "steps": [{"id": "nap", "agent": "sleep", "timeout": 1, "retries": 0,
                                           "params": {"seconds": 60}}]}
    started = time.monotonic()
    detail = wait_run(api, ws, submit(api, ws, spec)["id"], timeout=30)
    assert time.monotonic() - started < 15
    nap = step(detail, "nap")
    assert nap["status"] == "failed" and nap["attempts"] == 1 and "timed out after 1s" in nap["error"]
    assert nap["duration_seconds"] < 5
    assert "failed/" + nap["task"] + ".log" in tree(api, ws, "failed/")


def test_a_failing_step_is_retried_with_jittered_back_off_then_succeeds(api, ws):
    """GIVEN a step whose first two attempts fail and two retries WHEN it runs THEN attempt 3 succeeds,
    each retry waited out its back-off (at least half of 1 s, then of 2 s), and the worklog tells the
    story attempt by attempt."""
    spec = {"name": "flaky", "steps": [{"id": "wobbly", "agent": "sleep", "retries": 2, "outputs": ["out"],
                                        "params": {"seconds": 0, "fail_attempts": [1, 2], "text": "steady"}}]}
    detail = wait_run(api, ws, submit(api, ws, spec)["id"], timeout=40)
    wobbly = step(detail, "wobbly")
    assert detail["status"] == "succeeded" and wobbly["attempts"] == 2
    assert output(api, ws, detail, "wobbly", "out") == "steady\n"
    history = task(api, ws, wobbly["task"])["history"]
    assert [h["reason"] for h in history] == ["failed", "failed"]
    claims = sorted(when(e["at"]) for e in events_of(api, ws, "task.claimed") if e["target"] == wobbly["task"])
    ends = [when(h["ended_at"]) for h in history]
    assert len(claims) == 3
    assert (claims[1] - ends[0]).total_seconds() >= 0.45 and (claims[2] - ends[1]).total_seconds() >= 0.95
    log = [e["message"] for e in api.get(f"/api/v1/workspaces/{ws}/worklog", params={"task": wobbly["task"]})
           .json()["results"]]
    assert len(log) == 3 and "attempt 1 failed" in log[0] and "attempt 2 failed" in log[1] and "done" in log[2]


def test_a_research_summary_that_fails_validation_never_reaches_the_writer(api, ws):
    """GIVEN fetch -> research (must be 20 words or more) -> write, and a research step that only ever
    produces three words WHEN it runs THEN research fails after its retries, the writer is cancelled
    without ever being claimed, and research's input moves to failed/<task>/ beside its log."""
    spec = {"name": "gated", "steps": [
        {"id": "fetch", "agent": "sleep", "params": {"seconds": 0, "text": "raw notes here"}, "outputs": ["notes"]},
        {"id": "research", "agent": "sleep", "params": {"seconds": 0, "text": "far too short"}, "inputs": ["notes"],
         "outputs": ["summary"], "retries": 1, "validate": {"min_words": 20}},
        {"id": "write", "agent": "sleep", "params": {"seconds": 0}, "inputs": ["summary"], "outputs": ["article"]},
    ]}
    detail = wait_run(api, ws, submit(api, ws, spec)["id"], timeout=40)
    research, write = step(detail, "research"), step(detail, "write")
    assert detail["status"] == "failed"
    assert research["status"] == "failed" and research["attempts"] == 2
    assert "validation failed: summary has 3 words, fewer than 20" in research["error"]
    assert write["status"] == "cancelled" and write["started_at"] is None and write["outputs"] == {}
    assert not [e for e in events_of(api, ws, "task.claimed") if e["target"] == write["task"]]
    assert not any(p.endswith("/summary") for p in tree(api, ws, "pipelines/"))
    fetched = step(detail, "fetch")["outputs"]["notes"]["path"]

    def moved() -> bool:
        return f"failed/{research['task']}/notes" in tree(api, ws, "failed/")

    deadline = time.monotonic() + 15
    while not moved() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert moved(), tree(api, ws)
    assert read(api, ws, f"failed/{research['task']}/notes") == "raw notes here\n"
    assert fetched not in tree(api, ws, "pipelines/")  # moved, not copied: only research read it
    assert f"failed/{research['task']}.log" in tree(api, ws, "failed/")


# -- create-only outputs ---------------------------------------------------------------------------------
def test_publishing_never_overwrites_what_is_there(api, ws):
    """GIVEN output/report.md already written by someone WHEN a run publishes different content there
    THEN the step fails at once (no retry can help) with already_exists and the file is unchanged;
    publishing identical content is an idempotent success."""
    put_file(api, ws, "output/report.md", "the human's report\n")
    clash = {"name": "clash", "steps": [{"id": "report", "agent": "sleep", "retries": 2, "outputs": ["r"],
                                         "params": {"seconds": 0, "text": "the pipeline's report"},
                                         "publish": {"r": "output/report.md"}}]}
    detail = wait_run(api, ws, submit(api, ws, clash)["id"])
    report = step(detail, "report")
    assert detail["status"] == "failed" and report["status"] == "failed" and report["attempts"] == 1
    assert "already_exists" in report["error"]
    assert read(api, ws, "output/report.md") == "the human's report\n"
    history = api.get(f"/api/v1/workspaces/{ws}/history/output/report.md").json()["results"]
    assert len(history) == 1

    same = {"name": "same", "steps": [{"id": "report", "agent": "sleep", "outputs": ["r"],
                                       "params": {"seconds": 0, "text": "the human's report"},
                                       "publish": {"r": "output/report.md"}}]}
    detail = wait_run(api, ws, submit(api, ws, same)["id"])
    assert detail["status"] == "succeeded", detail
    assert step(detail, "report")["published"]["r"]["reused"] is True
    assert len(api.get(f"/api/v1/workspaces/{ws}/history/output/report.md").json()["results"]) == 1


def test_each_step_writes_under_its_own_task_id_with_a_fencing_token(api, ws):
    """GIVEN two runs of the same spec WHEN both run THEN their outputs land on different paths that name
    each task, every write carried the step's lock token, and the locks are released afterwards."""
    spec = {"name": "twins", "steps": [{"id": "a", "agent": "sleep", "params": {"seconds": 0, "text": "same"},
                                        "outputs": ["x"]}]}
    first, second = submit(api, ws, spec), submit(api, ws, spec)
    paths = []
    for run in (first, second):
        detail = wait_run(api, ws, run["id"])
        written = step(detail, "a")["outputs"]["x"]
        assert written["path"] == f"pipelines/{run['id']}/{step(detail, 'a')['task']}/x"
        paths.append(written["path"])
    assert paths[0] != paths[1]
    writes = [e for e in events_of(api, ws, "file.written") if e["target"] in paths]
    assert len(writes) == 2 and all(isinstance(e["data"]["lock_token"], int) for e in writes)
    assert api.get(f"/api/v1/workspaces/{ws}/locks").json()["results"] == []


# -- cancellation and the command ---------------------------------------------------------------------------
def test_cancelling_a_running_run_stops_its_running_step(api, ws):
    """GIVEN a run whose first step is running WHEN its creator cancels the run THEN the running step is
    stopped within a few seconds, every step is cancelled, and the run records its end."""
    spec = {"name": "long", "steps": [
        {"id": "a", "agent": "sleep", "params": {"seconds": 30}, "outputs": ["x"]},
        {"id": "b", "agent": "sleep", "params": {"seconds": 0}, "inputs": ["x"]}]}
    run = submit(api, ws, spec)
    wait_run(api, ws, run["id"], until=lambda d: step(d, "a")["status"] == "claimed", timeout=30)
    response = api.post(f"/api/v1/workspaces/{ws}/pipelines/{run['id']}/cancel")
    assert response.status_code == 200, response.text
    detail = wait_run(api, ws, run["id"], timeout=20)
    assert detail["status"] == "cancelled" and {s["status"] for s in detail["steps"]} == {"cancelled"}
    locks = api.get(f"/api/v1/workspaces/{ws}/locks").json()["results"]
    deadline = time.monotonic() + 10
    while locks and time.monotonic() < deadline:  # the stopped step gives its lock back
        time.sleep(0.2)
        locks = api.get(f"/api/v1/workspaces/{ws}/locks").json()["results"]
    assert locks == []


def test_run_pipeline_command_submits_and_waits(live, owner, api, ws, tmp_path, capsys):
    """GIVEN a YAML spec file WHEN `manage.py run_pipeline FILE --workspace WS --wait` runs THEN the run is
    created as the workspace's owner, the workers run it, and the command prints its measurements."""
    from django.core.management import call_command

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: cli\nsteps:\n  - {id: a, agent: sleep, params: {seconds: 0.2}, outputs: [x]}\n"
                    "  - {id: b, agent: sleep, params: {seconds: 0.2}, inputs: [x]}\n")
    call_command("run_pipeline", str(spec), "--workspace", ws, "--wait", "--timeout", "60")
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])
    assert summary["status"] == "succeeded" and summary["counts"] == {"done": 2}
    assert summary["critical_path"]["steps"] == ["a", "b"]
    run = get_run(api, ws, summary["id"])
    assert run["created_by"] == owner.username and run["name"] == "cli"
