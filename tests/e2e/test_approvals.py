"""Human approval through the real proxy: pending requests answered with
``mcp-acp approvals`` from "another terminal" (another process), over the local socket."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import CLI, DENIED, Proxy, records

ASK_POLICY = {
    "version": "1",
    "rules": [
        {
            "id": "read-project",
            "effect": "allow",
            "conditions": {"operations": "read", "path_pattern": "PROJECT/**"},
        },
        {
            "id": "ask-writes",
            "effect": "ask",
            "conditions": {"tool_name": "write_file", "path_pattern": "PROJECT/**"},
        },
    ],
}


@pytest.fixture
def approvals(setup: Any, isolated_home: Path, tmp_path: Path) -> Any:
    start, project, log_dir, policy = setup
    sockets = tmp_path / "run"
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["approver"] = {"use": "cli"}
    config["proxy"] = {"approval_timeout_seconds": 5, "socket_dir": str(sockets)}
    config_file.write_text(json.dumps(config))
    policy.write_text(json.dumps(ASK_POLICY).replace("PROJECT", str(project)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(isolated_home)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "approvals", *args, "--socket-dir", str(sockets)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def pending() -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listed = json.loads(cli("list", "--json").stdout or "[]")
            if listed:
                return listed  # type: ignore[no-any-return]
            time.sleep(0.05)
        return []

    proxy = start()
    proxy.initialize()
    return proxy, project, log_dir, cli, pending, sockets


def write_request(proxy: Proxy, project: Path, name: str) -> int:
    proxy.next_id += 1
    proxy.send(
        {
            "jsonrpc": "2.0",
            "id": proxy.next_id,
            "method": "tools/call",
            "params": {
                "name": "write_file",
                "arguments": {"path": str(project / name), "content": "approved"},
            },
        }
    )
    return proxy.next_id


def test_approve_deny_timeout_and_cancel(approvals: Any) -> None:
    proxy, project, log_dir, cli, pending, sockets = approvals
    sock = next(sockets.glob("proxy-*.sock"))
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    assert oct(sockets.stat().st_mode & 0o777) == "0o700"

    # approve
    request_id = write_request(proxy, project, "approved.md")
    waiting = pending()
    assert len(waiting) == 1
    assert re.fullmatch(r"[0-9a-f]{16}", waiting[0]["id"])  # never parsed as a CLI option
    assert "write_file" in waiting[0]["summary"]
    assert waiting[0]["paths"] == [str(project / "approved.md")]
    approved = cli("approve", waiting[0]["id"])
    assert approved.returncode == 0, approved.stderr
    answer = proxy.recv()
    assert answer["id"] == request_id
    assert "result" in answer
    assert (project / "approved.md").read_text() == "approved"

    # deny
    request_id = write_request(proxy, project, "denied.md")
    assert cli("deny", pending()[0]["id"]).returncode == 0
    answer = proxy.recv()
    assert answer["error"]["code"] == DENIED
    assert "not approved (deny)" in answer["error"]["message"]
    assert not (project / "denied.md").exists()

    # nobody answers: denied at the timeout
    started = time.monotonic()
    request_id = write_request(proxy, project, "late.md")
    answer = proxy.recv(timeout=30)
    assert answer["id"] == request_id
    assert "not approved (timeout" in answer["error"]["message"]
    assert 4.5 <= time.monotonic() - started < 20
    assert not (project / "late.md").exists()

    # the client cancels while the human has not answered yet
    request_id = write_request(proxy, project, "cancelled.md")
    assert pending()
    proxy.send(
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "user pressed stop"},
        }
    )
    deadline = time.monotonic() + 10
    while json.loads(cli("list", "--json").stdout) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(cli("list", "--json").stdout) == []
    assert not (project / "cancelled.md").exists()

    unknown = cli("approve", "no-such-id")
    assert unknown.returncode == 1
    assert "no pending approval 'no-such-id'" in unknown.stderr

    assert proxy.close() == 0
    decisions = [r for r in records(log_dir, "decisions") if r.get("tool_name") == "write_file"]
    outcomes = [(r["effect"], r.get("final_effect"), r.get("approver")) for r in decisions]
    assert outcomes == [
        ("ask", "allow", "cli"),
        ("ask", "deny", "cli"),
        ("ask", "deny", "cli"),  # timed out
        ("ask", "deny", "cli"),  # cancelled by the client: on record as a denial
    ]
    assert decisions[3]["reason"].endswith("cancelled by the client")
    assert decisions[0]["approved_by"]
    assert decisions[0]["approval_seconds"] > 0
    assert not list(sockets.glob("proxy-*.sock"))  # removed at exit


def test_remember_status_and_reload(approvals: Any, isolated_home: Path) -> None:
    proxy, project, log_dir, cli, pending, sockets = approvals

    def status() -> dict[str, Any]:
        found = cli_status(cli, sockets)
        assert len(found) == 1
        return found[0]

    request_id = write_request(proxy, project, "kept.md")
    approved = cli("approve", pending()[0]["id"], "--remember")
    assert approved.returncode == 0, approved.stderr
    assert "allow_and_cache" in approved.stdout
    assert "result" in proxy.recv()
    # the same write again: answered from the cache, nobody is asked
    request_id = write_request(proxy, project, "kept.md")
    answer = proxy.recv(timeout=10)
    assert answer["id"] == request_id
    assert "result" in answer
    now = status()
    assert now["pid"] == proxy.proc.pid
    assert now["remembered_approvals"] == 1
    assert now["approver"] == "cli"
    assert now["requests"]["asked"] == 1

    # SIGHUP reloads the policy and forgets remembered approvals
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while status()["remembered_approvals"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status()["remembered_approvals"] == 0
    write_request(proxy, project, "kept.md")
    assert cli("deny", pending()[0]["id"]).returncode == 0
    assert proxy.recv()["error"]["code"] == DENIED

    assert proxy.close() == 0
    decisions = [r for r in records(log_dir, "decisions") if r.get("tool_name") == "write_file"]
    assert [(r.get("approval_remembered"), r.get("approval_cached")) for r in decisions] == [
        (True, None),
        (None, True),
        (False, None),
    ]
    assert decisions[1]["approved_by"] == decisions[0]["approved_by"]
    assert cli_status(cli, sockets) == []  # the socket went with the proxy


def cli_status(cli: Any, sockets: Path) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    result = subprocess.run(
        [str(CLI), "status", "--json", "--socket-dir", str(sockets)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]
