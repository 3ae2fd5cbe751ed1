"""``mcp-acp approvals list | approve ID | deny ID`` (the ``cli`` approver).

(``--remember`` arrives with the approval cache.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mcp_acp.builtins.cli_approver import ask, sockets
from mcp_acp.errors import McpAcpError

__all__ = ["approvals_group"]

_dir_option = click.option(
    "--socket-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where proxies put their approval sockets (default: runtime dir).",
)


def _each(socket_dir: Path | None, command: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    answers = []
    for path in sockets(socket_dir):
        try:
            answers.append((path, ask(path, command)))
        except OSError:
            continue  # a proxy that has gone away leaves its socket behind
    return answers


@click.group("approvals")
def approvals_group() -> None:
    """Answer requests that a policy rule sent to a human (the 'cli' approver)."""


@approvals_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_dir_option
def list_command(as_json: bool, socket_dir: Path | None) -> None:
    """Show every pending approval of every running proxy."""
    pending = [
        item
        for _, answer in _each(socket_dir, {"op": "list"})
        for item in answer.get("pending", [])
    ]
    if as_json:
        click.echo(json.dumps(pending, indent=2))
        return
    if not pending:
        click.echo("no pending approvals")
        return
    for item in pending:
        cache = "" if item["cacheable"] else "  (never remembered: runs code)"
        click.echo(f"{item['id']}  {item['expires_in']:>5}s  {item['summary']}{cache}")


def _answer(op: str, approval_id: str, socket_dir: Path | None, remember: bool = False) -> None:
    for _, answer in _each(socket_dir, {"op": op, "id": approval_id, "remember": remember}):
        if answer.get("ok"):
            click.echo(f"{approval_id}: {answer['result']}")
            return
    raise McpAcpError(
        f"no pending approval {approval_id!r} in any running proxy",
        fix="run 'mcp-acp approvals list'; it may have timed out",
    )


@approvals_group.command("approve")
@click.argument("approval_id")
@_dir_option
def approve(approval_id: str, socket_dir: Path | None) -> None:
    """Allow a pending request, once."""
    _answer("approve", approval_id, socket_dir)


@approvals_group.command("deny")
@click.argument("approval_id")
@_dir_option
def deny(approval_id: str, socket_dir: Path | None) -> None:
    """Deny a pending request."""
    _answer("deny", approval_id, socket_dir)
