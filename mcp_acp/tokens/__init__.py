"""Token storage: where OAuth tokens are kept between runs.

:class:`EncryptedFileStorage` is the built-in ``encrypted-file``
:class:`~mcp_acp.protocols.TokenStorage`; the ``keychain`` plugin
(``mcp-acp[keychain]``) keeps the same JSON record (:mod:`mcp_acp.tokens.codec`) in the OS
keychain and falls back to the encrypted file only when told to.
"""

from mcp_acp.tokens.codec import TokenRecordError, dump_token, parse_token
from mcp_acp.tokens.encrypted_file import (
    MIN_ITERATIONS,
    EncryptedFileConfig,
    EncryptedFileStorage,
)
from mcp_acp.tokens.locks import user_lock_path

__all__ = [
    "MIN_ITERATIONS",
    "EncryptedFileConfig",
    "EncryptedFileStorage",
    "TokenRecordError",
    "dump_token",
    "parse_token",
    "user_lock_path",
]
