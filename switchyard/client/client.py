"""`Client`: the entry point — accounts, the workspace list, and cross-workspace calls."""
from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from switchyard.client.models import Message, SearchResults, Token, Transfer, User, WorkspaceInfo
from switchyard.client.streams import Stream, topic_stream
from switchyard.client.transport import Page, RetryPolicy, Transport, drop_none, quote_segment
from switchyard.client.workspace import SearchMode, Workspace

__all__ = ["Client"]


class _Workspaces:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, name: str, *, intelligence: bool = True) -> Workspace:
        """A new workspace owned by the caller, as a handle (its details are in `.info`)."""
        info = WorkspaceInfo.from_json(self._t.json("POST", "workspaces",
                                                    json={"name": name, "intelligence": intelligence}))
        return Workspace(self._t, info.id, info)

    def list(self, *, limit: int | None = None) -> Page[WorkspaceInfo]:
        """The workspaces the caller is a member of, with its role in each."""
        return self._t.page("workspaces", WorkspaceInfo.from_json, params=drop_none(limit=limit))

    def get(self, ws_id: str) -> WorkspaceInfo:
        return WorkspaceInfo.from_json(self._t.json("GET", f"workspaces/{quote_segment(ws_id)}"))

    def update(self, ws_id: str, *, name: str | None = None, intelligence: bool | None = None) -> WorkspaceInfo:
        return WorkspaceInfo.from_json(self._t.json("PATCH", f"workspaces/{quote_segment(ws_id)}",
                                                    json=drop_none(name=name, intelligence=intelligence)))


class _Agents:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, name: str) -> User:
        """A new agent account owned by the (human) caller; its token is in `.token`, shown once."""
        return User.from_json(self._t.json("POST", "agents", json={"name": name}))


class _Tokens:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, name: str = "") -> Token:
        """A new personal token; the secret is in `.token`, shown once."""
        return Token.from_json(self._t.json("POST", "tokens", json={"name": name}))

    def list(self, *, limit: int | None = None) -> Page[Token]:
        return self._t.page("tokens", Token.from_json, params=drop_none(limit=limit))

    def revoke(self, token_id: str) -> None:
        self._t.request("DELETE", f"tokens/{quote_segment(token_id)}")


class _TransferInbox:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def get(self, transfer_id: str) -> Transfer:
        return Transfer.from_json(self._t.json("GET", f"transfers/{quote_segment(transfer_id)}"))

    def accept(self, transfer_id: str, *, token: str | None = None) -> Transfer:
        """Accept a workspace offered to the caller: it becomes owner, the previous owner admin.
        `token` is the secret from the accept link, when the offer was made by email."""
        body = self._t.json("POST", f"transfers/{quote_segment(transfer_id)}/accept", json=drop_none(token=token))
        return Transfer.from_json(body if isinstance(body, dict) else {"id": transfer_id})

    def cancel(self, transfer_id: str) -> Transfer:
        """Withdraw a pending offer (its sender)."""
        body = self._t.json("POST", f"transfers/{quote_segment(transfer_id)}/cancel")
        return Transfer.from_json(body if isinstance(body, dict) else {"id": transfer_id})


class Client:
    """A Switchyard API client for one account.

    `Client("http://localhost:8000", token)` (no token: only `health()` answers); then `client.workspace(ws_id)` for a workspace's
    files, locks, tasks and the rest. Every mutating request carries a fresh `Idempotency-Key`,
    so 429, 503 and dropped connections are retried safely (see `RetryPolicy`). Errors raise
    `ApiError` subclasses carrying the API's error body. Thread-safe: share one client.
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0, retry: RetryPolicy | None = None,
                 http: httpx.Client | None = None) -> None:
        self._t = Transport(base_url, token, timeout=timeout, retry=retry, http=http)
        self.workspaces = _Workspaces(self._t)
        self.agents = _Agents(self._t)
        self.tokens = _Tokens(self._t)
        self.transfers = _TransferInbox(self._t)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._t.close()

    @property
    def transport(self) -> Transport:
        return self._t

    def health(self) -> dict[str, Any]:
        """The server's health checks (no auth needed). An unhealthy server's `503` is returned as
        its body, not retried or raised: a probe wants to know which check fails, now."""
        body: dict[str, Any] = self._t.request("GET", "health", ok=(503,)).json()
        return body

    def me(self) -> User:
        return User.from_json(self._t.json("GET", "me"))

    def workspace(self, ws_id: str) -> Workspace:
        """A handle on a workspace by id; no request is made until you use it."""
        return Workspace(self._t, ws_id)

    def search(self, query: str, *, k: int = 10, prefix: str | None = None, author: str | None = None,
               mode: SearchMode = "hybrid", task: str | None = None, since: str | None = None,
               until: str | None = None) -> SearchResults:
        """Search every workspace the caller can read (and no other); each hit names its `workspace`."""
        return SearchResults.from_json(self._t.json("POST", "search", json=drop_none(
            query=query, k=k, prefix=prefix, author=author, mode=mode, task=task, since=since, until=until)))

    def topic_stream(self, ws_id: str, topic: str, *, after: int | None = None, **options: Any) -> Stream[Message]:
        """Live messages of a topic, replayed from after `after` (from the start when None)."""
        return topic_stream(self._t, ws_id, topic, after=after, **options)
