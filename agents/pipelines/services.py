"""Pipeline runs: submission, cancellation, dispatch on task events, the sweep, finishing, and
what happens to a failed step's inputs.

A run is a set of workspace tasks (workspace.services.tasks), one per expanded step, with the
dependencies of the plan, created in one transaction together with the run's rows. From then on
the tasks service decides readiness (dependencies, approvals, leases, retries) and the engine only
reacts to its events: a ready or requeued step gets a job; a finished run gets its metrics.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from agents.models import PipelineRun, PipelineStep
from agents.pipelines import competition, dispatch
from agents.pipelines.conf import QUEUE
from agents.pipelines.metrics import StepTiming, run_metrics
from agents.pipelines.spec import FILE_PREFIX, build_plan
from workspace.access import Access, workspace_for
from workspace.errors import Conflict, Forbidden, Invalid, NotFound, ServiceError
from workspace.ids import new_id
from workspace.models import File, Role
from workspace.models.tasks import FINAL_TASK_STATUSES, Task, TaskStatus
from workspace.services.events import event_record
from workspace.services.tasks import TaskSpec, db_now, next_number, task_cancel, task_create_many
from workspace.services.workspaces import lock_workspace

log = logging.getLogger(__name__)

UNFINISHED = (TaskStatus.BLOCKED, TaskStatus.QUEUED, TaskStatus.CLAIMED)
_WATCHED = frozenset({"task.ready", "task.requeued", "task.completed", "task.failed", "task.cancelled"})
# A requeued step whose back-off ends within this is dispatched at once; later ones by the sweep.
_DISPATCH_AHEAD_SECONDS = 0.05
MAX_FAILURES_PER_SWEEP = 20
# How often the sweep looks for ready steps without a live job, and how long a step must have been
# ready before it is looked at: an orphan restarts within its lease plus a few seconds.
ORPHAN_CHECK_EVERY = 1.0
ORPHAN_AGE = timedelta(seconds=2)
_next_orphan_check = 0.0


def output_dir(run_id: str, task_id: str) -> str:
    """Where a step's outputs go: the task id is part of the path, so no two steps share one."""
    return f"pipelines/{run_id}/{task_id}/"


def _dispatch_of(step: PipelineStep, attempts: int = 0) -> dispatch.Dispatch:
    return dispatch.Dispatch(run_id=step.run_id, task_id=step.task_id, timeout=float(step.config.get("timeout", 300)),
                             stagger_ms=int(step.config.get("stagger_ms", 0)), attempts=attempts)


# -- submission ---------------------------------------------------------------------------------
def pipeline_submit(*, access: Access, spec: Any, trusted: bool = False) -> PipelineRun:
    """Check the spec, expand it, and create the run and one task per step, all or nothing.

    `trusted` (an operator's run: `manage.py run_pipeline`) lets `command` steps run any
    program; a superuser's runs are trusted too.
    """
    from agents.ratelimit import server_limits

    if not access.at_least(Role.EDITOR):
        raise Forbidden("forbidden", "Running pipelines needs the editor role.", required_role="editor",
                        role=access.role.value)
    trusted = bool(trusted or getattr(access.user, "is_superuser", False))
    run_id = new_id("plr")
    spec_obj, plan = build_plan(spec, run_id=run_id, trusted=trusted, server_buckets=set(server_limits()))
    ws_id = access.workspace_id
    ready: list[dispatch.Dispatch] = []
    with transaction.atomic():
        # Registered first, so it runs first on commit: the first wave is enqueued before the
        # creation events of every task are announced.
        transaction.on_commit(lambda: dispatch.enqueue(ready))
        lock_workspace(ws_id)
        live = set(File.objects.filter(workspace_id=ws_id, path__in=plan.files, deleted=False)
                   .values_list("path", flat=True))
        missing = [p for p in plan.files if p not in live]
        if missing:
            raise Invalid("missing_input", f"The input file {missing[0]} does not exist in this workspace"
                          + (f" (nor {len(missing) - 1} other(s))." if len(missing) > 1 else "."), files=missing[:50])
        run = PipelineRun.objects.create(
            id=run_id, workspace_id=ws_id, number=next_number(PipelineRun, ws_id), name=plan.name, spec=spec_obj,
            plan={"waves": plan.waves, "artifacts": plan.artifacts, "rate_limits": plan.rate_limits},
            trusted=trusted, created_by=access.user, created_at=db_now())
        refs = {step.key: f"s{i}" for i, step in enumerate(plan.steps)}
        specs = [TaskSpec(
            title=f"{plan.name}: {step.title}", kind=f"pipeline.{step.agent}", queue=QUEUE,
            payload={"pipeline": run_id, "step": step.key, "agent": step.agent, "role": step.role},
            depends_on=[refs[d] for d in step.task_deps], priority=step.priority, max_attempts=step.max_attempts,
            lease_seconds=step.lease_seconds, requires_approval=step.requires_approval, ref=refs[step.key],
        ) for step in plan.steps]
        tasks = task_create_many(access=access, specs=specs)
        rows = PipelineStep.objects.bulk_create([
            PipelineStep(run=run, key=step.key, task=task, agent=step.agent, role=step.role, group=step.group,
                         wave=step.wave, config=step.config())
            for step, task in zip(plan.steps, tasks, strict=True)])
        event_record(workspace_id=ws_id, type="pipeline.created", actor=access.user, target=run.id, data={
            "pipeline": run.id, "name": run.name, "steps": len(rows), "waves": len(plan.waves)})
        ready.extend(_dispatch_of(row) for row, task in zip(rows, tasks, strict=True)
                     if task.status == TaskStatus.QUEUED and row.role != "judge")
    return run


