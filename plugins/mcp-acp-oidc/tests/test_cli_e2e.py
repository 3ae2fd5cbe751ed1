"""The installed ``mcp-acp`` executable, as a user runs it: ``auth login`` (device flow
approved headlessly), ``auth status`` and ``auth logout`` with the built-in
``encrypted-file`` token storage and the real oidc-provider on 127.0.0.1; ``auth logout``
of a token file the storage refuses; the browser ``auth login`` opens, which does not
inherit the token-storage passphrase; and the process, which dumps no core.

Takes about 5 s: the provider names no poll interval, so the client waits the RFC's
default once before its first poll.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mcp_acp.models import StoredToken
from mcp_acp.tokens.encrypted_file import EncryptedFileStorage


@pytest.fixture
def cli_env(tmp_path: Path, oidc_provider: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    config_dir = tmp_path / "config"
    config_dir.mkdir(mode=0o700)
    config = config_dir / "config.json"
    config.write_text(
        json.dumps(
            {
                "version": 1,
                "backend": {"command": sys.executable, "args": ["-c", "pass"]},
                "plugins": {"allow": ["oidc"]},
                "identity": {
                    "use": "oidc",
                    "config": {
                        "issuer": oidc_provider,
                        "client_id": "mcp-acp-cli",
                        "audience": "urn:mcp-acp:proxy",
                        "scope": "openid offline_access mcp:tools",
                        "token_type": "at+jwt",
                    },
                },
                "token_storage": {"use": "encrypted-file"},
                "audit": {"log_dir": str(tmp_path / "logs")},
            }
        )
    )
    config.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env.update(HOME=str(home), MCP_ACP_CONFIG=str(config))
    return env


def _mcp_acp() -> str:
    found = shutil.which("mcp-acp", path=str(Path(sys.executable).parent))
    assert found is not None
    return found


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_mcp_acp(), "auth", *args], capture_output=True, text=True, env=env, timeout=60
    )


def _login(env: dict[str, str], approve: Any) -> tuple[int, str, str]:
    login = subprocess.Popen(
        [_mcp_acp(), "auth", "login", "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert login.stdout is not None
        lines = [login.stdout.readline() for _ in range(3)]
        complete = re.search(r"\(or open (\S+)\)", lines[2])
        assert complete is not None, lines
        approve(types.SimpleNamespace(verification_uri_complete=complete.group(1)))
        out, err = login.communicate(timeout=60)
    finally:
        if login.poll() is None:
            login.kill()
    return login.returncode, out, err


def test_login_status_logout_with_encrypted_file(
    cli_env: dict[str, str], approve: Any, tmp_path: Path
) -> None:
    assert _run(cli_env, "status").returncode == 1

    code, out, err = _login(cli_env, approve)
    assert code == 0, err
    assert "Logged in as alice" in out

    status = _run(cli_env, "status")
    assert status.returncode == 0, status.stderr
    assert "subject: alice" in status.stdout
    assert "storage: encrypted-file" in status.stdout

    token_files = [p for p in (tmp_path / "config" / "tokens").iterdir() if p.is_file()]
    assert token_files
    for path in token_files:
        assert b"eyJ" not in path.read_bytes()  # no JWT in clear on disk
    assert "eyJ" not in status.stdout + status.stderr

    logout = _run(cli_env, "logout")
    assert logout.returncode == 0, logout.stderr
    assert "Logged out." in logout.stdout
    assert _run(cli_env, "status").returncode == 1


def test_login_with_the_default_scope_which_grants_the_api_none(
    cli_env: dict[str, str], approve: Any
) -> None:
    """The docs' config asks for the default scope, ``openid offline_access``: none of the
    API's own scopes (``mcp:tools``), so oidc-provider answers ``"scope": ""`` for the
    access token. That is a grant of no API scope, not a malformed answer: the login used
    to fail after the user had approved it (``bad_response: scope is not a non-empty
    string``)."""
    config = Path(cli_env["MCP_ACP_CONFIG"])
    document = json.loads(config.read_text())
    del document["identity"]["config"]["scope"]  # the default
    config.write_text(json.dumps(document))

    code, out, err = _login(cli_env, approve)
    assert code == 0, err
    assert "Logged in as alice" in out
    status = _run(cli_env, "status", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["subject"] == "alice"
    assert shown["valid"] is True
    assert shown["scope"] == ""


@pytest.mark.parametrize(
    ("damage", "why"),
    [("mode", "it is open to group or others (mode 0644)"), ("garbage", "it is damaged")],
)
def test_logout_deletes_a_token_file_the_storage_refuses(
    cli_env: dict[str, str], oidc_provider: str, tmp_path: Path, damage: str, why: str
) -> None:
    """A token file left 0644, or overwritten: ``auth logout`` cannot revoke, says so in
    one line on stderr, deletes the file and exits 0."""
    config_dir = tmp_path / "config"
    storage = EncryptedFileStorage(config_dir / "tokens", key_file=config_dir / "token-storage.key")
    storage.save(
        StoredToken(
            issuer=oidc_provider,
            access_token="at",  # noqa: S106 - a fake
            refresh_token="rt",  # noqa: S106 - a fake
            expires_at=datetime.now(UTC),
        )
    )
    path = storage.path_for(oidc_provider)
    if damage == "mode":
        path.chmod(0o644)
    else:
        path.write_bytes(b"garbage")
    assert _run(cli_env, "status").returncode == 14  # refused, as promised

    logout = _run(cli_env, "logout")
    assert logout.returncode == 0, logout.stderr
    assert logout.stdout == "Logged out.\n"
    (line,) = logout.stderr.splitlines()
    assert line.startswith(
        "warning: cannot revoke the refresh token: the stored token could not be read ("
    )
    assert why in line
    assert line.endswith("; the tokens were deleted")
    assert not path.exists()
    assert _run(cli_env, "status").returncode == 1  # not logged in


#: The browser ``webbrowser`` runs through $BROWSER: it writes the page it was handed and
#: its environment to ``seen`` (renamed into place: the test never reads half of it).
BROWSER = """#!{python}
import json, os, sys
with open({seen!r} + ".tmp", "w") as out:
    json.dump({{"page": sys.argv[1], "env": dict(os.environ)}}, out)
