"""A real MCP server over streamable HTTP behind TLS that requires a client certificate.

Run as ``python mtls_server.py CERT KEY CLIENT_CA [MAX_TLS]``: uvicorn serves the low-level
``mcp`` SDK server on ``https://127.0.0.1:<free port>/mcp`` with ``CERT_REQUIRED`` against
``CLIENT_CA``, and prints the port once it accepts connections. ``MAX_TLS`` = ``1.1`` pins
the server to TLS 1.1 (a server a modern client must refuse). Tool: ``echo``, which answers
``echo:<text>`` and appends ``<text>`` to the file ``MTLS_SERVER_CALLS`` names, if set (the
evidence that a call reached this server).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

CERT, KEY, CLIENT_CA = sys.argv[1:4]
MAX_TLS = sys.argv[4] if len(sys.argv) > 4 else None

ECHO = types.Tool(
    name="echo",
    description="Echo the text back.",
    input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
)


async def list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[ECHO])


async def call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    text = f"echo:{(params.arguments or {}).get('text', '')}"
    calls = os.environ.get("MTLS_SERVER_CALLS")
    if calls:
        with open(calls, "a", encoding="utf-8") as evidence:
            evidence.write(text + "\n")
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


async def main() -> None:
    server = Server(
        "mtls-test-server", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool
    )
    app = server.streamable_http_app(streamable_http_path="/mcp")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        ssl_certfile=CERT,
        ssl_keyfile=KEY,
        ssl_ca_certs=CLIENT_CA,
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )
    config.load()
    if MAX_TLS == "1.1":
        assert config.ssl is not None
        config.ssl.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 otherwise
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_1
        config.ssl.maximum_version = ssl.TLSVersion.TLSv1_1
    uv = uvicorn.Server(config)
    serving = asyncio.ensure_future(uv.serve(sockets=[sock]))
    while not uv.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.02)
    print(sock.getsockname()[1], flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(main())
