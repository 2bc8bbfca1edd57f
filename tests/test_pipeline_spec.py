"""Pipeline specs through the API, in-process (no workers needed): the checks that refuse a bad spec
with a 400 naming the problem (and create nothing), the expansion of the patterns into tasks with
dependencies, and the list endpoint's query count."""
from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import PipelineRun, PipelineStep
from workspace.models.tasks import Task, TaskDependency


@pytest.fixture
def space(db, make_user):
    """A workspace with one note, its owner's API client, and the owner."""
    from workspace.access import workspace_for
    from workspace.services.files import file_write
    from workspace.services.workspaces import workspace_create

    owner = make_user("pia")
    ws = workspace_create(user=owner.user, name="specs", intelligence=False)
    file_write(access=workspace_for(owner.user, ws.id), path="notes/a.md", content=b"alpha notes")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.token}")
    return ws.id, client, owner


def post(client: APIClient, ws: str, spec: Any, **extra: Any) -> Any:
    # json.dumps escapes every non-ASCII character, lone surrogates included, as a client may.
    return client.post(f"/api/v1/workspaces/{ws}/pipelines", data=json.dumps({"spec": spec}),
                       content_type="application/json", **extra)


def assert_refused(response: Any, code: str) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.content[:500])
    body = response.json()["error"]
    assert body["code"] == code, body
    assert body["message"]
    return body


def sleep(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "agent": "sleep", "params": {"seconds": 0}, **fields}


@pytest.mark.parametrize(("spec", "code", "named"), [
    ({"steps": [{"id": "a", "agent": "summon"}]}, "unknown_agent", "summon"),
    ({"steps": [sleep("a", inputs=["y"], outputs=["x"]), sleep("b", inputs=["x"], outputs=["y"])]},
     "dependency_cycle", "a -> b -> a"),
    ({"steps": [sleep("a", depends_on=["b"]), sleep("b", depends_on=["a"])]}, "dependency_cycle", "b"),
    ({"steps": [sleep("a", inputs=["ghost"])]}, "missing_input", "ghost"),
    ({"steps": [sleep("a", inputs=["file:notes/missing.md"])]}, "missing_input", "notes/missing.md"),
    ({"inputs": {"n": "notes/nope.md"}, "steps": [sleep("a", inputs=["n"])]}, "missing_input", "notes/nope.md"),
    ({"steps": [sleep("a", outputs=["x"]), sleep("b", outputs=["x"])]}, "output_collision", "'x'"),
    ({"steps": [sleep("a", outputs=["x"], publish={"x": "out/r.md"}),
                sleep("b", outputs=["y"], publish={"y": "out/r.md"})]}, "output_collision", "out/r.md"),
    ({"inputs": {"x": "notes/a.md"}, "steps": [sleep("a", outputs=["x"])]}, "output_collision", "run input"),
    ({"steps": [sleep("a", depends_on=["nobody"])]}, "unknown_step", "nobody"),
    ({"steps": [{"id": "a", "fan_out": {"agents": ["sleep", "oracle"]}}]}, "unknown_agent", "oracle"),
    ({"steps": [{"id": "a", "agent": "sleep", "compete": {"attempts": 2, "scorer": "vibes"}}]}, "unknown_scorer",
     "vibes"),
    ({"steps": [{"id": "a", "agent": "python", "params": {"function": "nope"}}]}, "unknown_function", "nope"),
    ({"steps": [sleep("a", rate_limit="mystery")]}, "unknown_rate_limit", "mystery"),
    ({"steps": [sleep("a", timeout=-1)]}, "invalid_spec", "timeout"),
    ({"steps": [sleep("a", colour="red")]}, "invalid_spec", "colour"),
    ({"steps": [sleep("a", publish={"a": "../etc/passwd"}, outputs=["a"])]}, "invalid_path", "'..'"),
    ({"steps": []}, "invalid_spec", "steps"),
    ("steps: [", "invalid_spec", "YAML"),
    ("steps: &s [*s]", "invalid_spec", "aliases"),
    ([1, 2], "invalid_spec", "spec"),
    ({"steps": [{"id": "a", "agent": "command", "params": {"argv": ["rm", "-rf", "/"]}}]}, "command_not_allowed", "rm"),
    ({"steps": [sleep("a", title="nul\u0000here")]}, "invalid_spec", "NUL"),
    ({"steps": [{"id": "a", "agent": "sleep", "params": {"text": "half \ud800 a pair"}}]}, "invalid_spec", "Unicode"),
])
def test_bad_specs_are_refused_naming_the_problem(space, spec, code, named):
    """GIVEN a workspace WHEN a spec with a problem is submitted THEN 400 with a code and a message that
    names the problem, and no run or task is created."""
    ws, client, _ = space
    body = assert_refused(post(client, ws, spec), code)
    assert named in str(body), body
    assert not PipelineRun.objects.exists()
    assert not Task.objects.filter(workspace_id=ws).exists()


