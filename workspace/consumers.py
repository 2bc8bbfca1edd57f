"""Live event stream: `/ws/workspaces/{ws}/events/?after=<seq>`.

Replays from the database first, then continues live from the channel layer. The channel layer
may drop messages under load, so a gap in `seq` is refilled from the database: a client misses
nothing and sees nothing twice. Access is checked on connect and again before each send.
"""
from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from workspace.errors import ServiceError

log = logging.getLogger(__name__)
REPLAY_PAGE = 500


def _after(scope: dict[str, Any]) -> int:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after", ["0"])
    try:
        return max(0, int(values[0]))
    except ValueError:
        return -1


@database_sync_to_async
def _can_read(user: Any, ws_id: str, token: str | None) -> bool:
    from agents.authentication import user_for_token
    from workspace.access import workspace_for

    if token is not None and user_for_token(token) is None:
        return False
    try:
        workspace_for(user, ws_id)
    except ServiceError:
        return False
    return True


@database_sync_to_async
def _events_after(ws_id: str, after: int) -> list[dict[str, Any]]:
    from workspace.api.events import events_after

    return events_after(workspace_id=ws_id, after=after, limit=REPLAY_PAGE)


class EventsConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.ws_id: str = self.scope["url_route"]["kwargs"]["ws"]
        self.user = self.scope.get("user")
        self.token = self.scope.get("auth_token")
        self.last_seq = _after(self.scope)
        if self.last_seq < 0 or not await _can_read(self.user, self.ws_id, self.token):
            await self.close(code=4404)
            return
        from workspace.services.events import events_group

        self.group = events_group(self.ws_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._refill()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The stream is one-way; a client may send "ping" to keep intermediaries from timing out.
        if text_data == "ping":
            await self.send(text_data=json.dumps({"type": "pong", "seq": self.last_seq}))

    async def _refill(self) -> None:
        while True:
            batch = await _events_after(self.ws_id, self.last_seq)
            for event in batch:
                await self._send_event(event)
            if len(batch) < REPLAY_PAGE:
                return

    async def _send_event(self, event: dict[str, Any]) -> None:
        self.last_seq = event["seq"]
        await self.send(text_data=json.dumps(event))

    async def event_message(self, message: dict[str, Any]) -> None:
        event = message["event"]
        seq = event["seq"]
        if seq <= self.last_seq:
            return
        if not await _can_read(self.user, self.ws_id, self.token):
            await self.close(code=4403)
            return
        if seq > self.last_seq + 1:
            await self._refill()  # a dropped message: fill the gap from the truth
            return
        await self._send_event(event)
