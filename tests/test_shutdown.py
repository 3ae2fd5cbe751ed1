"""The shutdown coordinator in a real process: it ends it with ``os._exit``, so whatever must
not outlive the process (the backend's process group, the control socket) is a clean-up it
runs first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_acp.errors import AuditError
from mcp_acp.shutdown import ShutdownCoordinator

SCRIPT = """
import sys
from pathlib import Path
from mcp_acp.errors import PostureError
from mcp_acp.shutdown import ShutdownCoordinator

here = Path(sys.argv[1])
coordinator = ShutdownCoordinator(log_dir=here / "log", fallback_path=here / "fallback.jsonl")

def broken():
    raise OSError("this clean-up fails")

coordinator.on_exit(broken)  # a failing clean-up does not keep the next from running
coordinator.on_exit(lambda: (here / "cleaned").write_text("yes"))
try:
    if sys.argv[2] == "trigger":
        coordinator.trigger(PostureError("device posture lost"))
    else:
        coordinator.stop_now(143, "SIGTERM received again while stopping")
finally:
    (here / "finally-ran").write_text("a finally block runs after os._exit: it must not")
"""


def _run(tmp_path: Path, how: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), how],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _shutdowns(tmp_path: Path) -> list[dict[str, object]]:
    lines = (tmp_path / "log" / "shutdowns.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_trigger_runs_the_clean_ups_then_exits_with_the_class_code(tmp_path: Path) -> None:
    done = _run(tmp_path, "trigger")
    assert done.returncode == 15, done.stderr
    assert (tmp_path / "cleaned").read_text() == "yes"
    assert not (tmp_path / "finally-ran").exists()
    assert "clean-up at shutdown failed: this clean-up fails" in done.stderr
    assert _shutdowns(tmp_path)[0]["failure_class"] == "posture"


def test_stop_now_records_why_runs_the_clean_ups_and_exits(tmp_path: Path) -> None:
    done = _run(tmp_path, "stop_now")
    assert done.returncode == 143, done.stderr
    assert (tmp_path / "cleaned").read_text() == "yes"
    assert not (tmp_path / "finally-ran").exists()
    assert "mcp-acp: stopping now: SIGTERM received again while stopping" in done.stderr
    (record,) = _shutdowns(tmp_path)
    assert record["failure_class"] == "signal"
    assert record["exit_code"] == 143
    assert record["reason"] == "SIGTERM received again while stopping"


def test_the_fallback_is_never_written_through_a_link_or_into_a_file_not_ours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fallback_path`` may be set in a shared directory, where anyone can plant a link to
    a file of the user's (a shell's start-up file) or a file of their own first: the event
    is appended to neither — it goes to stderr, as when the fallback cannot be written."""
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = tmp_path / "bashrc"
    victim.write_text("# the user's own\n")
    planted = shared / "fallback.jsonl"
    planted.symlink_to(victim)
    coordinator = ShutdownCoordinator(log_dir=tmp_path / "log", fallback_path=planted)
    coordinator.record_fallback({"event": "decision", "n": 1}, AuditError("disk full"))
    assert victim.read_text() == "# the user's own\n"
    err = capsys.readouterr().err
    assert f"audit fallback failed too (audit.fallback_path: {planted} is a symlink" in err
    planted.unlink()
    planted.write_text("")
    planted.chmod(0o666)  # theirs to read and rewrite
    coordinator.record_fallback({"event": "decision", "n": 2}, AuditError("disk full"))
    assert planted.read_text() == ""
    assert '"n": 2' in capsys.readouterr().err
    if os.geteuid() == 0:  # only root can give a file away
        planted.chmod(0o600)
        os.chown(planted, 65534, 65534)
        coordinator.record_fallback({"event": "decision", "n": 3}, AuditError("disk full"))
        assert planted.read_text() == ""
    planted.unlink()
    coordinator.record_fallback({"event": "decision", "n": 4}, AuditError("disk full"))
    assert json.loads(planted.read_text())["event"] == {"event": "decision", "n": 4}


def test_the_fallback_is_never_written_into_a_fifo_nor_a_directory_others_may_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO at the fallback path, with a reader (one without blocks the open: see
    ``test_a_fifo_where_the_audit_fallback_goes_still_ends_the_process``), is not a file:
    the event goes to stderr, which says so. Nor is the fallback written in a directory
    others may write that is not sticky (they could swap the file); a sticky one is fine."""
    shared = tmp_path / "shared"
    shared.mkdir()
    fallback = shared / "fallback.jsonl"
    os.mkfifo(fallback)
    reader = os.open(fallback, os.O_RDONLY | os.O_NONBLOCK)
    try:
        coordinator = ShutdownCoordinator(log_dir=tmp_path / "log", fallback_path=fallback)
        coordinator.record_fallback({"event": "decision", "n": 1}, AuditError("disk full"))
        assert os.read(reader, 1024) == b""
    finally:
        os.close(reader)
    err = capsys.readouterr().err
    assert f"(audit.fallback_path: {fallback} is a FIFO (named pipe), not a regular file)" in err
    assert '"n": 1' in err
    fallback.unlink()
    shared.chmod(0o777)
    coordinator.record_fallback({"event": "decision", "n": 2}, AuditError("disk full"))
    assert not fallback.exists()
    err = capsys.readouterr().err
    assert "(audit.fallback_path: refusing its directory: directory " in err
    assert "is writable by group or others (mode 0777)" in err
    shared.chmod(0o1777)
    coordinator.record_fallback({"event": "decision", "n": 3}, AuditError("disk full"))
    assert json.loads(fallback.read_text())["event"] == {"event": "decision", "n": 3}
