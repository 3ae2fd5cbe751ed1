"""An identity provider that fails mid-session with something other than an
authentication error — a full disk while it saves a refreshed token — denies the request
through the real ``mcp-acp run``: the client gets a JSON-RPC error, the backend gets
nothing, the decision is on record, and the session goes on.

The provider is a real plugin, found through its entry point (a ``.dist-info`` on
``PYTHONPATH``); it fails once a marker file exists. The backend is a stdlib-only server
that writes down every line it receives.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from proxy_helpers import (
    ALLOW_ECHO,
    CLI,
    DENIED,
    E2E,
    Proxy,
    configure,
    decisions,
    records,
    use_plugin,
)

ENVIRONMENT_SERVER = E2E / "peers" / "environment_server.py"

PLUGIN = """
import errno
import os
from pydantic import BaseModel, ConfigDict
from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import Provenance, Subject


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    marker: str


class FailingIdentity:
    def __init__(self, options, context):
        self.marker = options.marker

    async def current_subject(self):
        if os.path.exists(self.marker):
            text = open(self.marker).read()
            if text == "exit":  # what no provider should do, but a plugin may
                raise SystemExit(0)
            if text.startswith("audit:"):  # its auth record fails after so many calls
                self.calls = getattr(self, "calls", 0) + 1
                if self.calls > int(text[len("audit:"):]):
                    from mcp_acp.errors import AuditError
                    raise AuditError("the auth stream cannot be written", fix="free space")
                return Subject(subject_id="alice", provenance=Provenance.TOKEN, issuer="https://idp.test")
            if text.startswith("secret:"):  # a library error quoting what it sent
                raise RuntimeError(text[len("secret:"):])
            if text.startswith("auth:"):  # its own word, quoting what it sent
                from mcp_acp.errors import AuthenticationError
                raise AuthenticationError(text[len("auth:"):], fix="run 'mcp-acp auth login'")
            raise OSError(errno.ENOSPC, "No space left on device")
        return Subject(subject_id="alice", provenance=Provenance.TOKEN, issuer="https://idp.test")


@hookimpl
def register_identity_providers(register):
    register("failing", FailingIdentity, Options, summary="test: fails once a marker exists")
