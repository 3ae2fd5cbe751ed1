"""One line of half a gigabyte in a log (``truncate -s +512M decisions.jsonl``: sparse, no disk
cost) against ``audit verify``, ``logs show|tail`` and start-up. Each used to read the
line whole and end in a MemoryError; they run here in an address space far too small to
hold it (``RLIMIT_AS``), so the old code fails as it did, and the line must be reported,
skipped or refused without being read whole."""

from __future__ import annotations

import json
import os
import queue
import resource
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest
from audit_helpers import decision

from mcp_acp.audit import chain
from mcp_acp.audit.events import OperationEvent, argument_fields
from mcp_acp.audit.jsonl import JsonlAuditSink, serialise
from mcp_acp.proxy.messages import MAX_MESSAGE_BYTES

CLI = Path(sys.executable).parent / "mcp-acp"
#: The address space the commands get: ample for mcp-acp, far too little for the line.
LIMIT = 384 << 20
HOLE = 512 << 20
TOO_LONG = "longer than 64 MiB: not a record mcp-acp writes"


def write_log(log_dir: Path) -> Path:
    """A log closed cleanly; returns its decisions file."""
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    sink.write_sync(decision("before"))
    sink.close_sync()
    return log_dir / "decisions.jsonl"


def grow(path: Path, then: bytes = b"") -> None:
    """Append a hole of ``HOLE`` bytes (zeros, no newline, no disk blocks), then ``then``."""
    with path.open("r+b") as handle:
        handle.seek(0, os.SEEK_END)
        handle.truncate(handle.tell() + HOLE)
        handle.seek(0, os.SEEK_END)
        handle.write(then)
    assert path.stat().st_blocks * 512 < 1 << 20  # sparse


def cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(home)
    return env


def limited(home: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=environment(home),
        cwd=home,  # not the checkout: `python -c` imports from its working directory
        preexec_fn=cap,
        timeout=120,
    )


def test_verify_names_the_line_and_fails(tmp_path: Path, isolated_home: Path) -> None:
    logs = tmp_path / "logs"
    decisions = write_log(logs)
    lines = len(decisions.read_bytes().splitlines())
    grow(decisions)
    result = limited(isolated_home, str(CLI), "audit", "verify", "--log-dir", str(logs))
    assert result.returncode == 13, result.stderr
    assert (
        f"decisions: FAILED at {decisions}:{lines + 1}: line {lines + 1} is {TOO_LONG}"
    ) in result.stdout
    for stream in ("operations", "auth", "system"):
        assert f"{stream}: ok" in result.stdout
    assert result.stderr.startswith("audit error: audit chain broken in decisions (")


