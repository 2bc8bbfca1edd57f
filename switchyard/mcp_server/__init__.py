"""Switchyard's MCP server (issue 8), on the official `mcp` SDK.

Agents reach the same service functions as the HTTP API through tools, over streamable HTTP at
`/mcp` (mounted by `switchyard.asgi`) or over stdio (`manage.py mcp --token ...`). Import this
package only once Django is set up.
"""
from __future__ import annotations

from switchyard.mcp_server import tools_files, tools_intel, tools_work  # noqa: F401 - registers the tools
from switchyard.mcp_server.core import server
from switchyard.mcp_server.http import endpoint, is_mcp_path

__all__ = ["endpoint", "is_mcp_path", "server"]
