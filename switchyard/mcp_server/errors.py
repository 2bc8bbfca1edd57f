"""Service errors as MCP tool errors: the code, the message, the details, and what to do next.

An agent reads the text of a tool error, not an HTTP status, so the text carries everything the
API's error body carries plus one line saying how to recover. A version conflict appends the
current content verbatim after a marker line, so the agent can merge without reading again.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from workspace.errors import ServiceError

CONTENT_MARKER = "--- current content"


def _you(details: dict[str, Any], username: str) -> bool:
    return details.get("holder") == username


def _version_mismatch(details: dict[str, Any], username: str) -> str:
    current = details.get("current")
    if not current:
        return "The file no longer exists: write it with expected_version omitted (or create_only=true) if you " \
               "still want it, after checking file_history for who removed it."
    version = current.get("version")
    if current.get("deleted"):
        return f"The file was deleted at version {version}: check file_history, then write again without " \
               "expected_version if it should come back."
    if "content" in current:
        return f"Someone else wrote version {version}. Merge your change into the current content below and call " \
               f"file_write again with expected_version={version}."
    return f"Someone else wrote version {version}. Read it with file_read, merge your change, and call " \
           f"file_write again with expected_version={version}."


def _already_exists(details: dict[str, Any], username: str) -> str:
    version = (details.get("current") or {}).get("version")
    return f"The path already exists (version {version}). Read it with file_read and write with " \
           f"expected_version={version} to replace it, or choose another path."


def _locked(details: dict[str, Any], username: str) -> str:
    if details.get("holder") is None and details.get("waiting"):
        return "Earlier requests are queued for this path and are served first: call lock_acquire again with " \
               "wait_seconds (up to 60) to take your place in the queue."
    if _you(details, username):
        return "You already hold a lock covering this path (locks are not re-entrant): use that lock's token " \
               "(see lock_list), or release it first."
    retry = details.get("retry_after_seconds")
    when = f" in about {retry} s" if retry else ""
    return f"{details.get('holder')} holds the lock until {details.get('expires_at')}. Work on something else and " \
           f"retry{when}, or call lock_acquire with wait_seconds (up to 60) to wait for it in line."


def _stale_lock_token(details: dict[str, Any], username: str) -> str:
    return "Pass the token of your current lock on this path as lock_token (lock_list shows it). If your lock " \
           "ended, acquire a new one and re-read the file before writing: someone may have changed it."


def _lock_gone(details: dict[str, Any], username: str) -> str:
    return "Acquire a new lock with lock_acquire, then re-read the file: others may have written in between."


def _not_claimant(details: dict[str, Any], username: str) -> str:
    reason = details.get("reason")
    if reason == "lease_expired":
        return "Your lease ran out and the task went back to the queue: stop working on it, and heartbeat more " \
               "often (before lease_expires_at) on the next task you claim."
    if reason == "lease_replaced":
        return "Another claim has taken this task over: stop working on it and claim another with task_claim."
    return "You do not hold this task: claim one with task_claim, and only heartbeat, complete or fail that one."


def _stale_inputs(details: dict[str, Any], username: str) -> str:
    return "Files this task read have changed: re-read them (file_read), redo the affected work and complete " \
           "again, or complete with accept_stale=true if the changes do not matter."


def _intelligence_off(details: dict[str, Any], username: str) -> str:
    return "Search and ask are switched off for this workspace: browse with file_list and file_read instead, or " \
           "ask an admin to switch intelligence on."


def _not_owner(details: dict[str, Any], username: str) -> str:
    writers = ", ".join(details.get("writers") or []) or "nobody"
    return f"Only {writers} may write under {details.get('prefix')}: write in your own directory " \
           "(agent-<your name>/) or ask one of them."


def _rate_limited(details: dict[str, Any], username: str) -> str:
    return f"Wait {details.get('retry_after', 1)} s and call again, less often."


_NEXT: dict[str, Callable[[dict[str, Any], str], str]] = {
    "version_mismatch": _version_mismatch,
    "already_exists": _already_exists,
    "locked": _locked,
    "stale_lock_token": _stale_lock_token,
    "lock_gone": _lock_gone,
    "not_claimant": _not_claimant,
    "stale_inputs": _stale_inputs,
    "intelligence_off": _intelligence_off,
    "not_owner": _not_owner,
    "rate_limited": _rate_limited,
}

_BY_STATUS = {
    400: "Fix the arguments as the message says and call again.",
    403: "You lack the role for this in the workspace: ask an admin or owner to do it, or to change your role.",
    404: "Check the workspace id (workspace_list), the path (file_list) or the id you passed; a workspace you are "
         "not a member of is reported the same way as one that does not exist.",
    409: "The current state does not allow this: read the current state and decide again.",
    410: "It has ended and cannot be revived: start a new one.",
    412: "Read the current state and try again with the current version.",
    413: "Split the content into smaller files.",
    422: "Use a new idempotency key for a different request.",
    423: "Someone holds a lock here: retry later or wait for it with lock_acquire(wait_seconds=...).",
    429: "Wait a moment and call again, less often.",
    502: "The language model provider failed: try again later, or use search and read the hits yourself.",
    503: "A backing service is unavailable: try again shortly (for search, mode='keyword' may still work).",
}


def next_step(err: ServiceError, details: dict[str, Any], *, username: str) -> str:
    hint = _NEXT.get(err.code)
    if hint is not None:
        return hint(details, username)
    return _BY_STATUS.get(err.status, "Read the message, adjust, and call again.")


def error_details(err: ServiceError) -> dict[str, Any]:
    """The error body's details, plus `retry_after_seconds` from a Retry-After header."""
    details = dict(err.details)
    retry = err.headers.get("Retry-After")
    if retry and retry.isdigit():
        details["retry_after_seconds"] = int(retry)
    return details


def tool_error_text(err: ServiceError, *, username: str) -> str:
    """The text of the tool error for `err`, as seen by `username`.

    Lines: "<code> (HTTP <status>): <message>", "Next: <what to do>", "Details: <JSON>"; for a version
    conflict with text content, then a marker line and the current content verbatim.
    """
    details = error_details(err)
    lines = [f"{err.code} (HTTP {err.status}): {err.message}", f"Next: {next_step(err, details, username=username)}"]
    content: str | None = None
    current = details.get("current")
    if isinstance(current, dict) and isinstance(current.get("content"), str):
        content = current["content"]
        details["current"] = {k: v for k, v in current.items() if k != "content"}
        details["current"]["content_follows"] = True
    if details:
        lines.append("Details: " + json.dumps(details, ensure_ascii=False, sort_keys=True, default=str))
    text = "\n".join(lines)
    if content is not None:
        text += f"\n{CONTENT_MARKER} of {current['path']} at version {current['version']} ---\n{content}"
    return text
