"""Content-addressed blob store: `<BLOB_DIR>/ab/cd/<sha256>`.

A blob is written to a temporary file and renamed into place, so a reader (or a crash) never
sees a partial blob under its final name; the sha256 is checked again on every read.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings

from workspace.errors import ServiceError


class BlobCorrupt(ServiceError):
    status = 500
    code = "blob_corrupt"


def blob_path(sha256: str) -> Path:
    return Path(settings.BLOB_DIR) / sha256[:2] / sha256[2:4] / sha256


def blob_put(data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    target = blob_path(sha)
    if target.exists():
        return sha
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if settings.BLOB_FSYNC:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return sha


def blob_read(sha256: str) -> bytes:
    try:
        data = blob_path(sha256).read_bytes()
    except FileNotFoundError as exc:
        raise BlobCorrupt("blob_missing", "The stored content of this version is missing; run 'manage.py fsck'.",
                          sha256=sha256) from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BlobCorrupt("blob_corrupt", "The stored content of this version does not match its sha256.",
                          sha256=sha256)
    return data


def blob_check(sha256: str) -> str | None:
    """None if the blob is present and intact, else 'missing' or 'mismatch'."""
    path = blob_path(sha256)
    if not path.exists():
        return "missing"
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return None if digest.hexdigest() == sha256 else "mismatch"


def blob_iter_all() -> list[str]:
    root = Path(settings.BLOB_DIR)
    if not root.exists():
        return []
    return [p.name for p in root.glob("??/??/*") if not p.name.startswith(".tmp-")]
