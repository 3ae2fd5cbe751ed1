"""``mcp-acp demo``: the real command, run as a user runs it, and what it leaves behind."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcp_acp.audit.chain import verify_stream
from mcp_acp.audit.events import STREAMS
from mcp_acp.cli import main
from mcp_acp.demo import driver

Run = Callable[..., subprocess.CompletedProcess[str]]


def _records(log_dir: Path, stream: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (log_dir / f"{stream}.jsonl").read_text().splitlines()]


def test_demo_shows_allow_deny_and_approval_and_keeps_a_verified_trail(
    run_cli: Run, tmp_path: Path, isolated_home: Path
) -> None:
    keep = tmp_path / "kept"
    result = run_cli("demo", "--keep", str(keep))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for expected in (
        "hidden:             run_command",
        'ALLOWED, the backend answered: "Welcome!',
        "DENIED, JSON-RPC error -32003",
        "denied by rule deny-secrets",
        "APPROVED (allow_once)",
        "logs show --stream decisions",
        "decisions: ok",
        "demo: all steps ended as expected.",
    ):
        assert expected in out, expected
    assert out.index("ALLOWED") < out.index("DENIED") < out.index("APPROVED")

    # the caller's home is untouched: everything went into the demo's own
    assert list(isolated_home.iterdir()) == []
    log_dir = keep / ".local" / "state" / "mcp-acp" / "log"
    for stream in STREAMS:
        verified = verify_stream(log_dir, stream)
        assert verified.ok, verified.describe()
    calls = [r for r in _records(log_dir, "decisions") if r.get("mcp_method") == "tools/call"]
    assert [(r["tool_name"], r["effect"], r.get("final_effect"), r["rule_id"]) for r in calls] == [
        ("read_note", "allow", None, "allow-reads"),
        ("read_note", "deny", None, "deny-secrets"),
        ("write_note", "ask", "allow", "ask-changes"),
    ]
    assert calls[1]["paths"] == [str(keep.resolve() / "notes" / ".env")]
    assert calls[2]["approver"] == "cli"
    assert calls[2]["approved_by"]
    assert calls[2]["approval_seconds"] > 0
    assert (keep / "notes" / "todo.md").read_text() == driver.TODO
    forwarded = [
        r["request_id"]
        for r in _records(log_dir, "operations")
        if r.get("direction") == "client_to_server" and r["outcome"] == "forwarded"
    ]
    assert calls[1]["request_id"] not in forwarded  # the denied read never reached the backend
    assert calls[2]["request_id"] in forwarded
    events = [r["event"] for r in _records(log_dir, "auth")]
    assert events == ["stream_opened", "session_started", "session_ended"]

    # what it printed is what the kept home says
    shown = run_cli("--config", str(keep / ".config/mcp-acp/config.json"), "audit", "verify")
    assert shown.returncode == 0, shown.stderr


def test_demo_leaves_nothing_behind(run_cli: Run) -> None:
    result = run_cli("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Everything happens in (\S+) ", result.stdout)
    assert match is not None
    assert not Path(match.group(1)).exists()


def test_keep_refuses_a_directory_in_use(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("mine")
    result = run_cli("demo", "--keep", str(tmp_path / "used"))
    assert result.returncode == 2
    assert "is not an empty directory" in result.stderr
    assert (tmp_path / "used" / "file").read_text() == "mine"


def test_a_step_that_ends_differently_fails_the_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The starter policy without its secrets rule: the demo says so and exits 1."""
    lax = json.loads(driver.demo_policy())
    lax["rules"] = [rule for rule in lax["rules"] if rule["id"] != "deny-secrets"]
    monkeypatch.setattr(driver, "demo_policy", lambda: json.dumps(lax))
    with pytest.raises(SystemExit) as exited:
        main(["demo"])
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert "demo error:" in captured.err
    assert "was not denied by deny-secrets" in captured.err
    assert "all steps ended as expected" not in captured.out


def test_keep_where_no_directory_can_be_made_is_a_usage_error(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = run_cli("demo", "--keep", str(tmp_path / "a-file" / "x"))
    assert result.returncode == 2, result.stderr
    assert "cannot be made the demo's home: Not a directory" in result.stderr
    assert "internal error" not in result.stderr
