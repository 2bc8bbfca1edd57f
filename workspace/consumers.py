"""Live streams over WebSocket: workspace events and topic messages.

`/ws/workspaces/{ws}/events/?after=<seq>` and `/ws/workspaces/{ws}/topics/{topic}/?after=<offset>`
both replay their log from the database first, then continue live from the channel layer. The
channel layer may drop messages under load; positions are gap-free, so a jump means something
was dropped and the gap is refilled from the database: a client misses nothing and sees nothing
twice. Access is checked on connect and again while streaming.
"""
from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from workspace.errors import ServiceError

REPLAY_PAGE = 500


def _after(scope: dict[str, Any]) -> int:
    """The `after` position of the query string; -1 when it is not a number (the connection is refused)."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after", ["0"])
    try:
        return max(0, int(values[0]))
    except ValueError:
        return -1


class ReplayConsumer(AsyncWebsocketConsumer):
    """Replay-then-live over one ordered, gap-free log. A subclass names the position field, the
    channel-layer group, the access check and the database read."""

    position = "seq"
    # Re-check access before sending when the last check is older than this (0: before every item).
    recheck_seconds = 0.0

    def bind(self, kwargs: dict[str, str]) -> None:
        """Read the route's extra arguments."""

    def group_name(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Raise a ServiceError unless the caller may read this stream (runs in a thread)."""
        raise NotImplementedError

    def read_after(self, after: int) -> list[dict[str, Any]]:
        """Up to REPLAY_PAGE items after `after`, in order (runs in a thread)."""
        raise NotImplementedError

    async def connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        self.ws_id: str = kwargs["ws"]
        self.user = self.scope.get("user")
        self.token = self.scope.get("auth_token")
        self.bind(kwargs)
        self.last = _after(self.scope)
        if self.last < 0 or not await self._allowed():
            await self.close(code=4404)
            return
        self.checked_at = time.monotonic()
        self.group = self.group_name()
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._refill()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The stream is one-way; a client may send "ping" to keep intermediaries from timing out.
        if text_data == "ping":
            await self.send(text_data=json.dumps({"type": "pong", self.position: self.last}))

    async def deliver(self, item: dict[str, Any], *, complete: bool = True) -> None:
        """A live item from the channel layer (`complete=False`: an announcement without its body)."""
        if item[self.position] <= self.last:
            return
        if time.monotonic() - self.checked_at >= self.recheck_seconds:
            if not await self._allowed():
                await self.close(code=4403)
                return
            self.checked_at = time.monotonic()
        if item[self.position] > self.last + 1 or not complete:
            await self._refill()  # a dropped (or body-less) announcement: read the truth
            return
        await self._send(item)

    async def _refill(self) -> None:
        while True:
            batch = await database_sync_to_async(self.read_after)(self.last)
            for item in batch:
                await self._send(item)
            if len(batch) < REPLAY_PAGE:
                return

    async def _send(self, item: dict[str, Any]) -> None:
        self.last = item[self.position]
        await self.send(text_data=json.dumps(item))

    @database_sync_to_async
    def _allowed(self) -> bool:
        from agents.authentication import user_for_token

        if self.token is not None and user_for_token(self.token) is None:
            return False
        try:
            self.check()
        except ServiceError:
            return False
        return True


class EventsConsumer(ReplayConsumer):
    """The workspace's event log; access is re-checked before every event."""

    def group_name(self) -> str:
        from workspace.services.events import events_group

        return events_group(self.ws_id)

    def check(self) -> None:
        from workspace.access import workspace_for

        workspace_for(self.user, self.ws_id)

    def read_after(self, after: int) -> list[dict[str, Any]]:
        from workspace.api.events import events_after

        return events_after(workspace_id=self.ws_id, after=after, limit=REPLAY_PAGE)

    async def event_message(self, message: dict[str, Any]) -> None:
        await self.deliver(message["event"])


class TopicConsumer(ReplayConsumer):
    """One topic's messages (each text frame one message, as in `GET .../topics/{topic}/messages`).
    Access is re-checked at most once a second: a removed member stops receiving within a second,
    without a query per message."""

    position = "offset"
    recheck_seconds = 1.0

    def bind(self, kwargs: dict[str, str]) -> None:
        self.topic: str = kwargs["topic"]

    def group_name(self) -> str:
        from workspace.services.messages import topic_group

        return topic_group(self.ws_id, self.topic)

    def check(self) -> None:
        from workspace.access import workspace_for
        from workspace.services.messages import check_read

        check_read(workspace_for(self.user, self.ws_id), self.topic)

    def read_after(self, after: int) -> list[dict[str, Any]]:
        from workspace.services.messages import messages_after

        return messages_after(workspace_id=self.ws_id, topic=self.topic, after=after, limit=REPLAY_PAGE)

    async def topic_message(self, event: dict[str, Any]) -> None:
        message = event["message"]
        if message.get("topic") == self.topic:
            await self.deliver(message, complete="body" in message)
