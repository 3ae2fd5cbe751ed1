"""``mcp-acp run`` end to end: a raw newline-delimited JSON-RPC client (what Claude Desktop
speaks), the real proxy process, and the real reference filesystem server from npm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from proxy_helpers import CLI, DENIED, E2E, configure, proxy_env, records

from mcp_acp.audit.chain import verify_stream


def test_allow_deny_and_listing_through_the_real_server(setup: Any) -> None:
    start, project, log_dir, _ = setup
    proxy = start()
    init = proxy.initialize()
    assert init["result"]["serverInfo"]["name"] == "secure-filesystem-server"

    tools = [t["name"] for t in proxy.call("tools/list")["result"]["tools"]]
    assert "read_text_file" in tools
    assert "write_file" not in tools  # denied by a rule that needs no arguments: not listed

    read = proxy.call(
        "tools/call", {"name": "read_text_file", "arguments": {"path": str(project / "notes.md")}}
    )
    assert read["result"]["content"][0]["text"] == "hello from the project\n"

    write = proxy.call(
        "tools/call",
        {
            "name": "write_file",
            "arguments": {"path": str(project / "new.md"), "content": "should never exist"},
        },
    )
    assert write["error"]["code"] == DENIED
    assert "denied by rule no-writes" in write["error"]["message"]
    assert f"(request {proxy.next_id})" in write["error"]["message"]
    assert not (project / "new.md").exists()  # evidence on the backend's side

    secret = proxy.call(
        "tools/call", {"name": "read_text_file", "arguments": {"path": str(project / ".env")}}
    )
    assert secret["error"]["code"] == DENIED
    assert "deny-secrets" in secret["error"]["message"]

    escape = proxy.call(
        "tools/call", {"name": "read_text_file", "arguments": {"path": f"{project}/../outside"}}
    )
    assert "builtin-ambiguous-path" in json.dumps(escape["error"])

    unknown = proxy.call("frobnicate/everything")
    assert unknown["error"]["code"] == DENIED
    assert "no rule matched" in unknown["error"]["message"]

    assert proxy.close() == 0
    decisions = [r for r in records(log_dir, "decisions") if r["event"] == "decision"]
    by_tool = {(r["mcp_method"], r.get("tool_name"), r["effect"]) for r in decisions}
    assert ("tools/call", "write_file", "deny") in by_tool
    assert ("tools/call", "read_text_file", "allow") in by_tool
    assert ("initialize", None, "allow") in by_tool
    operations = records(log_dir, "operations")
    assert any(
        r.get("outcome") == "denied" and r.get("tool_name") == "write_file" for r in operations
    )
    auth = records(log_dir, "auth")
    assert [r["event"] for r in auth[1:]] == ["session_started", "session_ended"]
    assert auth[-1]["reason"] == "the client closed the session"
    for stream in ("decisions", "operations", "auth", "system"):
        assert verify_stream(log_dir, stream).ok
    # the reference server's tools pass the screen for hidden instructions
    assert not [r for r in records(log_dir, "system") if r["event"].endswith("_quarantined")]
    # AU-11: the streams join by session and request id — every request the client sent has
    # exactly one decision and one client_to_server operation record, and the reverse
    requested = [
        (r["session_id"], r["request_id"]) for r in decisions if r["request_id"] != "notification"
    ]
    sent = [
        (r["session_id"], r["request_id"])
        for r in operations
        if r.get("direction") == "client_to_server"
    ]
    assert sorted(requested) == sorted(sent)
    assert len(set(requested)) == len(requested)


def test_malformed_and_oversized_messages_get_errors(setup: Any) -> None:
    start, _, _, _ = setup
    proxy = start()
    proxy.initialize()
    proxy.send_raw(b'{"jsonrpc": "2.0", "id": 7, "method": \n')
    assert proxy.recv()["error"]["code"] == -32700
    proxy.send_raw(b'[{"jsonrpc": "2.0", "id": 8, "method": "ping"}]\n')
    assert proxy.recv()["error"]["code"] == -32600
    proxy.send_raw(
        b'{"jsonrpc":"2.0","id":9,"method":"ping","params":{"x":"'
        + b"a" * (10 * 1024 * 1024 + 10)
        + b'"}}\n'
    )
    big = proxy.recv()
    assert big["error"]["code"] == -32600
    assert "larger than" in big["error"]["message"]
    ping = proxy.call("ping")  # still serving
    assert "result" in ping
    assert proxy.close() == 0


def test_sighup_reloads_the_policy_and_keeps_the_last_good_one(setup: Any) -> None:
    start, project, log_dir, policy = setup
    proxy = start()
    proxy.initialize()
    target = str(project / "notes.md")

    def listing() -> dict[str, Any]:
        return proxy.call(
            "tools/call", {"name": "list_directory", "arguments": {"path": str(project)}}
        )

    assert "result" in listing()
    policy.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "id": "nothing-but-notes",
                        "effect": "allow",
                        "conditions": {"path_pattern": target},
                    }
                ]
            }
        )
    )
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if "error" in listing():
            break
        time.sleep(0.1)
    assert "error" in listing()  # the new policy is in force
    policy.write_text("{not json")
    proxy.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert "error" in listing()  # the broken file was refused; the last good one stays
    assert proxy.close() == 0
    events = [r["event"] for r in records(log_dir, "system")]
    assert "policy_reloaded" in events
    assert "policy_reload_failed" in events


def test_sigterm_ends_the_session_cleanly(setup: Any) -> None:
    start, _, log_dir, _ = setup
    proxy = start()
    proxy.initialize()
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=30) == 0
    assert records(log_dir, "auth")[-1]["reason"] == "SIGTERM received"


def test_audit_failure_denies_and_shuts_down(setup: Any) -> None:
    start, project, log_dir, _ = setup
    proxy = start()
    proxy.initialize()
    (log_dir / "decisions.jsonl").unlink()
    answer = proxy.call(
        "tools/call", {"name": "read_text_file", "arguments": {"path": str(project / "notes.md")}}
    )
    assert answer["error"]["code"] == DENIED
    assert "audit trail cannot be written" in answer["error"]["message"]
    assert proxy.proc.wait(timeout=30) == 13
    shutdown = json.loads((log_dir / "shutdowns.jsonl").read_text().splitlines()[0])
    assert shutdown["failure_class"] == "audit"


def test_backend_death_is_reported_and_audited(
    setup: Any, isolated_home: Path, tmp_path: Path
) -> None:
    start, _, log_dir, _ = setup
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    dying = tmp_path / "dying_backend.py"
    dying.write_text("import sys\nsys.stdin.readline()\nsys.exit(3)\n")
    config["backend"] = {"transport": "stdio", "command": sys.executable, "args": [str(dying)]}
    config_file.write_text(json.dumps(config))
    proxy = start()
    proxy.send(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "1"},
            },
        }
    )
    answer = proxy.recv()
    assert answer["id"] == 1
    assert "the backend exited (code 3)" in answer["error"]["message"]
    assert proxy.proc.wait(timeout=30) == 17
    events = [
        (r["event"], r.get("detail", {}).get("returncode")) for r in records(log_dir, "system")
    ]
    assert ("backend_exited", 3) in events
    assert records(log_dir, "auth")[-1]["reason"] == "the backend exited"


def test_claude_desktop_entry_launches_the_proxy(setup: Any, isolated_home: Path) -> None:
    """Run exactly the command that `config export --claude` tells Claude Desktop to run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(isolated_home)
    exported = subprocess.run(
        [str(CLI), "config", "export", "--claude", "--name", "files"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    entry = json.loads(exported)["mcpServers"]["files"]
    assert entry["args"][-1] == "run"
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "claude-ai", "version": "0.1"},
        },
    }
    done = subprocess.run(
        [entry["command"], *entry["args"]],
        input=json.dumps(init) + "\n",
        env={**env, "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"]["serverInfo"]["name"] == "secure-filesystem-server"


def test_denial_as_a_tool_result_the_model_can_read(setup: Any, isolated_home: Path) -> None:
    start, project, log_dir, _ = setup
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["proxy"] = {"tool_denial": "result"}
    config_file.write_text(json.dumps(config))
    proxy = start()
    proxy.initialize()
    arguments = {"path": str(project / "new.md"), "content": "should never exist"}
    write = proxy.call("tools/call", {"name": "write_file", "arguments": arguments})
    assert write["result"]["isError"] is True
    assert "denied by rule no-writes" in write["result"]["content"][0]["text"]
    assert not (project / "new.md").exists()
    # other methods keep the JSON-RPC error: only a tool result can carry isError
    assert proxy.call("frobnicate/everything")["error"]["code"] == DENIED
    assert proxy.close() == 0
    assert any(r.get("outcome") == "denied" for r in records(log_dir, "operations"))


def test_stdin_and_stdout_may_be_files_or_dev_null(
    setup: Any, isolated_home: Path, tmp_path: Path
) -> None:
    """What the README's troubleshooting asks users to run: ``mcp-acp run < /dev/null``
    (and a scripted session from a file into a file): the loop cannot watch those."""
    requests = tmp_path / "in.jsonl"
    requests.write_text(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "ping"}) + "\n")
    answers = tmp_path / "out.jsonl"
    for stdin, stdout in ((os.devnull, os.devnull), (requests, answers)):
        with open(stdin, "rb") as given, open(stdout, "wb") as taken:
            done = subprocess.run(
                [str(CLI), "run"],
                stdin=given,
                stdout=taken,
                stderr=subprocess.PIPE,
                env=proxy_env(isolated_home),
                timeout=60,
            )
        assert done.returncode == 0, done.stderr.decode()
        assert b"Traceback" not in done.stderr
    assert json.loads(answers.read_text()) == {"jsonrpc": "2.0", "id": 7, "result": {}}


