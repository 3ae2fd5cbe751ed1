"""mcp-acp plugin ``mtls``: mutual TLS to streamable-HTTP backends.

Registers the ``mtls`` :class:`~mcp_acp.protocols.TlsProvider` (selected by
``backend.tls``) and the ``mcp-acp tls status`` command. See :mod:`mcp_acp_mtls.provider`
for what the context enforces and what is checked at start-up.
"""

from __future__ import annotations

import click

from mcp_acp.hookspecs import hookimpl
from mcp_acp.registry import Register
from mcp_acp_mtls.provider import MtlsConfig, MtlsProvider, build_context
from mcp_acp_mtls.status import tls_group

__all__ = [
    "MtlsConfig",
    "MtlsProvider",
    "build_context",
    "register_commands",
    "register_tls_providers",
]


@hookimpl
def register_tls_providers(register: Register) -> None:
    register(
        "mtls",
        MtlsProvider.from_config,
        MtlsConfig,
        summary="client certificate + pinned CA bundle; start-up file and expiry checks",
    )


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(tls_group)