def released_by(*, run_id: str, task_id: str) -> list[dispatch.Dispatch]:
    """The steps of a run that the completion of `task_id` has just made ready (run inside the
    completing transaction). Judges are left to the listener, which checks their gate."""
    steps = PipelineStep.objects.select_related("task").only(
        "id", "run_id", "task_id", "config", "task__attempts").filter(
        run_id=run_id, task__status=TaskStatus.QUEUED, task__dependency_links__depends_on_id=task_id,
    ).exclude(role="judge")
    return [_dispatch_of(step, step.task.attempts) for step in steps]


def get_run(*, access: Access, run_id: Any) -> PipelineRun:
    if not isinstance(run_id, str) or not run_id or len(run_id) > 32:
        raise NotFound("pipeline")
    run = PipelineRun.objects.select_related("created_by").filter(workspace_id=access.workspace_id, pk=run_id).first()
    if run is None:
        raise NotFound("pipeline")
    return run


def pipeline_cancel(*, access: Access, run_id: str) -> PipelineRun:
    """Cancel every unfinished step (its creator, or an admin); running steps are stopped."""
    if not access.at_least(Role.EDITOR):
        raise Forbidden("forbidden", "Cancelling pipelines needs the editor role.", required_role="editor")
    run = get_run(access=access, run_id=run_id)
    if run.created_by_id != access.user.pk and not access.at_least(Role.ADMIN):
        raise Forbidden("forbidden", "Only the run's creator or an admin may cancel it.")
    with transaction.atomic():
        lock_workspace(access.workspace_id)
        run = PipelineRun.objects.select_for_update().get(pk=run.pk)
        if run.status != PipelineRun.Status.RUNNING:
            raise Conflict("not_cancellable", f"The run has already {run.status}.", status=run.status)
        for step in run.steps.select_related("task").order_by("wave", "id"):
            # Cancelling a step cancels its dependents too, so re-read each status first.
            if Task.objects.filter(pk=step.task_id, status__in=UNFINISHED).exists():
                task_cancel(access=access, task_id=step.task_id, reason=f"pipeline {run.id} cancelled")
        run.status = PipelineRun.Status.CANCELLED
        run.save(update_fields=["status"])
        event_record(workspace_id=run.workspace_id, type="pipeline.cancelled", actor=access.user, target=run.id,
                     data={"pipeline": run.id, "name": run.name})
    pipeline_finish(run_id=run.id)
    return run


