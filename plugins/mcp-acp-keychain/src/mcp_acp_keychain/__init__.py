"""mcp-acp plugin ``keychain``: token storage in the OS keychain through ``keyring``.

Registers the ``keychain`` :class:`~mcp_acp.protocols.TokenStorage` through the same
hook the built-ins use. See :mod:`mcp_acp_keychain.storage` for which keyring backends
are accepted and why.
"""

from __future__ import annotations

from mcp_acp.hookspecs import hookimpl
from mcp_acp.registry import Register
from mcp_acp_keychain.storage import (
    KeychainConfig,
    KeychainStorage,
    token_storage_from_config,
)

__all__ = ["KeychainConfig", "KeychainStorage", "register_token_storages"]


@hookimpl
def register_token_storages(register: Register) -> None:
    register(
        "keychain",
        token_storage_from_config,
        KeychainConfig,
        summary="OS keychain via keyring; refuses plaintext/fail backends",
    )
