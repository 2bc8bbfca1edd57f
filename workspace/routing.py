from __future__ import annotations

from django.urls import path

from workspace.consumers import EventsConsumer, TopicConsumer

websocket_urlpatterns = [
    path("ws/workspaces/<str:ws>/events/", EventsConsumer.as_asgi()),
    path("ws/workspaces/<str:ws>/topics/<str:topic>/", TopicConsumer.as_asgi()),
]