def test_a_yaml_spec_expands_into_tasks_with_dependencies_waves_and_a_critical_path(space):
    """GIVEN a YAML spec with a plain step, a fan-out, a competition and a staged pipeline WHEN it is
    submitted THEN every expanded step is a task on the board with the plan's dependencies (the judge
    held back by the engine, not the task graph), and the run reports its waves and critical path."""
    ws, client, _ = space
    spec = """
name: shapes
inputs: {notes: notes/a.md}
steps:
  - {id: research, agent: sleep, params: {seconds: 2}, inputs: [notes], outputs: [facts]}
  - id: label
    inputs: [facts]
    outputs: [verdict]
    fan_out: {agents: [sleep, sleep, {agent: sleep, weight: 2}], aggregate: vote}
  - id: title
    agent: sleep
    params: {seconds: 2}
    inputs: [facts]
    compete: {attempts: 2, scorer: length}
  - id: topics
    outputs: [article]
    stages:
      items: [x, y]
      steps:
        - {id: draft, agent: sleep, params: {seconds: 1}}
        - {id: edit, agent: sleep, params: {seconds: 1}}
"""
    response = post(client, ws, spec)
    assert response.status_code == 201, response.content
    run = response.json()
    keys = [s["key"] for s in run["steps"]]
    assert keys == ["research", "label.1", "label.2", "label.3", "label", "title.try1", "title.try2", "title",
                    "topics.1.draft", "topics.1.edit", "topics.2.draft", "topics.2.edit", "topics"]
    assert run["waves"] == [["research", "topics.1.draft"],
                            ["label.1", "label.2", "label.3", "title.try1", "title.try2", "topics.1.edit",
                             "topics.2.draft"],
                            ["label", "title", "topics.2.edit"], ["topics"]]
    # Estimated until measured: research (2) -> title attempt (2) -> judge (1).
    assert run["critical_path"] == {"steps": ["research", "title.try1", "title"], "seconds": 5.0, "estimated": True}
    assert run["status"] == "running" and run["steps_total"] == 13
    steps = {s.key: s for s in PipelineStep.objects.select_related("task").filter(run_id=run["id"])}
    deps = {(link.task_id, link.depends_on_id) for link in TaskDependency.objects.filter(task__workspace_id=ws)}

    def depends(a: str, b: str) -> bool:
        return (steps[a].task_id, steps[b].task_id) in deps

    assert depends("label.1", "research") and depends("label", "label.3") and depends("topics.2.draft", "topics.1.draft")
    assert depends("topics.2.edit", "topics.1.edit") and depends("topics", "topics.2.edit")
    assert depends("title", "research") and not depends("title", "title.try1")
    assert {s.task.queue for s in steps.values()} == {"pipeline"}
    assert steps["label.3"].config["weight"] == 2.0 and steps["label"].task.kind == "pipeline.vote"
    assert steps["research"].task.status == "queued" and steps["label"].task.status == "blocked"


