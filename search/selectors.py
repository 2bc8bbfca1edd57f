"""Reads of the index: hybrid search, index state (STYLE rule 2).

A search runs its two retrievers side by side: the semantic one (encode the query, ask each
workspace's Chroma collection) on a worker thread, which touches no database, while the keyword
one (BM25 in SQL) runs on the request's own thread and connection. Both lists are then checked
against the chunk rows, which are the truth about what is searchable and where the caller may
look, collapsed to files when asked, and fused by reciprocal rank.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import Count, Q

from search import keyword, vectors
from search.models import Chunk, IndexState, KeywordStats
from workspace.models import File

MODES = ("hybrid", "semantic", "keyword")
RRF_K = 60
SNIPPET_CHARS = 280
# Candidates each retriever returns before fusion and collapsing to files.
MIN_DEPTH = 100
MAX_DEPTH = 300
# With filters, the semantic side first reads this many unfiltered neighbours and filters them
# in SQL; only when too few survive does it ask Chroma to filter (slow on large collections).
FILTERED_DEPTH = 1000
_KEYS_PER_QUERY = 500

_q = connection.ops.quote_name
_CHUNK, _FILE = _q(Chunk._meta.db_table), _q(File._meta.db_table)
_INDEX_STATE, _KEYWORD_STATS = _q(IndexState._meta.db_table), _q(KeywordStats._meta.db_table)
_START, _END = _q("start"), _q("end")

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="search")
    return _pool


@dataclass(frozen=True)
class Filters:
    prefix: str = ""
    author_ids: tuple[int, ...] | None = None  # None: any author; (): an unknown author, nothing matches
    task: str = ""
    since: datetime | None = None
    until: datetime | None = None

    @property
    def active(self) -> bool:
        return bool(self.prefix or self.author_ids is not None or self.task or self.since or self.until)

    def q(self, prefix: str = "") -> Q:
        """The filters as a condition on Chunk (or, with `prefix`, on a relation to it)."""
        cond = Q()
        if self.prefix:
            cond &= Q(**{f"{prefix}path__startswith": self.prefix})
        if self.author_ids is not None:
            cond &= Q(**{f"{prefix}author_id__in": list(self.author_ids)})
        if self.task:
            cond &= Q(**{f"{prefix}task_id": self.task})
        if self.since:
            cond &= Q(**{f"{prefix}created_at__gte": self.since})
        if self.until:
            cond &= Q(**{f"{prefix}created_at__lte": self.until})
        return cond

    def where(self) -> dict[str, Any] | None:
        """The same filters as a Chroma `where`, for the slow path."""
        clauses: list[dict[str, Any]] = []
        if self.prefix:
            depth = self.prefix.count("/")
            if depth <= vectors.MAX_DEPTH:
                clauses.append({f"d{depth}": self.prefix})
        if self.author_ids is not None:
            clauses.append({"author_id": {"$in": list(self.author_ids) or [-1]}})
        if self.task:
            clauses.append({"task": self.task})
        if self.since:
            clauses.append({"created": {"$gte": int(self.since.timestamp())}})
        if self.until:
            clauses.append({"created": {"$lte": int(self.until.timestamp()) + 1}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def admits(self, *, path: str, author_id: int | None, task_id: str, created_at: datetime | None) -> bool:
        """The filters checked on a chunk row (exactly: SQLite's LIKE ignores ASCII case)."""
        return ((not self.prefix or path.startswith(self.prefix))
                and (self.author_ids is None or author_id in self.author_ids)
                and (not self.task or task_id == self.task)
                and (self.since is None or (created_at is not None and created_at >= self.since))
                and (self.until is None or (created_at is not None and created_at <= self.until)))


def build_filters(data: dict[str, Any]) -> Filters:
    """Filters from a request's fields (`prefix`, `author`, `task`, `since`, `until`), checked."""
    from django.contrib.auth import get_user_model

    from workspace.errors import Invalid
    from workspace.paths import validate_prefix

    prefix = validate_prefix(data.get("prefix") or "")
    author_ids: tuple[int, ...] | None = None
    if data.get("author"):
        author_ids = tuple(get_user_model().objects.filter(username=data["author"]).values_list("pk", flat=True))
    since, until = data.get("since"), data.get("until")
    if since and until and since > until:
        raise Invalid("invalid_time_range", "'since' is after 'until'.")
    return Filters(prefix=prefix, author_ids=author_ids, task=data.get("task", ""), since=since, until=until)


def require_intelligence(workspace: Any) -> None:
    """Search and ask in one workspace need its intelligence mode on (409 otherwise)."""
    from workspace.errors import Conflict

    if not workspace.intelligence:
        raise Conflict("intelligence_off", "Intelligence is switched off for this workspace.")


@dataclass
class Passage:
    """What a search needs of a chunk row (plain values: model instances cost more than the query)."""

    pk: int
    workspace_id: str
    path: str
    version: int
    start: int
    end: int
    text: str = ""


@dataclass
class Hit:
    chunk: Passage
    score: float
    snippet: str = ""
    stale: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"workspace": self.chunk.workspace_id, "path": self.chunk.path, "version": self.chunk.version,
                "score": round(self.score, 6), "snippet": self.snippet, "start": self.chunk.start,
                "end": self.chunk.end, "stale": self.stale}


