"""Indexing: every state change of the index goes through here (STYLE rule 1).

The flow for one path: `index_request` marks it pending in the database, then enqueues an RQ
job; the job calls `index_file`, which indexes whatever version is the file's head *now* (so
two quick writes cost at most one extra no-op job). Vectors go to Chroma first; then one
transaction swaps the path's chunk rows and postings, adjusts the keyword totals, records the
state and the `file.indexed` event; after it commits, the superseded vectors are deleted. A job
that fails is retried by RQ and, on its last attempt, leaves the state in `error` with the
reason; a job that is lost (Redis restart, killed worker) is found by the sweep and requeued.
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.utils import timezone

from search import keyword, vectors
from search.chunking import ChunkSpec, chunk_document
from search.extract import MAX_TEXT_CHARS, NotIndexable, extract
from search.models import Chunk, IndexState, KeywordStats, Posting
from workspace.blobs import BlobCorrupt, blob_read
from workspace.models import File, FileVersion, Workspace
from workspace.services.events import event_record
from workspace.services.workspaces import lock_workspace

log = logging.getLogger(__name__)

QUEUE = "index"
JOB = "search.jobs.index_version"
WORKSPACE_JOB = "search.jobs.index_workspace"
RETRY_INTERVALS = [2, 10, 30]
JOB_TIMEOUT = 600
STUCK_AFTER = timedelta(seconds=30)
MAX_REQUEUES = 5
# How the reason of a failure to reach Chroma starts (search/jobs.py names the exception): such a
# file is indexed again once Chroma answers (index_retry_unavailable), not left in `error`.
UNAVAILABLE_REASON = f"{vectors.VectorStoreError.__name__}: "
Status = IndexState.Status


def vector_id(workspace_id: str, path: str, version: int, ordinal: int) -> str:
    digest = hashlib.sha1(path.encode("utf-8"), usedforsecurity=False).hexdigest()[:20]
    return f"{workspace_id}:{digest}:{version}:{ordinal}"


# -- asking for indexing ---------------------------------------------------------------------
def index_mark_pending(*, workspace_id: str, path: str, version: int, force: bool = False) -> IndexState | None:
    """Record that `path` needs indexing at `version` (or later). None when nothing is to do:
    that version is already indexed, or already waiting for its job."""
    now = timezone.now()
    job_id = uuid.uuid4().hex
    with transaction.atomic():
        state = IndexState.objects.select_for_update().filter(workspace_id=workspace_id, path=path).first()
        if state is None:
            try:
                with transaction.atomic():
                    return IndexState.objects.create(workspace_id=workspace_id, path=path, version=version,
                                                     job_id=job_id, queued_at=now, updated_at=now)
            except IntegrityError:  # a concurrent first event for the same path created it
                state = IndexState.objects.select_for_update().get(workspace_id=workspace_id, path=path)
        if not force:
            done = state.status != Status.PENDING and (state.indexed_version or 0) >= version
            waiting = state.status == Status.PENDING and state.version >= version
            if done or waiting:
                return None
        state.version = max(state.version, version)
        state.status = Status.PENDING
        state.job_id = job_id
        state.queued_at = state.updated_at = now
        state.attempts = state.requeues = 0
        state.reason = ""
        update = ["version", "status", "job_id", "queued_at", "updated_at", "attempts", "requeues", "reason"]
        if force:
            state.indexed_version = None
            update.append("indexed_version")
        state.save(update_fields=update)
    return state


def index_enqueue(state: IndexState) -> None:
    """Put the job on the "index" queue. A Redis outage is logged, not raised: the state is
    already pending in the database and the sweep enqueues it again."""
    import django_rq
    from redis.exceptions import RedisError
    from rq import Retry

    try:
        django_rq.get_queue(QUEUE).enqueue(
            JOB, state.pk, state.version, job_id=state.job_id, job_timeout=JOB_TIMEOUT,
            retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS),
            result_ttl=600, failure_ttl=7 * 86400, description=f"index {state.workspace_id}:{state.path}",
        )
    except RedisError as exc:
        log.warning("could not enqueue indexing of %s:%s (the sweep will retry): %s",
                    state.workspace_id, state.path, exc)


def index_request(*, workspace_id: str, path: str, version: int, force: bool = False) -> IndexState | None:
    state = index_mark_pending(workspace_id=workspace_id, path=path, version=version, force=force)
    if state is not None:
        index_enqueue(state)
    return state


def index_mark_workspace(*, workspace_id: str, force: bool = False) -> list[IndexState]:
    """Mark every live file of a workspace pending (and every deleted one that still has chunks)."""
    with_chunks = set(Chunk.objects.filter(workspace_id=workspace_id).values_list("path", flat=True).distinct())
    heads = File.objects.filter(workspace_id=workspace_id).values_list("path", "version", "deleted")
    marked = []
    for path, version, deleted in heads.iterator():
        if deleted and path not in with_chunks:
            continue
        state = index_mark_pending(workspace_id=workspace_id, path=path, version=version, force=force)
        if state is not None:
            marked.append(state)
    return marked


def index_request_workspace(*, workspace_id: str, force: bool = False) -> int:
    marked = index_mark_workspace(workspace_id=workspace_id, force=force)
    for state in marked:
        index_enqueue(state)
    return len(marked)


def index_enqueue_workspace(*, workspace_id: str) -> None:
    """From an event listener: one job that requests the whole workspace, not N enqueues inline."""
    import django_rq
    from redis.exceptions import RedisError

    try:
        django_rq.get_queue(QUEUE).enqueue(WORKSPACE_JOB, workspace_id, job_timeout=JOB_TIMEOUT,
                                           description=f"index workspace {workspace_id}")
    except RedisError as exc:
        log.warning("could not enqueue indexing of workspace %s: %s", workspace_id, exc)


# -- indexing one file -----------------------------------------------------------------------
@dataclass
class _Outcome:
    version: FileVersion
    specs: list[ChunkSpec] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    status: str = Status.INDEXED
    reason: str = ""
    embedded: int = 0
    reused: int = 0


def index_file(*, state_id: int) -> str:
    """Index the current head of the state's path. Returns what happened, for the job's result."""
    state = IndexState.objects.filter(pk=state_id).first()
    if state is None:
        return "gone"
    head = File.objects.filter(workspace_id=state.workspace_id, path=state.path).first()
    if head is None:
        return "gone"
    if state.status != Status.PENDING and state.indexed_version == head.version:
        return "current"
    version = FileVersion.objects.select_related("author").get(
        workspace_id=state.workspace_id, path=state.path, version=head.version)
    outcome = _prepare(version)
    if outcome.specs:
        outcome.embedded, outcome.reused = _store_vectors(version, outcome.specs, outcome.ids)
    try:
        stray = _commit(state_id=state_id, outcome=outcome)
    except Workspace.DoesNotExist:
        stray = outcome.ids
    if stray:
        try:
            vectors.delete(workspace_id=version.workspace_id, ids=stray)
        except vectors.VectorStoreError as exc:
            # Harmless: a vector counts only while its chunk row exists; reindex clears these.
            log.warning("could not delete %d superseded vectors of %s: %s", len(stray), version.path, exc)
    return outcome.status


def _prepare(version: FileVersion) -> _Outcome:
    outcome = _Outcome(version=version)
    if version.deleted:
        return outcome
    try:
        document = extract(version.path, blob_read(version.sha256))
    except NotIndexable as exc:
        outcome.status, outcome.reason = Status.NOT_INDEXABLE, exc.reason
        return outcome
    except BlobCorrupt as exc:  # retrying cannot help; fsck reports it
        outcome.status, outcome.reason = Status.ERROR, exc.message
        return outcome
    if document.truncated:
        outcome.reason = f"only the first {MAX_TEXT_CHARS} characters are indexed"
    outcome.specs = chunk_document(document)
    outcome.ids = [vector_id(version.workspace_id, version.path, version.version, s.ordinal) for s in outcome.specs]
    return outcome


def _metadata(version: FileVersion, spec: ChunkSpec) -> dict[str, Any]:
    return {
        "workspace": version.workspace_id, "path": version.path, "version": version.version,
        "author": version.author.username, "author_id": version.author_id, "task": version.task_id or "",
        "start": spec.start, "end": spec.end, "created": int(version.created_at.timestamp()), "sha": spec.sha,
        **vectors.directories(version.path),
    }


def _store_vectors(version: FileVersion, specs: list[ChunkSpec], ids: list[str]) -> tuple[int, int]:
    """Upsert the chunks' vectors, embedding only text the workspace has not embedded before.
    Returns (texts embedded, chunks whose vector was reused)."""
    import numpy as np

    from search import embeddings

    ws = version.workspace_id
    # Fail fast, before the model is loaded, when Chroma is not there.
    vectors.ensure(workspace_id=ws)
    shas = {spec.sha for spec in specs}
    known = dict(Chunk.objects.filter(workspace_id=ws, sha__in=shas).values_list("sha", "vector_id"))
    by_sha: dict[str, Any] = {}
    if known:
        stored = vectors.embeddings_of(workspace_id=ws, ids=list(known.values()))
        by_sha = {sha: stored[cid] for sha, cid in known.items() if cid in stored}
    reused = sum(1 for spec in specs if spec.sha in by_sha)
    todo = {spec.sha: spec.embed_text for spec in specs if spec.sha not in by_sha}
    if todo:
        for sha, vector in zip(todo, embeddings.embed(list(todo.values())), strict=True):
            by_sha[sha] = vector
    matrix = np.asarray([by_sha[spec.sha] for spec in specs], dtype=np.float32)
    vectors.upsert(workspace_id=ws, ids=ids, embeddings=matrix, metadatas=[_metadata(version, s) for s in specs])
    return len(todo), reused


def _commit(*, state_id: int, outcome: _Outcome) -> list[str]:
    """Swap the path's chunks for the new ones; return the vector ids to delete afterwards."""
    version = outcome.version
    ws, path = version.workspace_id, version.path
    now = timezone.now()
    with transaction.atomic():
        lock_workspace(ws)
        state = IndexState.objects.select_for_update().filter(pk=state_id).first()
        if state is None:
            return outcome.ids
        if state.indexed_version is not None and state.indexed_version >= version.version:
            # Another run got here first with this version or a newer one: keep its rows, and drop
            # only the vectors that no row vouches for.
            kept = set(Chunk.objects.filter(workspace_id=ws, path=path).values_list("vector_id", flat=True))
            return [vid for vid in outcome.ids if vid not in kept]
        old = list(Chunk.objects.filter(workspace_id=ws, path=path).values_list("pk", "vector_id", "length"))
        frequencies: Counter[str] = Counter()
        if old:
            lost = Posting.objects.filter(chunk_id__in=[pk for pk, _, _ in old])
            frequencies.subtract(dict(lost.values("term").annotate(n=Count("term")).values_list("term", "n")))
            lost.delete()
            Chunk.objects.filter(pk__in=[pk for pk, _, _ in old]).only("pk").delete()
        counts = [keyword.term_counts(spec.embed_text) for spec in outcome.specs]
        for terms in counts:
            frequencies.update(terms.keys())
        rows = [Chunk(vector_id=vid, workspace_id=ws, path=path, version=version.version, ordinal=spec.ordinal,
                      start=spec.start, end=spec.end, text=spec.text, context=spec.context, sha=spec.sha,
                      author_id=version.author_id, task_id=version.task_id or "", created_at=version.created_at,
                      length=sum(terms.values()))
                for spec, vid, terms in zip(outcome.specs, outcome.ids, counts, strict=True)]
        Chunk.objects.bulk_create(rows, batch_size=500)  # sets each row's pk (SQLite and PostgreSQL)
        keyword.postings_insert(workspace_id=ws,
                                chunks=[(row.pk, terms) for row, terms in zip(rows, counts, strict=True)])
        keyword.adjust_frequencies(workspace_id=ws, delta=frequencies)
        _adjust_totals(ws, chunks=len(rows) - len(old),
                       tokens=sum(r.length for r in rows) - sum(length for _, _, length in old))
        waiting = state.version > version.version
        IndexState.objects.filter(pk=state.pk).update(
            indexed_version=version.version, status=Status.PENDING if waiting else outcome.status,
            reason=outcome.reason, deleted=version.deleted, chunks=len(rows), updated_at=now,
            **({} if waiting else {"attempts": 0, "requeues": 0}),
        )
        data: dict[str, Any] = {"path": path, "version": version.version, "status": outcome.status,
                                "chunks": len(rows), "embedded": outcome.embedded, "reused": outcome.reused}
        if version.deleted:
            data["deleted"] = True
        if outcome.reason:
            data["reason"] = outcome.reason
        event_record(workspace_id=ws, type="file.indexed", target=path, data=data)
    new = set(outcome.ids)
    return [vid for _, vid, _ in old if vid not in new]