def test_publish_paths_and_items_are_templated_and_stage_ids_must_be_unique(space):
    """GIVEN specs using {run} in a publish path and {item} in a stage's inputs WHEN submitted THEN the
    path carries the run id and each item reads its own file; two stages with one id are refused."""
    ws, client, owner = space
    from workspace.access import workspace_for
    from workspace.services.files import file_write

    file_write(access=workspace_for(owner.user, ws), path="notes/b.md", content=b"beta")
    run = post(client, ws, {"steps": [
        {"id": "s", "outputs": ["all"], "publish": {"all": "out/{run}.md"},
         "stages": {"items": ["a", "b"], "steps": [{"id": "read", "agent": "sleep",
                                                     "inputs": ["file:notes/{item}.md"]}]}}]}).json()
    collector = PipelineStep.objects.get(run_id=run["id"], key="s")
    assert collector.config["publish"] == {"all": f"out/{run['id']}.md"}
    assert PipelineStep.objects.get(run_id=run["id"], key="s.2.read").config["inputs"] == ["file:notes/b.md"]
    assert_refused(post(client, ws, {"steps": [{"id": "s", "stages": {"items": [1], "steps": [
        {"id": "a", "agent": "sleep"}, {"id": "a", "agent": "sleep"}]}}]}), "invalid_spec")


def test_viewers_cannot_submit_and_strangers_do_not_see_runs(space, make_user):
    """GIVEN a viewer and a stranger WHEN they submit or read runs THEN the viewer gets 403 and the
    stranger 404, as for every workspace resource."""
    ws, client, _ = space
    run = post(client, ws, {"steps": [sleep("a")]}).json()
    from workspace.access import workspace_for
    from workspace.services.workspaces import member_set

    viewer, stranger = make_user("vic"), make_user("sam")
    member_set(access=workspace_for(space[2].user, ws), username="vic", role="viewer")
    for account, status in ((viewer, 403), (stranger, 404)):
        other = APIClient()
        other.credentials(HTTP_AUTHORIZATION=f"Bearer {account.token}")
        assert post(other, ws, {"steps": [sleep("a")]}).status_code == status
        assert other.get(f"/api/v1/workspaces/{ws}/pipelines/{run['id']}").status_code == (200 if status == 403
                                                                                           else 404)
        assert other.post(f"/api/v1/workspaces/{ws}/pipelines/{run['id']}/cancel").status_code == status
    assert client.get(f"/api/v1/workspaces/{ws}/pipelines/plr_nope").status_code == 404


def test_resubmitting_with_the_same_idempotency_key_returns_the_first_run(space):
    """GIVEN a submission with an Idempotency-Key WHEN it is retried THEN the same run comes back and
    no second run or task is created."""
    ws, client, _ = space
    first = post(client, ws, {"steps": [sleep("a")]}, HTTP_IDEMPOTENCY_KEY="run-1")
    again = post(client, ws, {"steps": [sleep("a")]}, HTTP_IDEMPOTENCY_KEY="run-1")
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert PipelineRun.objects.count() == 1 and Task.objects.filter(workspace_id=ws).count() == 1


