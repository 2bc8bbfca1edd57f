"""Competitive steps: N attempts, a scorer, and a judge that keeps the best.

The judge task does not depend on its attempts in the task graph: the tasks service cancels the
dependents of a task that ends without being done, and losing attempts are cancelled (or fail)
by design. Instead the engine holds the judge back until its gate opens: a winner has been
declared (first_good_wins: the first attempt to score at least `good_enough`), or every attempt
has ended. Declaring the winner is one conditional UPDATE, so of two good attempts finishing at
once exactly one wins; the winner's job then cancels the other attempts (running ones are
stopped by their supervisors within a poll interval) and dispatches the judge.
"""
from __future__ import annotations

import logging
from typing import Any

from agents.models import PipelineStep
from workspace.access import Access
from workspace.errors import ServiceError
from workspace.models.tasks import FINAL_TASK_STATUSES, Task

log = logging.getLogger(__name__)


def judge_of(step: PipelineStep) -> PipelineStep | None:
    return PipelineStep.objects.select_related("task").filter(run_id=step.run_id, key=step.config.get("judge")).first()


def attempts_of(judge: PipelineStep) -> list[PipelineStep]:
    return list(PipelineStep.objects.select_related("task").filter(run_id=judge.run_id,
                                                                   key__in=judge.config.get("attempts", [])))


def gate_open(judge: PipelineStep) -> bool:
    if judge.winner:
        return True
    keys = judge.config.get("attempts", [])
    unfinished = Task.objects.filter(pipeline_step__run_id=judge.run_id, pipeline_step__key__in=keys) \
        .exclude(status__in=FINAL_TASK_STATUSES).exists()
    return not unfinished


def declare_winner(*, judge: PipelineStep, attempt_key: str) -> bool:
    """True if `attempt_key` is now the winner (and no other attempt was before it)."""
    won = PipelineStep.objects.filter(pk=judge.pk, winner="").update(winner=attempt_key) == 1
    if won:
        judge.winner = attempt_key
    return won


def cancel_losers(*, access: Access, judge: PipelineStep, winner: str) -> list[str]:
    """Cancel every unfinished attempt but the winner; returns their keys."""
    from workspace.services.tasks import task_cancel

    cancelled = []
    for attempt in attempts_of(judge):
        if attempt.key == winner or attempt.task.status in FINAL_TASK_STATUSES:
            continue
        try:
            task_cancel(access=access, task_id=attempt.task_id, reason=f"{winner} won the competition")
            cancelled.append(attempt.key)
        except ServiceError as exc:  # it ended on its own in the meantime
            log.info("not cancelling %s: %s", attempt.key, exc.message)
    return cancelled


def candidates(judge: PipelineStep) -> list[dict[str, Any]]:
    return [{"key": a.key, "status": a.task.status, "score": a.score, "attempt": a.config.get("attempt", 0)}
            for a in attempts_of(judge)]
