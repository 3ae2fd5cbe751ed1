"""A stdio MCP server on the ``mcp`` SDK's ``MCPServer`` (what FastMCP became) with one
tool, ``fs_read``, whose argument ``opts`` is an object naming a file (``path``): it
returns the file's text. ``MCPServer`` accepts such an object sent as JSON text too — it
decodes a string argument whose type is not ``str`` (``pre_parse_json``), as FastMCP
does, for clients that send objects that way. With ``--raised-limits`` it reads deeper
JSON and longer numbers than Python's defaults let the proxy read (as a server may)."""

import sys

from mcp.server import MCPServer
from pydantic import BaseModel

app = MCPServer("json-args")


class Options(BaseModel):
    path: str


@app.tool()
def fs_read(opts: Options) -> str:
    """Read the file ``opts.path`` names."""
    with open(opts.path) as file:
        return file.read()


if __name__ == "__main__":
    if "--raised-limits" in sys.argv:
        sys.setrecursionlimit(20_000)
        sys.set_int_max_str_digits(0)
    app.run("stdio")