def test_a_backend_that_cannot_start_is_recorded_once(isolated_home: Path) -> None:
    """The backend is started right after the gates, before the relay is built; the relay
    still records the failure, once, and the proxy exits 17."""
    log_dir = configure(isolated_home, "/nonexistent/mcp-server", [], {"version": "1", "rules": []})
    done = subprocess.run(
        [str(CLI), "run"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=proxy_env(isolated_home),
        timeout=60,
    )
    assert done.returncode == 17, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("backend error: cannot start backend '/nonexistent/mcp-server'")
    )
    failed = [r for r in records(log_dir, "system") if r["event"] == "backend_start_failed"]
    assert len(failed) == 1
    assert failed[0]["detail"]["backend"] == "/nonexistent/mcp-server"
    assert not [r for r in records(log_dir, "system") if r["event"] == "backend_started"]
    assert records(log_dir, "auth")[-1]["reason"] == "the backend could not be started"


RECORDING_SERVER = E2E / "peers" / "recording_server.py"
ANY_TOOL = {
    "version": "1",
    "rules": [{"id": "any-tool", "effect": "allow", "conditions": {"tool_name": "*"}}],
}


class ClosingClient:
    """A client of the real ``mcp-acp run`` in front of the recording server that can stop
    reading the proxy's output: it holds the only read end of the proxy's stdout pipe."""

    def __init__(self, home: Path, tmp_path: Path) -> None:
        self.received = tmp_path / "received.jsonl"
        self.log_dir = configure(
            home, sys.executable, [str(RECORDING_SERVER), str(self.received)], ANY_TOOL
        )
        self.stderr = tmp_path / "proxy-stderr.txt"
        read_end, write_end = os.pipe()
        with self.stderr.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [str(CLI), "run"],
                stdin=subprocess.PIPE,
                stdout=write_end,
                stderr=stderr,
                env=proxy_env(home),
            )
        os.close(write_end)
        self.output = os.fdopen(read_end, "rb")
        init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}}
        self.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
        assert json.loads(self.output.readline())["id"] == 1
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, body: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(body).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, request_id: int, tool: str, **arguments: str) -> None:
        params = {"name": tool, "arguments": arguments}
        self.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})

    def backend_saw(self) -> list[Any]:
        lines = self.received.read_text().splitlines()
        return [json.loads(line).get("id") for line in lines]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_client_that_stops_reading_ends_the_session(isolated_home: Path, tmp_path: Path) -> None:
    """The client closes its end of the proxy's output and sends one more request: no
    answer could reach it, so the request is never forwarded and the session ends, cleanly
    and on record — with the client's input still open."""
    client = ClosingClient(isolated_home, tmp_path)
    try:
        client.call(2, "echo", text="before")
        assert json.loads(client.output.readline())["id"] == 2
        client.output.close()  # the client stops reading
        client.call(3, "echo", text="after the client stopped reading")
        assert client.proc.wait(timeout=30) == 0
    finally:
        client.kill()
    assert 3 not in client.backend_saw()
    assert [
        r["request_id"]
        for r in records(client.log_dir, "decisions")
        if r.get("tool_name") == "echo"
    ] == ["2"]
    assert records(client.log_dir, "auth")[-1]["reason"] == "the client's output closed"
    assert "Traceback" not in client.stderr.read_text()


