"""ApiView.json_body parses the usual JSON body itself; it must agree with DRF's own parse, error for
error, and leave the body readable (the Idempotency-Key fingerprint reads it again)."""
from __future__ import annotations

import pytest
from django.utils.datastructures import MultiValueDict
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from workspace.api.base import ApiView, raw_body

BODIES = [
    b'{"path": "a.txt", "ttl_seconds": 60}',
    b'{"nested": {"list": [1, 2.5, null, true, "\\u00e9"]}}',
    b"[1, 2, 3]",
    b'"text"',
    b"{not json",
    b'{"x": NaN}',
    b'{"x": Infinity}',
    b"[" * 70 + b"]" * 70,
    b'{"bad utf-8": "\xff"}',
    b"  ",
]


def _view(body: bytes, content_type: str) -> ApiView:
    django_request = APIRequestFactory().generic("POST", "/api/v1/x", data=body, content_type=content_type)
    view = ApiView()
    view.request = view.initialize_request(django_request)
    view.format_kwarg = None
    return view


def _outcome(call):
    try:
        return "ok", call()
    except ParseError as exc:
        return "error", str(exc.detail)


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/json; charset=latin-1", "text/plain"])
@pytest.mark.parametrize("body", BODIES)
def test_the_fast_parse_agrees_with_drf(body, content_type):
    """GIVEN a body and a content type WHEN parsed by json_body and by DRF's request.data THEN both
    give the same value or the same 400 (an unsupported type is DRF's 415 on both)."""
    from rest_framework.exceptions import UnsupportedMediaType

    fast, drf = _view(body, content_type), _view(body, content_type)
    if content_type == "text/plain":
        for view in (fast, drf):
            with pytest.raises(UnsupportedMediaType):
                view.json_body() if view is fast else view.request.data  # noqa: B018
        return
    assert _outcome(fast.json_body) == _outcome(lambda: drf.request.data)


def test_the_body_stays_readable_after_the_parse():
    """GIVEN a JSON body parsed by json_body WHEN the body is read again (as the idempotency
    fingerprint does) THEN it is the whole body, and request.data is the parsed value."""
    body = b'{"path": "once.txt"}'
    view = _view(body, "application/json")
    assert view.json_body() == {"path": "once.txt"}
    assert raw_body(view.request, limit=1000) == body
    assert isinstance(view.request, Request) and view.request.data == {"path": "once.txt"}


def test_the_usual_body_is_not_handed_to_drf(monkeypatch):
    """GIVEN the usual body (UTF-8 JSON with a Content-Length) WHEN json_body reads it THEN DRF's
    parser negotiation never runs (that is the point of the fast path); a body DRF has already
    parsed is returned as parsed, without reading it again."""
    calls = []
    monkeypatch.setattr(Request, "_parse", lambda self: calls.append(self) or ({}, MultiValueDict()))
    view = _view(b'{"path": "fast.txt"}', "application/json")
    assert view.json_body() == {"path": "fast.txt"}
    assert calls == []
    other = _view(b'{"path": "drf.txt"}', "application/json")
    other.request._full_data = {"path": "already parsed"}
    assert other.json_body() == {"path": "already parsed"}
    assert calls == []


def _reference(body: bytes):
    """RFC 8259 JSON as json.loads reads it, refused past 64 levels (a plain recursive count)."""
    import json

    def depth(value) -> int:
        if isinstance(value, dict):
            return 1 + max(map(depth, value.values()), default=0)
        if isinstance(value, list):
            return 1 + max(map(depth, value), default=0)
        return 1

    def reject(name):
        raise ValueError(name)

    try:
        data = json.loads(body.decode(), parse_constant=reject)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "error"
    return "error" if depth(data) > 64 else ("ok", data)


@pytest.mark.parametrize("body", [
    *BODIES,
    "\ufeff{}".encode(), b"{}", b"[]", b"0", b'{"a": [], "b": {}}', b'[{"a": 1}, 2]',
    b'{"a": ' * 63 + b"1" + b"}" * 63, b'{"a": ' * 64 + b"1" + b"}" * 64, b'{"a": ' * 65 + b"1" + b"}" * 65,
    b"[" * 64 + b"]" * 64, b"[" * 65 + b"]" * 65, b'{"a": 1, "b": ' + b"[" * 64 + b"]" * 64 + b"}",
])
def test_the_parse_reads_json_as_json_loads_does_and_refuses_past_64_levels(body):
    """GIVEN a body (flat, nested to 63, 64 and 65 levels, with a byte-order mark, or not JSON)
    WHEN the API parses it THEN it gets what json.loads gives, refused past 64 levels: the shared
    decoder and the shortcut for flat bodies change nothing."""
    from workspace.api.parsers import parse_json

    try:
        got = "ok", parse_json(body)
    except ParseError:
        got = "error"
    assert got == _reference(body)
