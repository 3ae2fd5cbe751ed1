"""``mcp-acp run`` with the ``oidc`` identity, end to end, against the real oidc-provider on
127.0.0.1 and the bundled notes MCP server: a device login (approved headlessly through
the provider's own pages) → ``auth status`` → ``mcp-acp run`` serving an allowed and a
denied call with the real subject in the decision records → a refresh at start-up (the
rotated token stored, ``token_refreshed`` recorded) → logout → ``run`` refuses to start
(exit 14, ``startup_refused`` and ``token_invalid`` recorded, a desktop notification).

Also: two processes that find the same token due refresh it once between them (TS-8).
With refresh-token rotation the provider treats a second use of a spent refresh token as
theft and revokes the whole grant, so a double spend is visible: the grant stops working.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
from mcp_acp_oidc.device import DeviceAuthorization
from mcp_acp_oidc.provider import OIDCConfig, OIDCIdentityProvider, refresh_lock_path
from proxy_helpers import HttpServer, recording_notifier, wait_for_text

from mcp_acp.errors import AuthenticationError
from mcp_acp.tokens.encrypted_file import EncryptedFileStorage

AUDIENCE = "urn:mcp-acp:proxy"

POLICY = {
    "version": "1",
    "default_action": "deny",
    "rules": [
        {
            "id": "alice-reads",
            "effect": "allow",
            "conditions": {
                "subject_id": "alice",
                "operations": ["read"],
                "min_provenance": {"subject": "token"},
            },
        }
    ],
}


class Site:
    """A user's machine: config, token store, notes directory, logs, a notifier."""

    def __init__(self, root: Path, issuer: str) -> None:
        self.root = root
        self.issuer = issuer
        self.config_dir = root / "config"
        self.config_dir.mkdir(mode=0o700)
        self.notes = root / "notes"
        self.notes.mkdir()
        (self.notes / "welcome.md").write_text("hello from the notes server\n")
        self.logs = root / "logs"
        self.bin, self.notified = recording_notifier(root)  # no desktop session here
        self.backend: dict[str, Any] = {
            "command": sys.executable,
            "args": ["-m", "mcp_acp.demo.backend", str(self.notes)],
        }
        self.options: dict[str, Any] = {
            "issuer": issuer,
            "client_id": "mcp-acp-cli",
            "audience": AUDIENCE,
            "scope": "openid offline_access mcp:tools",
            "token_type": "at+jwt",
        }
        self.write_config()
        (self.config_dir / "policy.json").write_text(json.dumps(POLICY))

    @property
    def config(self) -> Path:
        return self.config_dir / "config.json"

    def write_config(self, **identity: Any) -> None:
        self.config.write_text(
            json.dumps(
                {
                    "version": 1,
                    "backend": self.backend,
                    "plugins": {"allow": ["oidc"]},
                    "identity": {"use": "oidc", "config": {**self.options, **identity}},
                    "token_storage": {"use": "encrypted-file"},
                    "proxy": {"socket_dir": str(self.root / "run")},
                    "audit": {
                        "log_dir": str(self.logs),
                        "fallback_path": str(self.root / "fallback.jsonl"),
                    },
                }
            )
        )
        self.config.chmod(0o600)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
        home = self.root / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        env.update(
            HOME=str(home),
            MCP_ACP_CONFIG=str(self.config),
            PATH=f"{self.bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
            + env.get("PATH", ""),
        )
        return env

    def storage(self) -> EncryptedFileStorage:
        return EncryptedFileStorage(
            self.config_dir / "tokens", key_file=self.config_dir / "token-storage.key"
        )

    def provider(self, **options: Any) -> OIDCIdentityProvider:
        storage = self.storage()
        return OIDCIdentityProvider(
            OIDCConfig(**{**self.options, **options}),
            storage,
            lock_path=refresh_lock_path(storage, self.issuer),
            sleep=_fast_sleep,
        )

    def records(self, stream: str) -> list[dict[str, Any]]:
        path = self.logs / f"{stream}.jsonl"
        if not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [r for r in records if r["event"] != "stream_opened"]  # the write test


async def _fast_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds / 50)  # the provider's 5 s poll interval becomes 0.1 s


def _mcp_acp() -> str:
    found = shutil.which("mcp-acp", path=str(Path(sys.executable).parent))
    assert found is not None
    return found


async def _login(site: Site, approve: Any) -> None:
    approving: list[asyncio.Task[None]] = []

    def show(authorization: DeviceAuthorization) -> None:
        approving.append(asyncio.create_task(asyncio.to_thread(approve, authorization)))

    subject = await site.provider().login(show)
    await approving[0]
    assert subject.subject_id == "alice"


