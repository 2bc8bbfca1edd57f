"""RQ jobs of the "pipeline" queue. Thin: they take ids, treat a vanished row as a clean exit,
and call a service (STYLE rule 8). See agents/pipelines/dispatch.py for who enqueues them."""
from __future__ import annotations

from agents.pipelines.runner import ensure_usable_connections


def run_step(task_id: str) -> str:
    """Claim the pipeline step whose task is `task_id` and run it (a clean exit if it was taken)."""
    from agents.pipelines.runner import step_run

    return step_run(task_id=task_id)


def finish_run(run_id: str) -> bool:
    """Record a run's end and its measurements once every step has ended."""
    from agents.pipelines.services import pipeline_finish

    ensure_usable_connections()
    return pipeline_finish(run_id=run_id)


def handle_failed_step(task_id: str) -> bool:
    """Move a failed step's inputs under failed/<task-id>/."""
    from agents.pipelines.services import step_handle_failure

    ensure_usable_connections()
    return step_handle_failure(task_id=task_id)