os.rename({seen!r} + ".tmp", {seen!r})
"""


def test_the_browser_starts_without_the_token_storage_passphrase(
    cli_env: dict[str, str], approve: Any, tmp_path: Path
) -> None:
    """``auth login`` opens the sign-in page in a browser: the browser starts without the
    variable ``passphrase_env`` names (nor gets its value under another name), with the
    rest of the environment; the login itself still uses the passphrase to store."""
    config = Path(cli_env["MCP_ACP_CONFIG"])
    document = json.loads(config.read_text())
    document["token_storage"] = {
        "use": "encrypted-file",
        "config": {"passphrase_env": "MCP_ACP_TEST_PASSPHRASE"},
    }
    config.write_text(json.dumps(document))
    seen = tmp_path / "browser-saw.json"
    browser = tmp_path / "browser"
    browser.write_text(BROWSER.format(python=sys.executable, seen=str(seen)))
    browser.chmod(0o755)
    passphrase = "correct horse battery staple"  # noqa: S105 - a test passphrase
    env = {
        **cli_env,
        "MCP_ACP_TEST_PASSPHRASE": passphrase,
        "ACP_TEST_ORDINARY": "passed on",
        "BROWSER": str(browser),
    }
    env.pop("DISPLAY", None)

    login = subprocess.Popen(
        [_mcp_acp(), "auth", "login"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while not seen.exists() and login.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen.exists(), "no browser was opened"
        opened = json.loads(seen.read_text())
        approve(types.SimpleNamespace(verification_uri_complete=opened["page"]))
        out, err = login.communicate(timeout=60)
    finally:
        if login.poll() is None:
            login.kill()
            login.communicate()
    assert login.returncode == 0, err
    assert "Logged in as alice" in out

    assert opened["env"]["ACP_TEST_ORDINARY"] == "passed on"
    assert opened["env"]["BROWSER"] == str(browser)
    assert "MCP_ACP_TEST_PASSPHRASE" not in opened["env"]
    assert passphrase not in json.dumps(opened["env"])
    # stored with the passphrase: the status reads it back with the variable set only
    assert "subject: alice" in _run(env, "status").stdout
    without = {k: v for k, v in env.items() if k != "MCP_ACP_TEST_PASSPHRASE"}
    assert _run(without, "status").returncode == 14


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_auth_login_dumps_no_core(cli_env: dict[str, str]) -> None:
    """The ``auth`` commands hold tokens (and a token-storage passphrase) in memory, and
    protect the process as ``mcp-acp run`` does (``mcp_acp.hardening``): seen from outside
    while ``auth login`` waits for approval."""
    login = subprocess.Popen(
        [_mcp_acp(), "auth", "login", "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
    )
    try:
        assert login.stdout is not None
        lines = [login.stdout.readline() for _ in range(4)]
        assert lines[3] == "Waiting for approval…\n", lines
        limits = Path(f"/proc/{login.pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        assert core.split()[4:6] == ["0", "0"]
        if os.getuid() != 0:
            # not dumpable: the kernel gives /proc/<pid> to root (proc(5)). Running as root,
            # every process of ours is root's there, so only the core limit tells.
            assert Path(f"/proc/{login.pid}").stat().st_uid == 0
    finally:
        login.kill()
        _, err = login.communicate()
    assert "warning" not in err
