"""The API's JSON parser: strict, and never a 500 on hostile bodies."""
from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of `value`, stopping early once past `limit` (iterative: no recursion)."""
    if type(value) is dict or type(value) is list:
        # The common body, an object (or array) of plain values, without the walk.
        for item in value.values() if type(value) is dict else value:
            if isinstance(item, (dict, list)):
                break
        else:
            return 1
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


# One decoder for every body: json.loads with any option builds a decoder and its scanner per call,
# which took longer than decoding a lock request's body.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(body: bytes, encoding: str = "utf-8") -> Any:
    """`body` as RFC 8259 JSON: no NaN/Infinity, at most 64 levels deep; else ParseError (400)."""
    try:
        text = body.decode(encoding)
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        data = _DECODER.decode(text)
    except RecursionError as exc:
        raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"JSON parse error - {exc}") from exc
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return data


class StrictJSONParser(JSONParser):
    """JSON objects only as RFC 8259 defines them: no NaN/Infinity, at most 64 levels deep."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        return parse_json(stream.read() if stream is not None else b"", encoding)
