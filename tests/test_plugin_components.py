"""What a plugin's components do wrong, reported as the plugin's, through the real CLI.

A factory's product is checked against its contract (:mod:`mcp_acp.protocols`) when it is
built — by ``config validate``, ``posture`` and ``run`` alike — and an audit sink that
fails with something other than ``AuditError`` is named, at start and mid-session. The
plugin is a real one, found through its entry point (a ``.dist-info`` on ``PYTHONPATH``);
``WALK_MODE`` says how it misbehaves. The backend is the stdlib-only recording server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import (
    ALLOW_ECHO,
    CLI,
    DENIED,
    E2E,
    Proxy,
    configure,
    install_plugin,
    proxy_env,
    records,
    site_path,
    use_plugin,
)

PEER = E2E / "peers" / "recording_server.py"
POLICY = ALLOW_ECHO

PLUGIN = """
import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import ApprovalOutcome, ApprovalResult, Decision, Effect
from mcp_acp.models import PostureResult, PostureStatus

MODE = os.environ.get("WALK_MODE", "")


class Check:
    name = "walk-check"

    async def check(self):
        now = datetime.now(UTC)
        return PostureResult(check=self.name, status=PostureStatus.PASS, detail="", checked_at=now)


class PlainCheck(Check):
    def check(self):  # forgot async
        now = datetime.now(UTC)
        return PostureResult(check=self.name, status=PostureStatus.PASS, detail="", checked_at=now)


class Approver:
    name = "walk-approver"

    async def request_approval(self, request):
        return ApprovalOutcome(result=ApprovalResult.ALLOW_ONCE, approver=self.name)


class EndingApprover(Approver):
    def ended_at_exit(self, why):  # optional: the approvals it held, at the end
        raise SystemExit(0)


APPROVERS = {"ended-exit": EndingApprover}


class Engine:
    policy_id = "walk"

    async def decide(self, request):  # a coroutine is not a decision
        return Decision(effect=Effect.ALLOW, policy_id="walk", rule_id="all", reason="all")


class CouldEngine:
    policy_id = "walk"

    def decide(self, request):  # no call is allowed; the rest is
        if request.action.mcp_method == "tools/call":
            return Decision(effect=Effect.DENY, policy_id="walk", rule_id=None, reason="none")
        return Decision(effect=Effect.ALLOW, policy_id="walk", rule_id="all", reason="all")

    def could_allow(self, request):  # optional: may a listed tool be used at all?
        return "no"  # not a bool (and truthy)


class AsyncCouldEngine(CouldEngine):
    async def could_allow(self, request):  # a coroutine, truthy, never run
        return False


ENGINES = {"could-str": CouldEngine, "could-async": AsyncCouldEngine}


class Sink:
    async def start(self):
        if MODE == "sink-start":
            raise PermissionError(13, "Permission denied", "/var/log/walk")
        if MODE == "sink-start-exit":
            raise SystemExit(0)
        if MODE == "sink-start-hang":  # a network sink that never connects
            await asyncio.Event().wait()

    async def write(self, event):
        if MODE == "sink-write" and Path(os.environ["WALK_DISK_FULL"]).exists():
            raise OSError(28, "No space left on device")
        if MODE == "sink-cancel" and Path(os.environ["WALK_DISK_FULL"]).exists():
            raise asyncio.CancelledError()  # as if its own writer task had been cancelled
        if MODE == "sink-exit" and Path(os.environ["WALK_DISK_FULL"]).exists():
            raise SystemExit(0)
        if MODE == "sink-interrupt" and Path(os.environ["WALK_DISK_FULL"]).exists():
            raise KeyboardInterrupt

    def check_health(self):  # optional: called every audit.health_check_seconds
        if MODE == "sink-health" and Path(os.environ["WALK_DISK_FULL"]).exists():
            raise OSError(28, "No space left on device")
        if MODE == "sink-health-exit" and Path(os.environ["WALK_DISK_FULL"]).exists():
            raise SystemExit(0)

    async def close(self):
        pass


class AsyncSoonSink(Sink):
    async def write_soon(self, event):  # returns a coroutine, not the future it should
        await self.write(event)


class AsyncSyncSink(Sink):
    async def write_sync(self, event):  # called at exit, when no loop runs it
        await self.write(event)


