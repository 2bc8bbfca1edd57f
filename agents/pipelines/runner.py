"""Running one step: what an RQ job of the "pipeline" queue does with its task id.

Through the same services as an HTTP agent:
1. claim THAT task (task_claim(task_id=...)): if another job or agent took it, exit cleanly;
   in the same transaction, lock the step's output directory (a fencing token) and record the
   input versions it will read (so completing on inputs that changed since is refused);
2. run the agent in a thread, in a fresh StepContext and scratch directory, while this thread
   supervises: heartbeats (lease and lock), a poll that notices a cancellation or a lost lease,
   and the timeout. On timeout the agent is told to stop (a command's process group is killed)
   and, if it does not, abandoned: the attempt fails and is retried by the task's policy;
3. check the outputs (validation hook; a competitive attempt's score), then in one transaction:
   write them create-only under pipelines/<run>/<task>/ with the lock's token, publish any to
   their workspace paths (create-only, under a lock), complete the task, log the worklog entry,
   release the lock. Dependents become ready in that same transaction.
Any failure is a task_fail (retry with jittered back-off while attempts remain; then failed,
with its log under failed/). A retry of the same task finds its earlier output at the same path:
identical content is reused, different content from its own earlier attempt is replaced.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import socket
import threading
import time
import traceback
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections, transaction

from agents import registry
from agents.models import PipelineRun, PipelineStep
from agents.pipelines import competition, dispatch
from agents.pipelines.conf import QUEUE, scratch_root
from agents.pipelines.context import AgentResult, Input, StepContext, StepError, Stopped
from agents.pipelines.services import output_dir, released_by, resolve_inputs
from agents.pipelines.validation import check_outputs
from workspace.access import Access, workspace_for
from workspace.blobs import blob_put
from workspace.errors import (
    Conflict,
    Forbidden,
    Locked,
    PreconditionFailed,
    ServiceError,
    TooLarge,
)
from workspace.models import File, FileVersion, Role
from workspace.models.tasks import Task, TaskStatus
from workspace.services.events import event_record
from workspace.services.files import file_read, file_write
from workspace.services.locks import lock_acquire, lock_release, lock_renew
from workspace.services.tasks import (
    db_now,
    task_claim,
    task_complete,
    task_fail,
    task_heartbeat,
    task_record_reads,
)
from workspace.services.worklog import worklog_append
from workspace.services.workspaces import lock_workspace

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5       # how often a running step checks it is still its task's claimant
STOP_GRACE_SECONDS = 3.0  # how long a stopped agent gets to return before it is abandoned
_LOST = ("not_claimant", "stale_lock_token")


class Lost(Exception):  # noqa: N818 - a signal, not an error
    """This attempt no longer owns its task (cancelled, lease expired and taken over)."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def ensure_usable_connections() -> None:
    """A worker keeps its database connection from job to job (reconnecting per job costs more than
    many steps' work), and drops one that broke, e.g. when the database restarted."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and not conn.in_atomic_block and not conn.is_usable():
            conn.close()


def step_run(*, task_id: str) -> str:
    """Claim and run the step whose task is `task_id`. Returns what happened, for the job log."""
    ensure_usable_connections()
    try:
        step = PipelineStep.objects.select_related("run", "run__created_by", "task").defer("run__spec") \
            .filter(task_id=task_id).first()
        if step is None:
            return "gone"
        run = step.run
        if run.status != PipelineRun.Status.RUNNING:
            return f"the run is {run.status}"
        if step.task.status != TaskStatus.QUEUED:
            return f"the task is {step.task.status}"
        if step.role == "judge" and not competition.gate_open(step):
            return "the judge waits for its attempts"
        try:
            access = workspace_for(run.created_by, run.workspace_id, need=Role.EDITOR)
        except ServiceError as exc:
            _fail_run(run, f"{run.created_by.username} can no longer run steps in this workspace: {exc.message}")
            return "no access"
        stagger = int(step.config.get("stagger_ms", 0))
        if stagger:
            time.sleep(random.uniform(0, stagger) / 1000)  # noqa: S311 - scheduling jitter
        return Attempt(step=step, run=run, access=access).run()
    except Exception:
        close_old_connections()  # a job that broke may have left its connection unusable
        raise


def _fail_run(run: PipelineRun, reason: str) -> None:
    with transaction.atomic():
        lock_workspace(run.workspace_id)
        if PipelineRun.objects.filter(pk=run.pk, status=PipelineRun.Status.RUNNING).update(
                status=PipelineRun.Status.FAILED, finished_at=db_now(), metrics={"error": reason}):
            event_record(workspace_id=run.workspace_id, type="pipeline.finished", target=run.id,
                         data={"pipeline": run.id, "name": run.name, "status": "failed", "error": reason})
    dispatch.forget_run(run.id)


class Attempt:
    def __init__(self, *, step: PipelineStep, run: PipelineRun, access: Access) -> None:
        self.step = step
        self.run_ = run
        self.access = access
        self.config = step.config
        self.task: Task | None = None
        self.lock_id = ""
        self.lock_token: int | None = None
        self.lease_id = ""
        self.inputs: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.scratch = scratch_root()

    # -- claim ------------------------------------------------------------------------------
    def claim(self) -> bool:
        step, lease = self.step, int(self.config.get("lease_seconds", 30))
        with transaction.atomic():
            task = task_claim(access=self.access, queue=QUEUE, task_id=step.task_id, lease_seconds=lease)
            if task is None:
                return False
            try:
                lock = lock_acquire(access=self.access, paths=[output_dir(self.run_.id, step.task_id)],
                                    ttl_seconds=min(lease, settings.LOCK_MAX_TTL), reason=f"pipeline step {step.key}")[0]
            except Locked:
                # An earlier attempt's lock has not expired yet: undo the claim; the sweep sends
                # another job once the task is ready again.
                transaction.set_rollback(True)
                return False
            self.inputs = resolve_inputs(step, run=self.run_, lenient=True)
            if self.inputs:
                task_record_reads(access=self.access, task_id=task.pk,
                                  files=[{"path": i["path"], "version": i["version"]} for i in self.inputs])
            PipelineStep.objects.filter(pk=step.pk).update(started_at=task.claimed_at, finished_at=None)
        self.task, self.lease_id = task, task.lease_id
        self.lock_id, self.lock_token = lock.id, lock.token
        return True

    # -- the whole attempt -------------------------------------------------------------------
    def run(self) -> str:
        if not self.claim():
            return "not claimable (taken, not ready, or its output directory is still locked)"
        assert self.task is not None
        self.scratch = scratch_root() / self.task.pk / self.lease_id
        try:
            return self._execute()
        except Lost as exc:
            self._release_lock()
            return f"stopped: {exc}"
        finally:
            if self.scratch.exists():
                shutil.rmtree(self.scratch, ignore_errors=True)
                try:
                    self.scratch.parent.rmdir()  # the task's directory, unless another attempt still uses it
                except OSError:
                    pass

    def _execute(self) -> str:
        assert self.task is not None
        step, config = self.step, self.config
        expected = list(config.get("inputs", []))
        if step.role != "judge" and len(self.inputs) != len(expected):
            have = {i["name"] for i in self.inputs}
            return self.fail(f"missing input(s): {', '.join(n for n in expected if n not in have)}", retry=True)
        try:
            inputs = [Input(name=i["name"], path=i["path"], version=i["version"], producer=i["producer"],
                            weight=i["weight"],
                            data=file_read(access=self.access, path=i["path"], version=i["version"])[1])
                      for i in self.inputs]
        except ServiceError as exc:
            return self.fail(f"could not read an input: {exc.message}", retry=True)
        definition = registry.get_agent(step.agent)
        if definition is None:
            return self.fail(f"the agent {step.agent!r} is not registered in this worker", retry=False)
        judge_state: dict[str, Any] = {}
        if step.role == "judge":
            fresh = PipelineStep.objects.get(pk=step.pk)
            if fresh.winner:
                competition.cancel_losers(access=self.access, judge=fresh, winner=fresh.winner)
            judge_state = {"candidates": competition.candidates(fresh), "winner": fresh.winner}
        ctx = StepContext(
            run_id=self.run_.id, workspace_id=self.run_.workspace_id, task_id=self.task.pk, key=step.key,
            agent=step.agent, attempt=self.task.attempts + 1, params=dict(config.get("params", {})), inputs=inputs,
            output_names=list(config.get("outputs", [])), scratch_path=self.scratch, item=config.get("item"),
            trusted=self.run_.trusted, rate_limit=config.get("rate_limit"),
            rate_limits=self.run_.plan.get("rate_limits", {}), **judge_state)
        try:
            value = self._supervise(definition, ctx)
        except StepError as exc:
            return self.fail(str(exc), retry=exc.retry)
        return self._finish(ctx, value)

    # -- supervision ---------------------------------------------------------------------------
    def _supervise(self, definition: registry.AgentDef, ctx: StepContext) -> Any:
        holder: dict[str, Any] = {}

        def main() -> None:
            try:
                if ctx.rate_limit:
                    ctx.take_token()
                ctx.check_stop()
                holder["value"] = definition.fn(ctx)
            except BaseException as exc:  # noqa: BLE001 - handed to the supervisor
                holder["error"] = exc
                holder["trace"] = traceback.format_exc(limit=8)
            finally:
                connections.close_all()  # this thread's own connections only

        timeout = float(self.config.get("timeout", 300))
        lease = int(self.config.get("lease_seconds", 30))
        beat_every = max(0.5, lease / 3)
        thread = threading.Thread(target=main, name=f"step-{self.step.key}", daemon=True)
        started = time.monotonic()
        deadline, next_beat, next_poll = started + timeout, started + beat_every, started + POLL_SECONDS
        thread.start()
        while True:
            thread.join(max(0.0, min(deadline, next_beat, next_poll) - time.monotonic()))
            if not thread.is_alive():
                break
            now = time.monotonic()
            if now >= deadline:
                ctx.request_stop("timeout")
                thread.join(STOP_GRACE_SECONDS)
                how = "stopped" if not thread.is_alive() else "abandoned (it did not stop)"
                raise StepError(f"timed out after {timeout:g}s; the agent was {how}", retry=True)
            if now >= next_poll:
                next_poll = now + POLL_SECONDS
                lost = self._lost()
                if lost:
                    ctx.request_stop(lost)
                    thread.join(STOP_GRACE_SECONDS)
                    raise Lost(lost)
            if now >= next_beat:
                next_beat = now + beat_every
                self._heartbeat(ctx, lease)
        if "error" in holder:
            error = holder["error"]
            if isinstance(error, Stopped):
                lost = self._lost()
                raise Lost(lost or str(error))
            if isinstance(error, StepError):
                raise error
            if isinstance(error, ServiceError):
                raise StepError(f"{error.code}: {error.message}", retry=True) from error
            raise StepError(f"{error.__class__.__name__}: {error}\n{holder.get('trace', '')}", retry=True) from error
        return holder.get("value")

    def _lost(self) -> str:
        row = Task.objects.filter(pk=self.step.task_id).values_list("status", "lease_id").first()
        if row is None:
            return "the task was deleted"
        status, lease_id = row
        if status != TaskStatus.CLAIMED:
            return f"the task was {status}" if status != TaskStatus.QUEUED else "the lease ran out"
        if lease_id != self.lease_id:
            return "the lease ran out and the task was claimed again"
        return ""

    def _heartbeat(self, ctx: StepContext, lease: int) -> None:
        try:
            task_heartbeat(access=self.access, task_id=self.step.task_id, lease_seconds=lease, lease_id=self.lease_id)
            lock_renew(access=self.access, lock_id=self.lock_id, ttl_seconds=min(lease, settings.LOCK_MAX_TTL))
        except ServiceError as exc:
            ctx.request_stop(exc.message)
            raise Lost(exc.message) from exc

    # -- outputs and completion -----------------------------------------------------------------
    def _normalise(self, ctx: StepContext, value: Any) -> tuple[dict[str, bytes], dict[str, Any]]:
        result: dict[str, Any] = {}
        if isinstance(value, AgentResult):
            result = dict(value.result or {})
            value = value.outputs
        names = list(ctx.output_names)
        if value is None:
            value = {}
        if isinstance(value, str | bytes):
            if len(names) != 1:
                raise StepError(f"the agent returned one output, but the step declares {len(names)}", retry=False)
            value = {names[0]: value}
        if not isinstance(value, dict):
            raise StepError(f"the agent returned {type(value).__name__}, not its outputs", retry=False)
        outputs = {str(k): v.encode("utf-8") if isinstance(v, str) else v for k, v in value.items()}
        missing = [n for n in names if n not in outputs]
        extra = sorted(set(outputs) - set(names))
        if missing or extra or not all(isinstance(v, bytes) for v in outputs.values()):
            raise StepError(f"the agent's outputs do not match the step's: missing {missing or 'none'}, "
                            f"undeclared {extra or 'none'}", retry=True)
        return {n: outputs[n] for n in names}, result

    def _finish(self, ctx: StepContext, value: Any) -> str:
        assert self.task is not None
        step, config = self.step, self.config
        try:
            outputs, result = self._normalise(ctx, value)
            problem = check_outputs(config.get("validate"), outputs)
            if problem:
                raise StepError(f"validation failed: {problem}", retry=True)
            score = None
            if step.role == "attempt":
                scorer = registry.get_scorer(config.get("scorer"))
                if scorer is None:
                    raise StepError(f"the scorer {config.get('scorer')!r} is not registered", retry=False)
                score = float(scorer(outputs, dict(config.get("scorer_params") or {})))
        except StepError as exc:
            return self.fail(str(exc), retry=exc.retry)
        for data in outputs.values():
            if len(data) <= settings.MAX_FILE_SIZE:
                blob_put(data)  # outside the transaction: the write lock is not held across an fsync
        try:
            written = self._complete(ctx, outputs, result, score)
        except Lost:
            raise
        except StepError as exc:
            return self.fail(str(exc), retry=exc.retry)
        if score is not None and config.get("first_good_wins") and score >= float(config.get("good_enough") or 0):
            self._claim_victory(score)
        return f"done: {', '.join(w['path'] for w in written.values()) or 'no outputs'}"

    def _complete(self, ctx: StepContext, outputs: dict[str, bytes], result: dict[str, Any],
                  score: float | None) -> dict[str, dict[str, Any]]:
        assert self.task is not None
        step, config, task_id = self.step, self.config, self.task.pk
        released: list[dispatch.Dispatch] = []
        try:
            with transaction.atomic():
                # First on commit: the dependents this completion releases get their jobs before
                # the transaction's events are announced.
                transaction.on_commit(lambda: dispatch.enqueue(released))
                directory = output_dir(self.run_.id, task_id)
                written = {name: self._write(f"{directory}{name}", data, self.lock_token)
                           for name, data in outputs.items()}
                published = {}
                for name, target in (config.get("publish") or {}).items():
                    lock = lock_acquire(access=self.access, paths=[target], ttl_seconds=30,
                                        reason=f"publishing {step.key} of {self.run_.id}")[0]
                    published[name] = self._write(target, outputs[name], lock.token)
                    lock_release(access=self.access, lock_id=lock.id)
                duration = round(time.monotonic() - self.started, 4)
                summary = {
                    "pipeline": self.run_.id, "step": step.key, "attempt": ctx.attempt, "worker": worker_name(),
                    "outputs": written, "published": published, "duration_seconds": duration,
                    "throttled_seconds": round(ctx.throttled_seconds, 4), **({"score": score} if score is not None
                                                                             else {}),
                }
                task = task_complete(access=self.access, task_id=task_id, lease_id=self.lease_id,
                                     result={**result, **summary, "log": ctx.log_lines[-50:]},
                                     outputs=[w["path"] for w in [*written.values(), *published.values()]])
                PipelineStep.objects.filter(pk=step.pk).update(outputs=written, score=score,
                                                               finished_at=task.completed_at)
                released.extend(released_by(run_id=self.run_.id, task_id=task_id))
                worklog_append(access=self.access, task_id=task_id,
                               message=f"{self.run_.name}: {step.key} done in {duration:.2f}s (attempt {ctx.attempt})",
                               data=summary)
                lock_release(access=self.access, lock_id=self.lock_id)
        except (Conflict, Locked, PreconditionFailed, Forbidden, TooLarge) as exc:
            if exc.code in _LOST:
                raise Lost(exc.message) from exc
            permanent = isinstance(exc, PreconditionFailed | Forbidden | TooLarge)
            raise StepError(f"could not complete: {exc.code}: {exc.message}", retry=not permanent) from exc
        except ServiceError as exc:
            raise StepError(f"could not complete: {exc.code}: {exc.message}", retry=True) from exc
        return written

    def _write(self, path: str, data: bytes, token: int | None) -> dict[str, Any]:
        """Create-only, idempotent: identical content already there is reused; this task's own
        earlier attempt is replaced (If-Match on its version); anything else is refused (412)."""
        assert self.task is not None
        sha = hashlib.sha256(data).hexdigest()
        try:
            version = file_write(access=self.access, path=path, content=data, if_none_match=True, lock_token=token,
                                 task_id=self.task.pk).version
            return {"path": path, "version": version.version, "sha256": sha, "size": len(data)}
        except PreconditionFailed as exc:
            if exc.code != "already_exists":
                raise
            refusal = exc
        head = File.objects.filter(workspace_id=self.run_.workspace_id, path=path, deleted=False).first()
        if head is not None and head.sha256 == sha:
            return {"path": path, "version": head.version, "sha256": sha, "size": len(data), "reused": True}
        writer = FileVersion.objects.filter(workspace_id=self.run_.workspace_id, path=path,
                                            version=head.version).values_list("task_id", flat=True).first() \
            if head is not None else None
        if head is None or writer != self.task.pk:
            raise refusal
        version = file_write(access=self.access, path=path, content=data, if_match=head.version, lock_token=token,
                             task_id=self.task.pk).version
        return {"path": path, "version": version.version, "sha256": sha, "size": len(data)}

    def _claim_victory(self, score: float) -> None:
        judge = competition.judge_of(self.step)
        if judge is None or not competition.declare_winner(judge=judge, attempt_key=self.step.key):
            return
        cancelled = competition.cancel_losers(access=self.access, judge=judge, winner=self.step.key)
        log.info("%s won %s with %.3f; cancelled %s", self.step.key, judge.key, score, cancelled)
        judge.refresh_from_db(fields=["winner"])
        if Task.objects.filter(pk=judge.task_id, status=TaskStatus.QUEUED).exists():
            dispatch.enqueue([dispatch.Dispatch(run_id=judge.run_id, task_id=judge.task_id,
                                                timeout=float(judge.config.get("timeout", 300)),
                                                attempts=judge.task.attempts)], at_front=True)

    # -- failure -----------------------------------------------------------------------------------
    def fail(self, error: str, *, retry: bool) -> str:
        assert self.task is not None
        attempt = self.task.attempts + 1
        try:
            with transaction.atomic():
                task = task_fail(access=self.access, task_id=self.task.pk, error=error[:60000], retry=retry,
                                 lease_id=self.lease_id)
                PipelineStep.objects.filter(pk=self.step.pk).update(finished_at=db_now())
                first_line = error.splitlines()[0] if error else "failed"
                worklog_append(access=self.access, task_id=self.task.pk,
                               message=f"{self.run_.name}: {self.step.key} attempt {attempt} failed: {first_line[:300]}"
                               + (f" (retrying; {task.max_attempts - task.attempts} attempt(s) left)"
                                  if task.status == TaskStatus.QUEUED else " (no more attempts)"),
                               data={"pipeline": self.run_.id, "step": self.step.key, "attempt": attempt,
                                     "worker": worker_name(), "retry": retry, "status": task.status,
                                     "error": error[:4000]})
                self._release_lock()
        except Conflict as exc:
            if exc.code in _LOST:
                self._release_lock()
                return f"stopped: {exc.message}"
            raise
        return f"attempt {attempt} failed ({task.status}): {error.splitlines()[0] if error else ''}"

    def _release_lock(self) -> None:
        if not self.lock_id:
            return
        try:
            lock_release(access=self.access, lock_id=self.lock_id)
        except ServiceError:
            pass  # already expired or released: nothing to give back
        self.lock_id = ""
