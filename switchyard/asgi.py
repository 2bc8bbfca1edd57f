"""ASGI entry point: HTTP through Django, WebSockets through Channels' router."""
from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from workspace.routing import websocket_urlpatterns  # noqa: E402
from workspace.ws_auth import TokenOrSessionAuthMiddleware  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": TokenOrSessionAuthMiddleware(URLRouter(websocket_urlpatterns)),
})