SINKS = {"soon-async": AsyncSoonSink, "sync-async": AsyncSyncSink}


def factory(cls):
    def build(options, context):
        if MODE == "factory-exit":
            raise SystemExit(0)  # what sys.exit(0) raises
        return None if MODE == "none" else cls()

    return build


@hookimpl
def register_posture_checks(register):
    register("walk-check", factory(PlainCheck if MODE == "plain" else Check))


@hookimpl
def register_approvers(register):
    register("walk-approver", factory(APPROVERS.get(MODE, Approver)))


@hookimpl
def register_policy_engines(register):
    register("walk-engine", factory(ENGINES.get(MODE, Engine)))


@hookimpl
def register_audit_sinks(register):
    register("walk-sink", factory(SINKS.get(MODE, Sink)))
"""

#: The config sections that select each of the plugin's components; its field.
SELECT: dict[str, tuple[dict[str, Any], str]] = {
    "posture check": ({"posture": {"checks": [{"use": "walk-check"}]}}, "posture.checks[0]"),
    "approver": ({"approver": {"use": "walk-approver"}}, "approver"),
    "policy engine": ({"policy": {"use": "walk-engine"}}, "policy"),
    "audit sink": ({"sinks": [{"use": "jsonl"}, {"use": "walk-sink"}]}, "audit.sinks[1]"),
}

Select = Callable[[str, str], dict[str, str]]


@pytest.fixture
def walk(isolated_home: Path, tmp_path: Path) -> Select:
    """A config for the recording backend and the plugin ``walk`` installed; called with a
    kind (a key of :data:`SELECT`) and a mode, it allows the plugin, selects its component
    of that kind, and returns the environment ``mcp-acp`` runs in with that mode."""
    configure(isolated_home, sys.executable, [str(PEER), str(tmp_path / "received.jsonl")], POLICY)
    site = tmp_path / "site"
    install_plugin(site, module="walk_plugin", source=PLUGIN, name="walk")
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"

    def select(kind: str, mode: str) -> dict[str, str]:
        settings = json.loads(config_file.read_text())
        settings["plugins"] = {"allow": ["walk"]}
        sections = dict(SELECT[kind][0])
        if "sinks" in sections:
            settings["audit"]["sinks"] = sections.pop("sinks")
        settings.update(sections)
        config_file.write_text(json.dumps(settings))
        env = {**proxy_env(isolated_home), "PYTHONPATH": site_path(site), "WALK_MODE": mode}
        env["WALK_DISK_FULL"] = str(tmp_path / "disk-full")
        return env

    return select


def mcp_acp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines that report an error (a warning about the local identity is not one)."""
    return [
        line
        for line in result.stderr.splitlines()
        if "error" in line.split(":", 1)[0] or line.startswith("mcp-acp: ")
    ]


@pytest.mark.parametrize(
    ("kind", "mode", "contract", "gap"),
    [
        ("posture check", "none", "a PostureCheck", "it lacks name and check()"),
        ("approver", "none", "an Approver", "it lacks name and request_approval()"),
        ("policy engine", "none", "a PolicyEngine", "it lacks policy_id and decide()"),
        ("audit sink", "none", "an AuditSink", "it lacks start(), write() and close()"),
        (
            "posture check",
            "plain",
            "a PostureCheck",
            "its check() is not async def, and mcp-acp awaits it",
        ),
        (
            "policy engine",
            "",
            "a PolicyEngine",
            "its decide() is async def, and mcp-acp calls it without awaiting",
        ),
    ],
)
def test_config_validate_checks_what_a_factory_returns(
    walk: Select, kind: str, mode: str, contract: str, gap: str
) -> None:
    """Not ``ok``: one line naming the component, its plugin and field, the contract and
    what is missing; exit 11."""
    field = SELECT[kind][1]
    name = {"posture check": "walk-check", "policy engine": "walk-engine"}.get(kind)
    name = name or f"walk-{kind.split()[-1]}"
    returned = "NoneType" if mode == "none" else {"posture check": "PlainCheck"}.get(kind, "Engine")
    result = mcp_acp(walk(kind, mode), "config", "validate")
    assert result.returncode == 11, result.stderr
    assert "ok:" not in result.stdout
    assert error_lines(result) == [
        f"plugin error: {kind} {name!r} (plugin 'walk', config field {field}) returned "
        f"{returned}, not {contract} ({gap}) — fix: the plugin's factory must return "
        f"{contract} (see mcp_acp.protocols): report it to the authors of plugin 'walk', or "
        f"choose another {kind} at {field}.use"
    ]


