"""Workspaces and versioned files as MCP tools (API.md "Workspaces", "Files")."""
from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from django.db.models.functions import Substr
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations
from pydantic import Field

from switchyard.mcp_server.core import FilePath, LockToken, WorkspaceId, call, iso, server
from workspace.access import workspace_for
from workspace.api.workspaces import workspace_json
from workspace.errors import Invalid, NotFound
from workspace.models import File, FileVersion, Membership, Role
from workspace.paths import validate_path, validate_prefix
from workspace.services import files
from workspace.services.locks import lock_state_for
from workspace.services.tasks import task_record_reads
from workspace.services.workspaces import workspace_create as create_workspace

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)

Encoding = Annotated[Literal["utf-8", "base64"], Field(
    description="How `content` is encoded: 'utf-8' for text (the default), 'base64' for binary data.")]
TaskId = Annotated[str | None, Field(
    description="The id of the task you claimed and are working on, if any: the read or write is recorded "
                "against it (task_complete then warns when a file it read has changed since).",
    max_length=32)]


# -- workspaces ------------------------------------------------------------------------------
@server.tool(annotations=READ_ONLY)
async def workspace_list(ctx: Context) -> dict[str, Any]:
    """List the workspaces you are a member of, with your role in each (owner, admin, editor, viewer).
    Use a workspace's `id` as the `workspace` argument of every other tool."""

    def run(user: Any) -> dict[str, Any]:
        rows = Membership.objects.filter(user=user).select_related(
            "workspace", "workspace__created_by", "workspace__transferred_from").order_by("workspace__name", "id")
        return {"workspaces": [workspace_json(m.workspace, m.role) for m in rows]}

    return await call(ctx, run)


@server.tool(annotations=WRITES)
async def workspace_create(
    ctx: Context,
    *,
    name: Annotated[str, Field(description="A human-readable name, 1-200 characters.", min_length=1,
                               max_length=200)],
    intelligence: Annotated[bool, Field(description="Index the files for search and ask (true), or not.")] = True,
) -> dict[str, Any]:
    """Create a workspace; you become its owner. Returns it, with the `id` the other tools take."""

    def run(user: Any) -> dict[str, Any]:
        return workspace_json(create_workspace(user=user, name=name, intelligence=intelligence), Role.OWNER)

    return await call(ctx, run)


# -- files -------------------------------------------------------------------------------------
def _decode(content: str, encoding: str) -> bytes:
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Invalid("invalid_content", "`content` is not valid base64.") from exc
    return content.encode("utf-8")


