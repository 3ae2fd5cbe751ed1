"""The built-in ``encrypted-file`` token storage, on real files."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mcp_acp.errors import AuthenticationError
from mcp_acp.models import StoredToken
from mcp_acp.plugins import load_plugins
from mcp_acp.registry import Kind, PluginContext
from mcp_acp.tokens import (
    EncryptedFileConfig,
    EncryptedFileStorage,
    TokenRecordError,
    dump_token,
    parse_token,
)
from mcp_acp.tokens.encrypted_file import MIN_ITERATIONS

ISSUER = "https://idp.example.test/realms/acp"
CANARY = "canary-access-4d1c7e"


def _token(issuer: str = ISSUER, access: str = CANARY) -> StoredToken:
    return StoredToken(
        issuer=issuer,
        access_token=access,
        refresh_token="canary-refresh-99ab",
        id_token="canary-id-77",
        expires_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        scope="openid offline_access",
    )


@pytest.fixture
def store(tmp_path: Path) -> EncryptedFileStorage:
    return EncryptedFileStorage(tmp_path / "tokens", key_file=tmp_path / "token-storage.key")


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_round_trip_and_delete(store: EncryptedFileStorage) -> None:
    assert store.load(ISSUER) is None
    store.save(_token())
    assert store.load(ISSUER) == _token()
    store.save(_token(access="second"))
    assert store.load(ISSUER) == _token(access="second")
    store.delete(ISSUER)
    assert store.load(ISSUER) is None
    store.delete(ISSUER)  # no error when there is none


_CRASH_IN_SAVE = """
import os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from mcp_acp.models import StoredToken
from mcp_acp.tokens import EncryptedFileStorage

directory, key_file, issuer = sys.argv[1:4]
store = EncryptedFileStorage(Path(directory), key_file=Path(key_file))
# the process dies where a crash or a kill -9 would hurt most: the new file is written
# and synced, not yet renamed into place
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
store.save(StoredToken(issuer=issuer, access_token="canary-crashed-access",
                       refresh_token="canary-crashed-refresh",
                       expires_at=datetime(2030, 1, 1, tzinfo=UTC)))