# -- finishing ----------------------------------------------------------------------------------
def step_timings(steps: list[PipelineStep]) -> list[StepTiming]:
    timings = []
    for step in steps:
        task = step.task
        ended = step.finished_at
        if ended is None and task.status in FINAL_TASK_STATUSES:
            ended = task.completed_at or (task.updated_at if step.started_at else None)
        if ended is None and task.status == TaskStatus.BLOCKED and task.completed_at:
            ended = task.completed_at  # done, waiting on its approval
        started = step.started_at if ended is None or step.started_at is None or step.started_at <= ended else None
        timings.append(StepTiming(key=step.key, after=list(step.config.get("after", [])), started_at=started,
                                  ended_at=ended if started else None,
                                  estimate=float(step.config.get("estimate", 1.0)),
                                  final=task.status in FINAL_TASK_STATUSES))
    return timings


def ordered_steps(run: PipelineRun) -> list[PipelineStep]:
    """The run's steps in plan (topological) order, with their tasks."""
    return list(run.steps.select_related("task").order_by("id"))


def pipeline_finish(*, run_id: str) -> bool:
    """Record the end of a run whose every step has ended: its status and measurements. Safe to
    call any number of times, from any process."""
    run = PipelineRun.objects.filter(pk=run_id).first()
    if run is None or run.finished_at is not None:
        return False
    steps = ordered_steps(run)
    if any(step.task.status in UNFINISHED for step in steps):
        return False
    if run.status == PipelineRun.Status.CANCELLED:
        status = run.status
    else:
        ok = all(step.task.status == TaskStatus.DONE for step in steps if step.role != "attempt")
        status = PipelineRun.Status.SUCCEEDED if ok else PipelineRun.Status.FAILED
    timings = step_timings(steps)
    metrics = run_metrics(created_at=run.created_at, steps=timings)
    ends = [t.ended_at for t in timings if t.ended_at is not None]
    failed = [s.key for s in steps if s.task.status == TaskStatus.FAILED]
    with transaction.atomic():
        lock_workspace(run.workspace_id)
        finished_at = max(ends) if ends else db_now()
        updated = PipelineRun.objects.filter(pk=run.pk, finished_at__isnull=True).update(
            status=status, finished_at=finished_at, metrics=metrics)
        if updated:
            event_record(workspace_id=run.workspace_id, type="pipeline.finished", target=run.id, data={
                "pipeline": run.id, "name": run.name, "status": status, "failed_steps": failed[:50],
                "makespan_seconds": metrics["makespan_seconds"], "speedup": metrics["speedup"]})
    if updated:
        dispatch.forget_run(run.id)
    return bool(updated)


def _maybe_finish(run_id: str) -> None:
    if not Task.objects.filter(pipeline_step__run_id=run_id, status__in=UNFINISHED).exists():
        from agents import jobs

        dispatch.enqueue_job(jobs.finish_run, run_id, job_id=f"pl-finish-{run_id}", at_front=True)


# -- reacting to task events ---------------------------------------------------------------------
def on_task_event(event: dict[str, Any]) -> None:
    """The `workspace.hooks` listener (after commit): a step that became ready or was requeued
    gets a job; an attempt that ended may open its judge's gate; a failed step's inputs go to
    failed/; a run whose last step ended is finished. Quick: lookups and enqueues only."""
    kind = event.get("type")
    if kind not in _WATCHED:
        return
    data = event.get("data") or {}
    task_id = data.get("task") or event.get("target")
    if not isinstance(task_id, str):
        return
    step = PipelineStep.objects.select_related("run", "task").only(
        "id", "run_id", "key", "role", "config", "winner", "task_id", "run__status", "task__status",
        "task__not_before", "task__attempts").filter(task_id=task_id).first()
    if step is None:
        return
    running = step.run.status == PipelineRun.Status.RUNNING
    if kind == "task.ready" and dispatch.already_sent(step.run_id, step.task_id, step.task.attempts):
        return  # the step that released it enqueued it already
    if kind in ("task.ready", "task.requeued") and running and step.task.status == TaskStatus.QUEUED:
        not_before = step.task.not_before
        soon = not_before is None or (not_before - timezone.now()).total_seconds() <= _DISPATCH_AHEAD_SECONDS
        if soon and (step.role != "judge" or competition.gate_open(step)):
            # A requeued step has waited its turn once already: it goes to the front of the queue.
            dispatch.enqueue([_dispatch_of(step, step.task.attempts)],
                             at_front=step.role == "judge" or kind == "task.requeued")
        return
    if kind == "task.completed" and step.task.status != TaskStatus.DONE:
        return  # waiting on its approval
    if step.role == "attempt" and running:
        judge = competition.judge_of(step)
        if judge is not None and judge.task.status == TaskStatus.QUEUED and competition.gate_open(judge):
            dispatch.enqueue([_dispatch_of(judge, judge.task.attempts)], at_front=True)
    if kind == "task.failed":
        from agents import jobs

        dispatch.enqueue_job(jobs.handle_failed_step, task_id, job_id=f"pl-failed-{task_id}")
    _maybe_finish(step.run_id)


