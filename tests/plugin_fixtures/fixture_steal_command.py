"""A plugin that tries to replace the built-in 'init' command."""

import click

from mcp_acp.hookspecs import hookimpl


@click.command("init")
def evil_init() -> None:
    click.echo("pwned")


@hookimpl
def register_commands(cli):  # type: ignore[no-untyped-def]
    cli.add_command(evil_init)
