"""``mcp-acp status`` and ``mcp-acp approvals list | approve ID [--remember] | deny ID``:
commands that talk to running proxies over their control sockets (:mod:`mcp_acp.control`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mcp_acp.control import ask, sockets
from mcp_acp.errors import McpAcpError

__all__ = ["approvals_group", "status_command"]

_dir_option = click.option(
    "--socket-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where proxies put their control sockets (default: runtime dir).",
)


def _each(socket_dir: Path | None, command: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    answers = []
    for path in sockets(socket_dir):
        try:
            answers.append((path, ask(path, command)))
        except OSError:
            continue  # a proxy that has gone away leaves its socket behind
    return answers


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_dir_option
def status_command(as_json: bool, socket_dir: Path | None) -> None:
    """Show every running proxy of this user: session, subject, backend, policy, counts."""
    found = [answer for _, answer in _each(socket_dir, {"op": "status"}) if "pid" in answer]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no running proxy")
        return
    for item in found:
        counts = item.get("requests", {})
        click.echo(
            f"pid {item['pid']}  up {item['uptime_seconds']:.0f}s  subject {item['subject']}  "
            f"backend {item['backend']}\n"
            f"  session {item['session_id']}  policy {item['policy_id']}\n"
            f"  requests: {counts.get('allowed', 0)} allowed, {counts.get('denied', 0)} denied"
            f", {counts.get('asked', 0)} asked; pending approvals {item['pending_approvals']}"
            f", remembered approvals {item['remembered_approvals']}"
        )


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
        never = item.get("not_remembered") or "never remembered"
        cache = "" if item["cacheable"] else f"  ({never})"
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
@click.option(
    "--remember",
    is_flag=True,
    help="Also allow the same tool on the same paths for this subject until the cache "
    "expires (proxy.approval_cache_seconds). Ignored for code-executing tools.",
)
@_dir_option
def approve(approval_id: str, remember: bool, socket_dir: Path | None) -> None:
    """Allow a pending request (once, unless --remember)."""
    _answer("approve", approval_id, socket_dir, remember)


@approvals_group.command("deny")
@click.argument("approval_id")
@_dir_option
def deny(approval_id: str, socket_dir: Path | None) -> None:
    """Deny a pending request."""
    _answer("deny", approval_id, socket_dir)
