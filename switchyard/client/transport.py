"""HTTP plumbing shared by every resource: auth, retries, idempotency keys, pagination.

Retries are only safe because every mutating request carries an `Idempotency-Key` that stays
the same for all attempts of one call: if the first attempt committed but its answer was lost,
the retry gets the stored answer back and changes nothing (API.md "Conventions").
"""
from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from switchyard.client.errors import (
    ApiError,
    ClientError,
    ConnectionFailed,
    IdempotencyInProgress,
    error_from_response,
)

__all__ = ["Page", "RetryPolicy", "Transport", "drop_none", "quote_path", "quote_segment"]

T = TypeVar("T")
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry 429, 503 and connection failures.

    With `Retry-After`, the wait is that long plus up to `jitter` of it again (at least 0.05 s),
    so a crowd of agents told "1 second" does not come back in the same millisecond. Without it,
    the wait is "full jitter" exponential back-off: uniform in [0, min(backoff_max, base * 2^n)].
    A `Retry-After` longer than `max_retry_after` is not slept through: the error is raised, and
    the caller decides (it carries `retry_after`).
    """

    max_attempts: int = 5
    backoff_base: float = 0.25
    backoff_max: float = 10.0
    jitter: float = 0.25
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempts count from 1)."""
        if retry_after is not None:
            return retry_after + self.random() * max(0.05, retry_after * self.jitter)
        return self.random() * min(self.backoff_max, self.backoff_base * 2.0 ** min(max(attempt - 1, 0), 30))


@dataclass
class Page(Generic[T]):
    """One page of a cursor-paginated list; iterate it, or walk every page with `all()`."""

    results: list[T]
    next: str | None
    _fetch: Callable[[str], Page[T]] | None = field(default=None, repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # other keys of the body

    def __iter__(self) -> Iterator[T]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> T:
        return self.results[index]

    def all(self) -> Iterator[T]:
        """Every item from this page on, fetching further pages lazily."""
        page: Page[T] | None = self
        while page is not None:
            yield from page.results
            page = page._fetch(page.next) if page.next and page._fetch else None


def quote_segment(value: str) -> str:
    """One path segment (an id, a username, a topic), with `/` escaped too."""
    return quote(value, safe="")


def quote_path(path: str) -> str:
    """A file path or prefix, keeping its `/` separators."""
    return quote(path, safe="/")


def _root(base_url: str) -> str:
    """The server root, whether the caller gave `http://host`, `http://host/` or `http://host/api/v1`."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
    path = parts.path.rstrip("/")
    for suffix in ("/api/v1", "/api"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class Transport:
    """Sends API requests: the bearer token, retries with jitter, idempotency keys, error mapping."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0, retry: RetryPolicy | None = None,
                 user_agent: str = "switchyard-client/1", http: httpx.Client | None = None) -> None:
        self.root = _root(base_url)
        self.token = token
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._http = http or httpx.Client(timeout=timeout, headers={"User-Agent": user_agent})

    @property
    def auth_header(self) -> dict[str, str]:
        """The bearer header, or none without a token (enough for `health`)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def ws_root(self) -> str:
        """The WebSocket origin matching the HTTP one (`http` → `ws`, `https` → `wss`)."""
        scheme, rest = self.root.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}"

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                timeout: float | None = None, ok: tuple[int, ...] = ()) -> httpx.Response:
        """Send `method path` under the API root, retrying what is safe to retry.

        `path` is relative to `/api/v1/` and already quoted. 2xx, 304 and the statuses in `ok`
        are returned at once; any other status raises the matching `ApiError` subclass.
        """
        method = method.upper()
        url = f"{self.root}/api/v1/{path.lstrip('/')}"
        sent = {**self.auth_header, "Accept": "application/json", **(headers or {})}
        if method in _MUTATING and not any(k.lower() == "idempotency-key" for k in sent):
            sent["Idempotency-Key"] = str(uuid.uuid4())
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    method, url, json=json, content=content, params=query, headers=sent,
                    timeout=httpx.Timeout(timeout if timeout is not None else self.timeout),
                )
            except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
                # Our own request is malformed (a bad header value, say): sending it again cannot help.
                raise ClientError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
            except httpx.TransportError as exc:
                if attempt >= policy.max_attempts:
                    raise ConnectionFailed(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
                policy.sleep(policy.delay(attempt, None))
                continue
            status = response.status_code
            if 200 <= status < 300 or status == 304 or status in ok:
                return response
            error = error_from_response(response)
            if not self._retryable(error) or attempt >= policy.max_attempts:
                raise error
            wait = error.retry_after
            if wait is not None and wait > policy.max_retry_after:
                raise error
            policy.sleep(policy.delay(attempt, wait))

    @staticmethod
    def _retryable(error: ApiError) -> bool:
        # An in-progress duplicate means our own earlier attempt is still running: wait for it.
        return error.status in _RETRY_STATUSES or isinstance(error, IdempotencyInProgress)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body of a request (None for an empty body, e.g. 204)."""
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def page(self, path: str, parse: Callable[[dict[str, Any]], T], *, params: Mapping[str, Any] | None = None,
             ) -> Page[T]:
        """GET a paginated list, wrapping each item with `parse`; `Page.all()` follows `next`."""
        base = dict(params or {})

        def fetch(cursor: str | None) -> Page[T]:
            query = {**base, "cursor": cursor} if cursor else base
            body = self.json("GET", path, params=query) or {}
            items = [parse(item) for item in body.get("results", [])]
            extra = {k: v for k, v in body.items() if k not in ("results", "next")}
            return Page(items, body.get("next"), fetch, extra)

        return fetch(None)


def drop_none(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given, so optional API fields are left out, not sent as null."""
    return {k: v for k, v in values.items() if v is not None}


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
