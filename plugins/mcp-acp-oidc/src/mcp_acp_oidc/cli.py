"""``mcp-acp auth login|logout|status`` for the ``oidc`` identity provider."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from mcp_acp.errors import ConfigError
from mcp_acp.errors import one_line as _one_line
from mcp_acp_oidc.device import DeviceAuthorization
from mcp_acp_oidc.provider import OIDCIdentityProvider

__all__ = ["auth_group"]


def _provider(ctx: click.Context) -> OIDCIdentityProvider:
    from mcp_acp.config import resolve_config_path
    from mcp_acp.runtime import load_runtime

    path = resolve_config_path(ctx.find_root().params.get("config"))
    runtime = load_runtime(path)
    if runtime.config.identity.use != "oidc":
        raise ConfigError(
            f"{path}: identity.use is {runtime.config.identity.use!r}, not 'oidc'",
            fix='set "identity": {"use": "oidc", "config": {...}}',
        )
    provider = runtime.build("identity")
    if not isinstance(provider, OIDCIdentityProvider):
        raise ConfigError(f"{path}: identity 'oidc' is not this plugin's provider")
    return provider


def show_code(authorization: DeviceAuthorization) -> None:
    """Print where to go and which code to enter. The URI was checked (https, no shell
    metacharacters) before it gets here; it is printed, never opened or run."""
    click.echo(f"To sign in, open {_one_line(authorization.verification_uri)}")
    click.echo(f"and enter the code: {_one_line(authorization.user_code)}")
    if authorization.verification_uri_complete:
        click.echo(f"(or open {_one_line(authorization.verification_uri_complete)})")
    click.echo("Waiting for approval…")


@click.group("auth")
def auth_group() -> None:
    """Log in to the OIDC identity provider, log out, show the session."""


@auth_group.command("login")
@click.pass_context
def login_command(ctx: click.Context) -> None:
    """Sign in with the device flow and store the validated tokens."""
    provider = _provider(ctx)
    subject = asyncio.run(provider.login(show_code))
    click.echo(f"Logged in as {_one_line(subject.subject_id)} ({provider.options.issuer}).")


@auth_group.command("logout")
@click.pass_context
def logout_command(ctx: click.Context) -> None:
    """Revoke the refresh token (if the provider allows) and delete the stored tokens."""
    provider = _provider(ctx)
    had = asyncio.run(provider.logout())
    click.echo("Logged out." if had else "Not logged in.")


@auth_group.command("status")
@click.pass_context
def status_command(ctx: click.Context) -> None:
    """Show who is logged in and until when (never a token)."""
    info: dict[str, Any] = asyncio.run(_provider(ctx).status())
    for key, value in info.items():
        click.echo(f"{key}: {_one_line(str(value))}")
    if not info.get("valid"):
        raise SystemExit(1)
