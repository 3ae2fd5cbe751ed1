"""``mcp-acp audit verify``, ``logs show|tail`` and ``schema audit`` on real logs; redaction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from proxy_helpers import DENIED, Proxy, configure, decisions, proxy_env, wait_for_event

from mcp_acp.audit.events import DecisionEvent, OperationEvent, SystemEvent, argument_fields
from mcp_acp.audit.jsonl import JsonlAuditSink
from mcp_acp.audit.redact import REDACTED, redact

CLI = Path(sys.executable).parent / "mcp-acp"
CANARY = "CANARY-7f3a9c-TOKEN-do-not-log"


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(home)
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=60)


def write_log(log_dir: Path) -> None:
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    sink.write_sync(
        DecisionEvent(
            session_id="s1",
            request_id="req-1",
            subject_id="alice",
            subject_provenance="token",
            mcp_method="tools/call",
            tool_name="read_file",
            effect="deny",
            rule_id="deny-secrets",
            reason="denied by rule deny-secrets: path /x/.ssh/id matches **/.ssh/**",
            policy_id="sha256:x",
        )
    )
    sink.write_sync(
        OperationEvent(
            session_id="s1",
            request_id="req-1",
            direction="client_to_server",
            outcome="denied",
            mcp_method="tools/call",
            tool_name="read_file",
            **argument_fields(
                {"path": "/x/.ssh/id", "authorization": f"Bearer {CANARY}"}, record_payloads=True
            ),
        )
    )
    sink.write_sync(SystemEvent(event="plugins_loaded", detail={"count": 4}))
    sink.close_sync()


def test_verify_ok_then_tampered(isolated_home: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_log(logs)
    ok = run(isolated_home, "audit", "verify", "--log-dir", str(logs))
    assert ok.returncode == 0, ok.stderr
    assert "decisions: ok, 2 lines" in ok.stdout
    decisions = logs / "decisions.jsonl"
    decisions.write_bytes(decisions.read_bytes().replace(b'"effect":"deny"', b'"effect":"allow"'))
    bad = run(isolated_home, "audit", "verify", "--log-dir", str(logs), "--stream", "decisions")
    assert bad.returncode == 13
    assert f"decisions: FAILED at {decisions}:2: hash does not match" in bad.stdout
    assert bad.stderr.startswith("audit error: audit chain broken in decisions")


def test_verify_uses_the_configured_log_dir(isolated_home: Path, tmp_path: Path) -> None:
    logs = tmp_path / "configured-logs"
    run(
        isolated_home,
        "init",
        "--non-interactive",
        "--backend-command",
        "true",
        "--log-dir",
        str(logs),
    )
    write_log(logs)
    assert run(isolated_home, "audit", "verify").returncode == 0
    missing = run(isolated_home, "--config", str(tmp_path / "none.json"), "audit", "verify")
    assert missing.returncode == 10
    assert "pass --log-dir DIR" in missing.stderr


def test_logs_show_columns_json_and_since(isolated_home: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_log(logs)
    table = run(isolated_home, "logs", "show", "--log-dir", str(logs), "--stream", "decisions")
    rows = table.stdout.splitlines()
    assert len(rows) == 2
    assert "decision" in rows[1]
    assert "req-1" in rows[1]
    assert "alice" in rows[1]
    assert "deny" in rows[1]
    assert "denied by rule deny-secrets" in rows[1]
    raw = run(isolated_home, "logs", "show", "--log-dir", str(logs), "--json")
    records = [json.loads(line) for line in raw.stdout.splitlines()]
    assert {r["stream"] for r in records} == {"decisions", "operations", "auth", "system"}
    future = run(isolated_home, "logs", "show", "--log-dir", str(logs), "--since", "2999-01-01")
    assert future.stdout == ""
    recent = run(isolated_home, "logs", "show", "--log-dir", str(logs), "--since", "10m")
    assert len(recent.stdout.splitlines()) == len(records)
    wrong = run(isolated_home, "logs", "show", "--log-dir", str(logs), "--since", "soon")
    assert wrong.returncode == 2
    assert "use 10m, 2h, 1d or an ISO time" in wrong.stderr


def test_logs_tail_follows_new_records(isolated_home: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_log(logs)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(isolated_home)
    proc = subprocess.Popen(
        [
            str(CLI),
            "logs",
            "tail",
            "--log-dir",
            str(logs),
            "--json",
            "--count",
            "2",
            "--interval",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        sink = JsonlAuditSink(logs)  # each start writes stream_opened to every stream
        sink.start_sync()
        sink.close_sync()
        time.sleep(0.2)
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    new = [json.loads(line) for line in out.splitlines()]
    assert len(new) == 2
    assert all(r["event"] == "stream_opened" for r in new)


def test_schema_audit_lists_every_stream(isolated_home: Path) -> None:
    document = json.loads(run(isolated_home, "schema", "audit").stdout)
    assert set(document["streams"]) == {"operations", "decisions", "auth", "system", "chain"}
    decision = document["streams"]["decisions"]
    assert decision["additionalProperties"] is False
    assert "policy_id" in decision["required"]
    # what the relay screens, and so where an operation record may carry findings
    findings = document["streams"]["operations"]["properties"]["findings"]["description"]
    for method in ("tools/call", "resources/read", "prompts/get", "sampling/createMessage"):
        assert method in findings


def test_payloads_are_hashed_by_default_and_redacted_when_recorded() -> None:
    arguments = {
        "path": "/srv/a",
        "headers": {"Authorization": f"Bearer {CANARY}"},
        "note": f"token eyJhbGciOi.eyJzdWIiOiJ4In0.{CANARY} and ghp_{'a' * 36}",
        "key": "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
        "aws": "AKIAABCDEFGHIJKLMNOP",
        "cookie": "session=1",
    }
    default = argument_fields(arguments)
    assert set(default) == {"arguments_sha256", "arguments_size"}
    assert len(default["arguments_sha256"]) == 64
    recorded = argument_fields(arguments, record_payloads=True)["arguments"]
    text = json.dumps(recorded)
    assert CANARY not in text
    assert "ghp_" not in text
    assert "MIIE" not in text
    assert "AKIA" not in text
    assert recorded["path"] == "/srv/a"
    assert recorded["headers"]["Authorization"] == REDACTED
    assert recorded["cookie"] == REDACTED
    assert redact([f"Bearer {CANARY}", 5]) == [REDACTED, 5]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--interval", "-1"], "'--interval': -1.0 is not in the range"),
        (["--interval", "nan"], "'--interval': nan is not a number of seconds"),
        (["--interval", "inf"], "'--interval': inf is not in the range"),
        (["--count", "0"], "'--count': 0 is not in the range x>=1"),
        (["--count", "-5"], "'--count': -5 is not in the range x>=1"),
    ],
)
def test_logs_tail_refuses_an_interval_or_count_it_cannot_use(
    isolated_home: Path, tmp_path: Path, args: list[str], problem: str
) -> None:
    """Before: a negative, nan or infinite interval ended in an internal error, a count
    of 0 or less followed for ever."""
    logs = tmp_path / "logs"
    write_log(logs)
    result = run(isolated_home, "logs", "tail", "--log-dir", str(logs), *args)
    assert result.returncode == 2, result.stderr
    assert problem in result.stderr
    assert "internal error" not in result.stderr


@pytest.mark.parametrize("command", [["logs", "show"], ["logs", "tail"], ["audit", "verify"]])
def test_a_missing_log_dir_is_the_same_audit_error_everywhere(
    isolated_home: Path, tmp_path: Path, command: list[str]
) -> None:
    result = run(isolated_home, *command, "--log-dir", str(tmp_path / "typo"))
    assert result.returncode == 13
    assert result.stderr.startswith(f"audit error: no audit directory at {tmp_path / 'typo'}")
    assert result.stdout == ""


#: Where a client's secret rides in a URI: a query value, and a URL's password.
URI_SECRETS = ("SECRET-query-1", "SECRET-query-2", "SECRET-password-3", "SECRET-exposed-4")


def test_a_secret_in_a_uri_a_record_quotes_is_redacted(isolated_home: Path, tmp_path: Path) -> None:
    """A rule's reason names the URI it matched, a denial the ambiguous URI, an exposure the
    resource read: a credential in the URI (``?access_token=…``, ``//user:password@``) went
    into ``decisions.jsonl`` and ``system.jsonl`` as it was, and ``logs show`` printed it
    (and the proxy's warning about the exposure). Each is written ``<redacted>``."""
    peer = Path(__file__).parent.parent / "e2e" / "peers" / "recording_server.py"
    policy = {
        "version": "1",
        "rules": [{"id": "api", "effect": "allow", "conditions": {"uri": "https://api.test/**"}}],
    }
    received = tmp_path / "received.jsonl"
    logs = configure(isolated_home, sys.executable, [str(peer), str(received)], policy)
    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    proxy.initialize()
    query, ambiguous, password, exposed = URI_SECRETS
    read = proxy.call("resources/read", {"uri": f"https://api.test/data?access_token={query}"})
    assert read["result"]["contents"]
    for uri in (f"https://api.test/a b?token={ambiguous}", f"https://u:{password}@api.test/x"):
        assert proxy.call("resources/read", {"uri": uri})["error"]["code"] == DENIED
    # the peer echoes the URI as the resource's text: a marker in it exposes the session
    uri = f"https://api.test/<IMPORTANT>?access_token={exposed}"
    assert proxy.call("resources/read", {"uri": uri})["result"]["contents"]
    assert proxy.close() == 0
    assert all(secret in received.read_text() for secret in (query, exposed))  # relayed as sent
    reasons = [r["reason"] for r in decisions(logs) if r["mcp_method"] == "resources/read"]
    assert reasons[0] == (
        "allowed by rule api: uri https://api.test/data?access_token=<redacted> matches "
        "https://api.test/**"
    )
    assert "//u:<redacted>@api.test/x has user info" in reasons[2]
    exposure = wait_for_event(logs, "system", "session_exposed")
    assert exposure["detail"]["uri"] == "https://api.test/<IMPORTANT>?access_token=<redacted>"
    assert run(isolated_home, "audit", "verify", "--log-dir", str(logs)).returncode == 0
    shown = [
        run(isolated_home, "logs", "show", "--log-dir", str(logs), *a) for a in ((), ("--json",))
    ]
    places = {
        "the log": b"".join(p.read_bytes() for p in logs.glob("*.jsonl")).decode(),
        "logs show": "".join(result.stdout for result in shown),
        "the proxy's stderr": (isolated_home / "proxy-stderr.txt").read_text(),
    }
    assert "<redacted>" in places["logs show"]
    leaks = [(where, s) for where, text in places.items() for s in URI_SECRETS if s in text]
    assert not leaks
