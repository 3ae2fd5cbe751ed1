"""``verify_stream`` and ``mcp-acp audit verify`` against a hostile log directory: history
rewritten and re-chained, streams deleted, files that are not files, lines that are not
records, names that are not text."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from audit_helpers import killed_writer
from proxy_helpers import on_a_terminal

from mcp_acp.audit import chain
from mcp_acp.audit.chain import (
    GENESIS,
    ChainHead,
    canonical,
    head_path,
    open_head,
    read_head,
    seal,
    verify_stream,
    write_head,
)
from mcp_acp.audit.events import SystemEvent
from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig
from mcp_acp.errors import AuditError


def write_log(log_dir: Path, records: int = 5) -> None:
    """A real log: ``records`` system records after the start-up lines of every stream."""
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    for i in range(records):
        sink.write_sync(SystemEvent(event="tool_run", detail={"i": i, "effect": "allow"}))
    sink.close_sync()


def read_records(log_dir: Path, stream: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (log_dir / f"{stream}.jsonl").read_bytes().splitlines()]


def rechain(log_dir: Path, stream: str, records: list[dict[str, Any]]) -> None:
    """Write ``records`` as a stream with a fresh, internally consistent chain."""
    out, prev = [], GENESIS
    for seq, record in enumerate(records, start=1):
        body = {k: v for k, v in record.items() if k not in ("seq", "prev_hash", "hash")}
        line, prev = seal(canonical(body), seq, prev)
        out.append(line)
    (log_dir / f"{stream}.jsonl").write_bytes(b"".join(out))


def test_history_rewritten_and_one_line_longer_is_caught(tmp_path: Path) -> None:
    """The attacker edits a record, re-chains every line and appends one, so the log is
    longer than the head and every line is consistent with the one before: the line the
    head names no longer carries the head's hash."""
    logs = tmp_path / "logs"
    write_log(logs)
    records = read_records(logs, "system")
    head_seq = records[-1]["seq"]
    records[2]["detail"]["effect"] = "deny"
    rechain(logs, "system", [*records, dict(records[-1])])
    result = verify_stream(logs, "system")
    assert not result.ok
    assert result.file == logs / "system.jsonl"
    assert result.line == head_seq
    assert "differs from the chain head" in (result.problem or "")
    assert "rewritten" in (result.problem or "")


