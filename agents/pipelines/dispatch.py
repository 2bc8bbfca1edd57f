"""Getting a ready step onto a worker: one RQ job per ready step task, on the "pipeline" queue.

A job claims exactly its own task (task_claim(task_id=...)), so a duplicate job is harmless: the
claim goes to one of them and the other exits cleanly. What must never happen is a ready step
with no job at all, so three paths enqueue:
- the submission, once its transaction commits (every initially ready step, one Redis round trip);
- the event listener (agents/pipelines/services.py), when a step becomes ready or is requeued;
- the `pipelines.dispatch` sweep, for any ready step whose job is gone (a lost job, a killed
  worker, a back-off that has just ended).
The id of each step's latest job is kept in one Redis hash per run, so the sweep can tell a live
job (queued, or started moments ago) from a dead one. A completing step enqueues the dependents it
released itself, first thing after its commit (before its events are announced), and the
listener then finds them sent.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction

from agents.pipelines.conf import QUEUE
from workspace.ids import new_id

log = logging.getLogger(__name__)

JOBS_KEY = "sy:pl:jobs:{run}"
JOBS_KEY_TTL = 7 * 24 * 3600
# A started job claims its task within milliseconds; one that started longer ago than this while
# its task is still queued has died (or exited without claiming).
STARTED_GRACE = timedelta(seconds=10)
# A worker listening on several queues pops a job (BLPOP: RQ keeps no intermediate list then) and
# marks it started a moment later; one killed in between leaves the job `queued` in no queue at
# all. A `queued` job older than this is live only if it is really in the queue.
POPPED_GRACE = timedelta(seconds=2)
# Above this many waiting jobs the sweep does not read the whole queue to check that; a job lost
# that way is found once the backlog is shorter.
MAX_QUEUE_SCAN = 20_000
# Margin over a step's own limits (stagger, timeout, a lock wait) before RQ kills the job itself.
JOB_TIMEOUT_MARGIN = 120


@dataclass(frozen=True)
class Dispatch:
    run_id: str
    task_id: str
    timeout: float  # the step's timeout per attempt
    stagger_ms: int = 0
    attempts: int = 0  # the task's attempts when the job was sent: a job of an earlier attempt is over


def _queue():  # noqa: ANN202 - an rq Queue
    import django_rq

    return django_rq.get_queue(QUEUE)


def enqueue(items: list[Dispatch], *, at_front: bool = False) -> list[str]:
    """Enqueue one job per item (after the current transaction commits, if there is one)."""
    if not items:
        return []
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: _enqueue_now(items, at_front=at_front))
        return []
    return _enqueue_now(items, at_front=at_front)


def _enqueue_now(items: list[Dispatch], *, at_front: bool) -> list[str]:
    from rq import Queue

    from agents import jobs

    queue = _queue()
    pipe = queue.connection.pipeline()
    datas = []
    for item in items:
        job_id = f"pl-{item.task_id}-{new_id('j')[2:]}"
        datas.append(Queue.prepare_data(
            jobs.run_step, args=(item.task_id,), job_id=job_id,
            timeout=int(item.timeout + item.stagger_ms / 1000 + JOB_TIMEOUT_MARGIN),
            result_ttl=600, failure_ttl=24 * 3600, at_front=at_front,
            description=f"pipeline step {item.task_id} of {item.run_id}"))
        key = JOBS_KEY.format(run=item.run_id)
        pipe.hset(key, item.task_id, f"{job_id}|{item.attempts}|{item.stagger_ms}")
        pipe.expire(key, JOBS_KEY_TTL)
    try:
        queue.enqueue_many(datas, pipeline=pipe)
        pipe.execute()
    except Exception as exc:  # Redis down: the sweep enqueues again once it is back
        log.warning("could not enqueue %d pipeline step(s): %s", len(items), exc)
        return []
    return [d.job_id for d in datas]


def enqueue_job(func: object, *args: object, job_id: str | None = None, at_front: bool = False) -> None:
    """A bookkeeping job (finishing a run, failure handling) on the pipeline queue, after commit."""
    def now() -> None:
        try:
            _queue().enqueue(func, *args, job_id=job_id, at_front=at_front, result_ttl=600,
                             failure_ttl=24 * 3600, job_timeout=300)
        except Exception as exc:  # the sweep does the same work if this is lost
            log.warning("could not enqueue %s%r: %s", getattr(func, "__name__", func), args, exc)

    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(now)
    else:
        now()


def live_jobs(run_id: str, attempts: dict[str, int]) -> set[str]:
    """The tasks (of `attempts`: task id -> its current attempts) whose latest job is still alive:
    waiting in the queue or scheduled, or started moments ago (its stagger included) for the current
    attempt. A started job of an earlier attempt is over, even if RQ has not noticed its worker died;
    so is a `queued` job that is in no queue (its worker died between popping and starting it)."""
    from rq.job import Job, JobStatus

    if not attempts:
        return set()
    connection = _queue().connection
    task_ids = list(attempts)
    values = connection.hmget(JOBS_KEY.format(run=run_id), task_ids)
    sent: list[tuple[str, str, int, int]] = []
    for task_id, value in zip(task_ids, values, strict=True):
        if value:
            job_id, sent_attempts, stagger_ms = (value.decode() if isinstance(value, bytes) else value).split("|")
            sent.append((task_id, job_id, int(sent_attempts), int(stagger_ms)))
    if not sent:
        return set()
    found = Job.fetch_many([job_id for _, job_id, _, _ in sent], connection=connection)
    now = datetime.now(UTC)
    live = set()
    queued: dict[str, str] = {}  # task id -> its job's id, for jobs `queued` longer than POPPED_GRACE
    for (task_id, job_id, sent_attempts, stagger_ms), job in zip(sent, found, strict=True):
        if job is None:
            continue
        status = job.get_status(refresh=False)
        if status == JobStatus.QUEUED:
            if job.enqueued_at is None or now - _aware(job.enqueued_at) < POPPED_GRACE:
                live.add(task_id)
            else:
                queued[task_id] = job_id
        elif status in (JobStatus.SCHEDULED, JobStatus.DEFERRED):
            live.add(task_id)
        elif status == JobStatus.STARTED and job.started_at is not None and sent_attempts == attempts[task_id]:
            if now - _aware(job.started_at) < STARTED_GRACE + timedelta(milliseconds=stagger_ms):
                live.add(task_id)
    if queued:
        live |= _in_queue(connection, queued)
    return live


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _in_queue(connection: Any, queued: dict[str, str]) -> set[str]:
    """The tasks (of `queued`: task id -> job id) whose job is still waiting in the queue. A job
    popped since it was fetched counts as lost: the duplicate job that the sweep sends is harmless."""
    key = _queue().key
    if connection.llen(key) > MAX_QUEUE_SCAN:
        return set(queued)
    waiting = {v.decode() if isinstance(v, bytes) else v for v in connection.lrange(key, 0, -1)}
    return {task_id for task_id, job_id in queued.items() if job_id in waiting}


def already_sent(run_id: str, task_id: str, attempts: int) -> bool:
    """Whether a job was sent for this attempt of the task (a ready task has had none before, so
    one means the step that released it sent it)."""
    try:
        value = _queue().connection.hget(JOBS_KEY.format(run=run_id), task_id)
    except Exception as exc:  # then send one: a duplicate is harmless, a missing one is not
        log.warning("could not read the job index of %s: %s", run_id, exc)
        return False
    if not value:
        return False
    return int((value.decode() if isinstance(value, bytes) else value).split("|")[1]) == attempts


def forget_run(run_id: str) -> None:
    try:
        _queue().connection.delete(JOBS_KEY.format(run=run_id))
    except Exception as exc:  # it expires on its own
        log.warning("could not drop the job index of %s: %s", run_id, exc)