def test_a_client_that_stops_reading_and_goes_quiet_ends_the_session(
    isolated_home: Path, tmp_path: Path
) -> None:
    """The client closes its end of the proxy's output and sends nothing more, its input
    still open: the session ends at once, on record, not at the client's next message."""
    client = ClosingClient(isolated_home, tmp_path)
    try:
        client.call(2, "echo", text="the last message the client sends")
        assert json.loads(client.output.readline())["id"] == 2
        client.output.close()
        assert client.proc.wait(timeout=30) == 0
    finally:
        client.kill()
    assert records(client.log_dir, "auth")[-1]["reason"] == "the client's output closed"
    assert "Traceback" not in client.stderr.read_text()


def test_an_answer_the_client_no_longer_reads_ends_the_session(
    isolated_home: Path, tmp_path: Path
) -> None:
    """The client closes its end of the proxy's output while a request is in the backend:
    when the answer cannot be written (EPIPE), the session ends, without waiting for the
    client's input to close."""
    client = ClosingClient(isolated_home, tmp_path)
    go = tmp_path / "answer-now"
    try:
        client.call(2, "answer_when", path=str(go))
        deadline = time.monotonic() + 30
        while 2 not in client.backend_saw() and time.monotonic() < deadline:
            time.sleep(0.02)
        client.output.close()  # the client stops reading; then the answer comes
        go.touch()
        assert client.proc.wait(timeout=30) == 0
    finally:
        client.kill()
    assert 2 in client.backend_saw()
    assert records(client.log_dir, "auth")[-1]["reason"] == "the client's output closed"
    assert "Traceback" not in client.stderr.read_text()


