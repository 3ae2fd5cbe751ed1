"""The ``keychain`` token storage: one JSON item per issuer in the OS keychain.

Only a keyring backend that keeps secrets in an OS secret store is accepted: macOS
Keychain, Secret Service (GNOME Keyring, KWallet through its Secret Service API), Windows
Credential Locker. ``keyring`` quietly picks whatever backend is installed, so the choice
is checked here: the *fail* and *null* backends, every ``keyrings.alt`` backend (files in
your home, plaintext or with a weak fixed key), and any backend whose priority is below 1
(keyring's own mark of "not recommended") are refused with a one-line error naming the
backend and the fix. With ``"fallback": "encrypted-file"`` the built-in encrypted file is
used instead, and the storage's ``description`` says so, naming the refused backend, so
the choice reaches ``auth status`` and the audit log.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import keyring
import keyring.backend
import keyring.errors
from keyring.backends import chainer, fail
from pydantic import BaseModel, ConfigDict, Field

from mcp_acp.errors import AuthenticationError, PluginError
from mcp_acp.models import StoredToken
from mcp_acp.registry import PluginContext
from mcp_acp.tokens import (
    EncryptedFileConfig,
    EncryptedFileStorage,
    TokenRecordError,
    dump_token,
    parse_token,
    user_lock_path,
)

__all__ = [
    "KeychainConfig",
    "KeychainStorage",
    "backend_name",
    "effective_backend",
    "refusal",
    "token_storage_from_config",
]

log = logging.getLogger(__name__)

LOGIN_AGAIN = "log in again (this replaces the stored token)"
BACKEND_FIX = (
    "unlock or start the OS keychain (macOS Keychain; on Linux a Secret Service such as "
    "gnome-keyring), or set PYTHON_KEYRING_BACKEND to a secure backend, or configure "
    '"fallback": "encrypted-file" to use the encrypted token file instead'
)


class KeychainConfig(BaseModel):
    """Options of the ``keychain`` token storage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str = Field(
        default="mcp-acp",
        min_length=1,
        max_length=200,
        description="Keychain service name the items are stored under.",
    )
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="OAuth client id; with it the item's account is '<client_id>@<issuer>'.",
    )
    fallback: Literal["none", "encrypted-file"] = Field(
        default="none",
        description=(
            "What to do when no secure keyring backend is available: 'none' refuses to "
            "start; 'encrypted-file' uses the built-in encrypted token file (logged)."
        ),
    )
    encrypted_file: EncryptedFileConfig = Field(
        default_factory=EncryptedFileConfig,
        description="Options of the encrypted file (fallback, and cleared on delete).",
    )


def backend_name(backend: keyring.backend.KeyringBackend) -> str:
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def effective_backend(backend: keyring.backend.KeyringBackend) -> keyring.backend.KeyringBackend:
    """The backend that would hold the secret.

    keyring's chainer tries every backend with priority above 0 in turn: a secret missing
    from Secret Service would then be looked up in (and a failed write could go to) a
    plaintext file. Only the chainer's first, highest-priority backend is used.
    """
    if isinstance(backend, chainer.ChainerBackend):
        members = list(backend.backends)
        return members[0] if members else fail.Keyring()  # type: ignore[no-untyped-call]
    return backend


def refusal(backend: keyring.backend.KeyringBackend) -> str | None:
    """Why ``backend`` is not a secure place for tokens, or ``None`` if it is."""
    module = type(backend).__module__
    if isinstance(backend, fail.Keyring):
        return "no OS keychain is available"
    if module == "keyring.backends.null":
        return "the null backend stores nothing"
    if module.split(".")[0] == "keyrings":
        return "keyrings.alt backends keep secrets in a file in your home, not in the OS keychain"
    if isinstance(backend, chainer.ChainerBackend):
        return "the chained backends were not resolved"
    try:
        priority = float(type(backend).priority)
    except Exception as exc:  # keyring signals "not usable here" by raising from priority
        return f"it is not usable here ({type(exc).__name__}: {exc})"
    if priority < 1:
        return f"its priority {priority:g} is below 1 (keyring's mark of an unsafe backend)"
    return None


