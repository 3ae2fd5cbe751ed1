"""OIDC identity for mcp-acp: the ``oidc`` identity provider and ``mcp-acp auth``.

What is in the package, one module per idea:

* :mod:`~mcp_acp_oidc.validator` — JWT access-token validation (the security core);
* :mod:`~mcp_acp_oidc.jwks` — the issuer's keys, cached, refetched sparingly, async, bounded;
* :mod:`~mcp_acp_oidc.discovery` — ``/.well-known/openid-configuration``;
* :mod:`~mcp_acp_oidc.device` — the device authorization grant (RFC 8628) client;
* :mod:`~mcp_acp_oidc.refresh` — the refresh grant with rotation;
* :mod:`~mcp_acp_oidc.login` — device flow → validate → store;
* :mod:`~mcp_acp_oidc.provider` — :class:`OIDCIdentityProvider` (per-request subject);
* :mod:`~mcp_acp_oidc.cli` — ``mcp-acp auth login|logout|status``.

The plugin loads only when ``oidc`` is allowed (``plugins.allow`` or ``MCP_ACP_PLUGINS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_acp.hookspecs import hookimpl
from mcp_acp.registry import PluginContext, Register
from mcp_acp_oidc.errors import (
    DeviceFlowError,
    DiscoveryError,
    JWKSUnavailableError,
    RefreshError,
    TokenRejectedError,
    TokenStorageError,
)
from mcp_acp_oidc.provider import (
    LogoutResult,
    OIDCConfig,
    OIDCIdentityProvider,
    refresh_lock_path,
)
from mcp_acp_oidc.validator import TokenValidationConfig, TokenValidator

if TYPE_CHECKING:
    import click

__version__ = "0.1.0"

__all__ = [
    "DeviceFlowError",
    "DiscoveryError",
    "JWKSUnavailableError",
    "LogoutResult",
    "OIDCConfig",
    "OIDCIdentityProvider",
    "RefreshError",
    "TokenRejectedError",
    "TokenStorageError",
    "TokenValidationConfig",
    "TokenValidator",
]


def build_identity_provider(options: OIDCConfig, context: PluginContext) -> OIDCIdentityProvider:
    """Factory registered as identity provider ``oidc``: tokens in the configured
    ``token_storage``, refreshes serialised by the lock of the stored token (shared by
    every process that uses that token, whatever its config), auth events into the
    session's trail."""
    storage = context.token_storage()
    return OIDCIdentityProvider(
        options,
        storage,
        lock_path=refresh_lock_path(storage, options.issuer),
        record_auth=context.record_auth,
    )


@hookimpl
def register_identity_providers(register: Register) -> None:
    register(
        "oidc",
        build_identity_provider,
        OIDCConfig,
        summary="validated OIDC access tokens (device-flow login, refresh rotation)",
    )


@hookimpl
def register_commands(cli: click.Group) -> None:
    from mcp_acp_oidc.cli import auth_group

    cli.add_command(auth_group)
