"""Fail closed, with real processes and real errors: nothing passes once the trail breaks.

Each test runs ``victim.py`` — a process that writes a decision record through the audit
trail and only then makes a "backend call" — breaks the trail from outside, and checks:
the request in flight is denied, the backend saw no call for it, the event reached the
fallback file, ``shutdowns.jsonl`` says why, and the process exited with the audit code (13).
"""

from __future__ import annotations

import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from strace_helpers import Hang, needs_strace

from mcp_acp.audit.chain import verify_stream

VICTIM = Path(__file__).with_name("victim.py")
AUDIT_EXIT = 13


class Victim:
    def __init__(
        self,
        base: Path,
        *,
        health: float = 30.0,
        command_prefix: list[str] | None = None,
        preexec: Any = None,
        write_timeout: float = 30.0,
    ) -> None:
        self.log_dir = base / "logs"
        self.fallback = base / "state" / "audit-fallback.jsonl"
        self.backend = base / "backend-calls.txt"
        args = [
            sys.executable,
            str(VICTIM),
            str(self.log_dir),
            str(self.fallback),
            str(self.backend),
            str(health),
            str(write_timeout),
        ]
        # stderr to a file: a full, unread pipe would block the victim
        self.stderr_path = base / f"victim-stderr-{time.monotonic_ns()}.txt"
        with self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [*(command_prefix or []), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                preexec_fn=preexec,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.first = self.read(timeout=30)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def read(self, timeout: float = 20) -> str:
        return self.lines.get(timeout=timeout)

    def send(self, command: str, timeout: float = 20) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout=timeout)

    def backend_calls(self) -> list[str]:
        return self.backend.read_text().split() if self.backend.exists() else []

    def fallback_events(self) -> list[dict[str, Any]]:
        if not self.fallback.exists():
            return []
        return [json.loads(line) for line in self.fallback.read_text().splitlines()]

    def shutdowns(self) -> list[dict[str, Any]]:
        for place in (self.log_dir, self.fallback.parent):
            path = place / "shutdowns.jsonl"
            if path.exists():
                return [json.loads(line) for line in path.read_text().splitlines()]
        return []

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def victim(tmp_path: Path) -> Any:
    started: list[Victim] = []

    def start(**kwargs: Any) -> Victim:
        v = Victim(tmp_path, **kwargs)
        started.append(v)
        return v

    yield start
    for v in started:
        v.close()


def assert_shut_down_for(v: Victim, request_id: str, words: str) -> None:
    assert v.wait() == AUDIT_EXIT
    assert request_id not in v.backend_calls()
    kept = [e for e in v.fallback_events() if e["event"].get("request_id") == request_id]
    assert kept, v.fallback_events()
    assert words in kept[0]["audit_error"]
    shutdowns = v.shutdowns()
    assert shutdowns[0]["failure_class"] == "audit"
    assert shutdowns[0]["exit_code"] == AUDIT_EXIT
    assert words in shutdowns[0]["reason"]


def test_allowed_request_is_recorded_before_the_backend_call(victim: Any) -> None:
    v = victim()
    assert v.first == "READY"
    assert v.send("req r1") == "OK r1"
    assert v.backend_calls() == ["r1"]
    line = (v.log_dir / "decisions.jsonl").read_text().splitlines()[-1]
    assert json.loads(line)["request_id"] == "r1"


def test_audit_file_deleted_while_running(victim: Any) -> None:
    v = victim()
    assert v.send("req r1") == "OK r1"
    (v.log_dir / "decisions.jsonl").unlink()
    answer = v.send("req r2")
    assert answer.startswith("DENIED r2: audit file")
    assert "deleted or moved" in answer
    assert_shut_down_for(v, "r2", "deleted or moved")
    assert v.shutdowns()[0]["detail"] == "audit write failed"  # as docs/audit.md shows it
    assert v.backend_calls() == ["r1"]
    ended = json.loads((v.log_dir / "auth.jsonl").read_text().splitlines()[-1])
    assert ended["event"] == "session_ended"
    assert ended["session_id"] == "victim"
    assert "audit failure: audit file" in ended["reason"]


def test_audit_file_replaced_while_running(victim: Any) -> None:
    v = victim()
    assert v.send("req r1") == "OK r1"
    impostor = v.log_dir / "impostor"
    impostor.write_text("")
    os.replace(impostor, v.log_dir / "decisions.jsonl")
    assert v.send("req r2").startswith("DENIED r2")
    assert_shut_down_for(v, "r2", "replaced while in use")


@pytest.mark.parametrize("how", ["directory moved", "directory replaced", "file moved"])
def test_audit_file_or_directory_moved_while_running(victim: Any, tmp_path: Path, how: str) -> None:
    v = victim()
    assert v.send("req r1") == "OK r1"
    if how == "file moved":
        os.rename(v.log_dir / "decisions.jsonl", v.log_dir / "decisions.old")
    else:
        os.rename(v.log_dir, tmp_path / "moved-logs")
        if how == "directory replaced":  # a fresh, empty directory at the same path
            v.log_dir.mkdir(mode=0o700)
    assert v.send("req r2").startswith("DENIED r2")
    assert_shut_down_for(v, "r2", "deleted or moved")