class KeychainStorage:
    """A :class:`~mcp_acp.protocols.TokenStorage` in a keyring backend (checked secure).

    One item per (service, account), account = issuer (or ``<client_id>@<issuer>``),
    holding the whole token set as one JSON record, so a save replaces it in one write.
    """

    name = "keychain"

    def __init__(
        self,
        backend: keyring.backend.KeyringBackend,
        *,
        service: str = "mcp-acp",
        client_id: str | None = None,
        file_to_clear: EncryptedFileStorage | None = None,
    ) -> None:
        chosen = effective_backend(backend)
        why = refusal(chosen)
        if why is not None:
            raise PluginError(
                f"token storage 'keychain': refusing keyring backend {backend_name(chosen)}: {why}",
                fix=BACKEND_FIX,
            )
        self._backend = chosen
        self.service = service
        self.client_id = client_id
        self._file_to_clear = file_to_clear
        self.backend_name = backend_name(chosen)
        self.description = f"keychain ({self.backend_name}, service {service!r})"

    def account_for(self, issuer: str) -> str:
        return issuer if self.client_id is None else f"{self.client_id}@{issuer}"

    def lock_path(self, issuer: str) -> Path:
        """The lock of this keychain item, in the user's state directory: every config of
        the user that names the same service and account shares the item, and so the lock
        (a file beside a config would not be shared)."""
        return user_lock_path("keychain", self.service, self.account_for(issuer))

    def load(self, issuer: str) -> StoredToken | None:
        account = self.account_for(issuer)
        try:
            text = self._backend.get_password(self.service, account)
        except keyring.errors.KeyringError as exc:
            raise self._unavailable("read", account, exc) from None
        if text is None:
            return None
        try:
            return parse_token(text, issuer=issuer)
        except TokenRecordError as exc:
            raise AuthenticationError(
                f"the token stored in the keychain ({self.backend_name}, service "
                f"{self.service!r}, account {account!r}) cannot be used: {exc}",
                fix=LOGIN_AGAIN,
            ) from None

    def save(self, token: StoredToken) -> None:
        account = self.account_for(token.issuer)
        try:
            self._backend.set_password(self.service, account, dump_token(token))
        except keyring.errors.KeyringError as exc:
            raise self._unavailable("write", account, exc) from None

    def delete(self, issuer: str) -> None:
        account = self.account_for(issuer)
        try:
            self._backend.delete_password(self.service, account)
        except keyring.errors.PasswordDeleteError:
            pass  # there was none
        except keyring.errors.KeyringError as exc:
            raise self._unavailable("delete", account, exc) from None
        if self._file_to_clear is not None:
            # logout clears both stores: a token left by an earlier fallback must go too
            self._file_to_clear.delete(issuer)

    def _unavailable(self, verb: str, account: str, exc: Exception) -> AuthenticationError:
        return AuthenticationError(
            f"cannot {verb} the keychain item (service {self.service!r}, account {account!r}) "
            f"in {self.backend_name}: {type(exc).__name__}: {exc}",
            fix="unlock the keychain (or start the Secret Service), then try again",
        )


def token_storage_from_config(
    options: KeychainConfig, context: PluginContext
) -> KeychainStorage | EncryptedFileStorage:
    """The factory registered as ``keychain``: the OS keychain, or the explicit fallback."""
    file_storage = EncryptedFileStorage.from_config(options.encrypted_file, context)
    backend = keyring.get_keyring()
    chosen = effective_backend(backend)
    why = refusal(chosen)
    if why is None:
        return KeychainStorage(
            chosen,
            service=options.service,
            client_id=options.client_id,
            file_to_clear=file_storage,
        )
    if options.fallback == "none":
        raise PluginError(
            f"token storage 'keychain': refusing keyring backend {backend_name(chosen)}: {why}",
            fix=BACKEND_FIX,
        )
    file_storage.description = (
        f"{file_storage.description}; fallback: keyring backend {backend_name(chosen)} "
        f"refused ({why})"
    )
    log.warning("token storage: using %s", file_storage.description)
    return file_storage