"""


def test_delete_removes_what_a_save_killed_before_its_rename_left(tmp_path: Path) -> None:
    """A login killed between writing the new token file and renaming it into place
    leaves that file (hidden, ``.<name>.*.tmp``): a whole token set, encrypted with the
    key file beside it. Logging out removes it too, not only the token file."""
    directory, key_file = tmp_path / "tokens", tmp_path / "token-storage.key"
    store = EncryptedFileStorage(directory, key_file=key_file)
    store.save(_token())
    child = subprocess.run(
        [sys.executable, "-c", _CRASH_IN_SAVE, str(directory), str(key_file), ISSUER],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    left = [p for p in directory.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1  # the crashed save's file, holding the new tokens
    (tmp_path / "check").mkdir(mode=0o700)  # it decrypts with the key file beside it
    leftover = EncryptedFileStorage(tmp_path / "check", key_file=key_file)
    shutil.copy(left[0], leftover.path_for(ISSUER))
    crashed = leftover.load(ISSUER)
    assert crashed is not None
    assert crashed.refresh_token == "canary-crashed-refresh"

    store.delete(ISSUER)
    assert [p.name for p in directory.iterdir() if not p.name.endswith(".lock")] == []
    store.delete(ISSUER)  # nothing left: no error


def test_a_new_instance_reads_what_another_wrote(tmp_path: Path) -> None:
    first = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k")
    first.save(_token())
    second = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k")
    assert second.load(ISSUER) == _token()


def test_a_long_running_instance_follows_a_key_file_replaced_by_a_login(
    tmp_path: Path,
) -> None:
    # the proxy's instance saved before; the key file is removed (as a refusal's fix says)
    # and a login in another process writes tokens with a new key file
    proxy = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k")
    proxy.save(_token(access="first"))
    (tmp_path / "k").unlink()
    login = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k")
    login.save(_token(access="after-login"))
    assert proxy.load(ISSUER) == _token(access="after-login")
    proxy.save(_token(access="refreshed"))  # with the key file as it is now
    fresh = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k")
    assert fresh.load(ISSUER) == _token(access="refreshed")


def test_issuers_are_kept_apart(store: EncryptedFileStorage) -> None:
    other = "https://other.example.test"
    store.save(_token())
    store.save(_token(issuer=other, access="other-token"))
    assert store.load(ISSUER) == _token()
    assert store.load(other) == _token(issuer=other, access="other-token")
    store.delete(other)
    assert store.load(ISSUER) == _token()


def test_file_holds_no_plaintext_and_a_readable_kdf_header(store: EncryptedFileStorage) -> None:
    store.save(_token())
    raw = store.path_for(ISSUER).read_bytes()
    assert b"canary" not in raw
    assert ISSUER.encode() not in raw
    header = json.loads(raw)
    assert header["format"] == "mcp-acp-encrypted-token/1"
    assert header["kdf"] == "pbkdf2-hmac-sha256"
    assert header["iterations"] >= 600_000
    assert len(base64.urlsafe_b64decode(header["salt"])) >= 16


def test_files_are_private_even_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    store = EncryptedFileStorage(tmp_path / "a" / "tokens", key_file=tmp_path / "b" / "key")
    store.save(_token())
    assert _mode(store.path_for(ISSUER)) == 0o600
    assert _mode(tmp_path / "b" / "key") == 0o600
    assert _mode(tmp_path / "a" / "tokens") == 0o700
    assert _mode(tmp_path / "b") == 0o700
    assert store.path_for(ISSUER).stat().st_uid == os.geteuid()
    assert [p.name for p in (tmp_path / "a" / "tokens").iterdir()] == [
        store.path_for(ISSUER).name
    ]  # no temporary file left behind


def _refused(store: EncryptedFileStorage, *words: str) -> str:
    with pytest.raises(AuthenticationError) as info:
        store.load(ISSUER)
    line = info.value.user_line()
    assert "\n" not in line
    assert "log in again" in line
    assert "canary" not in line
    for word in words:
        assert word in line
    return line


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_group_or_world_access_is_refused(store: EncryptedFileStorage, mode: int) -> None:
    store.save(_token())
    store.path_for(ISSUER).chmod(mode)
    _refused(store, "open to group or others", f"{mode:04o}")


def test_symlinked_token_file_is_refused(store: EncryptedFileStorage, tmp_path: Path) -> None:
    store.save(_token())
    real = tmp_path / "elsewhere.token"
    store.path_for(ISSUER).rename(real)
    store.path_for(ISSUER).symlink_to(real)
    _refused(store, "symlink")


def test_symlink_to_etc_passwd_is_refused(store: EncryptedFileStorage) -> None:
    store.directory.mkdir(mode=0o700)
    store.path_for(ISSUER).symlink_to("/etc/passwd")
    _refused(store, "symlink")


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    store = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k")
    store.save(_token())
    (tmp_path / "k").rename(tmp_path / "k2")
    (tmp_path / "k").symlink_to(tmp_path / "k2")
    fresh = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k")
    _refused(fresh, "key file", "symlink")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_foreign_owned_token_file_is_refused(store: EncryptedFileStorage) -> None:
    store.save(_token())
    os.chown(store.path_for(ISSUER), 4242, 4242)
    _refused(store, "owned by uid 4242")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_foreign_owned_key_file_is_refused(tmp_path: Path) -> None:
    EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k").save(_token())
    os.chown(tmp_path / "k", 4242, 4242)
    _refused(EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k"), "owned by uid 4242")


def test_open_token_directory_is_refused(store: EncryptedFileStorage) -> None:
    store.save(_token())
    store.directory.chmod(0o755)
    _refused(store, "open to group or others")


def test_flipped_byte_is_refused(store: EncryptedFileStorage) -> None:
    store.save(_token())
    path = store.path_for(ISSUER)
    header = json.loads(path.read_text())
    ciphertext = bytearray(header["ciphertext"].encode())
    ciphertext[60] = ord("A") if ciphertext[60] != ord("A") else ord("B")
    header["ciphertext"] = ciphertext.decode()
    path.write_text(json.dumps(header))
    _refused(store, "cannot be decrypted")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"{",
        b'{"format": "mcp-acp-encrypted-token/1"}',
        b"[" * 100_000,
        b"\xff\xfe",
    ],
    ids=["empty", "garbage", "open-brace", "no-fields", "deep", "not-utf8"],
)
def test_damaged_file_is_refused(store: EncryptedFileStorage, content: bytes) -> None:
    store.save(_token())
    store.path_for(ISSUER).write_bytes(content)
    _refused(store, "damaged")


def test_truncated_file_is_refused(store: EncryptedFileStorage) -> None:
    store.save(_token())
    path = store.path_for(ISSUER)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        _refused(store)


def test_wrong_key_is_refused(tmp_path: Path) -> None:
    EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k1").save(_token())
    other = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k2")
    other.save(_token(issuer="https://x.test"))  # creates k2
    _refused(other, "cannot be decrypted")


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k").save(_token())
    (tmp_path / "k").unlink()
    _refused(EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k"), "key file", "missing")


def test_too_few_iterations_are_refused(store: EncryptedFileStorage) -> None:
    store.save(_token())
    path = store.path_for(ISSUER)
    header = json.loads(path.read_text())
    header["iterations"] = 1000
    path.write_text(json.dumps(header))
    _refused(store, "1000", "fewer than 600000")


def test_lowered_iterations_cannot_be_forged(store: EncryptedFileStorage) -> None:
    """The count is part of the key derivation: editing it breaks decryption."""
    store.save(_token())
    path = store.path_for(ISSUER)
    header = json.loads(path.read_text())
    header["iterations"] = MIN_ITERATIONS + 1
    path.write_text(json.dumps(header))
    _refused(store, "cannot be decrypted")


def test_a_record_for_another_issuer_is_refused(store: EncryptedFileStorage) -> None:
    """Swapping two issuers' files must not hand one server's token to the other."""
    other = "https://other.example.test"
    store.save(_token())
    store.save(_token(issuer=other))
    store.path_for(other).replace(store.path_for(ISSUER))
    _refused(store, "another issuer")


def test_login_again_replaces_a_refused_file(store: EncryptedFileStorage) -> None:
    store.save(_token())
    store.path_for(ISSUER).write_bytes(b"garbage")
    _refused(store)
    store.save(_token(access="fresh"))
    assert store.load(ISSUER) == _token(access="fresh")


def test_passphrase_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACP_TEST_PASS", "correct horse battery staple")
    store = EncryptedFileStorage(tmp_path / "t", passphrase_env="ACP_TEST_PASS")
    store.save(_token())
    assert not any(p.name.endswith(".key") for p in tmp_path.rglob("*"))
    assert EncryptedFileStorage(tmp_path / "t", passphrase_env="ACP_TEST_PASS").load(ISSUER)
    monkeypatch.setenv("ACP_TEST_PASS", "wrong")
    _refused(EncryptedFileStorage(tmp_path / "t", passphrase_env="ACP_TEST_PASS"), "decrypted")
    monkeypatch.delenv("ACP_TEST_PASS")
    with pytest.raises(AuthenticationError, match="ACP_TEST_PASS is not set"):
        EncryptedFileStorage(tmp_path / "t", passphrase_env="ACP_TEST_PASS").load(ISSUER)


def test_a_passphrase_that_is_not_utf8_is_used_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An environment holds bytes: a passphrase typed in a Latin-1 terminal ("caf\\xe9")
    is a key like any other, not a UnicodeEncodeError after the login (naming the
    passphrase's byte and its position); another byte there is another key."""
    monkeypatch.setenv("ACP_TEST_PASS", os.fsdecode(b"caf\xe9 horse battery"))
    store = EncryptedFileStorage(tmp_path / "t", passphrase_env="ACP_TEST_PASS")
    store.save(_token())
    assert EncryptedFileStorage(tmp_path / "t", passphrase_env="ACP_TEST_PASS").load(ISSUER)
    monkeypatch.setenv("ACP_TEST_PASS", os.fsdecode(b"caf\xe8 horse battery"))
    _refused(EncryptedFileStorage(tmp_path / "t", passphrase_env="ACP_TEST_PASS"), "decrypted")


