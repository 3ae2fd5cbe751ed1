"""The relay benchmark's peer: FastMCP 4's ``create_proxy`` with a deny middleware.

Relays stdio to the backend given on the command line (``python bench/fastmcp_proxy.py
-- python bench/echo_server.py``), hides ``rm_rf`` from listings and refuses calls to it —
the same policy the benchmark gives ``mcp-acp run``. The middleware is the one verified in
``/work/shared/notes/libraries.md`` §2, without its per-message print.
"""

from __future__ import annotations

import sys
from typing import Any

from fastmcp.exceptions import ToolError
from fastmcp.server import create_proxy
from fastmcp.server.middleware import Middleware, MiddlewareContext

DENY = frozenset({"rm_rf"})


class DenyTools(Middleware):
    """Refuse calls to the denied tools and leave them out of ``tools/list``."""

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        if context.message.name in DENY:
            raise ToolError(f"tool {context.message.name!r} denied by policy")
        return await call_next(context)

    async def on_list_tools(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return [tool for tool in await call_next(context) if tool.name not in DENY]


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: fastmcp_proxy.py BACKEND-COMMAND [ARG ...]")
    command, *args = argv
    proxy = create_proxy(
        {"mcpServers": {"backend": {"command": command, "args": args}}}, name="bench-fastmcp"
    )
    proxy.add_middleware(DenyTools())
    proxy.run(show_banner=False)


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if a != "--"])