@dataclass
class SearchResult:
    hits: list[Hit]
    pending: int
    degraded: list[str] = field(default_factory=list)


def search(*, workspace_ids: Sequence[str], query: str, k: int = 10, mode: str = "hybrid",
           filters: Filters | None = None, per_file: bool = True) -> SearchResult:
    """The best `k` hits for `query` in exactly these workspaces (the caller checked access).

    Raises vectors.VectorStoreError when the semantic side is needed alone and Chroma is down;
    a hybrid search then degrades to keyword results and says so.
    """
    assert mode in MODES
    filters = filters or Filters()
    workspace_ids = list(dict.fromkeys(workspace_ids))
    if not workspace_ids:
        return SearchResult(hits=[], pending=0)
    depth = min(max(MIN_DEPTH, 3 * k), MAX_DEPTH)
    # The query starts encoding at once; the workspaces to ask Chroma follow when they are known.
    scope: Future[list[str]] = Future()
    semantic: Future[list[tuple[str, float]]] | None = None
    if mode != "keyword" and query.strip():
        semantic = _executor().submit(_semantic_candidates, query, scope, FILTERED_DEPTH if filters.active else depth)
    try:
        pending, populated, stats = _scope(workspace_ids)
    except BaseException as exc:
        scope.set_exception(exc)
        raise
    scope.set_result(populated)
    if not query.strip():
        return SearchResult(hits=[], pending=pending)
    terms = keyword.query_terms(query)
    degraded: list[str] = []
    lists: list[list[tuple[Passage, float]]] = []
    if mode != "semantic":
        ranked = keyword.rank(terms=terms, workspace_ids=populated, stats=stats,
                              chunk_filter=filters.q("chunk__") if filters.active else None, limit=depth)
        lists.append(_hydrate(ranked, populated, filters))
    if semantic is not None and populated:
        try:
            neighbours = semantic.result()
        except vectors.VectorStoreError:
            if mode == "semantic":
                raise
            degraded.append("semantic")
        else:
            hits = _hydrate(neighbours, populated, filters, key="vector_id")
            if filters.active and len(hits) < depth and len(neighbours) >= FILTERED_DEPTH:
                hits = _hydrate(_filtered_semantic(query, populated, filters, depth), populated, filters,
                                key="vector_id")
            # Chroma reports cosine distance; the score is the similarity.
            lists.insert(0, [(chunk, 1.0 - distance) for chunk, distance in hits])
    if per_file:
        lists = [_best_per_file(ranking) for ranking in lists]
    fused = [] if not lists else lists[0] if len(lists) == 1 else _fuse(lists, by_file=per_file)
    hits = [Hit(chunk=chunk, score=score) for chunk, score in fused[:k]]
    _finish(hits, terms)
    return SearchResult(hits=hits, pending=pending, degraded=degraded)


