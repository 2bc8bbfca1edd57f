from __future__ import annotations

from django.urls import path

from workspace.consumers import EventsConsumer

websocket_urlpatterns = [
    path("ws/workspaces/<str:ws>/events/", EventsConsumer.as_asgi()),
]

# Topic streams (issue 10).
from workspace.consumers_topics import TopicConsumer  # noqa: E402

websocket_urlpatterns += [
    path("ws/workspaces/<str:ws>/topics/<str:topic>/", TopicConsumer.as_asgi()),
]