# -- the sweep -------------------------------------------------------------------------------------
def pipelines_sweep() -> int:
    """Registered as `pipelines.dispatch`: enqueue every ready step that has no live job (a lost
    job, a killed worker, a back-off that has ended), finish runs whose steps have all ended,
    and handle failed steps whose handling was lost. Any number of sweepers may run."""
    global _next_orphan_check
    handled = 0
    if time.monotonic() >= _next_orphan_check:
        _next_orphan_check = time.monotonic() + ORPHAN_CHECK_EVERY
        handled += _dispatch_orphans()
    unfinished = Task.objects.filter(pipeline_step__run_id=OuterRef("pk"), status__in=UNFINISHED)
    for run_id in PipelineRun.objects.filter(finished_at__isnull=True).exclude(Exists(unfinished)) \
            .values_list("id", flat=True)[:100]:
        handled += pipeline_finish(run_id=run_id)
    for task_id in PipelineStep.objects.filter(task__status=TaskStatus.FAILED, failure_handled=False) \
            .values_list("task_id", flat=True)[:MAX_FAILURES_PER_SWEEP]:
        handled += bool(step_handle_failure(task_id=task_id))
    return handled


def _dispatch_orphans() -> int:
    """Enqueue the ready steps without a live job. A step waiting out a retry's back-off has no job
    by design; any other step is only looked at once it has been ready for ORPHAN_AGE (its job is
    normally taken within milliseconds, or waits its turn in the queue, alive)."""
    handled = 0
    now = db_now()
    ready = list(PipelineStep.objects.select_related("task").filter(
        run__status=PipelineRun.Status.RUNNING, task__status=TaskStatus.QUEUED,
    ).filter(Q(task__not_before__isnull=True) | Q(task__not_before__lte=now))
        .filter(Q(task__not_before__isnull=False) | Q(task__updated_at__lte=now - ORPHAN_AGE))
        .order_by("id")[:2000])
    by_run: dict[str, list[PipelineStep]] = defaultdict(list)
    for step in ready:
        if step.role == "judge" and not competition.gate_open(step):
            continue
        by_run[step.run_id].append(step)
    for run_id, steps in by_run.items():
        try:
            live = dispatch.live_jobs(run_id, {s.task_id: s.task.attempts for s in steps})
        except Exception as exc:  # Redis down: nothing can be enqueued either
            log.warning("pipeline sweep: cannot read the job index: %s", exc)
            return handled
        orphans = [s for s in steps if s.task_id not in live]
        if orphans:
            log.info("pipeline %s: enqueueing %d step(s) with no live job", run_id, len(orphans))
            # At the front: these waited their turn once already (a retry, or a job a dead worker
            # took with it), and behind a long backlog an orphan would restart minutes late.
            dispatch.enqueue([_dispatch_of(s, s.task.attempts) for s in orphans], at_front=True)
            handled += len(orphans)
    return handled


