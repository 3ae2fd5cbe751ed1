"""Built-in ``encrypted-file`` token storage: one Fernet-encrypted file per issuer.

What the key is, and what that buys (see docs/authentication.md, "Token storage"):

* By default the secret is a **random 256-bit key file** (``token-storage.key``, mode
  0600) kept in the config directory, *outside* the token directory. A token file copied
  or synced on its own (a backup of the data, a file attached to a bug report) cannot be
  decrypted without that key file.
* With ``passphrase_env`` the secret is a passphrase from the environment instead, and
  nothing on disk is enough to decrypt the tokens.
* Nothing protects the tokens from code running as the same user: it can read the key
  file (or the environment) just as the proxy does. No machine facts (machine-id, user
  name, host name) are mixed into the key: they are not secret, so they would add nothing
  but the appearance of protection.

The key is derived with PBKDF2-HMAC-SHA256 (at least 600,000 iterations) and a random
16-byte salt; salt and iteration count are stored in the file's header, so the count can
be raised later (files with fewer iterations are refused; the next login rewrites them).
With the random key file PBKDF2 adds no strength (the key is already full-entropy); it
matters for passphrases.

Files are created 0600 and replaced atomically (write, fsync, rename), whatever the
umask. Reading refuses a token file or key file that is a symlink, not a regular file,
owned by another user, or readable or writable by group or others. A file that fails to
decrypt (corrupt, truncated, edited, or another key) is refused the same way: the error
says to log in again, which overwrites it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import stat
import tempfile
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mcp_acp._fs import atomic_write_text, ensure_private_dir, fsync_dir, unsafe_permissions
from mcp_acp.errors import AuthenticationError
from mcp_acp.models import StoredToken
from mcp_acp.registry import PluginContext, SecretEnvName
from mcp_acp.tokens.codec import TokenRecordError, dump_token, parse_token

__all__ = [
    "FILE_FORMAT",
    "MAX_ITERATIONS",
    "MIN_ITERATIONS",
    "EncryptedFileConfig",
    "EncryptedFileStorage",
]

log = logging.getLogger(__name__)

FILE_FORMAT = "mcp-acp-encrypted-token/1"
KDF_NAME = "pbkdf2-hmac-sha256"
MIN_ITERATIONS = 600_000
"""OWASP's 2023 figure for PBKDF2-HMAC-SHA256; files with fewer are refused."""
MAX_ITERATIONS = 10_000_000
"""A hostile header must not make loading take minutes."""
SALT_BYTES = 16
MAX_FILE_BYTES = 1 << 20  # a token set is a few KiB; anything larger is not ours
KEY_BYTES = 32
LOGIN_AGAIN = "log in again (this replaces the stored token)"