@pytest.mark.parametrize("kind", ["posture check", "approver", "audit sink"])
def test_run_refuses_a_component_that_is_not_one(
    walk: Select, isolated_home: Path, tmp_path: Path, kind: str
) -> None:
    """``run`` stops at start-up with the same line, exit 11 — not an internal error, a
    posture check stuck in its thread, or an approver that denies every 'ask' later; and
    the backend is never started."""
    result = mcp_acp(walk(kind, "none"), "run")
    assert result.returncode == 11, result.stderr
    lines = error_lines(result)
    assert lines, result.stderr
    assert lines[-1].startswith(f"plugin error: {kind} 'walk-"), result.stderr
    assert f"(plugin 'walk', config field {SELECT[kind][1]}) returned NoneType" in lines[-1]
    assert "internal error" not in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "received.jsonl").exists()


@pytest.mark.parametrize(
    ("mode", "returned", "member"),
    [("soon-async", "AsyncSoonSink", "write_soon"), ("sync-async", "AsyncSyncSink", "write_sync")],
)
def test_a_sinks_optional_methods_are_checked_when_present(
    walk: Select, mode: str, returned: str, member: str
) -> None:
    """An ``async def write_soon`` (or ``write_sync``) is refused as the plugin's mistake,
    exit 11 — not left to fail at the first record, where a coroutine is no future and a
    write at exit runs on no loop."""
    result = mcp_acp(walk("audit sink", mode), "config", "validate")
    assert result.returncode == 11, result.stderr
    assert error_lines(result) == [
        f"plugin error: audit sink 'walk-sink' (plugin 'walk', config field audit.sinks[1]) "
        f"returned {returned}, not an AuditSink (its {member}() is async def, and mcp-acp calls "
        f"it without awaiting) — fix: the plugin's factory must return an AuditSink (see "
        "mcp_acp.protocols): report it to the authors of plugin 'walk', or choose another "
        "audit sink at audit.sinks[1].use"
    ]