def _adjust_totals(workspace_id: str, *, chunks: int, tokens: int) -> None:
    if chunks == 0 and tokens == 0:
        return
    KeywordStats.objects.get_or_create(workspace_id=workspace_id)
    KeywordStats.objects.filter(pk=workspace_id).update(chunks=F("chunks") + chunks, tokens=F("tokens") + tokens)


# -- failures and lost jobs -------------------------------------------------------------------
def index_failed(*, state_id: int, version: int, error: str, final: bool) -> None:
    """A run failed. Until its last attempt the state stays pending (RQ retries it); then `error`."""
    now = timezone.now()
    workspace_id = IndexState.objects.filter(pk=state_id).values_list("workspace_id", flat=True).first()
    if workspace_id is None:
        return
    with transaction.atomic():
        lock_workspace(workspace_id)  # the lock order of every writer: workspace row first
        state = IndexState.objects.select_for_update().filter(pk=state_id).first()
        if state is None or state.status != Status.PENDING:
            return
        attempts = state.attempts + 1
        if final and state.version <= version:
            state.status = Status.ERROR
            state.reason = f"{error[:1800]} (gave up after {attempts} attempts)"
        else:
            state.reason = error[:2000]
        state.attempts = min(attempts, 32767)
        state.updated_at = now
        state.save(update_fields=["status", "reason", "attempts", "updated_at"])
        if state.status == Status.ERROR:
            event_record(workspace_id=state.workspace_id, type="file.index_failed", target=state.path,
                         data={"path": state.path, "version": state.version, "reason": state.reason})


