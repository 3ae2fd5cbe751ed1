"""Built-in ``encrypted-file`` token storage (see :mod:`mcp_acp.tokens.encrypted_file`)."""

from __future__ import annotations

from mcp_acp.hookspecs import hookimpl
from mcp_acp.registry import Register
from mcp_acp.tokens.encrypted_file import EncryptedFileConfig, EncryptedFileStorage


@hookimpl
def register_token_storages(register: Register) -> None:
    register(
        "encrypted-file",
        EncryptedFileStorage.from_config,
        EncryptedFileConfig,
        summary="Fernet-encrypted 0600 file per issuer; key from a 0600 key file or passphrase",
    )