def test_file_size_limit_efbig_then_recovery(victim: Any) -> None:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    v = victim(preexec=limit)
    assert v.first == "READY"
    # 50 records of ~500 bytes pass the 8 KiB limit; each failed one is also refused by the
    # fallback file and stderr (same limit), and all must be answered within the 0.2 s
    # shutdown grace: 200 did not always make it on a loaded 2-core machine
    answer = v.send("burst 50")
    assert answer.startswith("DENIED burst")
    assert "File too large" in answer
    assert v.wait() == AUDIT_EXIT
    assert v.shutdowns()[0]["failure_class"] == "audit"
    # the cut-off write left a partial line; verify says so, a restart sets it aside
    before = verify_stream(v.log_dir, "decisions")
    assert not before.ok
    assert "partial last line" in (before.problem or "")
    again = victim()
    assert again.first == "READY"
    assert again.send("req r9") == "OK r9"
    again.proc.stdin.close()  # type: ignore[union-attr]
    assert again.wait() == 0
    after = verify_stream(v.log_dir, "decisions")
    assert after.ok, after.describe()
    assert after.partial_lines
    assert "partial line(s) set aside" in after.describe()


def test_health_monitor_shuts_down_without_traffic(victim: Any) -> None:
    v = victim(health=1.0)
    assert v.first == "READY"
    (v.log_dir / "auth.jsonl").unlink()
    assert v.wait(timeout=20) == AUDIT_EXIT
    shutdown = v.shutdowns()[0]
    assert shutdown["detail"] == "audit health monitor"
    assert "auth.jsonl was deleted or moved" in shutdown["reason"]
    assert any(e["event"]["event"] == "audit_health_failed" for e in v.fallback_events())


