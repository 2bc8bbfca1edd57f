from __future__ import annotations

from django.urls import path

from workspace.consumers import EventsConsumer

websocket_urlpatterns = [
    path("ws/workspaces/<str:ws>/events/", EventsConsumer.as_asgi()),
]
