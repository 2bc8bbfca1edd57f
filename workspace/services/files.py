"""Versioned files: every write is a new version; preconditions guard against lost updates."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from workspace.access import Access
from workspace.blobs import blob_put, blob_read
from workspace.errors import Forbidden, Invalid, NotFound, PreconditionFailed, TooLarge
from workspace.models import File, FileVersion, Role
from workspace.paths import validate_path
from workspace.services.events import event_record
from workspace.services.locks import lock_enforce_write
from workspace.services.workspaces import lock_workspace, rule_check_write


@dataclass(frozen=True)
class WriteResult:
    version: FileVersion
    created: bool


def is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def version_summary(version: FileVersion, *, with_content: bool = False) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "path": version.path,
        "version": version.version,
        "sha256": version.sha256 or None,
        "size": version.size,
        "deleted": version.deleted,
        "author": version.author.username,
        "created_at": version.created_at.isoformat().replace("+00:00", "Z"),
    }
    if with_content and not version.deleted and version.size <= settings.INLINE_CONFLICT_CONTENT_LIMIT:
        data = blob_read(version.sha256)
        if is_text(data):
            summary["content"] = data.decode("utf-8")
    return summary


def _current_version(workspace_id: str, head: File) -> FileVersion:
    return FileVersion.objects.select_related("author").get(
        workspace_id=workspace_id, path=head.path, version=head.version
    )


def _check_preconditions(*, workspace_id: str, path: str, head: File | None,
                         if_match: int | None, if_none_match: bool) -> None:
    live = head is not None and not head.deleted
    if if_none_match and live:
        assert head is not None
        raise PreconditionFailed(
            "already_exists", f"{path} already exists (version {head.version}).",
            current=version_summary(_current_version(workspace_id, head)),
        )
    if if_match is not None:
        if head is None or head.version != if_match or head.deleted:
            current = version_summary(_current_version(workspace_id, head), with_content=True) if head else None
            raise PreconditionFailed(
                "version_mismatch",
                f"{path} is at version {head.version if head else 'none'}"
                f"{' (deleted)' if head and head.deleted else ''}, not {if_match}.",
                current=current,
            )


def _new_version(*, access: Access, path: str, head: File | None, sha: str, size: int, deleted: bool,
                 lock_token: int | None, task_id: str) -> FileVersion:
    now = timezone.now()
    number = (head.version if head else 0) + 1
    version = FileVersion.objects.create(
        workspace_id=access.workspace_id, path=path, version=number, deleted=deleted, sha256=sha, size=size,
        author=access.user, on_behalf_of=getattr(access.user, "on_behalf_of", None), task_id=task_id or "",
        lock_token=lock_token, created_at=now,
    )
    if head is None:
        File.objects.create(workspace_id=access.workspace_id, path=path, version=number, deleted=deleted,
                            sha256=sha, size=size, author=access.user, updated_at=now)
    else:
        updated = File.objects.filter(pk=head.pk, version=head.version).update(
            version=number, deleted=deleted, sha256=sha, size=size, author=access.user, updated_at=now
        )
        # The workspace row lock makes this unreachable; the conditional UPDATE is the backstop.
        if updated != 1:
            raise PreconditionFailed("version_mismatch", f"{path} changed during the write; retry.")
    return version


def file_write(*, access: Access, path: str, content: bytes, if_match: int | None = None,
               if_none_match: bool = False, lock_token: int | None = None, task_id: str = "") -> WriteResult:
    if not access.at_least(Role.EDITOR):
        raise Forbidden("forbidden", "Writing files needs the editor role.")
    validate_path(path)
    if len(content) > settings.MAX_FILE_SIZE:
        raise TooLarge("too_large", f"A file is at most {settings.MAX_FILE_SIZE} bytes.", limit=settings.MAX_FILE_SIZE)
    ws_id = access.workspace_id
    rule_check_write(workspace_id=ws_id, path=path, user=access.user)
    # The blob goes to disk before the transaction: content-addressed, so an aborted write
    # leaves at most an unreferenced blob (which fsck reports), never a version without content.
    if if_match is not None or if_none_match:
        # Fail fast without queueing for the workspace lock when the precondition already fails
        # (the common case for the losers of a race); it is checked again under the lock.
        _check_preconditions(workspace_id=ws_id, path=path,
                             head=File.objects.filter(workspace_id=ws_id, path=path).first(),
                             if_match=if_match, if_none_match=if_none_match)
    sha = blob_put(content)
    with transaction.atomic():
        lock_workspace(ws_id)
        head = File.objects.filter(workspace_id=ws_id, path=path).first()
        _check_preconditions(workspace_id=ws_id, path=path, head=head, if_match=if_match,
                             if_none_match=if_none_match)
        token = lock_enforce_write(workspace_id=ws_id, paths=[path], user=access.user, token=lock_token)
        created = head is None or head.deleted
        version = _new_version(access=access, path=path, head=head, sha=sha, size=len(content), deleted=False,
                               lock_token=token, task_id=task_id)
        event_record(workspace_id=ws_id, type="file.written", actor=access.user, target=path,
                     data={"path": path, "version": version.version, "sha256": sha, "size": len(content),
                           "created": created, "task": task_id or None, "lock_token": token})
    return WriteResult(version=version, created=created)


def file_delete(*, access: Access, path: str, if_match: int | None = None, lock_token: int | None = None,
                task_id: str = "") -> FileVersion:
    if not access.at_least(Role.EDITOR):
        raise Forbidden("forbidden", "Deleting files needs the editor role.")
    validate_path(path)
    ws_id = access.workspace_id
    rule_check_write(workspace_id=ws_id, path=path, user=access.user)
    with transaction.atomic():
        lock_workspace(ws_id)
        head = File.objects.filter(workspace_id=ws_id, path=path).first()
        if head is None or head.deleted:
            raise NotFound("file", f"No file at {path}.")
        _check_preconditions(workspace_id=ws_id, path=path, head=head, if_match=if_match, if_none_match=False)
        token = lock_enforce_write(workspace_id=ws_id, paths=[path], user=access.user, token=lock_token)
        version = _new_version(access=access, path=path, head=head, sha="", size=0, deleted=True,
                               lock_token=token, task_id=task_id)
        event_record(workspace_id=ws_id, type="file.deleted", actor=access.user, target=path,
                     data={"path": path, "version": version.version, "previous": head.version})
    return version


def file_move(*, access: Access, src: str, dst: str, if_match: int | None = None,
              lock_token: int | None = None) -> tuple[FileVersion, FileVersion]:
    """Atomically: a tombstone at `src` and the same content as a new version at `dst`.

    Of two racing movers of one file exactly one wins; the other finds `src` gone (404) or,
    with `if_match`, at another version (412).
    """
    if not access.at_least(Role.EDITOR):
        raise Forbidden("forbidden", "Moving files needs the editor role.")
    validate_path(src)
    validate_path(dst)
    if src == dst:
        raise Invalid("same_path", "'from' and 'to' are the same path.")
    ws_id = access.workspace_id
    rule_check_write(workspace_id=ws_id, path=src, user=access.user)
    rule_check_write(workspace_id=ws_id, path=dst, user=access.user)
    with transaction.atomic():
        lock_workspace(ws_id)
        head = File.objects.filter(workspace_id=ws_id, path=src).first()
        if head is None or head.deleted:
            raise NotFound("file", f"No file at {src}.")
        _check_preconditions(workspace_id=ws_id, path=src, head=head, if_match=if_match, if_none_match=False)
        dst_head = File.objects.filter(workspace_id=ws_id, path=dst).first()
        _check_preconditions(workspace_id=ws_id, path=dst, head=dst_head, if_match=None, if_none_match=True)
        token = lock_enforce_write(workspace_id=ws_id, paths=[src, dst], user=access.user, token=lock_token)
        tomb = _new_version(access=access, path=src, head=head, sha="", size=0, deleted=True,
                            lock_token=token, task_id="")
        moved = _new_version(access=access, path=dst, head=dst_head, sha=head.sha256, size=head.size,
                             deleted=False, lock_token=token, task_id="")
        event_record(workspace_id=ws_id, type="file.moved", actor=access.user, target=dst,
                     data={"from": src, "to": dst, "from_version": tomb.version, "version": moved.version,
                           "sha256": head.sha256, "size": head.size})
    return tomb, moved


def file_read(*, access: Access, path: str, version: int | None = None) -> tuple[FileVersion, bytes]:
    validate_path(path)
    ws_id = access.workspace_id
    qs = FileVersion.objects.select_related("author").filter(workspace_id=ws_id, path=path)
    if version is None:
        head = File.objects.filter(workspace_id=ws_id, path=path).first()
        if head is None or head.deleted:
            raise NotFound("file", f"No file at {path}." if head is None else f"{path} was deleted (version {head.version}).")
        found = qs.filter(version=head.version).first()
    else:
        found = qs.filter(version=version).first()
        if found is None:
            raise NotFound("version", f"{path} has no version {version}.")
        if found.deleted:
            raise NotFound("version", f"Version {version} of {path} is a deletion.")
    if found is None:
        raise NotFound("file", f"No file at {path}.")
    return found, blob_read(found.sha256)


def file_diff(*, access: Access, path: str, from_version: int, to_version: int) -> dict[str, Any]:
    validate_path(path)
    versions = {
        v.version: v
        for v in FileVersion.objects.filter(workspace_id=access.workspace_id, path=path,
                                            version__in=[from_version, to_version])
    }
    for number in (from_version, to_version):
        if number not in versions:
            raise NotFound("version", f"{path} has no version {number}.")

    def text_of(v: FileVersion) -> str | None:
        if v.deleted:
            return ""
        data = blob_read(v.sha256)
        return data.decode("utf-8") if is_text(data) else None

    old, new = text_of(versions[from_version]), text_of(versions[to_version])
    if old is None or new is None:
        body = f"Binary files {path}@{from_version} and {path}@{to_version} differ\n" \
            if versions[from_version].sha256 != versions[to_version].sha256 else ""
        return {"path": path, "from": from_version, "to": to_version, "binary": True, "diff": body}
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"a/{path}@{from_version}", tofile=f"b/{path}@{to_version}",
    )
    text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return {"path": path, "from": from_version, "to": to_version, "binary": False, "diff": text}
