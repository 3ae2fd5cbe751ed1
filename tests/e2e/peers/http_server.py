"""A real MCP server over streamable HTTP, for end-to-end tests of HTTP backends.

Run as ``python http_server.py MARKER_DIR [CERT KEY]``: it serves the low-level ``mcp``
SDK server on ``http://127.0.0.1:<free port>/mcp`` (uvicorn; HTTPS with the PEM
certificate and key if given) and prints the port on stdout once it accepts connections.
With ``HTTP_SERVER_TOKEN`` set, a request without ``Authorization: Bearer <token>`` gets
HTTP 401. With ``HTTP_SERVER_RECORD=1``, every request's method, path, headers and body
are appended to ``MARKER_DIR/requests.log`` as they arrive: the evidence of all that
reached the server. With ``HTTP_SERVER_HANG_DELETE=1``, a ``DELETE`` (the client ending
its session) writes ``MARKER_DIR/delete-received`` and is never answered. Tools:

* ``echo`` — returns ``echo:<text>`` (``text`` carries an ``x-mcp-header`` annotation);
* ``delete_everything`` — the dangerous one: writes ``MARKER_DIR/deleted`` when it runs,
  so a test can prove a denied call never reached the server;
* ``sleep`` — waits ``seconds`` before answering (a slow backend).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

MARKER_DIR = Path(sys.argv[1])
TOKEN = os.environ.get("HTTP_SERVER_TOKEN")
RECORD = MARKER_DIR / "requests.log" if os.environ.get("HTTP_SERVER_RECORD") == "1" else None
HANG_DELETE = os.environ.get("HTTP_SERVER_HANG_DELETE") == "1"
TLS = {"ssl_certfile": sys.argv[2], "ssl_keyfile": sys.argv[3]} if len(sys.argv) > 3 else {}

TOOLS = [
    types.Tool(
        name="echo",
        description="Echo the text back.",
        input_schema={
            "type": "object",
            # 2026-07-28: a client mirrors this argument into an ``Mcp-Param-Text`` header,
            # and the server refuses a call where header and argument disagree
            "properties": {"text": {"type": "string", "x-mcp-header": "Text"}},
        },
    ),
    types.Tool(
        name="delete_everything",
        description="Dangerous: pretends to delete everything (writes a marker file).",
        input_schema={"type": "object", "properties": {}},
    ),
    types.Tool(
        name="sleep",
        description="Answer after a while.",
        input_schema={"type": "object", "properties": {"seconds": {"type": "number"}}},
    ),
]


async def list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    arguments = params.arguments or {}
    if params.name == "echo":
        text = f"echo:{arguments.get('text', '')}"
    elif params.name == "delete_everything":
        (MARKER_DIR / "deleted").write_text("the dangerous tool ran\n")
        text = "deleted everything"
    elif params.name == "sleep":
        await asyncio.sleep(float(arguments.get("seconds", 1)))
        text = "slept"
    else:
        return types.CallToolResult(
            is_error=True, content=[types.TextContent(type="text", text="no such tool")]
        )
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def require_token(app: Any) -> Any:
    """An ASGI wrapper: 401 unless the request carries the bearer token."""

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["type"] == "http" and headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    return guarded


def record_requests(app: Any, log: Path) -> Any:
    """An ASGI wrapper: each HTTP request's method, path, headers and body into ``log``."""

    async def recorded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        with log.open("ab") as out:
            out.write(
                f"{scope['method']} {scope['path']}?{scope['query_string'].decode()}\n".encode()
            )
            for name, value in scope.get("headers") or []:
                out.write(name + b": " + value + b"\n")

        async def receive_recorded() -> Any:
            message = await receive()
            if message.get("type") == "http.request":
                with log.open("ab") as out:
                    out.write(message.get("body", b"") + b"\n")
            return message

        await app(scope, receive_recorded, send)

    return recorded


def hang_on_delete(app: Any) -> Any:
    """An ASGI wrapper: a ``DELETE`` is noted in ``MARKER_DIR/delete-received``, then held
    unanswered for ever."""

    async def held(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "DELETE":
            (MARKER_DIR / "delete-received").write_text("DELETE\n")
            await asyncio.Event().wait()
        await app(scope, receive, send)

    return held


async def main() -> None:
    server = Server(
        "http-test-server", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool
    )
    app = server.streamable_http_app(streamable_http_path="/mcp")
    if TOKEN:
        app = require_token(app)
    if RECORD is not None:
        app = record_requests(app, RECORD)
    if HANG_DELETE:
        app = hang_on_delete(app)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **TLS))
    serving = asyncio.ensure_future(uv.serve(sockets=[sock]))
    while not uv.started:
        if serving.done():
            serving.result()  # raises why it could not start
        await asyncio.sleep(0.02)
    print(sock.getsockname()[1], flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(main())
