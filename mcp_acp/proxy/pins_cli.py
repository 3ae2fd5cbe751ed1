"""``mcp-acp tools pins``, ``tools show NAME`` and ``tools approve NAME | --all``: the tool
pins of the config in use (:mod:`mcp_acp.proxy.pins`)."""

from __future__ import annotations

import click

from mcp_acp.config import resolve_config_path
from mcp_acp.proxy.pins import ToolPins, backend_ref, definition_diff

__all__ = ["tools_group"]

#: Hex digits of a waiting definition's sha256 that ``tools show`` prints and ``tools
#: approve --sha256`` needs at least.
SHOWN_DIGEST = 12


def _shown(text: str) -> str:
    """A backend's text as it may reach a terminal: escaped unless plainly printable."""
    return text if text.isprintable() else ascii(text)


def _pins(ctx: click.Context) -> ToolPins:
    return ToolPins.beside(resolve_config_path(ctx.find_root().params.get("config")))


@click.group("tools")
def tools_group() -> None:
    """Tool definitions pinned on first sight (or on review); approve the ones waiting."""


@tools_group.command("pins")
@click.pass_context
def pins_command(ctx: click.Context) -> None:
    """List the pinned tools of every backend, those whose definition changed, and those
    new ones waiting for review."""
    entries = _pins(ctx).entries()
    if not entries:
        click.echo("no tools pinned yet (a tool is pinned when a tools/list first shows it)")
        return
    backend = None
    for key, raw_name, pin in entries:
        name = _shown(raw_name)
        if key != backend:
            backend = key
            click.echo(f"backend {_shown(key)}  ({backend_ref(key)} in audit records)")
        pending = pin.get("pending")
        if "sha256" not in pin:
            click.echo(
                f"  {name}  NEW {(pending or {}).get('at')}: calls denied until reviewed: "
                f"'mcp-acp tools show {name}', then 'tools approve {name}'"
            )
            continue
        if pending is None:
            click.echo(f"  {name}  pinned {pin.get('at')}  sha256 {str(pin.get('sha256'))[:12]}")
            continue
        before, after = pin.get("fields") or {}, pending.get("fields") or {}
        changed = sorted(f for f in {*before, *after} if before.get(f) != after.get(f))
        click.echo(
            f"  {name}  CHANGED {pending.get('at')} ({', '.join(changed)}): calls denied "
            f"until approved: 'mcp-acp tools show {name}', then 'tools approve {name}'"
        )


@tools_group.command("show")
@click.argument("name")
@click.option(
    "--backend",
    help="The backend, as 'mcp-acp tools pins' shows it: its key or its sha256: reference.",
)
@click.pass_context
def show_command(ctx: click.Context, name: str, backend: str | None) -> None:
    """Show tool NAME's definition waiting for approval — what changed, or all of it for a
    new tool — without approving it: read it here, then 'mcp-acp tools approve NAME'."""
    key, pin = _pins(ctx).waiting(name, backend)
    digest = str(pin["pending"].get("sha256"))[:SHOWN_DIGEST]
    click.echo(definition_diff(pin, _shown(name)))
    click.echo(
        f"waiting: {_shown(name)} (backend {_shown(key)}), sha256 {digest}; its calls are "
        f"denied until 'mcp-acp tools approve {_shown(name)} --sha256 {digest}' (which "
        "refuses if the backend has changed it again since)"
    )


@tools_group.command("approve")
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Every tool waiting, of one backend.")
@click.option(
    "--backend",
    help="The backend, as 'mcp-acp tools pins' shows it: its key or its sha256: reference.",
)
@click.option(
    "--sha256",
    "digest",
    help="Approve only the definition 'mcp-acp tools show NAME' showed (its sha256, or the "
    "start of it): refused if the backend changed it again since.",
)
@click.pass_context
def approve_command(
    ctx: click.Context, name: str | None, everything: bool, backend: str | None, digest: str | None
) -> None:
    """Show tool NAME's new definition (what changed, or all of it for a new tool) and pin
    it: its calls are decided by the policy again (from the next tools/list in a running
    session). With --all, every tool waiting for one backend."""
    if (name is None) == (not everything):
        raise click.UsageError("name one tool, or give --all (not both)")
    if digest is not None and (name is None or len(digest) < SHOWN_DIGEST):
        raise click.UsageError(
            f"--sha256 takes one tool's digest as 'tools show' prints it (at least "
            f"{SHOWN_DIGEST} characters), with its NAME"
        )
    pins = _pins(ctx)
    if name is None:
        approved = pins.approve_all(backend)
    else:
        key, before = pins.approve(name, backend, sha256=digest)
        approved = [(key, name, before)]
    for key, tool, before in approved:
        click.echo(definition_diff(before, _shown(tool)))
        click.echo(f"approved: {_shown(tool)} (backend {_shown(key)}) is pinned to this definition")