@pytest.mark.parametrize("command", [("config", "validate"), ("run",)])
def test_a_factory_that_exits_is_the_plugins_error(
    walk: Select, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A factory calling ``sys.exit(0)``: a plugin error naming the component (exit 11) —
    before, ``config validate`` ended with status 0, saying nothing, and ``run`` with 0
    and a logging error."""
    result = mcp_acp(walk("approver", "factory-exit"), *command)
    assert result.returncode == 11, result.stderr
    assert error_lines(result) == [
        "plugin error: approver 'walk-approver' (plugin 'walk', config field approver) "
        "failed to start: SystemExit: 0 — fix: check the options under approver.config"
    ]
    assert not (tmp_path / "received.jsonl").exists()


def test_an_engines_could_allow_is_checked_when_present(walk: Select) -> None:
    """``could_allow``, the optional member list filtering calls without awaiting: an
    ``async def`` one is refused as the plugin's mistake (exit 11) — before, its coroutine
    (truthy, never run) listed every tool the policy denies."""
    result = mcp_acp(walk("policy engine", "could-async"), "config", "validate")
    assert result.returncode == 11, result.stderr
    assert error_lines(result)[0].startswith(
        "plugin error: policy engine 'walk-engine' (plugin 'walk', config field policy) "
        "returned AsyncCouldEngine, not a PolicyEngine (its could_allow() is async def, and "
        "mcp-acp calls it without awaiting) — fix: "
    )


def test_an_engines_could_allow_answering_no_bool_hides_the_entry(
    walk: Select, isolated_home: Path
) -> None:
    """A ``could_allow`` answering anything but a ``bool`` has failed: the tools are not
    listed (as when it raises) — before, its truthy ``"no"`` listed them all."""
    proxy = Proxy(isolated_home, walk("policy engine", "could-str"))
    try:
        proxy.initialize()
        assert proxy.call("tools/list")["result"]["tools"] == []
    finally:
        proxy.close()
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    assert "could_allow() returned str, not a bool" in stderr


def test_an_approvers_sys_exit_at_the_end_of_the_session_is_contained(
    walk: Select, isolated_home: Path
) -> None:
    """An approver whose ``ended_at_exit`` calls ``sys.exit(0)`` as the session ends: logged
    as its failure, and the session still ends as it must — ``session_ended`` on record.
    Before, the ``SystemExit`` left the end of the session half done, unrecorded."""
    proxy = Proxy(isolated_home, walk("approver", "ended-exit"))
    try:
        proxy.initialize()
    finally:
        code = proxy.close()
    assert code == 0
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    assert "ended approvals not noted: the approver failed: SystemExit: 0" in stderr
    log_dir = isolated_home / ".local" / "state" / "mcp-acp" / "log"
    assert records(log_dir, "auth")[-1]["event"] == "session_ended"


def test_posture_command_checks_what_a_factory_returns(walk: Select) -> None:
    result = mcp_acp(walk("posture check", "none"), "posture")
    assert result.returncode == 11, result.stderr
    assert error_lines(result)[-1].startswith(
        "plugin error: posture check 'walk-check' (plugin 'walk', config field "
        "posture.checks[0]) returned NoneType, not a PostureCheck"
    )


def test_a_sink_failing_to_start_is_named(
    walk: Select, isolated_home: Path, tmp_path: Path
) -> None:
    """A sink's ``start()`` raising ``PermissionError``: an audit failure (exit 13) naming
    the sink, its plugin and field — not an internal error naming neither."""
    result = mcp_acp(walk("audit sink", "sink-start"), "run")
    assert result.returncode == 13, result.stderr
    assert error_lines(result)[-1] == (
        "audit error: audit sink 'walk-sink' (plugin 'walk', config field audit.sinks[1]) "
        "failed to start: PermissionError: [Errno 13] Permission denied: '/var/log/walk' — "
        "fix: check what that sink writes to (its options, its permissions, free space); a "
        "sink should raise AuditError, so report anything else to its plugin's authors"
    )
    assert not (tmp_path / "received.jsonl").exists()


def test_a_sink_exiting_in_its_start_is_named(
    walk: Select, isolated_home: Path, tmp_path: Path
) -> None:
    """A sink's ``start()`` calling ``sys.exit(0)``: an audit failure naming the sink (exit
    13), not a silent exit 0 that a client reads as a clean stop."""
    result = mcp_acp(walk("audit sink", "sink-start-exit"), "run")
    assert result.returncode == 13, result.stderr
    assert error_lines(result)[-1].startswith(
        "audit error: audit sink 'walk-sink' (plugin 'walk', config field audit.sinks[1]) "
        "failed to start: SystemExit: 0 — fix: "
    )
    assert not (tmp_path / "received.jsonl").exists()


def test_a_sink_whose_start_never_returns_ends_the_process(
    walk: Select, isolated_home: Path, tmp_path: Path
) -> None:
    """A sink's ``start()`` that never returns is timed like a write: after
    ``audit.write_timeout_seconds`` the process ends (exit 13) naming the sink, instead of
    waiting for ever with nothing served and nothing said."""
    env = walk("audit sink", "sink-start-hang")
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    settings = json.loads(config_file.read_text())
    settings["audit"]["write_timeout_seconds"] = 1
    config_file.write_text(json.dumps(settings))
    result = mcp_acp(env, "run")
    assert result.returncode == 13, result.stderr
    assert error_lines(result)[-1].startswith(
        "mcp-acp: shutting down: audit error: audit sink 'walk-sink' (plugin 'walk', config "
        "field audit.sinks[1]) did not finish starting (its write test) in "
    )
    assert not (tmp_path / "received.jsonl").exists()


ENOSPC = "OSError: [Errno 28] No space left on device"


@pytest.mark.parametrize(
    ("mode", "failed"),
    [
        ("sink-write", f"failed: {ENOSPC}"),
        ("sink-health", f"failed its health check: {ENOSPC}"),
        ("sink-cancel", "failed: its write was cancelled, and not by mcp-acp: CancelledError"),
        ("sink-exit", "failed: SystemExit: 0"),
        ("sink-interrupt", "failed: KeyboardInterrupt"),
        ("sink-health-exit", "failed its health check: SystemExit: 0"),
    ],
)
def test_a_sink_failing_mid_session_is_named(
    walk: Select, isolated_home: Path, tmp_path: Path, mode: str, failed: str
) -> None:
    """A sink's ``write()`` — or its health check, with no request in flight — raising
    ``OSError`` mid-session: the proxy ends with exit 13 (a request is denied), and the
    line and the shutdown record say which sink. So does a ``write()`` raising
    ``CancelledError`` of its own (its writer task cancelled): the client cancelled
    nothing, and the request is denied, not dropped as if it had. And so does a sink
    whose ``write()`` or health check calls ``sys.exit(0)`` or raises
    ``KeyboardInterrupt``: before, the proxy ended with exit 0 (or 130), the request
    unanswered, the record lost and nothing said."""
    env = walk("audit sink", mode)
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    settings = json.loads(config_file.read_text())
    settings["audit"]["health_check_seconds"] = 1
    config_file.write_text(json.dumps(settings))
    log_dir = isolated_home / ".local" / "state" / "mcp-acp" / "log"
    proxy = Proxy(isolated_home, env)
    try:
        proxy.initialize()
        echo = {"name": "echo", "arguments": {"text": "hi"}}
        assert "result" in proxy.call("tools/call", echo)
        (tmp_path / "disk-full").touch()
        if not mode.startswith("sink-health"):
            denied = proxy.call("tools/call", echo)
            assert denied["error"]["code"] == DENIED
            assert "audit trail cannot be written" in denied["error"]["message"]
        assert proxy.proc.wait(timeout=30) == 13
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
        proxy.close()
    named = f"audit sink 'walk-sink' (plugin 'walk', config field audit.sinks[1]) {failed}"
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    assert f"mcp-acp: shutting down: audit error: {named} — fix: " in stderr
    shutdown = json.loads((log_dir / "shutdowns.jsonl").read_text().splitlines()[0])
    assert (shutdown["failure_class"], shutdown["exit_code"]) == ("audit", 13)
    assert shutdown["reason"].startswith(named)
    assert records(log_dir, "auth")[-1]["event"] == "session_ended"


SOON_SINK = """
from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig
from mcp_acp.hookspecs import hookimpl


