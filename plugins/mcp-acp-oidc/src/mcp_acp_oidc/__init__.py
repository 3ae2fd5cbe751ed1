"""OIDC identity for mcp-acp: the ``oidc`` identity provider and ``mcp-acp auth``.

What is in the package, one module per idea:

* :mod:`~mcp_acp_oidc.validator` — JWT access-token validation (the security core);
* :mod:`~mcp_acp_oidc.jwks` — the issuer's keys, cached, refetched sparingly, off-loop;
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

from mcp_acp.errors import ConfigError
from mcp_acp.hookspecs import hookimpl
from mcp_acp.protocols import TokenStorage
from mcp_acp.registry import PluginContext, Register
from mcp_acp_oidc.errors import (
    DeviceFlowError,
    DiscoveryError,
    JWKSUnavailableError,
    RefreshError,
    TokenRejectedError,
)
from mcp_acp_oidc.provider import OIDCConfig, OIDCIdentityProvider
from mcp_acp_oidc.validator import TokenValidationConfig, TokenValidator

if TYPE_CHECKING:
    import click

__version__ = "0.1.0"

__all__ = [
    "DeviceFlowError",
    "DiscoveryError",
    "JWKSUnavailableError",
    "OIDCConfig",
    "OIDCIdentityProvider",
    "RefreshError",
    "TokenRejectedError",
    "TokenValidationConfig",
    "TokenValidator",
]


def configured_storage(context: PluginContext) -> TokenStorage:
    """The ``token_storage`` the config file selects.

    Factories receive only their own options, so the storage section is resolved here
    from the same config file (with the same plugin allowlist).
    """
    from mcp_acp.runtime import load_runtime

    runtime = load_runtime(context.config_path)
    if "token_storage" not in runtime.components:
        raise ConfigError(
            f"{context.config_path}: identity 'oidc' needs a token_storage section",
            fix='add "token_storage": {"use": "<name>"} (\'mcp-acp plugins\' lists them)',
        )
    storage: TokenStorage = runtime.build("token_storage")
    return storage


def build_identity_provider(options: OIDCConfig, context: PluginContext) -> OIDCIdentityProvider:
    """Factory registered as identity provider ``oidc``."""
    return OIDCIdentityProvider(options, configured_storage(context))


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
