"""Reading runs: the JSON of a run (list and detail) and of its steps."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from django.db.models import Count

from agents.models import PipelineRun, PipelineStep
from agents.pipelines.metrics import critical_path, run_metrics
from agents.pipelines.services import ordered_steps, step_timings
from workspace.services.tasks import iso


def _base(run: PipelineRun) -> dict[str, Any]:
    metrics = run.metrics or {}
    return {
        "id": run.id, "workspace": run.workspace_id, "number": run.number, "name": run.name, "status": run.status,
        "created_by": run.created_by.username, "created_at": iso(run.created_at), "finished_at": iso(run.finished_at),
        "waves": run.plan.get("waves", []), "makespan_seconds": metrics.get("makespan_seconds"),
        "sum_seconds": metrics.get("sum_seconds"), "speedup": metrics.get("speedup"),
        "error": metrics.get("error"),
    }


def runs_json(runs: Sequence[PipelineRun]) -> list[dict[str, Any]]:
    """List items, with their steps counted by status in one query."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in PipelineStep.objects.filter(run_id__in=[r.pk for r in runs]).values("run_id", "task__status") \
            .annotate(n=Count("id")).order_by():
        counts[row["run_id"]][row["task__status"]] = row["n"]
    return [{**_base(run), "steps_total": sum(counts[run.pk].values()), "counts": dict(counts[run.pk])}
            for run in runs]


def step_json(step: PipelineStep, timing: Any) -> dict[str, Any]:
    task = step.task
    return {
        "key": step.key, "task": task.pk, "title": task.title, "agent": step.agent, "role": step.role,
        "group": step.group or None, "wave": step.wave, "status": task.status, "attempts": task.attempts,
        "max_attempts": task.max_attempts, "depends_on": list(step.config.get("after", [])),
        "started_at": iso(timing.started_at), "ended_at": iso(timing.ended_at),
        "duration_seconds": round(timing.duration, 4) if timing.duration is not None else None,
        "outputs": step.outputs or {}, "published": (task.result or {}).get("published") or {},
        "score": step.score, "winner": step.winner or None, "error": task.error or None,
        "requires_approval": task.requires_approval,
        "approval": task.approval_id, "cancel_reason": task.cancel_reason or None,
    }


def run_detail_json(run: PipelineRun) -> dict[str, Any]:
    steps = ordered_steps(run)
    timings = step_timings(steps)
    counts: dict[str, int] = defaultdict(int)
    for step in steps:
        counts[step.task.status] += 1
    data = {**_base(run), "steps_total": len(steps), "counts": dict(counts), "spec": run.spec}
    if run.metrics and "critical_path" in run.metrics:
        data["critical_path"] = run.metrics["critical_path"]
        data["makespan_over_critical_path"] = run.metrics.get("makespan_over_critical_path")
    else:
        # Still running: measured so far, estimated for the rest.
        live = run_metrics(created_at=run.created_at, steps=timings)
        data["critical_path"] = critical_path(timings)
        data["sum_seconds"] = live["sum_seconds"]
        data["makespan_over_critical_path"] = None
    data["steps"] = [step_json(step, timing) for step, timing in zip(steps, timings, strict=True)]
    return data
