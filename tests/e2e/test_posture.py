"""Device posture through the real ``mcp-acp run`` process, with the example plugin's
``marker-file`` check on a real file: the start-up gate, a device that loses its posture
mid-session (the file is deleted), and ``mcp-acp posture``; and a check that breaks
mid-session (``proxy_helpers.use_mode_check``) in front of the recording server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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
    proxy_env,
    recording_notifier,
    records,
    use_mode_check,
    wait_for_text,
)

RECORDING_SERVER = E2E / "peers" / "recording_server.py"


def with_marker_check(home: Path, marker: Path) -> None:
    config_file = home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["plugins"] = {"allow": ["example-posture"]}
    config["posture"] = {
        "checks": [{"use": "marker-file", "config": {"path": str(marker)}}],
        "interval_seconds": 1,
    }
    config_file.write_text(json.dumps(config))


def posture(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "posture", "--json"],
        env=proxy_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gate_refuses_an_unhealthy_device(setup: Any, isolated_home: Path, tmp_path: Path) -> None:
    _, _, log_dir, _ = setup
    with_marker_check(isolated_home, tmp_path / "enrolled")
    env = proxy_env(isolated_home)
    notifier, notified = recording_notifier(tmp_path)
    env["PATH"] = f"{notifier}:{env['PATH']}"
    refused = subprocess.run(
        [str(CLI), "run"],
        stdin=subprocess.DEVNULL,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 15
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("posture error: device posture: marker-file is fail")
    assert "does not exist" in last
    failed = [r for r in records(log_dir, "auth") if r["event"] == "device_health_failed"]
    assert failed[-1]["detail"]["checks"][0]["status"] == "fail"
    (startup,) = [r for r in records(log_dir, "system") if r["event"] == "startup_refused"]
    assert startup["detail"]["failure_class"] == "posture"
    assert startup["detail"]["exit_code"] == 15
    # the client that started the proxy may hide its stderr: the desktop is told too
    shown = wait_for_text(notified).splitlines()
    assert shown[:4] == ["--app-name=mcp-acp", "--urgency=critical", "--", "mcp-acp did not start"]
    assert shown[4] == last

    result = posture(isolated_home)
    assert result.returncode == 15
    assert json.loads(result.stdout)[0]["status"] == "fail"


def test_posture_lost_mid_session_ends_it(setup: Any, isolated_home: Path, tmp_path: Path) -> None:
    _, project, log_dir, _ = setup
    marker = tmp_path / "enrolled"
    marker.write_text("enrolled\n")
    with_marker_check(isolated_home, marker)
    result = posture(isolated_home)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"check": "marker-file", "status": "pass", "detail": f"{marker} present"}
    ]

    env = proxy_env(isolated_home)
    notifier, notified = recording_notifier(tmp_path)
    env["PATH"] = f"{notifier}:{env['PATH']}"
    proxy = Proxy(isolated_home, env)
    try:
        proxy.initialize()
        read = {"name": "read_text_file", "arguments": {"path": str(project / "notes.md")}}
        assert "result" in proxy.call("tools/call", read)
        assert not notified.exists()
        marker.unlink()  # the device falls out of compliance
        assert proxy.proc.wait(timeout=30) == 15
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
        proxy.close()
    shown = wait_for_text(notified).splitlines()
    assert shown[3] == "mcp-acp stopped"
    assert shown[4].startswith("posture error: ")
    events = [r["event"] for r in records(log_dir, "auth")]
    assert events.index("device_health_passed") < events.index("device_health_failed")
    shutdown = json.loads((log_dir / "shutdowns.jsonl").read_text().splitlines()[-1])
    assert shutdown["failure_class"] == "posture"
    assert shutdown["exit_code"] == 15


@pytest.mark.parametrize(
    ("mode", "unknown"),
    [
        ("cancel", "mode is unknown: the check failed: CancelledError (it was not cancelled)"),
        ("exit", "mode is unknown: the check failed: SystemExit: 0"),
        ("interrupt", "mode is unknown: the check failed: KeyboardInterrupt"),
        ("stop-monitor", "the posture monitor stopped (its task was cancelled)"),
    ],
    ids=["CancelledError", "SystemExit", "KeyboardInterrupt", "monitor-stopped"],
)
def test_a_check_that_breaks_mid_session_ends_it(
    isolated_home: Path, tmp_path: Path, mode: str, unknown: str
) -> None:
    """A check that raises CancelledError, SystemExit or KeyboardInterrupt mid-session, or
    that stops the posture monitor itself: the device's health is no longer known, and the
    session ends as for a failed check (exit 15, recorded) — the monitor does not die
    quietly while the proxy goes on serving."""
    received = tmp_path / "received.jsonl"
    log_dir = configure(
        isolated_home, sys.executable, [str(RECORDING_SERVER), str(received)], ALLOW_ECHO
    )
    mode_file = tmp_path / "mode"
    proxy = Proxy(isolated_home, use_mode_check(isolated_home, tmp_path / "site", mode_file))
    try:
        proxy.initialize()  # the start-up gate passed
        echo = {"name": "echo", "arguments": {"text": "healthy"}}
        assert "result" in proxy.call("tools/call", echo)
        mode_file.write_text(mode)
        assert proxy.proc.wait(timeout=30) == 15
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
        proxy.close()
    shutdown = json.loads((log_dir / "shutdowns.jsonl").read_text().splitlines()[-1])
    assert shutdown["failure_class"] == "posture"
    assert shutdown["exit_code"] == 15
    assert unknown in shutdown["reason"]
    auth = records(log_dir, "auth")
    assert unknown in auth[-1]["reason"]  # session_ended says why
    assert auth[-1]["event"] == "session_ended"
    # and for whom, as session_started did (it named no one when a shutdown ended it)
    (started,) = [r for r in auth if r["event"] == "session_started"]
    assert auth[-1]["subject_id"] == started["subject_id"]
    assert auth[-1].get("issuer") == started.get("issuer")
    if mode != "stop-monitor":  # a round's result, on record like any other
        failed = [r for r in auth if r["event"] == "device_health_failed"]
        assert failed[-1]["detail"]["checks"][0]["status"] == "unknown"


@pytest.mark.parametrize(
    ("mode", "field"), [("odd-name", "check is list"), ("odd-detail", "detail is object")]
)
@pytest.mark.parametrize("when", ["gate", "mid-session"])
def test_a_check_whose_result_has_fields_of_the_wrong_type_is_unknown(
    isolated_home: Path, tmp_path: Path, mode: str, field: str, when: str
) -> None:
    """A ``PostureResult`` (the type checked) whose ``check`` is a list or whose ``detail``
    is no string: ``unknown``, like any other malformed answer — a posture failure, exit
    15, on record. The list used to crash the gate (an unrecorded internal error, exit 1)
    or the monitor; the object failed the audit trail that records the round (exit 13)."""
    received = tmp_path / "received.jsonl"
    log_dir = configure(
        isolated_home, sys.executable, [str(RECORDING_SERVER), str(received)], ALLOW_ECHO
    )
    mode_file = tmp_path / "mode"
    env = use_mode_check(isolated_home, tmp_path / "site", mode_file)
    unknown = f"mode is unknown: the check returned a PostureResult whose {field}, not str"
    if when == "gate":
        mode_file.write_text(mode)
        refused = subprocess.run(
            [str(CLI), "run"], stdin=subprocess.DEVNULL, env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 15, refused.stderr
        (startup,) = [r for r in records(log_dir, "system") if r["event"] == "startup_refused"]
        assert startup["detail"]["failure_class"] == "posture"
        assert unknown in startup["detail"]["reason"]
    else:
        proxy = Proxy(isolated_home, env)
        try:
            proxy.initialize()
            mode_file.write_text(mode)
            assert proxy.proc.wait(timeout=30) == 15
        finally:
            if proxy.proc.poll() is None:
                proxy.proc.kill()
            proxy.close()
        shutdown = json.loads((log_dir / "shutdowns.jsonl").read_text().splitlines()[-1])
        assert (shutdown["failure_class"], shutdown["exit_code"]) == ("posture", 15)
    failed = [r for r in records(log_dir, "auth") if r["event"] == "device_health_failed"]
    assert failed[-1]["detail"]["checks"][0]["status"] == "unknown"
    assert unknown in failed[-1]["reason"]


@pytest.mark.parametrize("failing", [0, 1])
def test_of_two_checks_with_one_name_a_failing_one_is_not_taken_for_passed(
    isolated_home: Path, tmp_path: Path, failing: int
) -> None:
    """Two entries of one check report the same name (as two ``linux-disk-encryption``
    entries with different ``paths`` would); one of them fails, below the failure
    threshold. A rule that requires that name must not allow, and ``mcp-acp status`` must
    not show it passed — whichever entry fails (the later result used to overwrite the
    earlier, so a failing first entry read as passed)."""
    received = tmp_path / "received.jsonl"
    configure(isolated_home, sys.executable, [str(RECORDING_SERVER), str(received)], ALLOW_ECHO)
    modes = [tmp_path / "a" / "mode", tmp_path / "b" / "mode"]
    for mode in modes:
        mode.parent.mkdir()
    env = use_mode_check(isolated_home, tmp_path / "site", modes[0], threshold=5)
    modes[1].write_text("pass")
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["posture"]["checks"].append(
        {"use": "mode-check", "config": {"mode_file": str(modes[1])}}
    )
    config["proxy"]["desktop_notifications"] = False
    config_file.write_text(json.dumps(config))
    policy = {
        "version": "1",
        "rules": [
            {
                "id": "echo-if-healthy",
                "effect": "allow",
                "conditions": {"tool_name": "echo", "posture": "mode"},
            }
        ],
    }
    (isolated_home / ".config" / "mcp-acp" / "policy.json").write_text(json.dumps(policy))
    proxy = Proxy(isolated_home, env)
    try:
        proxy.initialize()
        echo = {"name": "echo", "arguments": {"text": "healthy"}}
        assert "result" in proxy.call("tools/call", echo)
        modes[failing].write_text("fail")
        stderr = isolated_home / "proxy-stderr.txt"
        deadline = time.monotonic() + 30  # a round every second: its result is in force
        while "posture round failed (1 in a row)" not in stderr.read_text():
            assert proxy.proc.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "no failed round within 30 s"
            time.sleep(0.05)
        denied = proxy.call("tools/call", {"name": "echo", "arguments": {"text": "now"}})
        assert denied["error"]["code"] == DENIED, denied
        shown = subprocess.run(
            [str(CLI), "status", "--json"], env=env, capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0, shown.stderr
        (status,) = json.loads(shown.stdout)
        assert status["posture"] == {"mode": "fail"}
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
        proxy.close()
    assert "now" not in received.read_text()
