"""The ``keychain`` token storage with an in-memory keyring backend, and its refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import pytest
from keyring.backends import fail, null
from keyrings.alt.file import PlaintextKeyring
from mcp_acp_keychain import KeychainConfig, KeychainStorage
from mcp_acp_keychain.storage import token_storage_from_config

from mcp_acp.errors import AuthenticationError, PluginError
from mcp_acp.models import StoredToken
from mcp_acp.plugins import load_plugins
from mcp_acp.registry import Kind, PluginContext
from mcp_acp.tokens import EncryptedFileStorage

ISSUER = "https://idp.example.test/realms/acp"


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A real keyring backend that keeps items in a dict."""

    priority = 5  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}
        self.broken = False

    def get_password(self, service: str, username: str) -> str | None:
        if self.broken:
            raise keyring.errors.KeyringLocked("the collection is locked")
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if self.broken:
            raise keyring.errors.PasswordSetError("the collection is locked")
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        try:
            del self.items[(service, username)]
        except KeyError:
            raise keyring.errors.PasswordDeleteError("not found") from None


class LowPriorityKeyring(MemoryKeyring):
    priority = 0.2  # type: ignore[assignment]


def _token(access: str = "canary-access-51") -> StoredToken:
    return StoredToken(
        issuer=ISSUER,
        access_token=access,
        refresh_token="canary-refresh-52",  # noqa: S106 - a test canary
        expires_at=datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC),
        scope="openid",
    )


@pytest.fixture
def memory() -> MemoryKeyring:
    return MemoryKeyring()


@pytest.fixture
def context(tmp_path: Path) -> PluginContext:
    return PluginContext(config_path=tmp_path / "cfg" / "config.json", log_dir=tmp_path / "logs")


@pytest.fixture
def default_keyring() -> Iterator[None]:
    """Restore keyring's process-wide backend after a test sets it."""
    before = keyring.get_keyring()
    try:
        yield
    finally:
        keyring.set_keyring(before)


def test_round_trip_one_json_item_per_issuer(memory: MemoryKeyring) -> None:
    store = KeychainStorage(memory)
    assert store.load(ISSUER) is None
    store.save(_token())
    assert list(memory.items) == [("mcp-acp", ISSUER)]
    record = json.loads(memory.items[("mcp-acp", ISSUER)])
    assert record["issuer"] == ISSUER
    assert record["refresh_token"] == "canary-refresh-52"  # noqa: S105 - a test canary
    assert store.load(ISSUER) == _token()
    store.save(_token("second"))
    assert store.load(ISSUER) == _token("second")
    assert len(memory.items) == 1


def test_account_is_keyed_by_client_and_issuer(memory: MemoryKeyring) -> None:
    store = KeychainStorage(memory, service="acp-test", client_id="cli-123")
    store.save(_token())
    assert list(memory.items) == [("acp-test", f"cli-123@{ISSUER}")]
    assert KeychainStorage(memory, service="acp-test").load(ISSUER) is None


def test_delete_clears_item_and_leftover_file(memory: MemoryKeyring, tmp_path: Path) -> None:
    leftover = EncryptedFileStorage(tmp_path / "tokens", key_file=tmp_path / "key")
    leftover.save(_token("from-an-earlier-fallback"))
    store = KeychainStorage(memory, file_to_clear=leftover)
    store.save(_token())
    store.delete(ISSUER)
    assert memory.items == {}
    assert leftover.load(ISSUER) is None
    store.delete(ISSUER)  # nothing left: no error


def test_damaged_item_asks_to_log_in_again(memory: MemoryKeyring) -> None:
    store = KeychainStorage(memory)
    memory.items[("mcp-acp", ISSUER)] = '{"access_token": "canary-x'
    with pytest.raises(AuthenticationError) as info:
        store.load(ISSUER)
    assert "log in again" in str(info.value)
    assert "canary" not in str(info.value)


def test_record_of_another_issuer_is_refused(memory: MemoryKeyring) -> None:
    store = KeychainStorage(memory)
    store.save(_token())
    memory.items[("mcp-acp", "https://other.test")] = memory.items[("mcp-acp", ISSUER)]
    with pytest.raises(AuthenticationError, match="another issuer"):
        store.load("https://other.test")


