"""Cursor pagination (API.md: `?limit=` default 50, max 500; `?cursor=`; `{"results", "next"}`).

Cursors are signed, so a forged or tampered cursor is a 400, never a surprise query.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.core import signing
from django.db.models import QuerySet

from workspace.errors import Invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_SALT = "switchyard.cursor"


def parse_limit(raw: str | None, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise Invalid("invalid_limit", f"'limit' is a whole number from 1 to {maximum}.") from exc
    if not 1 <= value <= maximum:
        raise Invalid("invalid_limit", f"'limit' is a whole number from 1 to {maximum}.", maximum=maximum)
    return value


def encode_cursor(scope: str, key: Any) -> str:
    return signing.dumps({"s": scope, "k": key}, salt=_SALT, compress=True)


def decode_cursor(scope: str, cursor: str | None) -> Any:
    if not cursor:
        return None
    try:
        data = signing.loads(cursor, salt=_SALT)
    except signing.BadSignature as exc:
        raise Invalid("invalid_cursor", "The cursor is not valid; start again without one.") from exc
    if not isinstance(data, dict) or data.get("s") != scope:
        raise Invalid("invalid_cursor", "The cursor belongs to another list.")
    return data.get("k")


def parse_int(raw: str | None, name: str, *, minimum: int = 0, default: int | None = None) -> int | None:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise Invalid("invalid_parameter", f"'{name}' must be a whole number.", parameter=name) from exc
    if value < minimum or value > 2**62:
        raise Invalid("invalid_parameter", f"'{name}' is out of range.", parameter=name)
    return value


def keyset_page(
    qs: QuerySet, *, request: Any, scope: str, key: str, descending: bool = False,
    render: Callable[[Sequence[Any]], list[Any]],
) -> dict[str, Any]:
    """One page of `qs` ordered by the unique column `key`, resumed after the cursor's key."""

    def fetch(after: Any, count: int) -> list[Any]:
        rows = qs if after is None else qs.filter(**{f"{key}__lt" if descending else f"{key}__gt": after})
        return list(rows.order_by(f"-{key}" if descending else key)[:count])

    return keyset_fetch_page(fetch, request=request, scope=scope, key=lambda row: getattr(row, key), render=render)


def keyset_fetch_page(
    fetch: Callable[[Any, int], list[Any]], *, request: Any, scope: str, key: Callable[[Any], Any],
    render: Callable[[Sequence[Any]], list[Any]],
) -> dict[str, Any]:
    """One page from `fetch(after, count)`, which returns up to `count` rows in the order of a
    unique key, those after the key `after` (None: from the start); `key(row)` is a row's key."""
    limit = parse_limit(request.query_params.get("limit"))
    after = decode_cursor(scope, request.query_params.get("cursor"))
    rows = fetch(after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(scope, key(rows[-1])) if more and rows else None
    return {"results": render(rows), "next": next_cursor}
