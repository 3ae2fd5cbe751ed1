"""The relay benchmark's backend: a small real MCP server on stdio (``mcp`` low-level SDK).

Tools: ``echo`` (returns its ``text`` argument) and ``rm_rf`` (a stand-in for a destructive
tool: it does nothing but say it ran, so a proxy that lets it through is caught by the
answer, not by damage). Run it as ``python bench/echo_server.py``.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

TOOLS = [
    types.Tool(
        name="echo",
        description="Return the text it is given.",
        input_schema={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    ),
    types.Tool(
        name="rm_rf",
        description="Pretend to delete a directory tree (a tool the policy denies).",
        input_schema={
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    ),
]
#: What ``rm_rf`` answers; seeing it through a proxy means the proxy let it pass.
RAN = "rm_rf ran"


async def list_tools(
    _ctx: Any, _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    arguments = params.arguments or {}
    if params.name == "echo":
        text = str(arguments.get("text", ""))
    elif params.name == "rm_rf":
        text = RAN
    else:
        return types.CallToolResult(
            is_error=True, content=[types.TextContent(type="text", text="unknown tool")]
        )
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


server: Server[Any] = Server(
    "bench-echo", version="1", on_list_tools=list_tools, on_call_tool=call_tool
)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
