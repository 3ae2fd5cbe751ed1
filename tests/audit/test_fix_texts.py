"""Each audit failure's ``fix:`` text, followed on real files, lets mcp-acp start again."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from audit_helpers import decision

from mcp_acp.audit.chain import verify_stream
from mcp_acp.audit.jsonl import JsonlAuditSink
from mcp_acp.errors import AuditError


def started(log_dir: Path) -> JsonlAuditSink:
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    return sink


def restarts(log_dir: Path) -> None:
    """Start the sink as `mcp-acp run` does, write, close: the chain must verify."""
    sink = started(log_dir)
    sink.write_sync(decision("after"))
    sink.close_sync()
    assert verify_stream(log_dir, "decisions").ok


def mv_command(error: AuditError) -> list[str]:
    """The `mv` command the fix names, split as a shell would split it."""
    command = re.search(r"\((mv [^)]*)\)", error.fix or "")
    assert command, f"no command to move the log directory aside in: {error}"
    return shlex.split(command.group(1))


def failure_in_use(log_dir: Path, change: Callable[[], None]) -> AuditError:
    """The error a running sink reports after ``change`` (a write, then the health check)."""
    sink = started(log_dir)
    sink.write_sync(decision("r1"))
    change()
    try:
        sink.write_sync(decision("r2"))
        sink.check_health()
    except AuditError as error:
        return error
    finally:
        sink.close_sync()
    raise AssertionError("the change went unnoticed")


@pytest.mark.parametrize("what", ["decisions.jsonl", ".heads/decisions.head"])
def test_a_file_moved_while_in_use_put_back_restarts(tmp_path: Path, what: str) -> None:
    log_dir = tmp_path / "log"
    path, aside = log_dir / what, tmp_path / "moved"
    error = failure_in_use(log_dir, lambda: path.rename(aside))
    assert "put the file back and restart" in str(error)
    aside.rename(path)
    restarts(log_dir)


@pytest.mark.parametrize("what", ["decisions.jsonl", ".heads/decisions.head"])
def test_a_file_deleted_while_in_use_needs_the_directory_moved_aside(
    tmp_path: Path, what: str
) -> None:
    """A deleted file cannot be opened anew: start-up refuses the cut chain, and both
    messages' fix — move the log directory aside — works as written."""
    log_dir = tmp_path / "my log"  # a space: the command must quote it
    error = failure_in_use(log_dir, (log_dir / what).unlink)
    assert "deleted" in str(error)
    with pytest.raises(AuditError) as refused:  # a restart alone is refused
        JsonlAuditSink(log_dir).start_sync()
    assert mv_command(refused.value) == mv_command(error)  # both say the same
    subprocess.run(mv_command(error), check=True)
    restarts(log_dir)
    assert (tmp_path / "my log.old" / ".heads").is_dir()  # the evidence is kept


def test_a_file_replaced_while_in_use_put_back_restarts(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    path, original = log_dir / "decisions.jsonl", tmp_path / "original"

    def replace() -> None:
        path.rename(original)
        path.write_bytes(b"")

    error = failure_in_use(log_dir, replace)
    assert "replaced" in str(error)
    assert "put the original back and restart" in str(error)
    original.replace(path)
    restarts(log_dir)


def test_a_damaged_last_line_needs_the_directory_moved_aside(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    sink = started(log_dir)
    sink.close_sync()
    with (log_dir / "decisions.jsonl").open("ab") as handle:
        handle.write(b'{"not": "a record"}\n')
    with pytest.raises(AuditError, match="not a chained audit record") as refused:
        JsonlAuditSink(log_dir).start_sync()
    subprocess.run(mv_command(refused.value), check=True)
    restarts(log_dir)


def test_a_log_directory_made_shared_chmod_700_restarts(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    error = failure_in_use(log_dir, lambda: log_dir.chmod(0o770))
    assert f"chmod 700 {log_dir}, then restart" in str(error)
    log_dir.chmod(0o700)
    restarts(log_dir)