PASSPHRASE_USE = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from mcp_acp.models import StoredToken
from mcp_acp.tokens import EncryptedFileStorage
store = EncryptedFileStorage(Path(sys.argv[1]), passphrase_env="ACP_TEST_PASS")
if sys.argv[2] == "save":
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    store.save(StoredToken(issuer="https://idp.test", access_token="a", expires_at=expires))
else:
    print("loaded" if store.load("https://idp.test") is not None else "none")
"""


def test_a_passphrase_is_its_bytes_whatever_the_locale(tmp_path: Path) -> None:
    """A login from a Latin-1 terminal and ``mcp-acp run`` started by an MCP client under a
    UTF-8 locale, with the same passphrase bytes (``caf\\xe9``): the first read the
    variable through its locale's codec and encoded it in UTF-8 (``c3 a9``), the second
    got the raw byte (``e9``) — two keys, and the tokens saved could not be read. Both are
    the variable's bytes now. Real processes, a real Latin-1 locale made with localedef."""
    localedef = shutil.which("localedef")
    if localedef is None:
        pytest.skip("localedef(1) is needed to make a Latin-1 locale")
    locales = tmp_path / "locales"
    locales.mkdir()
    subprocess.run(
        [localedef, "-i", "en_US", "-f", "ISO-8859-1", str(locales / "en_US.ISO-8859-1")],
        check=True,
        capture_output=True,
    )
    latin1 = {b"LOCPATH": os.fsencode(locales), b"LC_ALL": b"en_US.ISO-8859-1"}
    utf8 = {b"LC_ALL": b"C.UTF-8"}
    for number, passphrase in enumerate([b"caf\xe9 horse battery", b"caf\xc3\xa9 horse"]):
        tokens = tmp_path / f"tokens-{number}"
        for locale, action in ((latin1, "save"), (utf8, "load")):
            env = {**os.environb, **locale, b"ACP_TEST_PASS": passphrase}
            env.pop(b"LANG", None)
            done = subprocess.run(
                [sys.executable, "-c", PASSPHRASE_USE, str(tokens), action],
                env=env,
                capture_output=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert done.stdout.strip() == b"loaded"


def test_key_cannot_be_derived_from_world_readable_facts(tmp_path: Path) -> None:
    """TS-3: the key is random, not machine-id/user/host: two stores never share it."""
    a = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k-a")
    a.save(_token())
    b = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k-b")
    _refused(b, "key file", "missing")
    b.save(_token(issuer="https://b.test"))
    assert (tmp_path / "k-a").read_bytes() != (tmp_path / "k-b").read_bytes()
    _refused(b, "cannot be decrypted")


def test_repr_and_errors_never_show_tokens(store: EncryptedFileStorage) -> None:
    token = _token()
    assert "canary" not in repr(token)
    assert "canary" not in store.description
    with pytest.raises(TokenRecordError) as info:
        parse_token(dump_token(token).replace('"format"', '"formt"'), issuer=ISSUER)
    assert "canary" not in str(info.value)


def test_registered_as_a_built_in(tmp_path: Path) -> None:
    plugins = load_plugins(allow=())
    registration = plugins.registry.get(Kind.TOKEN_STORAGE, "encrypted-file")
    assert registration is not None
    assert registration.plugin == "encrypted-file-tokens"
    context = PluginContext(config_path=tmp_path / "cfg" / "config.json", log_dir=tmp_path)
    storage = registration.factory(EncryptedFileConfig(), context)
    assert isinstance(storage, EncryptedFileStorage)
    assert storage.directory == tmp_path / "cfg" / "tokens"
    assert storage.key_file == tmp_path / "cfg" / "token-storage.key"
    assert storage.description.startswith("encrypted-file (")
    storage.save(_token())
    assert storage.load(ISSUER) == _token()


def test_config_refuses_fewer_iterations() -> None:
    with pytest.raises(ValueError, match="600000"):
        EncryptedFileConfig(iterations=100_000)
    assert EncryptedFileConfig(iterations=700_000).iterations == 700_000


def test_expiry_keeps_its_timezone(store: EncryptedFileStorage) -> None:
    token = _token()
    store.save(token)
    loaded = store.load(ISSUER)
    assert loaded is not None
    assert loaded.expires_at - token.expires_at == timedelta(0)
    assert loaded.expires_at.utcoffset() == timedelta(0)


def test_concurrent_first_saves_agree_on_one_key_file(tmp_path: Path) -> None:
    """Savers racing to create the key file: one wins, every token stays readable."""
    stores = [EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k") for _ in range(4)]
    issuers = [f"https://idp{i}.test" for i in range(4)]
    barrier = threading.Barrier(4)

    def save(i: int) -> None:
        barrier.wait()
        stores[i].save(_token(issuer=issuers[i], access=f"a{i}"))

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = EncryptedFileStorage(tmp_path / "t", key_file=tmp_path / "k")
    for i, issuer in enumerate(issuers):
        assert reader.load(issuer) == _token(issuer=issuer, access=f"a{i}")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".k")] == []
