"""The demo's notes server on its own: a real stdio subprocess, driven by the mcp SDK's
``Client``, in both protocol eras."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters


def _text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    directory = tmp_path / "notes"
    directory.mkdir()
    (directory / "welcome.md").write_text("hello\n")
    (tmp_path / "outside.md").write_text("not a note\n")
    return directory


def _server(notes: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_acp.demo.backend", str(notes)]
    )


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_lists_tools_and_reads_a_note(notes: Path, mode: str) -> None:
    async with Client(_server(notes), mode=mode) as client:
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == [
            "list_notes",
            "read_note",
            "write_note",
            "delete_note",
            "run_command",
        ]
        read_only = {t.name for t in tools.tools if t.annotations and t.annotations.read_only_hint}
        assert read_only == {"list_notes", "read_note"}
        result = await client.call_tool("read_note", {"path": str(notes / "welcome.md")})
        assert not result.is_error
        assert _text(result) == "hello\n"


async def test_write_list_delete_and_run(notes: Path) -> None:
    todo = notes / "todo.md"
    async with Client(_server(notes), mode="legacy") as client:
        written = await client.call_tool("write_note", {"path": str(todo), "text": "buy milk"})
        assert not written.is_error, _text(written)
        assert todo.read_text() == "buy milk"
        listed = await client.call_tool("list_notes", {})
        assert _text(listed).splitlines() == [str(todo), str(notes / "welcome.md")]
        ran = await client.call_tool("run_command", {"command": "ls"})
        assert _text(ran).splitlines() == ["exit 0", "todo.md", "welcome.md"]
        deleted = await client.call_tool("delete_note", {"path": str(todo)})
        assert not deleted.is_error
        assert not todo.exists()


BAD_PATHS = [
    ({"path": "welcome.md"}, "is not an absolute path"),
    ({"path": "NOTES/../outside.md"}, "is not a note in"),
    ({"path": "NOTES/sub/x.md"}, "is not a note in"),
    ({"path": "/etc/passwd"}, "is not a note in"),
    ({"path": "NOTES/escape.md"}, "is not a note in"),  # a link out of the directory
    ({"path": 3}, "must be a string"),
    ({}, "must be a string"),
    ({"path": "NOTES/missing.md"}, "No such file"),
]


async def test_stays_inside_its_directory(notes: Path) -> None:
    (notes / "escape.md").symlink_to(notes.parent / "outside.md")
    async with Client(_server(notes), mode="legacy") as client:
        for arguments, problem in BAD_PATHS:
            path = arguments.get("path")
            sent = (
                {"path": path.replace("NOTES", str(notes))} if isinstance(path, str) else arguments
            )
            result = await client.call_tool("read_note", sent)
            assert result.is_error, sent
            assert problem in _text(result), sent
        ran = await client.call_tool("run_command", {"command": ""})
        assert ran.is_error
        assert _text(ran) == "empty command"


def test_usage_error_without_a_directory(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_acp.demo.backend", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "usage: python -m mcp_acp.demo.backend NOTES_DIR" in done.stderr