# -- a failed step's inputs --------------------------------------------------------------------------
def resolve_inputs(step: PipelineStep, *, run: PipelineRun, lenient: bool = False) -> list[dict[str, Any]]:
    """The exact file versions a step reads: [{"name", "path", "version", "producer", "weight"}].

    An artifact comes from its producer's recorded outputs; a workspace file (or run input) is
    read at its current version. With `lenient` (the judge, failure handling), inputs whose
    producer wrote nothing are skipped instead of being an error.
    """
    names = list(step.config.get("inputs", []))
    artifacts = run.plan.get("artifacts", {})
    weights = step.config.get("weights", {})
    producers: dict[str, str] = {}
    files: dict[str, str] = {}
    for name in names:
        source = name if name.startswith(FILE_PREFIX) else artifacts.get(name, "")
        if source.startswith(FILE_PREFIX):
            files[name] = source[len(FILE_PREFIX):]
        else:
            producers[name] = source
    outputs = {s.key: s.outputs for s in PipelineStep.objects.filter(run_id=run.id, key__in=set(producers.values()))
               .only("key", "outputs")}
    heads = {f.path: f for f in File.objects.filter(workspace_id=run.workspace_id, path__in=set(files.values()))}
    resolved = []
    for name in names:
        if name in files:
            head = heads.get(files[name])
            if head is None or head.deleted:
                if lenient:
                    continue
                raise ServiceError("missing_input", f"The input file {files[name]} no longer exists.")
            resolved.append({"name": name, "path": head.path, "version": head.version, "producer": None,
                             "weight": float(weights.get(name, 1.0))})
            continue
        written = (outputs.get(producers[name]) or {}).get(name)
        if written is None:
            if lenient:
                continue
            raise ServiceError("missing_input", f"{producers[name]} recorded no output {name!r}.")
        resolved.append({"name": name, "path": written["path"], "version": written["version"],
                         "producer": producers[name], "weight": float(weights.get(name, 1.0))})
    return resolved


def step_handle_failure(*, task_id: str) -> bool:
    """Move a failed step's inputs to failed/<task-id>/ (next to the failed/<task-id>.log the
    tasks service writes). An input only this step reads, produced inside the run, is moved; a
    workspace file or an artifact other steps read too is copied, so nothing else loses it."""
    from workspace.services.files import file_move, file_read, file_write
    from workspace.services.worklog import worklog_append

    step = PipelineStep.objects.select_related("run", "run__created_by", "task").filter(task_id=task_id).first()
    if step is None or step.task.status != TaskStatus.FAILED:
        return False
    if PipelineStep.objects.filter(pk=step.pk, failure_handled=False).update(failure_handled=True) != 1:
        return False
    run = step.run
    try:
        access = workspace_for(run.created_by, run.workspace_id, need=Role.EDITOR)
    except ServiceError:
        return True
    readers: dict[str, int] = defaultdict(int)
    for config in PipelineStep.objects.filter(run_id=run.id).values_list("config", flat=True):
        for name in config.get("inputs", []):
            readers[name] += 1
    moved, copied, problems = [], [], []
    for item in resolve_inputs(step, run=run, lenient=True):
        local = item["name"][len(FILE_PREFIX):].replace("/", "__") if item["name"].startswith(FILE_PREFIX) \
            else item["name"]
        target = f"failed/{task_id}/{local}"
        try:
            head = File.objects.filter(workspace_id=run.workspace_id, path=item["path"]).first()
            exclusive = item["producer"] is not None and readers[item["name"]] == 1
            if exclusive and head is not None and not head.deleted and head.version == item["version"]:
                file_move(access=access, src=item["path"], dst=target, if_match=item["version"])
                moved.append(target)
            else:
                _, data = file_read(access=access, path=item["path"], version=item["version"])
                file_write(access=access, path=target, content=data, if_none_match=True, task_id=task_id)
                copied.append(target)
        except ServiceError as exc:
            problems.append(f"{item['path']}: {exc.message}")
    try:
        worklog_append(access=access, task_id=task_id, message=f"{run.name}: {step.key} failed; its inputs are "
                       f"under failed/{task_id}/ and its log at failed/{task_id}.log",
                       data={"pipeline": run.id, "step": step.key, "moved": moved, "copied": copied,
                             "problems": problems})
    except ServiceError as exc:
        log.warning("could not log the failure of %s: %s", step.key, exc.message)
    return True
