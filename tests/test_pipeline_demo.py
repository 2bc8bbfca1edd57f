"""`manage.py seed_demo` (what `make run` seeds on an empty database) and the LLM-backed agents, which
load the embedding model in the workers (slow)."""
from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from agents.models import PipelineRun, PipelineStep, User
from tests.helpers import create_workspace
from tests.test_pipeline_helpers import output, read, step, submit, wait_run
from workspace.models import File, Membership, Workspace
from workspace.models.tasks import Task


def seed(*args: str) -> str:
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def test_seed_demo_seeds_an_empty_database_once(db, make_user):
    """GIVEN an empty database with an operator WHEN seed_demo runs twice THEN the first run creates the
    demo workspace (notes, spec, README), its agent, and a pipeline run whose merged draft waits for
    approval before publishing; the second run changes nothing."""
    admin = make_user("admin", is_superuser=True)
    printed = seed("--no-intelligence")
    ws = Workspace.objects.get()
    assert ws.id in printed and ws.created_by == admin.user and ws.intelligence is False
    paths = set(File.objects.filter(workspace=ws, deleted=False).values_list("path", flat=True))
    assert paths == {"README.md", "specs/content-pipeline.yaml", "notes/heat-pumps.md", "notes/tidal-power.md",
                     "notes/green-hydrogen.md"}
    agent = User.objects.get(username="demo-pipeline")
    assert agent.kind == User.Kind.AGENT and agent.created_by == admin.user
    assert Membership.objects.get(workspace=ws, user=agent).role == "editor"
    run = PipelineRun.objects.get()
    assert run.created_by == agent and run.status == "running"
    keys = list(run.steps.values_list("key", flat=True))
    assert keys[0] == "topics.1.research" and keys[-2:] == ["topics", "publish"]
    assert sorted(keys) == sorted([f"topics.{i}.{s}" for i in (1, 2, 3) for s in ("research", "write", "review")]
                                  + ["topics", "publish"])
    merge = run.steps.select_related("task").get(key="topics")
    assert merge.task.requires_approval and merge.config["validate"] == {"min_words": 100}
    publish = run.steps.get(key="publish")
    assert publish.config["publish"] == {"article": "output/article.md"}
    assert run.plan["waves"][0] == ["topics.1.research"] and run.plan["waves"][-1] == ["publish"]
    assert Task.objects.filter(workspace=ws).count() == 11

    assert "nothing to do" in seed("--no-intelligence")
    assert Workspace.objects.count() == 1 and PipelineRun.objects.count() == 1 and Task.objects.count() == 11


def test_seed_demo_does_nothing_when_any_workspace_exists(db, make_user):
    """GIVEN a database that already has a workspace WHEN seed_demo runs THEN it creates nothing."""
    from workspace.services.workspaces import workspace_create

    workspace_create(user=make_user("someone").user, name="mine", intelligence=False)
    assert "nothing to do" in seed()
    assert Workspace.objects.count() == 1 and not PipelineRun.objects.exists()
    assert not User.objects.filter(username="demo-pipeline").exists()


def test_seed_demo_creates_a_demo_account_without_an_operator(db):
    """GIVEN an empty database without any superuser WHEN seed_demo runs THEN the demo is owned by a new
    `demo` account."""
    seed("--no-intelligence")
    assert Workspace.objects.get().created_by.username == "demo"
    assert PipelineStep.objects.count() == 11


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_demo_pipeline_runs_to_its_approval_and_publishes_once_approved(live, make_user):
    """GIVEN the seeded demo on the live workers WHEN the merged draft is ready THEN an approval waits for
    the operator and nothing is published; once approved, the article is published to output/article.md
    with a section per topic."""
    admin = make_user("admin", is_superuser=True)
    seed("--no-intelligence")
    ws = Workspace.objects.get().id
    run_id = PipelineRun.objects.get().id
    with live.client(admin.token) as api:
        waiting = wait_run(api, ws, run_id, timeout=600,
                           until=lambda d: step(d, "topics")["approval"] is not None or d["finished_at"])
        assert waiting["status"] == "running", [(s["key"], s["status"], s["error"]) for s in waiting["steps"]]
        assert step(waiting, "publish")["status"] == "blocked"
        assert api.get(f"/api/v1/workspaces/{ws}/files/output/article.md").status_code == 404
        approval = step(waiting, "topics")["approval"]
        decided = api.post(f"/api/v1/workspaces/{ws}/approvals/{approval}/decide",
                           json={"decision": "approve", "comment": "Ship it."})
        assert decided.status_code == 200, decided.text
        detail = wait_run(api, ws, run_id, timeout=120)
        assert detail["status"] == "succeeded", detail
        article = read(api, ws, "output/article.md")
        assert article.startswith("# Three technologies for a cleaner energy system")
        for heading in ("## Heat Pumps", "## Tidal Power", "## Green Hydrogen"):
            assert heading in article
        assert article.count("_Reviewed:") == 3


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_fan_out_summary_goes_through_the_llm_provider(live, make_user):
    """GIVEN two branches writing notes and a `summary` aggregator WHEN it runs with the default offline
    provider THEN the summary quotes the branches' sentences with citations and lists its sources."""
    owner = make_user("sue")
    with live.client(owner.token) as api:
        ws = create_workspace(api, "summary", intelligence=False)
        spec = {"name": "sum", "steps": [{"id": "notes", "outputs": ["digest"], "fan_out": {
            "agents": [{"agent": "sleep", "params": {"seconds": 0, "text": "Heat pumps move heat instead of making "
                                                      "it. They deliver three units of heat per unit of power."}},
                       {"agent": "sleep", "params": {"seconds": 0, "text": "Tidal power is predictable years ahead. "
                                                      "Sea water is much denser than air."}}],
            "aggregate": {"agent": "summary", "params": {"instruction": "How efficient are heat pumps?"}}}}]}
        detail = wait_run(api, ws, submit(api, ws, spec)["id"], timeout=600)
        assert detail["status"] == "succeeded", detail
        digest = output(api, ws, detail, "notes", "digest")
        assert "heat" in digest.lower() and "[1]" in digest
        assert "Sources:\n[1] pipelines/" in digest