def wait_for_shutdown(v: Victim, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not v.shutdowns():
        assert time.monotonic() < deadline, "no shutdown recorded: " + v.stderr_path.read_text()
        time.sleep(0.05)
    return v.shutdowns()[0]


@needs_strace
def test_an_audit_write_that_never_returns_fails_the_trail_and_ends_the_process(
    victim: Any,
) -> None:
    """The decision's ``fsync`` does not return (a hung mount): it holds the event loop, and
    with it the loop's signal handlers. The watchdog thread fails the trail once the record
    has waited ``write_timeout`` seconds: the request is never forwarded, and the process
    ends with the audit code — before, it hung for as long as the write did."""
    v = victim(write_timeout=1.0)
    assert v.first == "READY"
    hang = Hang(v.proc.pid, v.log_dir / "decisions.jsonl", "fsync")
    try:
        assert v.proc.stdin is not None
        v.proc.stdin.write("req r1\n")
        v.proc.stdin.flush()
        shutdown = wait_for_shutdown(v)
    finally:
        hang.release()
    assert v.wait(timeout=30) == AUDIT_EXIT, v.stderr_path.read_text()
    assert v.backend_calls() == []
    assert shutdown["failure_class"] == "audit"
    assert shutdown["detail"] == "audit write watchdog"
    assert "no audit record was written in" in shutdown["reason"]
    assert "audit.write_timeout_seconds is 1" in shutdown["reason"]
    (kept,) = v.fallback_events()
    assert kept["event"]["event"] == "audit_stalled"
    ended = json.loads((v.log_dir / "auth.jsonl").read_text().splitlines()[-1])
    assert ended["event"] == "session_ended"  # another file: that stream still works
    assert "no audit record was written" in ended["reason"]


@needs_strace
def test_a_close_that_never_returns_fails_the_trail_and_ends_the_process(victim: Any) -> None:
    """The session ends (the client's input closed), and closing the trail — which syncs
    each stream and marks its head closed — does not return (the ``fsync`` held, as on a
    hung mount). The watchdog watches the close too: the trail fails and the process ends
    with the audit code. Before, nothing was recorded and the process hung, then exited 0
    as from a clean end once the call returned."""
    v = victim(write_timeout=1.0)
    assert v.first == "READY"
    assert v.send("req r1") == "OK r1"
    hang = Hang(v.proc.pid, v.log_dir / "decisions.jsonl", "fsync")
    try:
        assert v.proc.stdin is not None
        v.proc.stdin.close()
        shutdown = wait_for_shutdown(v)
    finally:
        hang.release()
    assert v.wait(timeout=30) == AUDIT_EXIT, v.stderr_path.read_text()
    assert shutdown["detail"] == "audit write watchdog"
    assert "no audit record was written in" in shutdown["reason"]


@needs_strace
def test_a_fallback_write_that_never_returns_is_given_up_and_the_process_ends(
    victim: Any, tmp_path: Path
) -> None:
    """The trail fails (its file deleted), and the fallback file's ``write`` does not return:
    it is given up after ``write_timeout`` seconds, the lost event goes to stderr, and the
    process ends with the audit code — before, it hung in that write for ever."""
    v = victim(write_timeout=1.0)
    assert v.first == "READY"
    assert v.send("req r1") == "OK r1"
    hang = Hang(v.proc.pid, tmp_path / "state" / "audit-fallback.jsonl", "write")
    try:
        (v.log_dir / "decisions.jsonl").unlink()
        answer = v.send("req r2", timeout=60)
        shutdown = wait_for_shutdown(v)
    finally:
        hang.release()
    assert v.wait(timeout=30) == AUDIT_EXIT, v.stderr_path.read_text()
    assert answer.startswith("DENIED r2: audit file"), answer
    assert v.backend_calls() == ["r1"]
    assert shutdown["failure_class"] == "audit"  # in the log directory
    stderr = v.stderr_path.read_text()
    assert "the write did not finish within 1 s (is its file system hung?)" in stderr
    assert '"request_id": "r2"' in stderr  # the lost event, on stderr


def test_kill_9_during_a_burst_then_restart_verifies(victim: Any) -> None:
    v = victim()
    assert v.proc.stdin is not None
    v.proc.stdin.write("burst 20000\n")
    v.proc.stdin.flush()
    path = v.log_dir / "decisions.jsonl"
    deadline = time.monotonic() + 20
    while path.stat().st_size < 200_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    v.proc.send_signal(signal.SIGKILL)
    v.wait()
    again = victim()
    assert again.first == "READY"
    assert again.send("req after-crash") == "OK after-crash"
    again.proc.stdin.close()  # type: ignore[union-attr]
    assert again.wait() == 0
    for stream in ("decisions", "operations", "auth", "system"):
        result = verify_stream(v.log_dir, stream)
        assert result.ok, result.describe()


def test_start_refused_on_a_read_only_directory(victim: Any, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    if os.geteuid() == 0:
        # root ignores mode bits, so make the file system itself read-only, in a private
        # mount namespace that disappears with the process
        if shutil.which("unshare") is None:
            pytest.skip("unshare(1) is needed to test a read-only file system as root")
        script = f'mount --bind {logs} {logs} && mount -o remount,bind,ro {logs} && exec "$@"'
        v = victim(command_prefix=["unshare", "-m", "sh", "-c", script, "sh"])
        expected = "Read-only file system"
    else:
        logs.chmod(0o500)
        v = victim()
        expected = "Permission denied"
    assert v.first.startswith("REFUSED cannot ")
    assert expected in v.first
    assert v.wait() == AUDIT_EXIT
    assert v.backend_calls() == []


def test_start_refused_on_a_shared_directory_or_a_file_another_user_can_write(
    victim: Any, tmp_path: Path
) -> None:
    """A sticky, world-writable directory such as /tmp lets any user create the stream and
    head files first, then rewrite them at will: the log directory (and its ``.heads``)
    must be ours and writable by nobody else, and no file in it another user's or writable
    by others."""
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o1777)
    v = victim()
    assert v.first.startswith("REFUSED refusing to log into")
    assert "writable by group or others (mode 1777)" in v.first
    assert v.wait() == AUDIT_EXIT
    assert v.backend_calls() == []

    logs.chmod(0o700)
    (logs / ".heads").chmod(0o777)  # made by the refused start, before it refused
    v = victim()
    assert f"directory {logs / '.heads'} is writable by group or others" in v.first
    assert v.wait() == AUDIT_EXIT

    (logs / ".heads").chmod(0o700)
    planted = logs / "decisions.jsonl"
    planted.write_text("")
    planted.chmod(0o666)  # left for the victim to adopt
    v = victim()
    assert v.first.startswith("REFUSED refusing to continue the audit trail:")
    assert "writable by group or others (mode 0666)" in v.first
    assert v.wait() == AUDIT_EXIT
    assert v.backend_calls() == []
    if os.geteuid() == 0:  # only root can give a file away
        planted.chmod(0o600)
        os.chown(planted, 65534, 65534)
        v = victim()
        assert "is owned by uid 65534, not by you" in v.first
        assert v.wait() == AUDIT_EXIT


def test_health_monitor_shuts_down_when_the_directory_is_opened_to_others(
    victim: Any,
) -> None:
    """Sticky or not: once others may create files in the log directory, it is not ours."""
    v = victim(health=1.0)
    assert v.first == "READY"
    v.log_dir.chmod(0o1777)
    assert v.wait(timeout=20) == AUDIT_EXIT
    shutdown = v.shutdowns()[0]
    assert shutdown["detail"] == "audit health monitor"
    assert "writable by group or others (mode 1777)" in shutdown["reason"]
