"""The demo's example backend: a small notes server on the ``mcp`` SDK's low-level ``Server``.

``python -m mcp_acp.demo.backend DIR`` serves MCP over stdio. Notes are the files directly
in ``DIR``; tools take absolute paths, as the reference filesystem server does, so that the
proxy's policy sees the real path. The server only keeps paths inside ``DIR``; it does not
decide who may read, change or run what — that is the proxy's job, which is the point of
the demo. ``run_command`` really runs a program (no shell, in ``DIR``, 10 s timeout), which
is why the default policy denies it.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

__all__ = ["TOOLS", "build_server", "main"]

_PATH = {"type": "string", "description": "Absolute path of a note inside the notes directory."}

TOOLS = [
    types.Tool(
        name="list_notes",
        description="List the notes (absolute paths).",
        input_schema={"type": "object", "properties": {}},
        annotations=types.ToolAnnotations(read_only_hint=True),
    ),
    types.Tool(
        name="read_note",
        description="Read one note.",
        input_schema={"type": "object", "properties": {"path": _PATH}, "required": ["path"]},
        annotations=types.ToolAnnotations(read_only_hint=True),
    ),
    types.Tool(
        name="write_note",
        description="Create or replace one note.",
        input_schema={
            "type": "object",
            "properties": {"path": _PATH, "text": {"type": "string"}},
            "required": ["path", "text"],
        },
        annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=False),
    ),
    types.Tool(
        name="delete_note",
        description="Delete one note.",
        input_schema={"type": "object", "properties": {"path": _PATH}, "required": ["path"]},
        annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=True),
    ),
    types.Tool(
        name="run_command",
        description="Run a program in the notes directory (no shell) and return its output.",
        input_schema={
            "type": "object",
            "properties": {"command": {"type": "string", "description": "e.g. 'ls -la'"}},
            "required": ["command"],
        },
        annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=True),
    ),
]


class ToolError(Exception):
    """A call the server refuses; the client gets it as an ``isError`` result."""


def _text(value: str, *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=value)], is_error=error
    )


def _string(arguments: dict[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str):
        raise ToolError(f"argument {name!r} must be a string")
    return value


def _note(root: Path, arguments: dict[str, Any]) -> Path:
    """The note a ``path`` argument names: absolute, directly inside ``root``."""
    raw = _string(arguments, "path")
    path = Path(raw)
    if not path.is_absolute():
        raise ToolError(f"{raw!r} is not an absolute path (notes are in {root})")
    resolved = path.resolve()
    if resolved.parent != root:
        raise ToolError(f"{raw!r} is not a note in {root}")
    return resolved


def _call(root: Path, name: str, arguments: dict[str, Any]) -> str:
    if name == "list_notes":
        return "\n".join(str(p) for p in sorted(root.iterdir()) if p.is_file()) or "(no notes)"
    if name == "read_note":
        return _note(root, arguments).read_text(encoding="utf-8")
    if name == "write_note":
        note, text = _note(root, arguments), _string(arguments, "text")
        note.write_text(text, encoding="utf-8")
        return f"wrote {len(text)} characters to {note}"
    if name == "delete_note":
        note = _note(root, arguments)
        note.unlink()
        return f"deleted {note}"
    if name == "run_command":
        argv = shlex.split(_string(arguments, "command"))
        if not argv:
            raise ToolError("empty command")
        done = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=10)
        return f"exit {done.returncode}\n{done.stdout}{done.stderr}"
    raise ToolError(f"unknown tool {name!r}")


def build_server(root: Path) -> Server[Any]:
    """The notes server for directory ``root``."""
    root = root.resolve()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            text = await anyio.to_thread.run_sync(_call, root, params.name, params.arguments or {})
        except (ToolError, OSError, ValueError, subprocess.SubprocessError) as exc:
            return _text(str(exc), error=True)
        return _text(text)

    return Server(
        "mcp-acp-demo-notes",
        version="1",
        instructions=f"Notes are the files in {root}; tools take absolute paths.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        sys.exit("usage: python -m mcp_acp.demo.backend NOTES_DIR (an existing directory)")
    server = build_server(Path(args[0]))

    async def serve() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(serve)


if __name__ == "__main__":
    main()