def index_requeue_stuck(*, now: datetime | None = None, limit: int = 200) -> int:
    """Enqueue again every file pending for longer than STUCK_AFTER whose job is gone (Redis lost
    it, or its worker died); after MAX_REQUEUES such losses the file is marked `error`."""
    import django_rq
    from redis.exceptions import RedisError
    from rq.job import Job, JobStatus

    now = now or timezone.now()
    rows = list(IndexState.objects.filter(status=Status.PENDING, queued_at__lt=now - STUCK_AFTER)
                .order_by("queued_at")[:limit])
    if not rows:
        return 0
    queue = django_rq.get_queue(QUEUE)
    try:
        jobs = Job.fetch_many([row.job_id or "missing" for row in rows], connection=queue.connection)
    except RedisError as exc:
        log.warning("index sweep: Redis unavailable: %s", exc)
        return 0
    alive = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED}
    handled = 0
    for row, job in zip(rows, jobs, strict=True):
        current = IndexState.objects.filter(pk=row.pk, status=Status.PENDING, job_id=row.job_id,
                                            queued_at=row.queued_at)
        if job is not None and job.get_status(refresh=False) in alive:
            current.update(queued_at=now)  # still on its way: look again later
            continue
        if row.requeues >= MAX_REQUEUES:
            _give_up(row, current, now)
            handled += 1
            continue
        job_id = uuid.uuid4().hex
        if current.update(job_id=job_id, queued_at=now, requeues=F("requeues") + 1, updated_at=now):
            row.job_id = job_id
            index_enqueue(row)
            handled += 1
    return handled


