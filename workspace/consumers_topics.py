"""Live topic stream: `/ws/workspaces/{ws}/topics/{topic}/?after=<offset>`.

Like the event stream: replays the log from the database first, then continues live from the
channel layer. Offsets are gap-free, so a jump means the channel layer dropped something (or a
body was too big to carry): the gap is refilled from the database, and a client misses nothing
and sees nothing twice. Each text frame is one message, as in `GET .../topics/{topic}/messages`.
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
# Access is re-checked before sending when the last check is older than this: often enough that
# a removed member stops receiving within a second, rarely enough not to cost a query a message.
RECHECK_SECONDS = 1.0


def _after(scope: dict[str, Any]) -> int:
    """The `after` offset of the query string; -1 when it is not a number (the connection is refused)."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after", ["0"])
    try:
        return max(0, int(values[0]))
    except ValueError:
        return -1


@database_sync_to_async
def _can_read(user: Any, ws_id: str, topic: str, token: str | None) -> bool:
    from agents.authentication import user_for_token
    from workspace.access import workspace_for
    from workspace.services.messages import check_read

    if token is not None and user_for_token(token) is None:
        return False
    try:
        check_read(workspace_for(user, ws_id), topic)
    except ServiceError:
        return False
    return True


@database_sync_to_async
def _messages_after(ws_id: str, topic: str, after: int) -> list[dict[str, Any]]:
    from workspace.services.messages import messages_after

    return messages_after(workspace_id=ws_id, topic=topic, after=after, limit=REPLAY_PAGE)


class TopicConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        self.ws_id: str = kwargs["ws"]
        self.topic: str = kwargs["topic"]
        self.user = self.scope.get("user")
        self.token = self.scope.get("auth_token")
        self.last_offset = _after(self.scope)
        if self.last_offset < 0 or not await _can_read(self.user, self.ws_id, self.topic, self.token):
            await self.close(code=4404)
            return
        self.checked_at = time.monotonic()
        from workspace.services.messages import topic_group

        self.group = topic_group(self.ws_id, self.topic)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._refill()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "ping":
            await self.send(text_data=json.dumps({"type": "pong", "offset": self.last_offset}))

    async def _refill(self) -> None:
        while True:
            batch = await _messages_after(self.ws_id, self.topic, self.last_offset)
            for message in batch:
                await self._send_message(message)
            if len(batch) < REPLAY_PAGE:
                return

    async def _send_message(self, message: dict[str, Any]) -> None:
        self.last_offset = message["offset"]
        await self.send(text_data=json.dumps(message))

    async def topic_message(self, event: dict[str, Any]) -> None:
        message = event["message"]
        offset = message["offset"]
        if offset <= self.last_offset or message.get("topic") != self.topic:
            return
        if time.monotonic() - self.checked_at > RECHECK_SECONDS:
            if not await _can_read(self.user, self.ws_id, self.topic, self.token):
                await self.close(code=4403)
                return
            self.checked_at = time.monotonic()
        if offset > self.last_offset + 1 or "body" not in message:
            await self._refill()  # a dropped or body-less announcement: read the truth
            return
        await self._send_message(message)
