"""Where the processes that share one stored token serialise their writes to it.

A token is refreshed by whichever process finds it due; with refresh-token rotation the
old refresh token is spent at the first use, so two processes must never refresh the same
token at once. The lock therefore belongs to the token, not to a config: every process
that reads and writes the same stored token must take the same lock file, whatever
config directory it was started with. A :class:`~mcp_acp.protocols.TokenStorage` names
it with its optional ``lock_path(issuer)``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import platformdirs

from mcp_acp.config import APP_NAME

__all__ = ["user_lock_path"]


def user_lock_path(kind: str, *names: str) -> Path:
    """A lock file in the user's own mcp-acp state directory (``~/.local/state/mcp-acp/
    locks`` on Linux), one per ``kind`` and ``names`` (hashed: they are URLs and account
    names, not file names). For a store every process of the user shares, such as the OS
    keychain."""
    digest = hashlib.sha256("\0".join(names).encode("utf-8")).hexdigest()[:32]
    locks = platformdirs.user_state_path(APP_NAME, appauthor=False) / "locks"
    return locks / f"{kind}-{digest}.lock"
