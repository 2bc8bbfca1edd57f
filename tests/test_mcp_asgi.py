"""The top-level ASGI application: lifespan runs the MCP session manager; /mcp goes to MCP, the rest
to Django. In process, through httpx's ASGI transport (which, like daphne, sends no lifespan)."""
from __future__ import annotations

from typing import Any

import anyio
import httpx


async def _post_mcp(app: Any, path: str = "/mcp", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        return await client.post(path, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                 headers={"Accept": "application/json, text/event-stream", **headers})


def test_lifespan_starts_the_mcp_endpoint_and_routing_keeps_django_for_the_rest():
    """GIVEN the application before any lifespan startup
    WHEN /mcp is called THEN it answers 503, saying it needs the lifespan protocol;
    GIVEN lifespan.startup has completed
    WHEN /mcp is called without a token, /mcp/elsewhere, and an API path
    THEN MCP answers 401 and 404 with API.md's error body, Django still answers the API path,
    and lifespan.shutdown completes (after which /mcp is 503 again)."""
    from switchyard.asgi import application

    async def scenario() -> None:
        before = await _post_mcp(application)
        assert before.status_code == 503 and before.json()["error"]["code"] == "mcp_not_running"

        to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](4)
        app_outbox, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
        async with anyio.create_task_group() as tg:
            tg.start_soon(application, {"type": "lifespan", "asgi": {"version": "3.0"}}, app_inbox.receive,
                          app_outbox.send)
            await to_app.send({"type": "lifespan.startup"})
            assert (await from_app.receive())["type"] == "lifespan.startup.complete"

            anonymous = await _post_mcp(application, **{"X-Request-Id": "in-process"})
            assert anonymous.status_code == 401
            assert anonymous.json()["error"]["code"] == "not_authenticated"
            assert anonymous.headers["X-Request-Id"] == "in-process"
            elsewhere = await _post_mcp(application, "/mcp/elsewhere", Authorization="Bearer x")
            assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "not_found"
            django = await _post_mcp(application, "/api/v1/no-such-endpoint")
            assert django.status_code == 404 and django.json() == {
                "error": {"code": "not_found", "message": "No such resource."}}

            await to_app.send({"type": "lifespan.shutdown"})
            assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"

        after = await _post_mcp(application)
        assert after.status_code == 503

    anyio.run(scenario)


def test_the_asgi_application_and_the_mcp_command_do_not_import_torch():
    """GIVEN a fresh interpreter WHEN the ASGI application (with the MCP tools) and the `mcp` command load
    THEN neither torch, sentence-transformers nor chromadb is imported (STYLE rule 10: fast start-up)."""
    import subprocess
    import sys

    from tests.conftest import ROOT, live_env

    code = (
        "import sys, switchyard.asgi;"
        "from django.core.management import load_command_class; load_command_class('workspace', 'mcp');"
        "heavy = sorted(m for m in ('torch', 'sentence_transformers', 'chromadb', 'transformers') if m in sys.modules);"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**live_env(), "DJANGO_SETTINGS_MODULE": "switchyard.settings"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
