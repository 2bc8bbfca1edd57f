"""ASGI entry point: HTTP through Django, WebSockets through Channels' router, MCP at /mcp.

The top-level application also speaks the ASGI lifespan protocol (Channels' ProtocolTypeRouter
does not): the MCP session manager runs its task group for as long as the server runs.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")


def _die_with_parent() -> None:
    """Under `uvicorn --workers N` each worker process imports this module. Were the uvicorn
    supervisor SIGKILLed, its workers would go on serving the shared socket as orphans and the
    launcher's replacement could not bind the port; on Linux they get SIGTERM when it dies."""
    if os.environ.get("SWITCHYARD_WEB_DIE_WITH_PARENT") != "1":
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_die_with_parent()
django.setup(set_prefix=False)

from switchyard.asgi_handler import SyncChainASGIHandler  # noqa: E402

django_asgi_app = SyncChainASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from switchyard.mcp_server import endpoint as mcp_endpoint  # noqa: E402
from switchyard.mcp_server import is_mcp_path  # noqa: E402
from workspace.routing import websocket_urlpatterns  # noqa: E402
from workspace.services.lock_queue import (  # noqa: E402
    close_this_loops_wait_client,
    wait_on_this_loop_with_a_shared_client,
)
from workspace.ws_auth import TokenOrSessionAuthMiddleware  # noqa: E402

log = logging.getLogger(__name__)

router = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": TokenOrSessionAuthMiddleware(URLRouter(websocket_urlpatterns)),
})


async def lifespan(receive: Any, send: Any) -> None:
    """Start the MCP session manager on `lifespan.startup`; stop it on `lifespan.shutdown`."""
    message = await receive()
    if message["type"] != "lifespan.startup":
        return
    started = False
    try:
        async with mcp_endpoint.running():
            await send({"type": "lifespan.startup.complete"})
            started = True
            wait_on_this_loop_with_a_shared_client()
            _warm_up_search()
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            await close_this_loops_wait_client()
    except Exception as exc:
        log.exception("ASGI lifespan failed")
        phase = "shutdown" if started else "startup"
        await send({"type": f"lifespan.{phase}.failed", "message": f"{exc.__class__.__name__}: {exc}"})
        return
    await send({"type": "lifespan.shutdown.complete"})


def _warm_up_search() -> None:
    """Load the embedding model and build the query encoder on a background thread when this
    server has workspaces in intelligence mode, so that the first search a process answers does
    not wait seconds for them (SEARCH_WARM_UP=false turns it off)."""
    import threading

    from django.conf import settings

    if not settings.SEARCH_WARM_UP:
        return

    def warm() -> None:
        from django.db import close_old_connections, connection

        from search.embeddings import get_encoder
        from workspace.models import Workspace

        try:
            if Workspace.objects.filter(intelligence=True).exists():
                get_encoder()
        except Exception:
            log.warning("search warm-up failed; the first search loads the model", exc_info=True)
        finally:
            close_old_connections()
            connection.close()

    threading.Thread(target=warm, name="search-warm-up", daemon=True).start()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http" and is_mcp_path(scope["path"]):
        await mcp_endpoint(scope, receive, send)
    else:
        await router(scope, receive, send)