class SoonSink(JsonlAuditSink):
    def write_soon(self, event):  # a plain def, as checked, returning write()'s coroutine
        return self.write(event)


@hookimpl
def register_audit_sinks(register):
    register("soon-jsonl", SoonSink.from_config, JsonlConfig, summary="test: write_soon wrong")
"""


def test_a_write_soon_that_returns_no_future_fails_the_trail_naming_the_sink(
    isolated_home: Path, tmp_path: Path
) -> None:
    """The only sink's ``write_soon`` returns a coroutine, not a future (what an ``async
    def`` one returns; this one passes the build's check): its first record nothing waits
    on is that sink's failure — the request denied, nothing forwarded, exit 13 with the
    line and the shutdown record naming the sink — not an internal error for every request
    and exit 1."""
    received = tmp_path / "received.jsonl"
    log_dir = configure(isolated_home, sys.executable, [str(PEER), str(received)], POLICY)
    env = use_plugin(
        isolated_home,
        tmp_path / "site",
        module="soon_sink",
        source=SOON_SINK,
        name="soon-jsonl",
        use_for="audit.sinks",
    )
    proxy = Proxy(isolated_home, env)
    try:
        answer = proxy.initialize()  # its decision's companion is the first record handed over
        assert answer["error"]["code"] == DENIED, answer
        assert "audit trail cannot be written" in answer["error"]["message"]
    finally:
        code = proxy.close()
    assert code == 13
    named = (
        "audit sink 'soon-jsonl' (plugin 'soon-jsonl', config field audit.sinks[0]) failed: "
        "TypeError: write_soon() returned coroutine, not a future"
    )
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    assert f"mcp-acp: shutting down: audit error: {named} — fix: " in stderr
    assert "internal error" not in stderr
    shutdown = json.loads((log_dir / "shutdowns.jsonl").read_text().splitlines()[0])
    assert (shutdown["failure_class"], shutdown["exit_code"]) == ("audit", 13)
    assert shutdown["reason"].startswith(named)
    assert not received.exists() or not received.read_text()  # nothing was forwarded
