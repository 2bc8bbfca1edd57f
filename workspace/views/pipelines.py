"""Pipeline runs: the list, and one run with a progress bar per stage, its Gantt chart, the critical
path and the measured speed-up. Read through the pipeline engine's own selectors (the API's)."""
from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from workspace.errors import ServiceError
from workspace.services.locks import db_now
from workspace.views import gantt
from workspace.views.common import page_access, workspace_page
from workspace.views.present import Urls, clock

RUNS_SHOWN = 50


@login_required
@require_GET
def pipelines_page(request: HttpRequest, ws: str) -> HttpResponse:
    from agents.models import PipelineRun
    from agents.pipelines.selectors import runs_json

    access = page_access(request, ws)
    runs = list(PipelineRun.objects.filter(workspace=access.workspace).select_related("created_by")
                .order_by("-number")[:RUNS_SHOWN])
    rows = runs_json(runs)
    for row in rows:
        row["done"] = row["counts"].get("done", 0)
    return workspace_page(request, access, "workspace/pipelines.html", {"urls": Urls(access.workspace_id),
                                                                         "runs": rows},
                          tab="pipelines", fragments={"runs": "workspace/_pipelines.html"})


@login_required
@require_GET
def pipeline_page(request: HttpRequest, ws: str, run_id: str) -> HttpResponse:
    from agents.models import PipelineRun
    from agents.pipelines.metrics import run_metrics
    from agents.pipelines.selectors import step_json
    from agents.pipelines.services import get_run, ordered_steps, step_timings

    access = page_access(request, ws)
    try:
        run = get_run(access=access, run_id=run_id)
    except ServiceError as exc:
        raise Http404(exc.message) from exc
    now = db_now()
    urls = Urls(access.workspace_id)
    step_rows = ordered_steps(run)
    timings = step_timings(step_rows)
    finished = run.metrics is not None and "critical_path" in run.metrics
    metrics: dict[str, Any] = run.metrics if finished else run_metrics(created_at=run.created_at, steps=timings)
    critical = set((metrics.get("critical_path") or {}).get("steps", []))
    steps = []
    bars = []
    for row, timing in zip(step_rows, timings, strict=True):
        data = step_json(row, timing)
        data["worker"] = str((row.task.result or {}).get("worker") or "") if isinstance(row.task.result, dict) else ""
        data["critical"] = row.key in critical
        data["url"] = urls.task(row.task_id)
        # `attempts` counts the attempts that ended without completing; a running or done step is on the next.
        data["attempt"] = data["attempts"] + (1 if data["status"] in ("claimed", "done") else 0)
        data["start_label"] = clock(timing.started_at)
        data["end_label"] = clock(timing.ended_at)
        steps.append(data)
        if timing.started_at is not None:
            running = timing.ended_at is None
            bars.append(gantt.Bar(key=row.key, agent=row.agent, status=data["status"], start=timing.started_at,
                                  end=timing.ended_at or max(now, timing.started_at), running=running, critical=data["critical"],
                                  worker=data["worker"], url=data["url"]))
    until = max([run.finished_at or now, *[b.end for b in bars]])
    context = {
        "urls": urls, "now": now, "run": run, "steps": steps, "metrics": metrics, "finished": finished,
        "stages": gantt.stage_progress(steps), "chart": gantt.render(
            bars, origin=run.created_at, until=until, title=f"Gantt chart of {run.name}: one row per agent lane, "
            "one bar per step; the critical path is outlined and marked ◆"),
        "critical_keys": (metrics.get("critical_path") or {}).get("steps", []),
        "running": run.status == PipelineRun.Status.RUNNING,
        "error": (run.metrics or {}).get("error") if isinstance(run.metrics, dict) else None,
    }
    return workspace_page(request, access, "workspace/pipeline.html", context, tab="pipelines",
                          fragments={"run": "workspace/_pipeline.html"})