def _scope(workspace_ids: list[str]) -> tuple[int, list[str], tuple[int, int]]:
    """In one statement: how many files of these workspaces wait to be indexed, the workspaces
    that have anything searchable (the others need no Chroma round trip), and their keyword
    totals (chunks, terms). Plain SQL: the query runs beside the query encode, and every bit of
    Python it saves is GIL time the encode gets."""
    marks = _marks(workspace_ids)
    sql = (f"SELECT '', COUNT(*), 0 FROM {_INDEX_STATE} WHERE workspace_id IN ({marks}) AND status = %s"  # noqa: S608
           f" UNION ALL SELECT workspace_id, chunks, tokens FROM {_KEYWORD_STATS}"
           f" WHERE workspace_id IN ({marks}) AND chunks > 0")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*workspace_ids, IndexState.Status.PENDING.value, *workspace_ids])
        rows = cursor.fetchall()
    pending = next(int(n) for ws, n, _ in rows if ws == "")
    found = [(ws, int(chunks), int(tokens)) for ws, chunks, tokens in rows if ws != ""]
    return pending, [ws for ws, _, _ in found], (sum(r[1] for r in found), sum(r[2] for r in found))


def _marks(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def _as_utc(value: Any) -> datetime:
    """A datetime read by a plain cursor: text or naive UTC on SQLite, aware on PostgreSQL."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _semantic_candidates(query: str, scope: Future[list[str]], n: int) -> list[tuple[str, float]]:
    from search.embeddings import embed_query

    vector = embed_query(query)
    workspace_ids = scope.result()
    return _nearest(vector, workspace_ids, n, None) if workspace_ids else []


def _filtered_semantic(query: str, workspace_ids: list[str], filters: Filters, n: int) -> list[tuple[str, float]]:
    from search.embeddings import embed_query

    return _nearest(embed_query(query), workspace_ids, n, filters.where())


def _nearest(vector: list[float], workspace_ids: list[str], n: int,
             where: dict[str, Any] | None) -> list[tuple[str, float]]:
    def one(ws: str) -> list[tuple[str, float]]:
        return vectors.query(workspace_id=ws, vector=vector, n=n, where=where)

    if len(workspace_ids) == 1:
        found = one(workspace_ids[0])
    else:
        # Not the shared executor: this already runs on it, and nested waits could starve it.
        with ThreadPoolExecutor(max_workers=min(8, len(workspace_ids))) as pool:
            found = [hit for hits in pool.map(one, workspace_ids) for hit in hits]
    found.sort(key=lambda item: item[1])
    return found[:n]


def _hydrate(ranked: Sequence[tuple[Any, float]], workspace_ids: list[str], filters: Filters, *,
             key: str = "id") -> list[tuple[Passage, float]]:
    """The ranked chunks (by `key`: "id", or "vector_id" for Chroma's ids) that are searchable
    chunks of these workspaces and pass the filters. The text is read later, for the final hits.

    The query selects by key alone and the workspace and filters are checked here: given
    `workspace_id IN (...)` as well, SQLite walks the workspace's whole index instead of looking up
    a hundred keys (10 ms at 3,000 chunks, and growing with the workspace). It is plain SQL, and
    reads `created_at` only for a time filter: building the ORM query and parsing a hundred
    timestamps cost more than SQLite takes to run it, on the path right after the query encode."""
    if not ranked:
        return []
    assert key in ("id", "vector_id")
    allowed = set(workspace_ids)
    keys = [cid for cid, _ in ranked]
    timed = filters.since is not None or filters.until is not None
    columns = f"{key}, id, workspace_id, path, version, {_START}, {_END}, author_id, task_id"
    if timed:
        columns += ", created_at"
    found = {}
    with connection.cursor() as cursor:
        for first in range(0, len(keys), _KEYS_PER_QUERY):
            batch = keys[first:first + _KEYS_PER_QUERY]
            cursor.execute(f"SELECT {columns} FROM {_CHUNK} WHERE {key} IN ({_marks(batch)})", batch)  # noqa: S608
            for cid, pk, ws, path, version, start, end, author_id, task_id, *created in cursor.fetchall():
                if ws in allowed and filters.admits(path=path, author_id=author_id, task_id=task_id,
                                                    created_at=_as_utc(created[0]) if timed else None):
                    found[cid] = Passage(pk, ws, path, version, start, end)
    return [(found[cid], score) for cid, score in ranked if cid in found]


def _best_per_file(ranking: list[tuple[Passage, float]]) -> list[tuple[Passage, float]]:
    seen: set[tuple[str, str]] = set()
    best: list[tuple[Passage, float]] = []
    for chunk, score in ranking:
        key = (chunk.workspace_id, chunk.path)
        if key not in seen:
            seen.add(key)
            best.append((chunk, score))
    return best


def rrf(rankings: Sequence[Sequence[str]], *, k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: score(d) = sum over rankings of 1 / (k + rank of d), rank from 1."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for position, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + position)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _fuse(lists: list[list[tuple[Passage, float]]], *, by_file: bool) -> list[tuple[Passage, float]]:
    """RRF over the lists, by file when they were collapsed to files (else by chunk); a fused
    entry is shown through the chunk that ranked best for it in any one list."""
    def group(chunk: Passage) -> str:
        return f"{chunk.workspace_id}\0{chunk.path}" if by_file else str(chunk.pk)

    best: dict[str, tuple[int, Passage]] = {}
    rankings = []
    for ranking in lists:
        order = []
        for position, (chunk, _) in enumerate(ranking):
            key = group(chunk)
            order.append(key)
            if key not in best or position < best[key][0]:
                best[key] = (position, chunk)
        rankings.append(order)
    return [(best[key][1], score) for key, score in rrf(rankings)]


_WORDS = re.compile(r"\w+", re.UNICODE)


def snippet(text: str, terms: Sequence[str], *, width: int = SNIPPET_CHARS) -> str:
    """A window of the chunk around its first query term (or its start), cut at word boundaries."""
    wanted = set(terms)
    anchor = 0
    if wanted:
        for match in _WORDS.finditer(text):
            if keyword.normalize(match.group()) in wanted:
                anchor = match.start()
                break
    if len(text) <= width:
        return text.strip()
    start = max(0, min(anchor - width // 4, len(text) - width))
    end = min(len(text), start + width)
    if start > 0:
        space = text.find(" ", start, start + 20)
        start = space + 1 if space != -1 else start
    if end < len(text):
        space = text.rfind(" ", end - 20, end)
        end = space if space != -1 else end
    return f"{'…' if start > 0 else ''}{text[start:end].strip()}{'…' if end < len(text) else ''}"


def _finish(hits: list[Hit], terms: Sequence[str]) -> None:
    """Texts and snippets, and `stale` where the file has moved on past the indexed version."""
    if not hits:
        return
    pks = [h.chunk.pk for h in hits]
    wanted = {(h.chunk.workspace_id, h.chunk.path) for h in hits}
    spaces, paths = sorted({ws for ws, _ in wanted}), sorted({path for _, path in wanted})
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, text FROM {_CHUNK} WHERE id IN ({_marks(pks)})", pks)  # noqa: S608
        texts = dict(cursor.fetchall())
        cursor.execute(f"SELECT workspace_id, path, version FROM {_FILE}"  # noqa: S608
                       f" WHERE workspace_id IN ({_marks(spaces)}) AND path IN ({_marks(paths)})", [*spaces, *paths])
        heads = {(ws, path): version for ws, path, version in cursor.fetchall()}
    for hit in hits:
        hit.chunk.text = texts.get(hit.chunk.pk, "")
    for hit in hits:
        hit.snippet = snippet(hit.chunk.text, terms)
        head = heads.get((hit.chunk.workspace_id, hit.chunk.path))
        hit.stale = head is not None and head > hit.chunk.version


def index_states(*, workspace_id: str, status: str | None = None) -> Any:
    qs = IndexState.objects.filter(workspace_id=workspace_id, deleted=False)
    return qs.filter(status=status) if status else qs


def index_counts(*, workspace_id: str) -> dict[str, int]:
    counts = {s.value: 0 for s in IndexState.Status}
    rows = index_states(workspace_id=workspace_id).values("status").annotate(n=Count("id"))
    counts.update({row["status"]: row["n"] for row in rows})
    return counts