def test_cancelling_a_run_cancels_its_unfinished_steps(space):
    """GIVEN a submitted run WHEN its creator cancels it THEN every step's task is cancelled, the run is
    cancelled, and a second cancel is a 409."""
    ws, client, _ = space
    run = post(client, ws, {"steps": [sleep("a", outputs=["x"]), sleep("b", inputs=["x"])]}).json()
    response = client.post(f"/api/v1/workspaces/{ws}/pipelines/{run['id']}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
    assert {s["status"] for s in response.json()["steps"]} == {"cancelled"}
    assert response.json()["finished_at"] is not None
    assert client.post(f"/api/v1/workspaces/{ws}/pipelines/{run['id']}/cancel").status_code == 409


def test_the_run_list_is_paginated_newest_first_in_a_fixed_number_of_queries(space, django_assert_max_num_queries):
    """GIVEN 12 runs WHEN the list is read in pages THEN newest first, with step counts, and the number
    of queries does not grow with the runs."""
    ws, client, _ = space
    for i in range(12):
        assert post(client, ws, {"name": f"r{i}", "steps": [sleep("a", outputs=["x"]),
                                                            sleep("b", inputs=["x"])]}).status_code == 201
    with django_assert_max_num_queries(6):
        page = client.get(f"/api/v1/workspaces/{ws}/pipelines", {"limit": 10}).json()
    assert [r["name"] for r in page["results"]] == [f"r{i}" for i in range(11, 1, -1)]
    assert page["results"][0]["counts"] == {"queued": 1, "blocked": 1} and page["results"][0]["steps_total"] == 2
    rest = client.get(f"/api/v1/workspaces/{ws}/pipelines", {"limit": 10, "cursor": page["next"]}).json()
    assert [r["name"] for r in rest["results"]] == ["r1", "r0"] and rest["next"] is None


def _json_values():
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                        st.sampled_from(["sleep", "vote", "llm", "python", "command", "x", "a", "file:notes/a.md",
                                         "{item}", "{run}", "out/{run}.md", "../x"]))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=12)


def _specs():
    from hypothesis import strategies as st

    value = _json_values()
    names = st.sampled_from(["sleep", "vote", "weighted_merge", "summary", "concat", "select", "copy", "python", "nope"])
    entry = st.one_of(names, st.fixed_dictionaries({"agent": names}, optional={"params": value, "weight": value,
                                                                                "id": value, "timeout": value}))
    patterns = {
        "fan_out": st.fixed_dictionaries({}, optional={"agents": st.lists(entry, max_size=3), "aggregate": value}),
        "compete": st.fixed_dictionaries({}, optional={"attempts": value, "vary": value, "scorer": value,
                                                       "first_good_wins": value, "good_enough": value}),
        "stages": st.fixed_dictionaries({}, optional={
            "items": st.lists(value, max_size=3), "concurrency": value, "collect": value,
            "steps": st.lists(st.fixed_dictionaries({"id": st.sampled_from(["a", "b", "a b"]), "agent": names},
                                                    optional={"inputs": value, "params": value}), max_size=3)}),
        "validate": st.dictionaries(st.sampled_from(["min_words", "regex", "json", "contains", "function"]), value),
    }
    step_keys = st.sampled_from(["id", "agent", "params", "inputs", "outputs", "depends_on", "publish", "fan_out",
                                 "stages", "compete", "timeout", "retries", "validate", "rate_limit", "title",
                                 "requires_approval", "lease_seconds", "stagger_ms"])
    plain = st.dictionaries(step_keys, value, max_size=6)
    shaped = st.sampled_from(sorted(patterns)).flatmap(lambda k: patterns[k].map(lambda v, k=k: {k: v}))
    step = st.tuples(st.sampled_from(["s", "t", "u"]), plain, shaped, st.sampled_from([None, ["x"], ["y", "z"]])).map(
        lambda t: {"agent": "sleep", **t[1], **t[2], "id": t[0], **({"outputs": t[3]} if t[3] else {})})
    return st.fixed_dictionaries({"steps": st.lists(step, max_size=3)},
                                 optional={"name": value, "defaults": value, "inputs": value, "rate_limits": value})


def test_no_spec_makes_the_server_fail(space):
    """GIVEN arbitrary specs built from the format's own keys and random JSON values WHEN submitted
    THEN each gets a 201 or a 4xx with the error body, never a 5xx."""
    from hypothesis import HealthCheck, given, settings

    ws, client, _ = space

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(spec=_specs())
    def check(spec: dict[str, Any]) -> None:
        response = post(client, ws, spec)
        assert response.status_code in (201, 400, 403, 404, 409, 413), (spec, response.content[:300])
        if response.status_code != 201:
            assert set(response.json()) == {"error"} and response.json()["error"]["code"]

    check()