def _session(site: Site, calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], str, int]:
    """One client session through ``mcp-acp run``: initialize, then ``calls`` in order;
    return the answers, the proxy's stderr and its exit code."""
    lines = [
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "e2e", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    for number, (tool, arguments) in enumerate(calls, start=1):
        lines.append(
            {
                "jsonrpc": "2.0",
                "id": number,
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments},
            }
        )
    proxy = subprocess.Popen(
        [_mcp_acp(), "run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=site.env(),
    )
    assert proxy.stdin is not None
    assert proxy.stdout is not None
    answers: dict[int, Any] = {}
    try:
        for message in lines:
            proxy.stdin.write(json.dumps(message).encode() + b"\n")
            proxy.stdin.flush()
            if "id" not in message:
                continue
            while True:
                raw = proxy.stdout.readline()
                if not raw:
                    break  # the proxy ended: its stderr says why
                answer = json.loads(raw)
                if answer.get("id") == message["id"]:
                    answers[message["id"]] = answer
                    break
            if not raw:
                break
        proxy.stdin.close()
        code = proxy.wait(30)
    finally:
        if proxy.poll() is None:
            proxy.kill()
    assert proxy.stderr is not None
    err = proxy.stderr.read().decode()
    return [answers.get(i) for i in range(len(lines) - 1)], err, code


def test_login_run_refresh_logout(oidc_provider: str, approve: Any, tmp_path: Path) -> None:
    site = Site(tmp_path, oidc_provider)
    asyncio.run(_login(site, approve))

    status = subprocess.run(
        [_mcp_acp(), "auth", "status", "--json"],
        capture_output=True,
        text=True,
        env=site.env(),
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["subject"] == "alice"

    # -- run: an allowed and a denied call, decided for the token's subject ---------
    welcome = str(site.notes / "welcome.md")
    todo = site.notes / "todo.md"
    answers, err, code = _session(
        site,
        [
            ("read_note", {"path": welcome}),
            ("write_note", {"path": str(todo), "text": "must not be written"}),
        ],
    )
    assert code == 0, err
    init, allowed, denied = answers
    assert init is not None
    assert "result" in init
    assert allowed is not None
    assert "hello from the notes server" in json.dumps(allowed["result"])
    assert denied is not None
    assert "error" in denied, denied
    assert not todo.exists()  # the denied call never reached the server

    calls = [r for r in site.records("decisions") if r.get("mcp_method") == "tools/call"]
    assert [(r["tool_name"], r["effect"], r["subject_id"]) for r in calls] == [
        ("read_note", "allow", "alice"),
        ("write_note", "deny", "alice"),
    ]
    assert {r["subject_provenance"] for r in calls} == {"token"}
    auth = site.records("auth")
    events = [r["event"] for r in auth]
    assert events[:2] == ["token_validated", "session_started"], events
    assert events[-1] == "session_ended"
    assert auth[0]["subject_id"] == "alice"
    assert auth[0]["detail"]["storage"].startswith("encrypted-file (")  # which store, audited
    assert auth[0]["issuer"] == oidc_provider
    # the session's start and end both name the issuer that vouched for its subject
    assert (auth[1]["issuer"], auth[-1]["issuer"]) == (oidc_provider, oidc_provider)

    # -- refresh at start-up: a margin longer than the token's life makes it due -----
    before = site.storage().load(oidc_provider)
    assert before is not None
    site.write_config(refresh_margin_seconds=3600)
    answers, err, code = _session(site, [("read_note", {"path": welcome})])
    assert code == 0, err
    assert answers[1] is not None
    assert "result" in answers[1]
    after = site.storage().load(oidc_provider)
    assert after is not None
    assert after.access_token != before.access_token
    assert after.refresh_token != before.refresh_token  # rotated, and stored
    refreshed = [r for r in site.records("auth") if r["event"] == "token_refreshed"]
    assert len(refreshed) == 1
    assert refreshed[0]["reason"] == "rotated"
    site.write_config()

    # -- logout: the proxy refuses to start, says why, records it, tells the desktop ---
    logout = subprocess.run(
        [_mcp_acp(), "auth", "logout"], capture_output=True, text=True, env=site.env(), timeout=60
    )
    assert logout.returncode == 0, logout.stderr
    answers, err, code = _session(site, [("read_note", {"path": welcome})])
    assert code == 14, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("authentication error: not logged in to ")
    assert "mcp-acp auth login" in lines[-1]
    refused = [r for r in site.records("system") if r["event"] == "startup_refused"]
    assert refused[-1]["detail"]["failure_class"] == "authentication"
    assert refused[-1]["detail"]["exit_code"] == 14
    invalid = [r for r in site.records("auth") if r["event"] == "token_invalid"]
    assert invalid[-1]["reason"] == "not_logged_in"
    notified = wait_for_text(site.notified)
    assert "mcp-acp did not start" in notified
    assert "not logged in" in notified

    # no token value reached any file written in the site (logs, fallback, notifications,
    # the token store, which holds them encrypted) or the proxy's stderr: neither a JWT's
    # shape nor any of the four tokens, access and (opaque) refresh, before and after
    tokens = [before.access_token, before.refresh_token, after.access_token, after.refresh_token]
    secrets = [token.encode() for token in tokens if token]
    assert len(secrets) == 4
    written = [path for path in site.root.rglob("*") if path.is_file()]
    assert site.notified in written
    assert any(path.parent == site.logs for path in written)
    for path in written:
        data = path.read_bytes()
        assert b"eyJ" not in data, path
        assert not [secret for secret in secrets if secret in data], path
    for secret in secrets:
        assert secret.decode() not in err


def test_never_logged_in_is_told_so_while_the_provider_is_unreachable(tmp_path: Path) -> None:
    """No token stored and the provider down (first set-up, offline): the proxy says what
    docs/authentication.md says it says, "not logged in" and to run 'mcp-acp auth login'
    — not that the issuer cannot be reached, which it did, sending the user to check an
    issuer URL that was right."""
    site = Site(tmp_path, "http://127.0.0.1:9")  # the discard port: nothing answers
    _answers, err, code = _session(site, [])
    assert code == 14, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("authentication error: not logged in to http://127.0.0.1:9"), last
    assert "mcp-acp auth login" in last
    invalid = [r for r in site.records("auth") if r["event"] == "token_invalid"]
    assert [r["reason"] for r in invalid] == ["not_logged_in"]


def test_the_users_tokens_never_reach_an_http_backend(
    oidc_provider: str, approve: Any, tmp_path: Path
) -> None:
    """MCP-3, no token passthrough: with the oidc identity in front of an HTTP backend, the
    backend gets the headers the config names and nothing of the user's — neither the
    access token nor the refresh token, in any header or body of any request."""
    site = Site(tmp_path, oidc_provider)
    asyncio.run(_login(site, approve))
    stored = site.storage().load(oidc_provider)
    assert stored is not None
    assert stored.refresh_token
    marker_dir = tmp_path / "server"
    marker_dir.mkdir()
    server = HttpServer(marker_dir, record=True)
    try:
        site.backend = {"url": server.url, "headers": {"X-Configured": "configured-value"}}
        site.write_config()
        anything = {
            "id": "alice-any-tool",
            "effect": "allow",
            "conditions": {"subject_id": "alice"},
        }
        (site.config_dir / "policy.json").write_text(json.dumps({"rules": [anything]}))
        answers, err, code = _session(site, [("echo", {"text": "hi"})])
    finally:
        server.kill()
    assert code == 0, err
    assert answers[1] is not None
    assert answers[1]["result"]["content"][0]["text"] == "echo:hi"
    seen = server.requests.read_bytes()
    assert b'"name":"echo"' in seen.replace(b" ", b"")  # the call reached it, and is on record
    assert b"x-configured: configured-value" in seen  # what the config names does
    assert not [line for line in seen.splitlines() if line.lower().startswith(b"authorization:")]
    for token in (stored.access_token, stored.refresh_token):
        assert token.encode() not in seen
    assert b"eyJ" not in seen


REFRESHER = textwrap.dedent(
    """
    import asyncio, json, pathlib, sys, time
    from mcp_acp.tokens.encrypted_file import EncryptedFileStorage
    from mcp_acp_oidc.provider import OIDCConfig, OIDCIdentityProvider, refresh_lock_path

    config_dir = pathlib.Path(sys.argv[1])
    options = OIDCConfig(**json.loads(sys.argv[2]))
    go = pathlib.Path(sys.argv[3])
    storage = EncryptedFileStorage(
        config_dir / "tokens", key_file=config_dir / "token-storage.key"
    )
    storage.load(options.issuer)  # derive the key now, not in the race
    provider = OIDCIdentityProvider(
        options, storage, lock_path=refresh_lock_path(storage, options.issuer)
    )
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    subject = asyncio.run(provider.current_subject())
    print(subject.subject_id, flush=True)
    """
)


def test_two_processes_refresh_once(oidc_provider: str, approve: Any, tmp_path: Path) -> None:
    site = Site(tmp_path, oidc_provider)
    asyncio.run(_login(site, approve))
    first = site.storage().load(oidc_provider)
    assert first is not None
    # due: the stored token (300 s life) is over 2 s old; a fresh one is not due, so the
    # process that comes second uses what the first stored instead of refreshing again
    options = json.dumps({**site.options, "refresh_margin_seconds": 298})
    while (first.expires_at - datetime.now(UTC)).total_seconds() > 297.5:
        time.sleep(0.1)
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", REFRESHER, str(site.config_dir), options, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for racer in racers:
            assert racer.stdout is not None
            assert racer.stdout.readline().strip() == "ready"
        go.touch()  # both find the token due at the same moment
        results = [racer.communicate(timeout=60) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
    for racer, (out, err) in zip(racers, results, strict=True):
        assert racer.returncode == 0, err
        assert out.strip() == "alice"

    stored = site.storage().load(oidc_provider)
    assert stored is not None
    assert stored.refresh_token != first.refresh_token
    # one refresh between them: the stored token is the first refresh's, less than 300 s
    # (one token life) from expiry, and not refreshed a second time (that would be younger)
    # Had both spent the first refresh token, the provider would have revoked the grant:
    # the stored refresh token still works, so exactly one refresh happened.
    assert asyncio.run(site.provider(refresh_margin_seconds=3600).current_subject()).subject_id
    again = site.storage().load(oidc_provider)
    assert again is not None
    assert again.refresh_token != stored.refresh_token

    lock = refresh_lock_path(site.storage(), oidc_provider)
    assert stat.S_IMODE(lock.parent.stat().st_mode) == 0o700


CRASHER = textwrap.dedent(
    """
    import asyncio, json, os, pathlib, signal, sys
    from mcp_acp.tokens.encrypted_file import EncryptedFileStorage
    from mcp_acp_oidc.provider import OIDCConfig, OIDCIdentityProvider, refresh_lock_path

    class KilledOnSave(EncryptedFileStorage):
        def save(self, token):  # the rotated tokens arrived; the process dies before storing
            os.kill(os.getpid(), signal.SIGKILL)

    config_dir = pathlib.Path(sys.argv[1])
    options = OIDCConfig(**json.loads(sys.argv[2]))
    storage = KilledOnSave(config_dir / "tokens", key_file=config_dir / "token-storage.key")
    provider = OIDCIdentityProvider(
        options, storage, lock_path=refresh_lock_path(storage, options.issuer)
    )
    asyncio.run(provider.current_subject())
    print("not killed", flush=True)
    """
)


def test_killed_between_a_refresh_and_storing_it_forces_a_login_not_a_loop(
    oidc_provider: str, approve: Any, tmp_path: Path
) -> None:
    """MCP-13: the process is killed after the provider rotated the refresh token and
    before the new one was stored. The store still holds the old tokens, whole; on restart
    the spent refresh token is refused by the provider, dropped from the store (the access
    token serves until it expires), and the next start asks for a login — one refused
    refresh, not a loop."""
    site = Site(tmp_path, oidc_provider)
    asyncio.run(_login(site, approve))
    before = site.storage().load(oidc_provider)
    assert before is not None
    due = json.dumps({**site.options, "refresh_margin_seconds": 3600})  # due at once
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHER, str(site.config_dir), due],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert site.storage().load(oidc_provider) == before  # untouched, not half written

    restarted = site.provider(refresh_margin_seconds=3600)
    assert asyncio.run(restarted.current_subject()).subject_id == "alice"  # until it expires
    assert site.storage().load(oidc_provider) is None  # the spent refresh token is gone
    with pytest.raises(AuthenticationError, match="not logged in"):
        asyncio.run(site.provider().current_subject())


def test_forged_token_in_the_store_never_reaches_the_backend(
    oidc_provider: str, approve: Any, tmp_path: Path, keys: Any, kit: Any
) -> None:
    """Alice's real token, re-signed by an attacker's key under the provider's kid: the
    proxy refuses to start before the backend is launched."""
    site = Site(tmp_path, oidc_provider)
    asyncio.run(_login(site, approve))
    real = site.storage().load(oidc_provider)
    assert real is not None
    header_part, payload_part, _ = real.access_token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_part + "=" * (-len(header_part) % 4)))
    payload = json.loads(base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4)))
    payload["sub"] = "admin"  # what the attacker wants to be
    forged = kit.sign(header, payload, keys.attacker_rsa)
    site.storage().save(attrs.evolve(real, access_token=forged, refresh_token=None))

    launched = tmp_path / "backend-launched"
    config = json.loads(site.config.read_text())
    config["backend"] = {
        "command": "/bin/sh",
        "args": [
            "-c",
            f'touch {launched}; exec "$0" -m mcp_acp.demo.backend {site.notes}',
            sys.executable,
        ],
    }
    site.config.write_text(json.dumps(config))
    answers, err, code = _session(site, [("read_note", {"path": str(site.notes / "welcome.md")})])
    assert code == 14, err
    assert "bad_signature" in err.strip().splitlines()[-1]
    assert answers == [None, None]
    assert not launched.exists()
    invalid = [r for r in site.records("auth") if r["event"] == "token_invalid"]
    assert [r["reason"] for r in invalid] == ["bad_signature"]
    assert "admin" not in json.dumps(site.records("decisions"))