def index_retry_unavailable(*, limit: int = 200) -> int:
    """Enqueue again every file in `error` only because Chroma was unreachable (an outage or a
    restart longer than RQ's retries), once Chroma answers again. A file gets MAX_REQUEUES such
    rounds; if it still fails, its error stands until `manage.py reindex`."""
    rows = list(IndexState.objects.filter(status=Status.ERROR, reason__startswith=UNAVAILABLE_REASON,
                                          requeues__lt=MAX_REQUEUES).order_by("updated_at")[:limit])
    if not rows or not vectors.reachable():
        return 0
    now = timezone.now()
    handled = 0
    for row in rows:
        job_id = uuid.uuid4().hex
        # Conditional: a write since (index_mark_pending) or another sweeper got there first.
        if IndexState.objects.filter(pk=row.pk, status=Status.ERROR, updated_at=row.updated_at).update(
                status=Status.PENDING, job_id=job_id, queued_at=now, updated_at=now, attempts=0,
                requeues=F("requeues") + 1):
            row.job_id = job_id
            index_enqueue(row)
            handled += 1
    return handled


def _give_up(row: IndexState, current: Any, now: datetime) -> None:
    reason = f"the indexing job was lost {row.requeues} times; run 'manage.py reindex' once the workers are healthy"
    with transaction.atomic():
        lock_workspace(row.workspace_id)
        if current.update(status=Status.ERROR, reason=reason, updated_at=now):
            event_record(workspace_id=row.workspace_id, type="file.index_failed", target=row.path,
                         data={"path": row.path, "version": row.version, "reason": reason})