def test_locked_keychain_is_an_authentication_error(memory: MemoryKeyring) -> None:
    store = KeychainStorage(memory)
    memory.broken = True
    with pytest.raises(AuthenticationError, match="KeyringLocked"):
        store.load(ISSUER)
    with pytest.raises(AuthenticationError, match="cannot write"):
        store.save(_token())


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        (fail.Keyring(), "no OS keychain"),
        (null.Keyring(), "null backend"),
        (LowPriorityKeyring(), "priority 0.2 is below 1"),
    ],
    ids=["fail", "null", "low-priority"],
)
def test_insecure_backends_are_refused(
    backend: keyring.backend.KeyringBackend, reason: str
) -> None:
    with pytest.raises(PluginError) as info:
        KeychainStorage(backend)
    line = info.value.user_line()
    assert "\n" not in line
    assert type(backend).__module__ in line
    assert reason in line
    assert "fix:" in line
    assert "encrypted-file" in line


def test_keyrings_alt_plaintext_is_refused() -> None:
    with pytest.raises(PluginError) as info:
        KeychainStorage(PlaintextKeyring())
    assert "keyrings.alt.file.PlaintextKeyring" in str(info.value)
    assert "not in the OS keychain" in str(info.value)


def test_factory_uses_a_secure_default_backend(
    memory: MemoryKeyring, context: PluginContext, default_keyring: None
) -> None:
    keyring.set_keyring(memory)
    storage = token_storage_from_config(KeychainConfig(), context)
    assert isinstance(storage, KeychainStorage)
    assert storage.description == f"keychain ({__name__}.MemoryKeyring, service 'mcp-acp')"
    storage.save(_token())
    assert memory.items


def test_factory_refuses_plaintext_without_fallback(
    context: PluginContext, default_keyring: None
) -> None:
    keyring.set_keyring(PlaintextKeyring())
    with pytest.raises(PluginError, match=r"refusing keyring backend keyrings\.alt\.file"):
        token_storage_from_config(KeychainConfig(), context)


def test_factory_falls_back_explicitly_and_says_so(
    context: PluginContext, default_keyring: None
) -> None:
    keyring.set_keyring(fail.Keyring())
    storage = token_storage_from_config(KeychainConfig(fallback="encrypted-file"), context)
    assert isinstance(storage, EncryptedFileStorage)
    assert storage.description.startswith("encrypted-file (")
    assert "fallback: keyring backend keyring.backends.fail.Keyring refused" in (
        storage.description
    )
    storage.save(_token())
    assert storage.load(ISSUER) == _token()
    assert storage.path_for(ISSUER).parent == context.config_dir / "tokens"


def test_fail_backend_from_the_environment_takes_the_fallback(tmp_path: Path) -> None:
    """TS-1: PYTHON_KEYRING_BACKEND=...fail.Keyring → the encrypted file, and it is said."""
    script = (
        "from pathlib import Path;"
        "from mcp_acp.registry import PluginContext;"
        "from mcp_acp_keychain import KeychainConfig;"
        "from mcp_acp_keychain.storage import token_storage_from_config as f;"
        f"c = PluginContext(config_path=Path({str(tmp_path)!r}) / 'config.json',"
        " log_dir=Path('.'));"
        "print(f(KeychainConfig(fallback='encrypted-file'), c).description)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DBUS"))}
    env.update(HOME=str(tmp_path), PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert "fallback: keyring backend keyring.backends.fail.Keyring refused" in result.stdout
    assert "using encrypted-file" in result.stderr  # the warning, logged


def test_registered_through_the_plugin_hook(tmp_path: Path) -> None:
    plugins = load_plugins(allow=["keychain"])
    registration = plugins.registry.get(Kind.TOKEN_STORAGE, "keychain")
    assert registration is not None
    assert registration.plugin == "keychain"
    assert registration.config_model is KeychainConfig
    with pytest.raises(ValueError, match="fallback"):
        KeychainConfig.model_validate({"fallback": "plaintext"})