@server.tool(annotations=READ_ONLY)
async def file_read(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    path: FilePath,
    version: Annotated[int | None, Field(description="Read this version instead of the newest one.",
                                         ge=1)] = None,
    task: TaskId = None,
) -> dict[str, Any]:
    """Read a file: its content and its `version`. Keep the version: pass it as `expected_version` to
    file_write so your write cannot overwrite a change you have not seen. Reads are never blocked by locks.
    Text comes back as `content` with encoding 'utf-8'; binary data base64-encoded with encoding 'base64'."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace)
        found, data = files.file_read(access=access, path=path, version=version)
        if task:
            task_record_reads(access=access, task_id=task, files=[{"path": path, "version": found.version}])
        body = files.version_summary(found)
        if files.is_text(data):
            body.update(content=data.decode("utf-8"), encoding="utf-8")
        else:
            body.update(content=base64.b64encode(data).decode("ascii"), encoding="base64")
        return body

    return await call(ctx, run)


@server.tool(annotations=WRITES)
async def file_write(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    path: FilePath,
    content: Annotated[str, Field(description="The whole new content of the file (not a patch).")],
    expected_version: Annotated[int | None, Field(
        description="The version you read (from file_read or your last write). The write succeeds only if the "
                    "file is still at that version; otherwise you get a version_mismatch error with the current "
                    "version and content to merge with. Omit only for a file you have not read.", ge=1)] = None,
    create_only: Annotated[bool, Field(
        description="Write only if the path has no file yet (else an already_exists error).")] = False,
    lock_token: LockToken = None,
    encoding: Encoding = "utf-8",
    task: TaskId = None,
) -> dict[str, Any]:
    """Write a new version of a file (creating it if needed). Returns the new `version`: use it as
    `expected_version` for your next write. Fails with 'locked' when someone else holds a lock on the path,
    and with 'stale_lock_token' when you hold one but did not pass its token."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        result = files.file_write(access=access, path=path, content=_decode(content, encoding),
                                  if_match=expected_version, if_none_match=create_only, lock_token=lock_token,
                                  task_id=task or "")
        return {**files.version_summary(result.version), "created": result.created}

    return await call(ctx, run)


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False))
async def file_delete(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    path: FilePath,
    expected_version: Annotated[int | None, Field(
        description="Delete only if the file is still at this version (the one you read).", ge=1)] = None,
    lock_token: LockToken = None,
) -> dict[str, Any]:
    """Delete a file. Its history stays: the deletion is a new version, and older versions can still be read."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        return files.version_summary(files.file_delete(access=access, path=path, if_match=expected_version,
                                                       lock_token=lock_token))

    return await call(ctx, run)


@server.tool(annotations=READ_ONLY)
async def file_list(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    prefix: Annotated[str, Field(description="Only files under this directory, such as 'research/' "
                                             "(empty: the whole workspace).", max_length=1100)] = "",
    limit: Annotated[int, Field(description="At most this many files.", ge=1, le=1000)] = 200,
    after: Annotated[str | None, Field(description="Continue after this path: pass the `next_after` of the "
                                                   "previous call.", max_length=4096)] = None,
) -> dict[str, Any]:
    """List the live files of a workspace in path order, each with its current version, size, author and
    lock (who holds it, until when), or null when unlocked."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace)
        clean = validate_prefix(prefix)
        qs = File.objects.filter(workspace=access.workspace, deleted=False).select_related("author")
        if clean:
            # Exact (case-sensitive) prefix match on both databases, unlike LIKE on SQLite.
            qs = qs.annotate(head=Substr("path", 1, len(clean))).filter(head=clean)
        if after:
            qs = qs.filter(path__gt=after)
        rows = list(qs.order_by("path")[: limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        locks = lock_state_for(workspace_id=access.workspace_id, paths=[f.path for f in rows])
        return {"files": [{"path": f.path, "version": f.version, "size": f.size, "sha256": f.sha256,
                           "author": f.author.username, "updated_at": iso(f.updated_at),
                           "lock": locks.get(f.path)} for f in rows],
                "next_after": rows[-1].path if more and rows else None}

    return await call(ctx, run)


@server.tool(annotations=READ_ONLY)
async def file_history(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    path: FilePath,
    limit: Annotated[int, Field(description="At most this many versions.", ge=1, le=500)] = 50,
    before: Annotated[int | None, Field(description="Only versions older than this one (to page back).",
                                        ge=1)] = None,
) -> dict[str, Any]:
    """Every version of a file, newest first: who wrote it and when, its size and hash, and which versions
    are deletions. Read an old version with file_read(version=N); compare two with file_diff."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace)
        validate_path(path)
        qs = FileVersion.objects.filter(workspace=access.workspace, path=path).select_related("author")
        if before is not None:
            qs = qs.filter(version__lt=before)
        rows = list(qs.order_by("-version")[: limit + 1])
        if not rows and before is None:
            raise NotFound("file", f"No file has ever been at {path}.")
        more = len(rows) > limit
        rows = rows[:limit]
        return {"versions": [files.version_summary(v) for v in rows],
                "next_before": rows[-1].version if more and rows else None}

    return await call(ctx, run)


@server.tool(annotations=READ_ONLY)
async def file_diff(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    path: FilePath,
    from_version: Annotated[int, Field(description="The older version.", ge=1)],
    to_version: Annotated[int, Field(description="The newer version.", ge=1)],
) -> dict[str, Any]:
    """A unified diff of two versions of a file (what changed from `from_version` to `to_version`)."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace)
        return files.file_diff(access=access, path=path, from_version=from_version, to_version=to_version)

    return await call(ctx, run)


@server.tool(annotations=WRITES)
async def file_move(
    ctx: Context,
    *,
    workspace: WorkspaceId,
    from_path: Annotated[str, Field(description="The file to move.", min_length=1, max_length=4096)],
    to_path: Annotated[str, Field(description="Where to move it; nothing may live there yet.", min_length=1,
                                  max_length=4096)],
    expected_version: Annotated[int | None, Field(
        description="Move only if the source is still at this version.", ge=1)] = None,
    lock_token: LockToken = None,
) -> dict[str, Any]:
    """Move (rename) a file atomically. Moving 'inbox/x' to 'agent-<you>/x' claims it: of two agents racing
    for the same file exactly one wins, the other gets not_found or version_mismatch."""

    def run(user: Any) -> dict[str, Any]:
        access = workspace_for(user, workspace, need=Role.EDITOR)
        tomb, moved = files.file_move(access=access, src=from_path, dst=to_path, if_match=expected_version,
                                      lock_token=lock_token)
        return {"from": files.version_summary(tomb), "to": files.version_summary(moved)}

    return await call(ctx, run)