def test_logs_show_skips_it_with_a_note_and_shows_the_rest(
    tmp_path: Path, isolated_home: Path
) -> None:
    logs = tmp_path / "logs"
    decisions = write_log(logs)
    lines = len(decisions.read_bytes().splitlines())
    after = serialise(decision("after-the-hole"))
    grow(decisions, b"\n" + after + b"\n")
    result = limited(
        isolated_home,
        str(CLI),
        "logs",
        "show",
        "--json",
        "--stream=decisions",
        "--log-dir",
        str(logs),
    )
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line).get("request_id") for line in result.stdout.splitlines()]
    assert shown == [None, "before", "after-the-hole"]
    assert result.stderr == f"skipped unreadable line {decisions}:{lines + 1}: {TOO_LONG}\n"


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def test_logs_tail_skips_it_with_a_note(tmp_path: Path, isolated_home: Path) -> None:
    """The file ends in the line, unfinished, when tail starts; another comes while it
    follows: both are skipped and the records after them shown."""
    logs = tmp_path / "logs"
    decisions = write_log(logs)
    grow(decisions)
    command = [str(CLI), "logs", "tail", "--json", "--stream=decisions", "--interval=0.05"]
    tail = subprocess.Popen(
        [*command, "--count=2", "--log-dir", str(logs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(isolated_home),
        preexec_fn=cap,
    )
    assert tail.stdout is not None
    assert tail.stderr is not None
    try:
        notes, shown = lines_of(tail.stderr), lines_of(tail.stdout)
        # the note on the line it started in says it is following
        assert notes.get(timeout=60) == f"skipped {decisions}: a line {TOO_LONG}\n"
        with decisions.open("ab") as handle:
            handle.write(b"\n" + serialise(decision("first")) + b"\n")
        grow(decisions, b"\n" + serialise(decision("second")) + b"\n")
        records = [json.loads(shown.get(timeout=60)) for _ in range(2)]
        assert [r["request_id"] for r in records] == ["first", "second"]
        assert tail.wait(timeout=60) == 0
        assert notes.get(timeout=5) == f"skipped {decisions}: a line {TOO_LONG}\n"
    finally:
        tail.kill()
        tail.wait()


START = """
import sys
from pathlib import Path
from mcp_acp.audit.jsonl import JsonlAuditSink
from mcp_acp.errors import AuditError
try:
    JsonlAuditSink(Path(sys.argv[1])).start_sync()
except AuditError as error:
    print(error)
    sys.exit(13)
"""


@pytest.mark.parametrize(
    ("ending", "words"),
    [
        (b"", f"the unfinished last line of {{path}} is {TOO_LONG}, nor what a crash leaves"),
        (b"\n", f"the last line of {{path}} is {TOO_LONG}"),
    ],
)
def test_start_up_refuses_it_without_reading_it(
    tmp_path: Path, isolated_home: Path, ending: bytes, words: str
) -> None:
    """Recovery looked for the last newline in ever larger windows up to the whole file,
    then set everything after it aside; the chain's end was read as the whole last line."""
    logs = tmp_path / "logs"
    decisions = write_log(logs)
    grow(decisions, ending)
    size = decisions.stat().st_size
    result = limited(isolated_home, sys.executable, "-c", START, str(logs))
    assert result.returncode == 13, result.stderr
    assert words.format(path=decisions) in result.stdout
    assert "move the log directory aside" in result.stdout
    assert decisions.stat().st_size == size  # nothing cut off, nothing set aside
    assert not list(logs.glob("decisions.partial-*"))


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ('{"a":"' + "é" * 500_000 + '"}', "2 bytes of UTF-8, 6 escaped"),
        ('{"a":[' + ",".join(["1E15"] * 200_000) + "]}", "4 digits, 18 written back"),
        ("{" + ",".join(f'"token{n}":0' for n in range(70_000)) + "}", "values redacted"),
    ],
)
def test_no_message_makes_a_record_near_the_bound(message: str, why: str) -> None:
    """The bound is safe: the worst a message's bytes grow to in a record (with
    record_payloads), scaled to the largest message the relay takes, stays far below it."""
    raw = message.encode()
    record = serialise(
        OperationEvent(
            direction="client_to_server",
            outcome="forwarded",
            mcp_method="tools/call",
            tool_name="t",
            **argument_fields(json.loads(raw), record_payloads=True),
        )
    )
    growth = len(record) / len(raw)
    assert growth > 1.5, why  # the case does grow
    assert growth * MAX_MESSAGE_BYTES < chain.MAX_RECORD_BYTES / 1.5, why


def test_lines_are_read_up_to_the_bound_and_no_further(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chain, "MAX_RECORD_BYTES", 10)
    path = tmp_path / "f"
    path.write_bytes(b"123456789\n" + b"1234567890\n" + b"x" * 3_000_000 + b"\nlast")
    with path.open("rb") as handle:
        assert list(chain.record_lines(handle)) == [b"123456789\n", None, None, b"last"]
    with path.open("rb") as handle:
        assert chain.last_newline(handle, 10) == 10
        assert chain.last_newline(handle, 19) == 10  # a line of 10 with its newline, to come
        assert chain.last_newline(handle, 20) is None  # of 11: not looked at further
        assert chain.last_newline(handle, 9) == 0  # none, and the file's start is in reach
