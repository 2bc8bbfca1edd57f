"""Workspace paths: the one validator every entry point uses (API.md, "Files")."""
from __future__ import annotations

import functools
import unicodedata

from workspace.errors import Invalid

MAX_PATH_BYTES = 1024
# Characters drawn like a slash or backslash that NFKC leaves alone (Unicode confusables).
_SLASH_LOOKALIKES = frozenset("\u2044\u2215\u2216\u29f5\u29f8\u29f9")


def _invalid(message: str, path: str) -> Invalid:
    return Invalid("invalid_path", message, path=path[:200])


def validate_path(path: str, *, directory: bool = False) -> str:
    """Return `path` if it is a valid file path (or, with `directory`, a prefix ending in '/').

    Relative, '/'-separated, NFC, at most 1024 bytes, no '..', '.' or empty segments, no NUL or
    control characters, no backslash. Nothing is normalised silently: a path that would change
    under normalisation is refused, so two spellings can never name one file.

    The answer depends on the text alone, and agents name the same few paths over and over (every
    lock, write and read of a file checks its path, some twice): valid paths are remembered, in
    an LRU of 4,096; an invalid one is checked again each time and raises the same error.
    """
    if isinstance(path, str) and len(path) <= MAX_PATH_BYTES:
        return _valid(path, directory)
    return _validate(path, directory=directory)


def _validate(path: str, *, directory: bool = False) -> str:
    if not isinstance(path, str) or path == "":
        raise _invalid("A path must be a non-empty string.", str(path))
    if path.startswith("/"):
        raise _invalid("A path is relative: it must not start with '/'.", path)
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in path):
        raise _invalid("A path must not contain NUL or control characters.", path)
    if "\\" in path:
        raise _invalid("A path uses '/' as its separator; backslashes are not allowed.", path)
    # U+FFFD is what an invalid or overlong UTF-8 sequence in a URL decodes to: refuse it rather
    # than store a name nobody can type again.
    if any(0xD800 <= ord(ch) <= 0xDFFF or ch == "\ufffd" for ch in path):
        raise _invalid("A path must be valid UTF-8.", path)
    if unicodedata.normalize("NFC", path) != path:
        raise _invalid("A path must be in Unicode NFC form.", path)
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise _invalid(f"A path is at most {MAX_PATH_BYTES} bytes of UTF-8.", path)
    body = path
    if directory:
        if not path.endswith("/"):
            raise _invalid("A directory prefix ends with '/'.", path)
        body = path[:-1]
    elif path.endswith("/"):
        raise _invalid("A file path must not end with '/'.", path)
    if any(ch in _SLASH_LOOKALIKES or (ch not in "/\\" and any(c in "/\\" for c in unicodedata.normalize("NFKC", ch)))
           for ch in path):
        raise _invalid("A path must not contain characters that look like '/' or '\\'.", path)
    for segment in body.split("/"):
        if segment == "":
            raise _invalid("A path must not contain empty segments ('//').", path)
        if segment in {".", ".."} or unicodedata.normalize("NFKC", segment) in {".", ".."}:
            raise _invalid("A path must not contain '.' or '..' segments (or look-alikes of them).", path)
        if segment != segment.strip() and segment.strip() == "":
            raise _invalid("A path segment must not be blank.", path)
    return path


@functools.lru_cache(maxsize=4096)
def _valid(path: str, directory: bool) -> str:  # noqa: FBT001 - positional for the cache key
    return _validate(path, directory=directory)


def validate_prefix(prefix: str) -> str:
    """A directory prefix; 'research' is read as 'research/'. '' means the whole workspace."""
    if prefix in ("", None):
        return ""
    if not prefix.endswith("/"):
        prefix = prefix + "/"
    return validate_path(prefix, directory=True)


def under(path: str, prefix: str) -> bool:
    return prefix == "" or path.startswith(prefix)
