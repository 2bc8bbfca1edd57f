"""The Chroma server: one collection per workspace, cosine space.

Why a collection per workspace and not one shared collection filtered by metadata: Chroma
evaluates a metadata filter by materialising every matching id first, so a `workspace` (or
`live`) filter costs time in proportion to the matches: measured on this machine at 100k vectors,
an unfiltered top-100 query takes 4 ms and the same query filtered on the workspace 490 ms.
With one collection per workspace an ordinary search has no filter at all, a workspace can never
leak into another's results through a filter mistake, and superseded versions are deleted from
it rather than flagged. Metadata (workspace, path, version, author, task, character span,
creation time, directories) still travels with every vector for the rare filtered query.

The client is created once per process; collections are cached by name and dropped from the
cache when Chroma no longer knows them (after a Chroma restart on an empty data dir).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

UPSERT_BATCH = 500
MAX_DEPTH = 8  # directory levels recorded in metadata as d1..d8 for prefix filters

_lock = threading.Lock()
_client: Any = None
_collections: dict[str, Any] = {}


class VectorStoreError(Exception):
    """Chroma is unreachable or refused a request."""


def collection_name(workspace_id: str) -> str:
    prefix = getattr(settings, "SEARCH_COLLECTION_PREFIX", "switchyard_")
    return f"{prefix}{workspace_id}"


def client() -> Any:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                import chromadb
                import httpx
                from chromadb.config import Settings

                url = urlparse(settings.CHROMA_URL)
                try:
                    new = chromadb.HttpClient(
                        host=url.hostname or "127.0.0.1",
                        port=url.port or (443 if url.scheme == "https" else 8000),
                        ssl=url.scheme == "https", settings=Settings(anonymized_telemetry=False),
                    )
                except (ValueError, httpx.HTTPError) as exc:  # the client checks the server on creation
                    raise VectorStoreError(f"Chroma at {settings.CHROMA_URL}: {exc}") from exc
                # chromadb's HTTP session has no timeout; a hung server must not hang a request forever.
                session = getattr(getattr(new, "_server", None), "_session", None)
                if isinstance(session, httpx.Client):
                    session.timeout = httpx.Timeout(30.0, connect=3.0)
                _client = new
    return _client


def _errors() -> tuple[type[BaseException], ...]:
    import httpx
    from chromadb.errors import ChromaError

    return (httpx.HTTPError, ChromaError, ConnectionError)


def _collection(workspace_id: str, *, create: bool) -> Any | None:
    from chromadb.errors import NotFoundError

    name = collection_name(workspace_id)
    cached = _collections.get(name)
    if cached is not None:
        return cached
    try:
        if create:
            found = client().get_or_create_collection(
                name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
        else:
            found = client().get_collection(name, embedding_function=None)
    except NotFoundError:
        return None
    except _errors() as exc:
        raise VectorStoreError(f"Chroma: {exc}") from exc
    _collections[name] = found
    return found


def _call(workspace_id: str, operation: str, *, create: bool, **kwargs: Any) -> Any:
    """Run a collection method, once more with a fresh handle if the cached one went stale."""
    from chromadb.errors import NotFoundError

    for attempt in (1, 2):
        collection = _collection(workspace_id, create=create)
        if collection is None:
            return None
        try:
            return getattr(collection, operation)(**kwargs)
        except NotFoundError:
            _collections.pop(collection_name(workspace_id), None)
            if attempt == 2:
                if create:
                    raise VectorStoreError("Chroma lost the collection during the request") from None
                return None
        except _errors() as exc:
            raise VectorStoreError(f"Chroma: {exc}") from exc
    return None


def reachable() -> bool:
    """Whether the Chroma server answers its heartbeat."""
    try:
        client().heartbeat()
    except (VectorStoreError, ValueError, *_errors()):
        return False
    return True


def ensure(*, workspace_id: str) -> None:
    """Create the workspace's collection if needed; raises VectorStoreError if Chroma is down."""
    _collection(workspace_id, create=True)


def directories(path: str) -> dict[str, str]:
    """{'d1': 'a/', 'd2': 'a/b/'} for 'a/b/c.md': lets a prefix filter be an equality."""
    parts = path.split("/")[:-1]
    return {f"d{i + 1}": "/".join(parts[: i + 1]) + "/" for i in range(min(len(parts), MAX_DEPTH))}


def upsert(*, workspace_id: str, ids: Sequence[str], embeddings: Any, metadatas: Sequence[dict[str, Any]]) -> None:
    for first in range(0, len(ids), UPSERT_BATCH):
        last = first + UPSERT_BATCH
        _call(workspace_id, "upsert", create=True, ids=list(ids[first:last]), embeddings=embeddings[first:last],
              metadatas=list(metadatas[first:last]))


def delete(*, workspace_id: str, ids: Sequence[str]) -> None:
    for first in range(0, len(ids), UPSERT_BATCH):
        _call(workspace_id, "delete", create=False, ids=list(ids[first:first + UPSERT_BATCH]))


def embeddings_of(*, workspace_id: str, ids: Sequence[str]) -> dict[str, list[float]]:
    """The stored vectors of these ids (those Chroma still has)."""
    found: dict[str, list[float]] = {}
    for first in range(0, len(ids), UPSERT_BATCH):
        result = _call(workspace_id, "get", create=False, ids=list(ids[first:first + UPSERT_BATCH]),
                       include=["embeddings"])
        if result is None:
            break
        for vid, vector in zip(result["ids"], result["embeddings"], strict=True):
            found[vid] = list(vector)
    return found


def query(*, workspace_id: str, vector: Sequence[float], n: int,
          where: dict[str, Any] | None = None) -> list[tuple[str, float]]:
    """Nearest vectors as (id, cosine distance), nearest first; [] for a workspace never indexed."""
    kwargs: dict[str, Any] = {"query_embeddings": [list(vector)], "n_results": n, "include": ["distances"]}
    if where:
        kwargs["where"] = where
    result = _call(workspace_id, "query", create=False, **kwargs)
    if result is None:
        return []
    return list(zip(result["ids"][0], (float(d) for d in result["distances"][0]), strict=True))


def count(*, workspace_id: str) -> int:
    result = _call(workspace_id, "count", create=False)
    return int(result or 0)


def drop(*, workspace_id: str) -> None:
    from chromadb.errors import NotFoundError

    _collections.pop(collection_name(workspace_id), None)
    try:
        client().delete_collection(collection_name(workspace_id))
    except NotFoundError:
        return
    except _errors() as exc:
        raise VectorStoreError(f"Chroma: {exc}") from exc
