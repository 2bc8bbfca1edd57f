"""RQ jobs of the "index" queue: thin, by id, a vanished row is a clean exit (STYLE rule 8).

Workers run them with `rq.worker.SimpleWorker` (no fork per job), so the embedding model that
the first job loads stays loaded for every later job of that worker process.
"""
from __future__ import annotations

from rq import get_current_job

from search import services


def index_version(state_id: int, version: int) -> str:
    """Index the path of IndexState `state_id` (asked for at `version`, or anything newer)."""
    job = get_current_job()
    try:
        return services.index_file(state_id=state_id)
    except Exception as exc:
        final = job is None or not job.retries_left
        services.index_failed(state_id=state_id, version=version, error=f"{exc.__class__.__name__}: {exc}",
                              final=final)
        raise


def index_workspace(workspace_id: str) -> int:
    """Ask for indexing of every file of a workspace (after intelligence was switched on)."""
    return services.index_request_workspace(workspace_id=workspace_id)
