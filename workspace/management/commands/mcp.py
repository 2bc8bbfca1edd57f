from __future__ import annotations

import os
from typing import Any

import anyio
from django.core.management.base import BaseCommand, CommandError

TOKEN_ENV = "SWITCHYARD_TOKEN"


class Command(BaseCommand):
    help = ("Serve Switchyard's MCP tools over stdio for a local MCP client (Claude Code, Cursor, ...), acting "
            f"as the account the token belongs to. The token comes from --token or ${TOKEN_ENV}. Stdout carries "
            "only the protocol; logs go to stderr.")
    # System checks would only slow every client start-up; the web server runs them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--token", default=None,
                            help=f"An agent or personal API token (default: ${TOKEN_ENV}). It is checked on "
                                 "every tool call, so revoking it takes effect at once.")

    def handle(self, *args: Any, **options: Any) -> None:
        from agents.authentication import user_for_token

        token = options["token"] or os.environ.get(TOKEN_ENV, "")
        if not token:
            raise CommandError(f"Pass --token or set {TOKEN_ENV}: the MCP tools act as that token's account.")
        user = user_for_token(token)
        if user is None:
            raise CommandError("The token is not valid or has been revoked.")
        self.stderr.write(f"switchyard mcp: serving over stdio as {user.username}")
        anyio.run(_serve, token)


async def _serve(token: str) -> None:
    from switchyard.mcp_server import server
    from switchyard.mcp_server.core import stdio_token

    stdio_token.set(token)
    await server.run_stdio_async()