def test_history_rewritten_to_the_heads_length_is_caught(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_log(logs)
    records = read_records(logs, "system")
    records[1]["detail"]["effect"] = "deny"
    rechain(logs, "system", records)
    result = verify_stream(logs, "system")
    assert not result.ok
    assert result.line == len(records)


def test_a_log_a_little_ahead_of_its_head_is_fine(tmp_path: Path) -> None:
    """After a crash the writer's last lines may postdate its last head update: the head
    names an earlier line, which matches, and the lines after it are not an alarm."""
    logs = tmp_path / "logs"
    write_log(logs)
    records = read_records(logs, "system")
    head_path(logs, "system").unlink()
    fd = open_head(logs, "system")
    try:
        for earlier in records[-4:-2]:  # both slots: the later of the two wins
            write_head(fd, ChainHead(earlier["seq"], earlier["hash"]))
    finally:
        os.close(fd)
    result = verify_stream(logs, "system")
    assert result.ok, result.describe()
    assert result.lines == len(records)


def forge(log_dir: Path, stream: str, count: int) -> None:
    """Append ``count`` correctly chained 'allow' records, as anyone who can append to the
    file can (the chain has no key), and leave the head alone."""
    last = read_records(log_dir, stream)[-1]
    seq, prev = last["seq"], last["hash"]
    with (log_dir / f"{stream}.jsonl").open("ab") as handle:
        for n in range(count):
            seq += 1
            body = {"stream": stream, "event": "decision", "effect": "allow", "request_id": n}
            line, prev = seal(canonical(body), seq, prev)
            handle.write(line)


@pytest.mark.parametrize(("count", "lines"), [(3, "3 lines"), (1, "1 line")])
def test_records_appended_after_a_clean_close_fail_and_are_refused(
    tmp_path: Path, run_cli: Any, count: int, lines: str
) -> None:
    """Forged records appended after the head of a stream closed cleanly used to pass
    verify, and the next start rewrote the head past them, making them permanent. (One
    such record was reported as "1 lines".)"""
    logs = tmp_path / "logs"
    write_log(logs)
    last = len(read_records(logs, "decisions"))
    forge(logs, "decisions", count)
    result = verify_cli(run_cli, logs)
    assert result.returncode == 13, result.stdout
    assert (
        f"decisions: FAILED at {logs / 'decisions.jsonl'}:{last + 1}: {lines} after the chain "
        f"head (seq {last}) of a stream closed cleanly: appended by someone else"
    ) in result.stdout
    for stream in ("operations", "auth", "system"):
        assert f"{stream}: ok" in result.stdout
    head = head_path(logs, "decisions").read_bytes()
    with pytest.raises(AuditError, match="closed cleanly: lines appended by someone else") as no:
        JsonlAuditSink(logs).start_sync()
    assert "move the log directory aside" in str(no.value)
    assert head_path(logs, "decisions").read_bytes() == head  # not moved past them
    assert verify_cli(run_cli, logs).returncode == 13  # and so they stay an alarm


def test_lines_past_the_head_after_a_crash_are_taken_and_recorded(
    tmp_path: Path, run_cli: Any
) -> None:
    """After a crash, lines past the head are what the writer wrote before updating it —
    or lines appended since, which cannot be told apart: verify notes them, and the next
    start takes them and records which they were."""
    logs = tmp_path / "logs"
    killed_writer(logs, 3)  # no close: the head is not marked closed
    head = read_head(logs, "system")
    assert head is not None
    forge(logs, "system", 2)
    result = verify_cli(run_cli, logs)
    assert result.returncode == 0, result.stdout
    assert (
        f"system: ok, {head.seq + 2} lines; note: seq {head.seq + 1}-{head.seq + 2} past the "
        f"chain head (seq {head.seq}), written after its last update by a writer that crashed "
        "or is running: no head confirms them"
    ) in result.stdout
    sink = JsonlAuditSink(logs)
    sink.start_sync()
    sink.close_sync()
    opened = read_records(logs, "system")[-1]
    assert opened["event"] == "stream_opened"
    assert opened["detail"]["past_head"] == {"first_seq": head.seq + 1, "last_seq": head.seq + 2}
    assert "past_head" not in read_records(logs, "auth")[-1]["detail"]
    result = verify_cli(run_cli, logs)
    assert result.returncode == 0, result.stdout
    assert "note" not in result.stdout  # a head confirms them now; the record says which


def test_a_head_written_before_the_closed_mark_reads_as_not_closed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_log(logs)
    last = read_records(logs, "system")[-1]
    text = f"{last['seq']} {last['hash']} "
    slot = (text + hashlib.sha256(text.encode()).hexdigest()[:16]).encode().ljust(127) + b"\n"
    head_path(logs, "system").write_bytes(slot * 2)
    assert read_head(logs, "system") == ChainHead(last["seq"], last["hash"], closed=False)
    forge(logs, "system", 1)
    assert verify_stream(logs, "system").past_head == (last["seq"] + 1, last["seq"] + 1)


def test_a_writer_starting_while_verify_reads_is_no_alarm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify reads the head first: if a writer starts after that, it clears the closed
    mark and writes past the head verify holds — which must not be taken for tampering."""
    logs = tmp_path / "logs"
    write_log(logs)
    before = read_head(logs, "system")
    assert before is not None
    assert before.closed
    sink = JsonlAuditSink(logs)
    sink.start_sync()
    try:
        real, calls = chain.read_head, []

        def head_read_before_the_start(log_dir: Path, stream: str) -> ChainHead | None:
            calls.append(stream)
            return before if len(calls) == 1 else real(log_dir, stream)

        monkeypatch.setattr(chain, "read_head", head_read_before_the_start)
        result = verify_stream(logs, "system")
        assert result.ok, result.describe()
        assert result.past_head == (before.seq + 1, before.seq + 1)
        assert len(calls) == 2
    finally:
        sink.close_sync()


def verify_cli(run_cli: Any, logs: Path) -> Any:
    return run_cli("audit", "verify", "--log-dir", str(logs))


@pytest.mark.parametrize(
    ("damage", "where", "words"),
    [
        ("deep-line", "operations.jsonl:2", "not an audit record (JSON nested too deeply)"),
        ("dir-current", "operations.jsonl", "cannot read the file: a directory"),
        ("dir-rotated", "operations.1.jsonl", "cannot read the file: a directory"),
        ("fifo-current", "operations.jsonl", "cannot read the file: not a regular file"),
        ("symlink-current", "operations.jsonl", "cannot read the file: a symbolic link"),
        ("dir-head", ".heads/operations.head", "the chain head file cannot be read: a directory"),
    ],
)
def test_what_is_not_a_log_file_is_a_failure_of_its_stream_only(
    tmp_path: Path, run_cli: Any, damage: str, where: str, words: str
) -> None:
    """Each used to end ``audit verify`` with 'internal error' (exit 1) before the other
    streams were checked — or, for a FIFO, to hang it."""
    logs = tmp_path / "logs"
    write_log(logs)
    current = logs / "operations.jsonl"
    if damage == "deep-line":
        with current.open("ab") as handle:
            handle.write(b"[" * 100_000 + b"\n")
    elif damage == "dir-current":
        current.unlink()
        current.mkdir()
    elif damage == "dir-rotated":
        (logs / "operations.1.jsonl").mkdir()
    elif damage == "fifo-current":
        current.unlink()
        os.mkfifo(current)
    elif damage == "symlink-current":
        (tmp_path / "elsewhere.jsonl").write_bytes(current.read_bytes())
        current.unlink()
        current.symlink_to(tmp_path / "elsewhere.jsonl")
    elif damage == "dir-head":
        head_path(logs, "operations").unlink()
        head_path(logs, "operations").mkdir()
    result = verify_cli(run_cli, logs)
    assert result.returncode == 13, result.stderr
    assert f"operations: FAILED at {logs / where}: {words}" in result.stdout
    for stream in ("decisions", "auth", "system"):
        assert f"{stream}: ok" in result.stdout
    assert result.stderr.startswith("audit error: audit chain broken in operations (")
    assert "internal error" not in result.stderr


def test_the_writer_refuses_a_symlinked_chain_head(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_log(logs)
    head = head_path(logs, "system")
    (tmp_path / "head-elsewhere").write_bytes(head.read_bytes())
    head.unlink()
    head.symlink_to(tmp_path / "head-elsewhere")
    with pytest.raises(AuditError, match="cannot open audit stream"):
        JsonlAuditSink(logs).start_sync()


@pytest.mark.parametrize("how", ["emptied", "removed"])
def test_a_deleted_stream_fails(tmp_path: Path, run_cli: Any, how: str) -> None:
    """``rm .heads/system.head; : > system.jsonl`` (or rm the file) used to verify as
    'system: ok, 0 lines'."""
    logs = tmp_path / "logs"
    write_log(logs)
    head_path(logs, "system").unlink()
    if how == "emptied":
        (logs / "system.jsonl").write_bytes(b"")
    else:
        (logs / "system.jsonl").unlink()
    for args in ((), ("--stream", "system")):
        result = run_cli("audit", "verify", "--log-dir", str(logs), *args)
        assert result.returncode == 13, result.stderr
        assert f"system: FAILED at {logs / 'system.jsonl'}: the stream has no records" in (
            result.stdout
        )
        assert "emptied or deleted" in result.stdout
        assert result.stderr.startswith("audit error: audit chain broken in system (")
    assert "decisions: ok, 1 lines" in run_cli("audit", "verify", "--log-dir", str(logs)).stdout


@pytest.mark.parametrize("contents", ["nothing", "empty heads directory", "empty files"])
def test_an_unused_directory_is_no_audit_log(tmp_path: Path, run_cli: Any, contents: str) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    if contents == "empty heads directory":
        (logs / ".heads").mkdir()
    elif contents == "empty files":
        for stream in ("operations", "decisions", "auth", "system"):
            (logs / f"{stream}.jsonl").write_bytes(b"")
    result = run_cli("audit", "verify", "--log-dir", str(logs))
    assert result.returncode == 13
    assert result.stdout == ""
    assert result.stderr.startswith(f"audit error: no audit log at {logs}: ")
    assert len(result.stderr.splitlines()) == 1
    assert not verify_stream(logs, "system").ok
    assert verify_stream(logs, "system").problem == f"no audit log at {logs}"


@pytest.mark.parametrize("cut", [3, 0])
def test_an_emptied_head_fails_and_is_refused(tmp_path: Path, run_cli: Any, cut: int) -> None:
    """Cutting records off the end and emptying the head file used to pass (an empty head
    was taken for no head) and the next start wrote a fresh head over the cut."""
    logs = tmp_path / "logs"
    write_log(logs)
    cut_lines = (logs / "system.jsonl").read_bytes().splitlines(keepends=True)
    (logs / "system.jsonl").write_bytes(b"".join(cut_lines[: len(cut_lines) - cut]))
    head_path(logs, "system").write_bytes(b"")
    result = verify_cli(run_cli, logs)
    assert result.returncode == 13, result.stdout
    kept = len(cut_lines) - cut
    assert (
        f"system: FAILED at {head_path(logs, 'system')}: the chain head file is empty, though "
        f"the stream has {kept} records: it was emptied"
    ) in result.stdout
    for stream in ("operations", "decisions", "auth"):
        assert f"{stream}: ok" in result.stdout
    with pytest.raises(AuditError, match=r"head file \S+ is empty: it was emptied") as refused:
        JsonlAuditSink(logs).start_sync()
    assert "move the log directory aside" in str(refused.value)
    assert head_path(logs, "system").read_bytes() == b""  # nothing written over it
    assert len((logs / "system.jsonl").read_bytes().splitlines()) == kept


def test_a_garbled_head_is_refused_naming_it(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_log(logs)
    head_path(logs, "system").write_bytes(b"x" * 256)
    assert verify_stream(logs, "system").problem == (
        "the chain head file is corrupt (neither slot holds a valid head)"
    )
    assert verify_stream(logs, "system").file == head_path(logs, "system")
    with pytest.raises(AuditError, match=r"chain head file \S+ corrupt \(neither slot"):
        JsonlAuditSink(logs).start_sync()


def test_file_names_print_escaped(tmp_path: Path, isolated_home: Path) -> None:
    """A file named with an ANSI escape, a bidi override or bytes that are not UTF-8 must
    not reach the terminal as such (it used to: ``\\x1b[2J`` cleared the screen)."""
    logs = tmp_path / "logs\x1b[31m"
    write_log(logs)
    hostile = [
        b"system.partial-\x1b[2J\x1b[Hsystem: ok, 999 lines",
        b"system.partial-\xe2\x80\xaeevil",  # U+202E right-to-left override
        b"system.partial-\xff\xfe",  # not UTF-8
    ]
    for name in hostile:
        with open(os.fsencode(logs) + b"/" + name, "wb") as handle:
            handle.write(b"partial")
    (logs / "auth.jsonl").write_bytes(b"")  # and a failure, so the directory is printed
    code, out = on_home_terminal(isolated_home, "audit", "verify", "--log-dir", str(logs))
    assert code == 13, out
    for raw in (b"\x1b", "\u202e".encode(), b"\xff"):
        assert raw not in out
    assert b"system.partial-\\x1b[2J\\x1b[Hsystem: ok, 999 lines" in out
    assert b"system.partial-\\u202eevil" in out
    assert b"system.partial-\\udcff\\udcfe" in out
    assert b"(" + os.fsencode(tmp_path) + b"/logs\\x1b[31m)" in out


def on_home_terminal(home: Path, *args: str) -> tuple[int, bytes]:
    """:func:`on_a_terminal` with ``home`` as ``HOME`` and no mcp-acp or XDG settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(home)
    return on_a_terminal(args, env)


@pytest.mark.parametrize("middle", ["²", "\u0661", "01", "0", "x", ""])
def test_a_file_the_writer_never_names_fails_its_stream_and_crashes_nothing(
    tmp_path: Path, run_cli: Any, middle: str
) -> None:
    """``decisions.².jsonl`` (``"²".isdigit()``, then ``int("²")`` raised) ended ``audit
    verify`` and ``logs show`` with 'internal error' (exit 1), the streams after
    ``decisions`` never checked (/tmp/rev-audit/repro2_unicode_digit.sh); ``decisions.01``
    or ``decisions.\\u0661`` (an Arabic-Indic 1) were read as rotated file 1, the others
    ignored. A rotated file is ``<stream>.<n>.jsonl``, n in ASCII digits without a leading
    zero: any other ``<stream>.*.jsonl`` fails its stream, named."""
    logs = tmp_path / "logs"
    write_log(logs)
    stray = logs / f"decisions.{middle}.jsonl"
    stray.write_bytes(b"")
    assert chain.chain_files(logs, "decisions") == [logs / "decisions.jsonl"]
    result = verify_cli(run_cli, logs)
    assert result.returncode == 13, result.stderr
    assert f"decisions: FAILED at {stray}: a file the writer never makes" in result.stdout
    for stream in ("operations", "auth", "system"):
        assert f"{stream}: ok" in result.stdout
    assert result.stderr.startswith("audit error: audit chain broken in decisions (")
    shown = run_cli("logs", "show", "--log-dir", str(logs))
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout.splitlines()) == 4 + 5  # stream_opened x4, the system records


def test_the_current_file_hard_linked_as_a_rotated_one_fails_its_stream(
    tmp_path: Path, run_cli: Any
) -> None:
    """``ln system.jsonl system.1.jsonl`` looked to verify like a rotation while it read:
    the chain ended there, every file after it went unread — ``system.2.jsonl`` with any
    records at all in it — and verify said ok while ``logs show`` showed the forged
    record. The writer renames the current file when it rotates, so both names never
    stand for one file at once: a hard link fails the stream, named."""
    logs = tmp_path / "logs"
    write_log(logs)
    os.link(logs / "system.jsonl", logs / "system.1.jsonl")
    forged = {"stream": "system", "event": "forged", "ts": "2026-01-01T00:00:00.000Z"}
    (logs / "system.2.jsonl").write_bytes(canonical(forged) + b"\n")
    assert "forged" in run_cli("logs", "show", "--log-dir", str(logs)).stdout
    result = verify_cli(run_cli, logs)
    assert result.returncode == 13, result.stdout
    assert (
        f"system: FAILED at {logs / 'system.1.jsonl'}: the same file as system.jsonl, under "
        "a second name (a hard link, which the writer never makes)"
    ) in result.stdout
    for stream in ("operations", "decisions", "auth"):
        assert f"{stream}: ok" in result.stdout
    assert result.stderr.startswith("audit error: audit chain broken in system (")


def test_a_rotation_between_any_two_files_verify_opens_is_no_alarm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify listed a stream's files once and opened them by name later: a rotation in
    between put the new ``system.jsonl`` where the renamed one was, and the missing lines
    read as tampering (/tmp/rev-audit/repro4_verify_live.sh: exit 13 on a live log). Here
    a real writer rotates just before every file verify opens — deterministically, each
    rotation seen — and verify is still ok; afterwards it checks every line."""
    logs = tmp_path / "logs"
    sink = JsonlAuditSink(logs, JsonlConfig(max_file_bytes=4096))
    sink.start_sync()
    written = 0

    def rotate() -> None:
        nonlocal written
        before = len(chain.chain_files(logs, "system"))
        while len(chain.chain_files(logs, "system")) == before:
            sink.write_sync(SystemEvent(event="e", detail={"i": written, "pad": "x" * 100}))
            written += 1

    rotate()
    rotate()  # system.1.jsonl and system.2.jsonl, then system.jsonl
    real_open, rotations = chain.open_regular, []

    def open_after_a_rotation(path: Path) -> Any:
        if path.name.startswith("system.") and path.name.endswith(".jsonl"):
            rotate()
            rotations.append(path.name)
        return real_open(path)

    monkeypatch.setattr(chain, "open_regular", open_after_a_rotation)
    try:
        result = verify_stream(logs, "system")
    finally:
        monkeypatch.undo()
        sink.close_sync()
    assert len(rotations) >= 3, rotations  # a rotation before each file it opened
    assert result.ok, result.describe()
    final = verify_stream(logs, "system")
    assert final.ok, final.describe()
    assert final.lines == 1 + written
    assert final.lines > result.lines  # what was rotated after verify began: the next check's


#: A real writer process rotating every ~25 records, as fast as it can (records flushed, not
#: fsynced), until FILE exists.
BUSY_WRITER = """
import sys
from pathlib import Path
from mcp_acp.audit.events import SystemEvent
from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig

config = JsonlConfig(max_file_bytes=4096, durability="flush")
sink = JsonlAuditSink(Path(sys.argv[1]), config)
sink.start_sync()
print("READY", flush=True)
stop, i = Path(sys.argv[2]), 0
while not stop.exists():
    sink.write_sync(SystemEvent(event="e", detail={"i": i, "pad": "x" * 100}))
    i += 1
sink.close_sync()
"""


def rotated(logs: Path) -> int:
    return sum(path.name != "system.jsonl" for path in chain.chain_files(logs, "system"))


def test_verify_while_a_real_writer_rotates_under_load(tmp_path: Path) -> None:
    """verify run again and again while a writer process rotates: every check is ok, until
    several checks did overlap a rotation (a rotated file appeared while verify ran;
    counted, not assumed). Then the writer stops and the whole log verifies."""
    logs, stop = tmp_path / "logs", tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", BUSY_WRITER, str(logs), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    try:
        assert writer.stdout.readline() == "READY\n"
        overlapped, checks = 0, 0
        while overlapped < 20:
            assert checks < 2000, f"only {overlapped} of {checks} checks overlapped a rotation"
            before = rotated(logs)
            result = verify_stream(logs, "system")
            assert result.ok, result.describe()
            checks += 1
            overlapped += rotated(logs) > before
        stop.touch()
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
    assert len(chain.chain_files(logs, "system")) > 5
    final = verify_stream(logs, "system")
    assert final.ok, final.describe()
    assert final.past_head is None
