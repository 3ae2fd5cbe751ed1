"""The plugin hooks of mcp-acp. This file is the plugin author's reference.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names match
the specs below, published under the ``mcp_acp`` entry-point group::

    [project.entry-points.mcp_acp]
    my-plugin = "my_package.plugin"

Each ``register_*`` hook is called once at start-up with a ``register`` callable (see
:class:`mcp_acp.registry.Register`): call it once per implementation, giving a name, a
factory, and the pydantic model of the implementation's config section. Nothing else
happens in these hooks — no I/O, no network; the factory does the work later, and only
for implementations the config selects.

Installed plugins load only when allowed (``plugins.allow`` in the config, or the
``MCP_ACP_PLUGINS`` environment variable). Built-in implementations register through the
same hooks: see :mod:`mcp_acp.builtins` for short, complete examples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from mcp_acp.registry import Register

PROJECT = "mcp_acp"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_identity_providers(register: Register) -> None:
    """Register :class:`~mcp_acp.protocols.IdentityProvider` factories (who is asking)."""


@hookspec
def register_token_storages(register: Register) -> None:
    """Register :class:`~mcp_acp.protocols.TokenStorage` factories (where tokens are kept)."""


@hookspec
def register_posture_checks(register: Register) -> None:
    """Register :class:`~mcp_acp.protocols.PostureCheck` factories (device health facts)."""


@hookspec
def register_policy_engines(register: Register) -> None:
    """Register :class:`~mcp_acp.protocols.PolicyEngine` factories (decision points)."""


@hookspec
def register_approvers(register: Register) -> None:
    """Register :class:`~mcp_acp.protocols.Approver` factories (how a human is asked)."""


@hookspec
def register_audit_sinks(register: Register) -> None:
    """Register :class:`~mcp_acp.protocols.AuditSink` factories (where records go)."""


@hookspec
def register_tls_providers(register: Register) -> None:
    """Register :class:`~mcp_acp.protocols.TlsProvider` factories (how an HTTPS backend is
    reached: the ``ssl.SSLContext``, e.g. with a client certificate for mutual TLS)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``mcp-acp`` CLI, e.g. ``cli.add_command(my_group)``.

    Called when the CLI is built, after plugins are loaded. Command names must not
    clash with built-in commands or other plugins' commands (start-up error if they do).
    """