"""


def methods_received(received: Path) -> list[str]:
    """The methods of the messages the environment server wrote down, in order."""
    return [json.loads(line)["method"] for line in received.read_text().splitlines()]


def failing_identity(home: Path, tmp_path: Path, marker: Path) -> dict[str, str]:
    """The failing provider, installed and configured; the environment that finds it."""
    return use_plugin(
        home,
        tmp_path / "site",
        module="failing_identity",
        source=PLUGIN,
        name="failing",
        use_for="identity",
        config={"marker": str(marker)},
    )


def _behind_failing_identity(home: Path, tmp_path: Path, marker: Path) -> tuple[Proxy, Path, Path]:
    """A proxy with the failing provider (``marker`` says how it fails) in front of the
    environment server, which writes down what it receives; the proxy, the audit log
    directory and that record."""
    received = tmp_path / "received.jsonl"
    backend_args = [str(ENVIRONMENT_SERVER), str(tmp_path / "env.json"), str(received)]
    log_dir = configure(home, sys.executable, backend_args, ALLOW_ECHO)
    return Proxy(home, failing_identity(home, tmp_path, marker)), log_dir, received


@pytest.mark.parametrize(
    ("fails", "failure"),
    [
        ("", "OSError: [Errno 28] No space left on device"),
        # sys.exit() in a provider is its failure too: not the end of the proxy
        ("exit", "SystemExit: 0"),
    ],
)
def test_an_identity_provider_error_is_denied_before_the_backend(
    isolated_home: Path, tmp_path: Path, fails: str, failure: str
) -> None:
    marker = tmp_path / "failing"
    proxy, log_dir, received = _behind_failing_identity(isolated_home, tmp_path, marker)
    try:
        proxy.initialize()
        echo = {"name": "echo", "arguments": {}}
        assert "result" in proxy.call("tools/call", echo)
        before = received.read_text()  # the backend answered: it has written what it got

        marker.write_text(fails)  # from now on the identity provider fails
        denied = proxy.call("tools/call", echo)
        assert denied["error"]["code"] == DENIED
        assert denied["error"]["data"] == {"rule": "builtin-identity-error"}
        assert f"denied: identity provider error: {failure}" in denied["error"]["message"]
        marker.unlink()  # the disk has room again: the session went on
        assert "result" in proxy.call("tools/call", echo)
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.close()

    assert methods_received(received) == [
        "initialize",
        "notifications/initialized",
        "tools/call",
        "tools/call",
    ]
    assert received.read_text().startswith(before)
    record = next(r for r in decisions(log_dir) if r["request_id"] == str(denied["id"]))
    assert record["effect"] == "deny"
    assert record["rule_id"] == "builtin-identity-error"
    assert failure in record["reason"]
    operations = records(log_dir, "operations")
    assert any(
        r.get("request_id") == str(denied["id"]) and r.get("outcome") == "denied"
        for r in operations
    )


#: What an identity provider's library may quote in an error: a refresh token in a URL, a
#: bearer token in a header, a client secret in a form body.
SECRET_ERROR = (
    "refresh failed: POST https://idp.test/token?refresh_token=rt-CANARY-1 "
    "with Authorization: Bearer at-CANARY-2 body client_secret=cs-CANARY-3"
)
#: A credential in a header quoted alone — no ``=``, URL or bearer scheme in the text: the
#: quick look for "may hold a secret" passed it, unredacted, everywhere.
HEADER_ERROR = "refresh failed: the IdP refused the header X-Api-Key: ak-CANARY-4"


@pytest.mark.parametrize(
    ("error", "kept"),
    [
        (SECRET_ERROR, "RuntimeError: refresh failed: POST https://idp.test/token?"),
        (HEADER_ERROR, "RuntimeError: refresh failed: the IdP refused the header X-Api-Key: "),
    ],
    ids=["url-bearer-pair", "header-alone"],
)
def test_credentials_an_identity_provider_error_quotes_reach_no_one(
    isolated_home: Path, tmp_path: Path, error: str, kept: str
) -> None:
    """The text of an identity provider's error went whole into the client's denial (the
    model reads it), the proxy's stderr log and — redacted — the trail. It is redacted in
    all three now, and what it says besides the credentials still reaches each."""
    marker = tmp_path / "failing"
    proxy, log_dir, received = _behind_failing_identity(isolated_home, tmp_path, marker)
    try:
        proxy.initialize()
        marker.write_text("secret:" + error)
        denied = proxy.call("tools/call", {"name": "echo", "arguments": {}})
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.close()
    assert "tools/call" not in methods_received(received)
    message = denied["error"]["message"]
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    (record,) = [r for r in decisions(log_dir) if r["request_id"] == str(denied["id"])]
    for where, text in (("client", message), ("stderr", stderr), ("trail", record["reason"])):
        assert "CANARY" not in text, (where, text)
        assert kept in text, (where, text)
        assert "<redacted>" in text, (where, text)


PROVIDER_FAILED = "the identity provider failed: "


@pytest.mark.parametrize(
    ("fails", "failure", "debug"),
    [
        ("", PROVIDER_FAILED + "OSError: [Errno 28] No space left on device", False),
        (
            "secret:" + SECRET_ERROR,
            PROVIDER_FAILED + "RuntimeError: refresh failed: POST https://idp.test/token?",
            False,
        ),
        # the provider's own AuthenticationError is its word, printed as it is — but for
        # the credentials it quotes; and --debug's traceback quotes the error too
        ("auth:" + SECRET_ERROR, "refresh failed: POST https://idp.test/token?", False),
        ("auth:" + SECRET_ERROR, "refresh failed: POST https://idp.test/token?", True),
        (
            "secret:" + SECRET_ERROR,
            PROVIDER_FAILED + "RuntimeError: refresh failed: POST https://idp.test/token?",
            True,
        ),
    ],
    ids=["disk-full", "quoting-credentials", "own-error", "own-error-debug", "debug"],
)
def test_an_identity_provider_error_at_start_is_a_recorded_refusal(
    isolated_home: Path, tmp_path: Path, fails: str, failure: str, debug: bool
) -> None:
    """The same failure at start-up: exit 14 with one line naming what the provider raised,
    recorded as ``startup_refused`` — not an internal error (exit 1) with nothing on record;
    and the backend is never started. Credentials the error quotes are redacted in both,
    also in the traceback ``--debug`` prints first."""
    received = tmp_path / "received.jsonl"
    policy = {"version": "1", "rules": []}
    backend_args = [str(ENVIRONMENT_SERVER), str(tmp_path / "env.json"), str(received)]
    log_dir = configure(isolated_home, sys.executable, backend_args, policy)
    marker = tmp_path / "disk-full"
    marker.write_text(fails)
    env = failing_identity(isolated_home, tmp_path, marker)
    if debug:
        env["MCP_ACP_DEBUG"] = "1"
    refused = subprocess.run(
        [str(CLI), "run"], stdin=subprocess.DEVNULL, env=env, capture_output=True, text=True
    )
    assert refused.returncode == 14
    last = refused.stderr.strip().splitlines()[-1]
    assert failure in last
    assert ("Traceback (most recent call last)" in refused.stderr) is debug
    assert "CANARY" not in refused.stderr
    assert "CANARY" not in json.dumps(records(log_dir, "system"))
    (startup,) = [r for r in records(log_dir, "system") if r["event"] == "startup_refused"]
    assert startup["detail"]["exit_code"] == 14
    assert not (tmp_path / "env.json").exists()  # the backend never ran


def test_a_list_is_not_answered_empty_when_the_identity_cannot_be_recorded(
    isolated_home: Path, tmp_path: Path
) -> None:
    """An identity provider whose auth record cannot be written (AuditError) while a list
    is filtered: the client gets an error, not a list emptied as if it held nothing."""
    received = tmp_path / "received.jsonl"
    policy = ALLOW_ECHO
    backend_args = [str(E2E / "peers" / "recording_server.py"), str(received)]
    configure(isolated_home, sys.executable, backend_args, policy)
    marker = tmp_path / "audit-failing"
    env = failing_identity(isolated_home, tmp_path, marker)
    proxy = Proxy(isolated_home, env)
    try:
        proxy.initialize()
        assert proxy.call("tools/list")["result"]["tools"]
        marker.write_text("audit:1")  # the list request is decided; its filtering fails
        answer = proxy.call("tools/list")
        assert "result" not in answer
        assert "could not be filtered" in answer["error"]["message"]
        assert "the auth stream cannot be written" in answer["error"]["message"]
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.close()
