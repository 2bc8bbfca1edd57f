"""Search, ask and the event log as MCP tools (API.md "Intelligence", "Events")."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations
from pydantic import Field

from switchyard.mcp_server.core import WorkspaceId, call, server
from workspace.access import readable_workspace_ids, workspace_for
from workspace.api.events import events_after
from workspace.errors import Invalid, Unavailable
from workspace.models import Role, Workspace

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
MAX_QUERY_CHARS = 2000


@server.tool(annotations=READ_ONLY)
async def search(
    ctx: Context,
    *,
    query: Annotated[str, Field(description="What to look for, in words (meaning and keywords both count).",
                                min_length=1, max_length=MAX_QUERY_CHARS)],
    workspace: Annotated[str | None, Field(description="Search only this workspace; omit to search every "
                                                       "workspace you can read.", max_length=64)] = None,
    k: Annotated[int, Field(description="How many results (one per file, its best passage).", ge=1, le=100)] = 10,
    mode: Annotated[Literal["hybrid", "semantic", "keyword"], Field(
        description="'hybrid' (default) fuses meaning and keywords; 'semantic' is meaning only; 'keyword' "
                    "is exact words only.")] = "hybrid",
    prefix: Annotated[str, Field(description="Only files under this directory, such as 'research/'.",
                                 max_length=1100)] = "",
    author: Annotated[str | None, Field(description="Only versions written by this username.",
                                        max_length=150)] = None,
) -> dict[str, Any]:
    """Search the files' contents, locked files included. Each result names `path` and `version` with the
    matching `snippet`; read the whole file with file_read. `stale` marks a hit whose file has a newer
    version not indexed yet, and `pending` counts files still waiting to be indexed."""

    def run(user: Any) -> dict[str, Any]:
        from search import selectors, vectors
        from search.selectors import build_filters, require_intelligence

        if not query.strip():
            raise Invalid("invalid_query", "The query must not be blank.")
        if workspace is not None:
            access = workspace_for(user, workspace, need=Role.VIEWER)
            require_intelligence(access.workspace)
            workspace_ids = [access.workspace_id]
        else:
            workspace_ids = list(Workspace.objects.filter(pk__in=readable_workspace_ids(user), intelligence=True)
                                 .values_list("pk", flat=True))
        filters = build_filters({"prefix": prefix, **({"author": author} if author else {})})
        try:
            found = selectors.search(workspace_ids=workspace_ids, query=query, k=k, mode=mode, filters=filters)
        except vectors.VectorStoreError as exc:
            raise Unavailable("index_unavailable", "The vector index is unavailable; try mode 'keyword'.") from exc
        body: dict[str, Any] = {"results": [hit.as_dict() for hit in found.hits], "pending": found.pending}
        if found.degraded:
            body["degraded"] = found.degraded
        return body

    return await call(ctx, run)


@server.tool(annotations=READ_ONLY)
async def ask(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    question: Annotated[str, Field(description="A question the workspace's files can answer.", min_length=1,
                                   max_length=MAX_QUERY_CHARS)],
) -> dict[str, Any]:
    """Answer a question from the workspace's files. A citation [n] in `answer` is the n-th entry of
    `citations`, each a passage of `path` at `version`: check important claims with file_read."""

    def run(user: Any) -> dict[str, Any]:
        from search import answers
        from search.selectors import require_intelligence

        if not question.strip():
            raise Invalid("invalid_question", "The question must not be blank.")
        access = workspace_for(user, workspace, need=Role.VIEWER)
        require_intelligence(access.workspace)
        answer = answers.ask(workspace_ids=[access.workspace_id], question=question)
        return {"answer": answer.text, "citations": answer.citations, "pending": answer.pending}

    return await call(ctx, run)


@server.tool(annotations=READ_ONLY)
async def events(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    after: Annotated[int, Field(description="Only events after this `seq`: 0 for the beginning, then the "
                                            "`next_after` of your previous call.", ge=0)] = 0,
    limit: Annotated[int, Field(description="At most this many events.", ge=1, le=500)] = 100,
    types: Annotated[list[str] | None, Field(description="Only these event types, such as ['file.written', "
                                                         "'lock.acquired', 'task.claimed'].",
                                             max_length=50)] = None,
) -> dict[str, Any]:
    """What happened in a workspace since a cursor, in order: files written, locks taken and released,
    tasks claimed and completed, approvals decided, and more. Keep `next_after` and pass it as `after`
    next time to see only what is new."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace)
        rows = events_after(workspace_id=access.workspace_id, after=after, limit=limit, types=types or None)
        return {"events": rows, "next_after": rows[-1]["seq"] if rows else after}

    return await call(ctx, run)