def _wait_until_backend_saw(client: ClosingClient, request_id: int) -> None:
    deadline = time.monotonic() + 30
    while request_id not in client.backend_saw():
        assert time.monotonic() < deadline, f"request {request_id} never reached the backend"
        time.sleep(0.02)


def test_after_the_audit_trail_fails_no_backend_answer_passes(
    isolated_home: Path, tmp_path: Path
) -> None:
    """Request 2 is in the backend when the audit trail fails (its decisions file removed;
    request 3 finds it and is denied). The backend then answers 2, in the moment before the
    process ends: the answer does not reach the client — a denial does — and the answer is
    recorded in the fallback file, where the failed trail sends every record."""
    client = ClosingClient(isolated_home, tmp_path)
    go = tmp_path / "answer-now"
    try:
        client.call(2, "answer_when", path=str(go))
        _wait_until_backend_saw(client, 2)
        (client.log_dir / "decisions.jsonl").unlink()
        client.call(3, "echo", text="finds the trail failing")
        third = json.loads(client.output.readline())
        assert third["id"] == 3
        assert "audit trail cannot be written" in third["error"]["message"]
        go.touch()  # the backend answers 2 now
        second = json.loads(client.output.readline())
        assert client.proc.wait(timeout=30) == 13
    finally:
        client.kill()
    assert second["id"] == 2
    assert "result" not in second
    assert second["error"]["code"] == DENIED
    assert "the backend's answer was withheld (request 2)" in second["error"]["message"]
    assert client.output.read() == b""  # nothing else came
    fallback = isolated_home / ".local" / "state" / "mcp-acp" / "audit-fallback.jsonl"
    kept = [json.loads(line)["event"] for line in fallback.read_text().splitlines()]
    answer = [e for e in kept if e.get("request_id") == "2"]
    assert [(e["direction"], e["outcome"], e["error_code"]) for e in answer] == [
        ("server_to_client", "error", DENIED)
    ]