class EncryptedFileConfig(BaseModel):
    """Options of the ``encrypted-file`` token storage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path | None = Field(
        default=None,
        description="Where token files go (one per issuer). Default: <config dir>/tokens.",
    )
    key_file: Path | None = Field(
        default=None,
        description=(
            "The random key file, created 0600 if missing. Default: "
            "<config dir>/token-storage.key. Put it elsewhere (another disk, a secrets "
            "mount) to keep it apart from the token files."
        ),
    )
    passphrase_env: SecretEnvName | None = Field(
        default=None,
        min_length=1,
        description=(
            "Name of an environment variable holding a passphrase to derive the key "
            "from, instead of the key file."
        ),
    )
    iterations: int = Field(
        default=MIN_ITERATIONS,
        ge=MIN_ITERATIONS,
        le=MAX_ITERATIONS,
        description="PBKDF2-HMAC-SHA256 iterations for files written from now on.",
    )


class EncryptedFileStorage:
    """A :class:`~mcp_acp.protocols.TokenStorage` keeping each issuer's tokens in a file.

    Methods block (key derivation takes a fraction of a second): call them from a worker
    thread in async code.
    """

    name = "encrypted-file"

    def __init__(
        self,
        directory: Path,
        *,
        key_file: Path | None = None,
        passphrase_env: str | None = None,
        iterations: int = MIN_ITERATIONS,
    ) -> None:
        if (key_file is None) == (passphrase_env is None):
            raise ValueError("give exactly one of key_file and passphrase_env")
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise ValueError(f"iterations must be in [{MIN_ITERATIONS}, {MAX_ITERATIONS}]")
        self.directory = directory
        self.key_file = key_file
        self.passphrase_env = passphrase_env
        self.iterations = iterations
        secret = f"key file {key_file}" if key_file else f"passphrase from ${passphrase_env}"
        self.description = f"encrypted-file ({directory}, {secret})"
        self._lock = threading.Lock()
        self._derived: dict[tuple[bytes, bytes, int], bytes] = {}
        self._write_salt = secrets.token_bytes(SALT_BYTES)

    @classmethod
    def from_config(
        cls, options: EncryptedFileConfig, context: PluginContext
    ) -> EncryptedFileStorage:
        key_file = None
        if options.passphrase_env is None:
            key_file = options.key_file or context.config_dir / "token-storage.key"
        return cls(
            options.directory or context.config_dir / "tokens",
            key_file=key_file,
            passphrase_env=options.passphrase_env,
            iterations=options.iterations,
        )

    def path_for(self, issuer: str) -> Path:
        """The token file of ``issuer`` (a hash of it: issuers are URLs, not file names)."""
        digest = hashlib.sha256(issuer.encode("utf-8")).hexdigest()[:32]
        return self.directory / f"{digest}.token"

    def lock_path(self, issuer: str) -> Path:
        """The lock of ``issuer``'s token file, beside it: every process that uses this
        file (whatever its config) serialises its refreshes on it."""
        return self.path_for(issuer).with_suffix(".lock")

    # -- TokenStorage -------------------------------------------------------------------

    def load(self, issuer: str) -> StoredToken | None:
        path = self.path_for(issuer)
        self._check_directory()
        data = _read_private(path, what="token file", missing_ok=True)
        if data is None:
            return None
        try:
            header = json.loads(data)
            if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
                raise ValueError("not an mcp-acp token file")
            if header.get("kdf") != KDF_NAME:
                raise ValueError(f"unknown key derivation {header.get('kdf')!r}")
            iterations = header.get("iterations")
            if not isinstance(iterations, int) or isinstance(iterations, bool):
                raise ValueError("the iteration count is missing")
            salt = base64.urlsafe_b64decode(str(header["salt"]).encode("ascii"))
            ciphertext = str(header["ciphertext"]).encode("ascii")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise _unusable(path, f"it is damaged ({_short(exc)})") from None
        if iterations < MIN_ITERATIONS:
            raise _unusable(
                path, f"it uses {iterations} key-derivation iterations, fewer than {MIN_ITERATIONS}"
            )
        if iterations > MAX_ITERATIONS:
            raise _unusable(path, f"it asks for {iterations} key-derivation iterations (too many)")
        if len(salt) < SALT_BYTES:
            raise _unusable(path, "its salt is too short")
        key = self._key(salt, iterations, need_existing=True, path=path)
        # cryptography is imported where it is used: this module is a built-in plugin, loaded
        # at every start, and most configs store no tokens (importing it costs ~10 ms)
        from cryptography.fernet import Fernet, InvalidToken

        try:
            plaintext = Fernet(key).decrypt(ciphertext)
        except InvalidToken:
            raise _unusable(
                path, "it cannot be decrypted (damaged, edited, or encrypted with another key)"
            ) from None
        try:
            return parse_token(plaintext, issuer=issuer)
        except TokenRecordError as exc:
            raise _unusable(path, str(exc)) from None

    def save(self, token: StoredToken) -> None:
        path = self.path_for(token.issuer)
        with self._lock:
            key = self._key(self._write_salt, self.iterations, need_existing=False, path=path)
        from cryptography.fernet import Fernet  # see load()

        ciphertext = Fernet(key).encrypt(dump_token(token).encode("utf-8"))
        document = {
            "format": FILE_FORMAT,
            "kdf": KDF_NAME,
            "iterations": self.iterations,
            "salt": base64.urlsafe_b64encode(self._write_salt).decode("ascii"),
            "ciphertext": ciphertext.decode("ascii"),
        }
        ensure_private_dir(self.directory)
        self._check_directory()
        atomic_write_text(path, json.dumps(document) + "\n")

    def delete(self, issuer: str) -> None:
        path = self.path_for(issuer)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # A save killed between writing its new file and renaming it into place
        # (atomic_write_text) left that file, hidden: a whole token set, which the key
        # file decrypts. Saves and deletes run under the refresh lock, so none is in
        # flight here.
        for leftover in self.directory.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()

    # -- the key ------------------------------------------------------------------------

    def _key(self, salt: bytes, iterations: int, *, need_existing: bool, path: Path) -> bytes:
        """The file key for ``salt``, derived from the secret as it is *now*: the key file
        (or passphrase) is read every time — it is small — and a derivation is reused only
        for the same secret, so a key file replaced by another process's login is never
        outlived by a key derived from the old one."""
        secret = self._secret(create=not need_existing, token_path=path)
        cache_key = (hashlib.sha256(secret).digest(), salt, iterations)
        cached = self._derived.get(cache_key)
        if cached is not None:
            return cached
        from cryptography.hazmat.primitives import hashes  # see load()
        from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
        key = base64.urlsafe_b64encode(kdf.derive(secret))
        self._derived[cache_key] = key
        return key

    def _secret(self, *, create: bool, token_path: Path) -> bytes:
        if self.passphrase_env is not None:
            passphrase = os.environ.get(self.passphrase_env)
            if not passphrase:
                raise AuthenticationError(
                    f"token storage: environment variable {self.passphrase_env} is not set "
                    f"or empty, so the tokens in {self.directory} cannot be decrypted",
                    fix=f"set {self.passphrase_env} to the token-storage passphrase",
                )
            # the variable's bytes as they are, whatever the locale: os.environ decodes
            # them with the locale's codec, so a re-encoding in UTF-8 gave a Latin-1
            # terminal's "é" (e9) as c3 a9 — a key other than a UTF-8 process derives
            return os.fsencode(passphrase)
        assert self.key_file is not None  # noqa: S101 - guaranteed by __init__
        data = _read_private(self.key_file, what="key file", missing_ok=True)
        if data is None:
            if not create:
                raise _unusable(token_path, f"its key file {self.key_file} is missing")
            data = _create_key_file(self.key_file)
        try:
            key = base64.urlsafe_b64decode(data.strip())
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise AuthenticationError(
                f"token storage: key file {self.key_file} is damaged",
                fix=f"remove {self.key_file} and log in again",
            )
        return key

    def _check_directory(self) -> None:
        problem = _unsafe_directory(self.directory)
        if problem is not None:
            raise AuthenticationError(
                f"token storage: {problem}",
                fix=f"chmod 700 {self.directory} (and make it yours), then log in again",
            )


def _unusable(path: Path, why: str) -> AuthenticationError:
    return AuthenticationError(f"the stored token in {path} cannot be used: {why}", fix=LOGIN_AGAIN)


def _short(exc: BaseException) -> str:
    return type(exc).__name__


def _unsafe_directory(directory: Path) -> str | None:
    try:
        info = directory.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return f"{directory} is a symlink"
    if info.st_mode & 0o077:
        return f"{directory} is open to group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    return unsafe_permissions(directory)


def _read_private(path: Path, *, what: str, missing_ok: bool) -> bytes | None:
    """Read ``path`` if it is a regular file of ours with no group/other access."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refused(path, what, "it is a symlink") from None
        raise _refused(path, what, f"it cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refused(path, what, "it is not a regular file")
        if info.st_uid != os.geteuid():
            raise _refused(
                path, what, f"it is owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise _refused(path, what, f"it is open to group or others (mode {mode:04o})")
        if info.st_size > MAX_FILE_BYTES:
            raise _refused(path, what, f"it is too large ({info.st_size} bytes)")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)


def _refused(path: Path, what: str, why: str) -> AuthenticationError:
    return AuthenticationError(
        f"refusing the {what} {path}: {why}",
        fix=f"remove {path} and log in again (never loosen its mode: it should be 0600)",
    )


def _create_key_file(path: Path) -> bytes:
    """Create the random key file atomically; if another process won the race, use its."""
    ensure_private_dir(path.parent)
    data = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)  # fails if the file exists: never replace a key
        except FileExistsError:
            existing = _read_private(path, what="key file", missing_ok=False)
            assert existing is not None  # noqa: S101 - missing_ok=False raises instead
            return existing
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    fsync_dir(path.parent)  # the key must outlive a crash at least as long as the tokens
    log.info("token storage: created key file %s", path)
    return data
