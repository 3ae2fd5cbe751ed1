"""``mcp-acp auth login|logout|status`` for the ``oidc`` identity provider."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import click

from mcp_acp.errors import ConfigError
from mcp_acp.errors import printable as _shown
from mcp_acp_oidc.device import DeviceAuthorization
from mcp_acp_oidc.provider import OIDCIdentityProvider

__all__ = ["auth_group"]


def _provider(ctx: click.Context) -> tuple[OIDCIdentityProvider, frozenset[str]]:
    """The configured ``oidc`` provider, and the environment variables that hold
    mcp-acp's own secrets (such as the token-storage ``passphrase_env``), which a browser
    opened for the login must not inherit."""
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
    return provider, runtime.secret_env_names()


#: Run by a child Python: ``webbrowser`` there starts the browser (or ``$BROWSER``).
_OPEN_PAGE = "import sys, webbrowser; webbrowser.open(sys.argv[1], new=2)"


def _open_page(page: str, withhold_env: Collection[str]) -> None:
    """Open ``page`` in a browser started from an environment without the
    ``withhold_env`` variables. ``webbrowser`` has no way to set a browser's environment,
    so it runs in a child Python given that environment (``-I``: no module from the
    working directory). Best effort, as ``webbrowser.open`` is: the page is printed
    anyway."""
    if not sys.executable:
        return
    env = {name: value for name, value in os.environ.items() if name not in withhold_env}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([sys.executable, "-I", "-c", _OPEN_PAGE, page], env=env, check=False)


def show_code(
    authorization: DeviceAuthorization,
    *,
    open_browser: bool = False,
    withhold_env: Collection[str] = (),
) -> None:
    """Print where to go and which code to enter, and open the page in a browser when
    asked — a browser that does not inherit the ``withhold_env`` variables (mcp-acp's
    secrets). The URIs were checked (http(s) only, https unless loopback) before they get
    here; a browser is given one only if it is still http(s) — never a shell."""
    click.echo(f"To sign in, open {_shown(authorization.verification_uri)}")
    click.echo(f"and enter the code: {_shown(authorization.user_code)}")
    if authorization.verification_uri_complete:
        click.echo(f"(or open {_shown(authorization.verification_uri_complete)})")
    if open_browser:
        page = authorization.verification_uri_complete or authorization.verification_uri
        if urlsplit(page).scheme in ("https", "http"):
            _open_page(page, withhold_env)
    click.echo("Waiting for approval…")


@click.group("auth")
def auth_group() -> None:
    """Log in to the OIDC identity provider, log out, show the session."""
    from mcp_acp.hardening import protect_process

    # each of these commands loads tokens (and a token-storage passphrase) into this
    # process: protected as 'mcp-acp run' is, before any is loaded
    for problem in protect_process():
        click.echo(f"warning: {problem}", err=True)


@auth_group.command("login")
@click.option(
    "--no-browser", is_flag=True, help="Only print the address and code; open no browser."
)
@click.pass_context
def login_command(ctx: click.Context, no_browser: bool) -> None:
    """Sign in with the device flow and store the validated tokens."""
    provider, secrets = _provider(ctx)
    subject = asyncio.run(
        provider.login(
            lambda authorization: show_code(
                authorization, open_browser=not no_browser, withhold_env=secrets
            )
        )
    )
    click.echo(f"Logged in as {_shown(subject.subject_id)} ({provider.options.issuer}).")


@auth_group.command("logout")
@click.pass_context
def logout_command(ctx: click.Context) -> None:
    """Revoke the refresh token (if the provider allows) and delete the stored tokens —
    also when they cannot be read (then a warning says the token was not revoked)."""
    provider, _ = _provider(ctx)
    result = asyncio.run(provider.logout())
    if result.warning is not None:
        click.echo(f"warning: {_shown(result.warning)}", err=True)
    click.echo("Logged out." if result.had_token else "Not logged in.")


@auth_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Show who is logged in, until when, and where the tokens are kept (never a token).
    Exits 1 when there is no valid session."""
    provider, _ = _provider(ctx)
    info: dict[str, Any] = asyncio.run(provider.status())
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
    else:
        for key, value in info.items():
            click.echo(f"{key}: {_shown(str(value))}")
    if not info.get("valid"):
        raise SystemExit(1)