def test_a_request_whose_decision_cannot_be_written_is_on_record_as_not_forwarded(
    isolated_home: Path, tmp_path: Path
) -> None:
    """The policy allows request 2, but its decision record cannot be written (the decisions
    file removed): the request is denied, never forwarded, and the proxy shuts down. Its
    operation record "forwarded", handed over with the decision, is followed by one that
    says it was denied — in the fallback file, where the failed trail sends every record —
    so the request's last operation record is true."""
    client = ClosingClient(isolated_home, tmp_path)
    try:
        (client.log_dir / "decisions.jsonl").unlink()
        client.call(2, "echo", text="never sent")
        answer = json.loads(client.output.readline())
        assert client.proc.wait(timeout=30) == 13
    finally:
        client.kill()
    assert answer["id"] == 2
    assert answer["error"]["code"] == DENIED
    assert "audit trail cannot be written" in answer["error"]["message"]
    assert 2 not in client.backend_saw()
    fallback = isolated_home / ".local" / "state" / "mcp-acp" / "audit-fallback.jsonl"
    kept = [json.loads(line)["event"] for line in fallback.read_text().splitlines()]
    (decision,) = [e for e in kept if e.get("request_id") == "2" and e["event"] == "decision"]
    assert decision["effect"] == "allow"
    operations = [r for r in records(client.log_dir, "operations") if "outcome" in r]
    operations += [e for e in kept if e.get("stream") == "operations"]
    mine = [r for r in operations if r["request_id"] == "2"]
    assert (mine[-1]["outcome"], mine[-1].get("error_code")) == ("denied", DENIED)
    assert mine[-1]["reason"].startswith("not forwarded: the audit trail cannot be written (")
    assert mine[-1] in kept


def test_requests_in_the_backend_are_answered_at_a_fail_closed_exit(
    isolated_home: Path, tmp_path: Path
) -> None:
    """Request 2 is in the backend, which never answers it, when the audit trail fails: as
    the process ends, the client gets an error for 2 instead of waiting for ever, and that
    answer is on record."""
    client = ClosingClient(isolated_home, tmp_path)
    try:
        client.call(2, "answer_when", path=str(tmp_path / "never"))
        _wait_until_backend_saw(client, 2)
        (client.log_dir / "decisions.jsonl").unlink()
        client.call(3, "echo", text="finds the trail failing")
        third = json.loads(client.output.readline())
        second = json.loads(client.output.readline())
        assert client.proc.wait(timeout=30) == 13
    finally:
        client.kill()
    assert third["id"] == 3
    assert second["id"] == 2
    assert second["error"]["code"] == -32000
    message = second["error"]["message"]
    assert "audit failure" in message
    assert "before the backend answered (request 2)" in message
    answers = [
        r
        for r in records(client.log_dir, "operations")
        if r.get("request_id") == "2" and r["direction"] == "server_to_client"
    ]
    assert [(r["outcome"], r["error_code"]) for r in answers] == [("error", -32000)]
