"""``mcp-acp logs show|tail`` against hostile logs: records that are not what the writer
writes, a ``--since`` beyond the calendar, and rotation under a follower."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import IO, Any

import click
import pytest

from mcp_acp.audit import cli as audit_cli
from mcp_acp.audit.events import STREAMS, DecisionEvent, OperationEvent, SystemEvent
from mcp_acp.audit.follow import StreamFollower
from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig

CLI = Path(sys.executable).parent / "mcp-acp"


def write_log(log_dir: Path) -> None:
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    sink.write_sync(SystemEvent(event="plugins_loaded", detail={"count": 4}))
    sink.write_sync(
        DecisionEvent(
            session_id="s1",
            request_id="req-1",
            subject_id="alice",
            subject_provenance="token",
            mcp_method="tools/call",
            tool_name="read_file",
            effect="deny",
            rule_id="deny-secrets",
            reason="denied by rule deny-secrets",
            policy_id="sha256:x",
        )
    )
    sink.close_sync()


def append(path: Path, *lines: bytes) -> None:
    with path.open("ab") as handle:
        for line in lines:
            handle.write(line + b"\n")


def test_bad_records_are_skipped_with_a_note_and_the_rest_is_shown(
    tmp_path: Path, run_cli: Any
) -> None:
    """One record with a naive ``ts`` (TypeError when sorted against the others) or a
    ``tool_name`` that is an object (TypeError when formatted) used to end the listing."""
    logs = tmp_path / "logs"
    write_log(logs)
    system, decisions = logs / "system.jsonl", logs / "decisions.jsonl"
    append(
        system,
        b'{"stream":"system","event":"naive","ts":"2026-01-01T00:00:00","detail":{}}',
        b"[" * 100_000,
        b"[1, 2]",
        b'{"stream":"system","event":"no_time","detail":{}}',
    )
    append(
        decisions,
        b'{"stream":"decisions","event":"decision","ts":"2026-01-01T00:00:00.000Z",'
        b'"tool_name":{"x":[1]},"effect":"allow","reason":"odd","seq":"nine"}',
    )
    for args in ((), ("--json",), ("--since", "36500d")):
        result = run_cli("logs", "show", "--log-dir", str(logs), *args)
        assert result.returncode == 0, result.stderr
        rows = result.stdout.splitlines()
        assert len(rows) == 4 + 2 + 1  # stream_opened x4, the two real records, the odd one
        assert "internal error" not in result.stderr
        notes = result.stderr.splitlines()
        assert notes == [
            f"skipped unreadable line {system}:3: no ts with a time zone, in years 1-9999 UTC",
            f"skipped unreadable line {system}:4: not a JSON record",
            f"skipped unreadable line {system}:5: not a JSON object",
            f"skipped unreadable line {system}:6: no ts with a time zone, in years 1-9999 UTC",
        ]
    table = run_cli("logs", "show", "--log-dir", str(logs)).stdout
    assert '{"x":[1]}' in table  # the object is shown as compact JSON, in its column
    assert "plugins_loaded" in table
    assert "denied by rule deny-secrets" in table


def test_a_stream_file_replaced_by_a_symlink_or_fifo_is_named_once_not_followed(
    tmp_path: Path,
) -> None:
    """``logs tail`` fell silent, saying nothing, when the stream's file was replaced by a
    symlink, a FIFO or a directory (the writer fails closed then; whoever watches should
    hear of it too). It is named once per kind of refusal, and a regular file that comes
    back is followed again."""
    logs = tmp_path / "logs"
    write_log(logs)
    system = logs / "system.jsonl"
    follower = StreamFollower(logs, "system")
    try:
        assert follower.poll() == []
        system.rename(logs / "moved.jsonl")
        system.symlink_to(logs / "moved.jsonl")
        assert follower.poll() == []
        assert follower.poll() == []
        assert follower.unreadable == [
            f"{system}: cannot be followed: Too many levels of symbolic links"
        ]
        system.unlink()
        os.mkfifo(system)
        assert follower.poll() == []
        assert follower.unreadable[1:] == [f"{system}: cannot be followed: not a regular file"]
        system.unlink()
        append(system, b'{"stream":"system","event":"back","ts":"2026-01-01T00:00:00Z"}')
        records = follower.poll()
    finally:
        follower.close()
    assert [r["event"] for r in records] == ["back"]
    assert len(follower.unreadable) == 2


def _strict(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    return json.loads(line, parse_constant=refuse)


def test_nan_and_infinity_are_skipped_so_json_output_stays_json(
    tmp_path: Path, run_cli: Any
) -> None:
    """Python reads ``NaN`` and ``Infinity`` in a line, which the writer never writes, and
    ``logs show --json`` / ``logs tail --json`` wrote them out again: not JSON, so ``jq``
    or any strict reader downstream stopped at that line. They are skipped with a note,
    like any other line that is not a JSON record."""
    logs = tmp_path / "logs"
    write_log(logs)
    system = logs / "system.jsonl"
    follower = StreamFollower(logs, "system")
    try:
        assert follower.poll() == []
        append(
            system,
            b'{"stream":"system","event":"odd","ts":"2026-01-01T00:00:00Z","n":NaN}',
            b'{"stream":"system","event":"odd","ts":"2026-01-01T00:00:00Z","n":-Infinity}',
            b'{"stream":"system","event":"last","ts":"2026-01-01T00:00:00Z"}',
        )
        followed = follower.poll()
    finally:
        follower.close()
    assert [r["event"] for r in followed] == ["last"]
    assert follower.unreadable == [f"{system}: a line that is not a JSON object"] * 2
    result = run_cli("logs", "show", "--log-dir", str(logs), "--json")
    assert result.returncode == 0, result.stderr
    records = [_strict(line) for line in result.stdout.splitlines()]
    assert [r["event"] for r in records].count("last") == 1
    assert result.stderr.splitlines() == [
        f"skipped unreadable line {system}:{n}: not a JSON record" for n in (3, 4)
    ]


#: Times with a time zone that are no time in UTC: the year 10000, the year 0.
BEYOND_UTC = ("9999-12-31T23:59:59.000-23:59", "0001-01-01T00:00:00.000+01:00")


def test_a_time_beyond_utc_is_skipped_by_show_and_shown_as_it_is_by_tail(
    tmp_path: Path, run_cli: Any, isolated_home: Path
) -> None:
    """A ``ts`` whose time zone puts it outside years 1-9999 in UTC ended ``logs show``
    with 'internal error: OverflowError' (exit 1), hiding every record after it, and ended
    ``logs tail`` the same way. ``show`` skips it with a note, like a ``ts`` without a time
    zone; ``tail`` shows it with its ``ts`` as written (cut to its column)."""
    logs = tmp_path / "logs"
    write_log(logs)
    system = logs / "system.jsonl"
    append(
        system,
        *(b'{"stream":"system","event":"odd","ts":"%s"}' % ts.encode() for ts in BEYOND_UTC),
    )
    for args in ((), ("--since", "1d")):
        result = run_cli("logs", "show", "--log-dir", str(logs), *args)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 4 + 2  # stream_opened x4, the real records
        assert result.stderr.splitlines() == [
            f"skipped unreadable line {system}:{n}: no ts with a time zone, in years 1-9999 UTC"
            for n in (3, 4)
        ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(isolated_home)
    command = [str(CLI), "logs", "tail", "--log-dir", str(logs), "--stream=system"]
    tail = subprocess.Popen(
        [*command, "--interval=0.01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert tail.stdout is not None
    assert tail.stderr is not None
    rows: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: [rows.put(r) for r in tail.stdout], daemon=True).start()
    try:
        shown: list[bytes] = []
        while not shown:  # a record until tail shows one: then it is following
            append(system, b'{"stream":"system","event":"ping","ts":"2026-01-01T00:00:00Z"}')
            with contextlib.suppress(queue.Empty):
                shown.append(rows.get(timeout=1))
        append(
            system,
            *(b'{"stream":"system","event":"odd","ts":"%s"}' % ts.encode() for ts in BEYOND_UTC),
            b'{"stream":"system","event":"last","ts":"2026-01-01T00:00:00Z"}',
        )
        while b" last" not in shown[-1]:
            shown.append(rows.get(timeout=60))
    finally:
        tail.kill()
        tail.wait()
    odd = [row.decode() for row in shown if b" odd" in row]
    # as written, cut to the time column's 23 characters
    assert [row.split()[:3] for row in odd] == [
        [f"{ts[:22]}…", "system", "odd"] for ts in BEYOND_UTC
    ]
    assert b"internal error" not in tail.stderr.read()


@pytest.mark.parametrize("since", ["3000000d", "99999999999d", "36501d", "9" * 5000 + "s"])
def test_a_since_beyond_the_calendar_is_a_usage_error(
    tmp_path: Path, run_cli: Any, since: str
) -> None:
    logs = tmp_path / "logs"
    write_log(logs)
    result = run_cli("logs", "show", "--log-dir", str(logs), "--since", since)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "reaches back too far: at most 36500d (100 years); or give an ISO time" in errors[0]
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr


#: A real writer process: the jsonl sink with the smallest rotation size. Commands on stdin:
#: ``ping N`` writes one ``ping`` record; ``go N`` writes N records as fast as it can, then
#: closes the sink and exits.
WRITER = """
import sys
from pathlib import Path
from mcp_acp.audit.events import SystemEvent
from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig

sink = JsonlAuditSink(Path(sys.argv[1]), JsonlConfig(max_file_bytes=4096))
sink.start_sync()
print("READY", flush=True)
for line in sys.stdin:
    word, number = line.split()
    if word == "ping":
        sink.write_sync(SystemEvent(event="ping", detail={"n": int(number)}))
    else:
        for i in range(int(number)):
            sink.write_sync(SystemEvent(event="e", detail={"i": i, "pad": "x" * 100}))
        break
sink.close_sync()
"""


def reader(stream: IO[str]) -> queue.Queue[dict[str, Any]]:
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(json.loads(line)) for line in stream], daemon=True
    ).start()
    return lines


@pytest.mark.parametrize("interval", ["0.01", "0.5"])
def test_tail_follows_rotation_and_loses_nothing(
    tmp_path: Path, isolated_home: Path, interval: str
) -> None:
    """A writer rotating every ~13 records while ``logs tail`` follows: every record shown,
    once, in order — with a poll between rotations, and with many rotations between two
    polls (/tmp/review4/slow.py: tail showed 23 of 200)."""
    logs, total = tmp_path / "logs", 200
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(isolated_home)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(logs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert writer.stdin is not None
    assert writer.stdout is not None
    # the log directory exists once the writer is ready: tail refuses a missing one
    if writer.stdout.readline() != "READY\n":
        writer.kill()
        pytest.fail("the writer did not start")
    command = ["logs", "tail", "--log-dir", str(logs), "--stream=system", "--json"]
    tail = subprocess.Popen(
        [str(CLI), *command, f"--interval={interval}"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert tail.stdout is not None
    try:
        shown = reader(tail.stdout)
        deadline = time.monotonic() + 60
        # ping until tail shows one: then it is following, and nothing after will be missed
        ping, seen = 0, []
        while not any(r["event"] == "ping" for r in seen):
            assert time.monotonic() < deadline, "tail never showed a record"
            ping += 1
            writer.stdin.write(f"ping {ping}\n")
            writer.stdin.flush()
            with contextlib.suppress(queue.Empty):
                seen.append(shown.get(timeout=1))
        writer.stdin.write(f"go {total}\n")
        writer.stdin.flush()
        while not seen or seen[-1].get("detail", {}).get("i") != total - 1:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"tail showed {len(seen)} records, not the last"
            with contextlib.suppress(queue.Empty):
                seen.append(shown.get(timeout=remaining))
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
        tail.kill()
    rotated = list(logs.glob("system.*.jsonl"))
    assert len(rotated) >= 10  # real rotation, many times
    first_ping = next(i for i, r in enumerate(seen) if r["event"] == "ping")
    after = seen[first_ping:]
    assert [r["seq"] for r in after] == list(range(after[0]["seq"], after[0]["seq"] + len(after)))
    assert [r["detail"]["i"] for r in after if r["event"] == "e"] == list(range(total))


def test_a_follower_continues_after_a_restart_sets_a_partial_line_aside(tmp_path: Path) -> None:
    """A crash leaves half a line; the restarted writer cuts it off the same file (and
    records it): the follower goes on from the last whole line, showing nothing twice."""
    logs = tmp_path / "logs"
    write_log(logs)
    follower = StreamFollower(logs, "system")
    try:
        assert follower.poll() == []
        with (logs / "system.jsonl").open("ab") as handle:
            handle.write(b'{"stream":"system","event":"half a rec')
        assert follower.poll() == []  # the half line is held back
        restarted = JsonlAuditSink(logs)
        restarted.start_sync()
        restarted.close_sync()
        records = follower.poll()
    finally:
        follower.close()
    assert [r["event"] for r in records] == ["partial_line_quarantined", "stream_opened"]
    assert [r["seq"] for r in records] == [3, 4]
    assert follower.unreadable == [f"{logs / 'system.jsonl'}: an unfinished last line, set aside"]


#: ``logs show`` columns: time, stream, event, request, subject, tool or method, outcome
#: (two spaces between), then the reason.
WIDTHS = (23, 10, 24, 12, 12, 25, 9)


def columns(row: str) -> list[str]:
    cells, start = [], 0
    for width in WIDTHS:
        cells.append(row[start : start + width].rstrip())
        start += width + 2
    return [*cells, row[start:]]


def test_a_value_a_client_picks_cannot_forge_the_columns_of_logs_show(
    tmp_path: Path, run_cli: Any
) -> None:
    """A JSON-RPC id of spaces and words (/tmp/rev-audit/repro1_spoof_columns.sh) made a
    denied read of ~/.env look like an allowed list_notes by alice: no column was cut,
    and a space in a value looked like a gap between columns. Now every column is cut to
    its width (``…``), and a value with a space (or another blank) is quoted."""
    logs = tmp_path / "logs"
    forged = "9         alice         list_notes            allow      allowed by rule"
    sink = JsonlAuditSink(logs)
    sink.start_sync()
    for request_id, subject, tool in (
        (forged + " " * 150, "root", "read_file"),
        ("1 root", "bob", "read file"),  # short ones: quoted, whole
        ("notification", "a\u2800b", "notifications/initialized"),  # legit: whole
    ):
        sink.write_sync(
            DecisionEvent(
                session_id="s1",
                request_id=request_id,
                subject_id=subject,
                subject_provenance="os",
                mcp_method="tools/call",
                tool_name=tool,
                effect="deny",
                rule_id="deny-env",
                reason="denied by rule deny-env: path /home/alice/.env matches **/.env",
                policy_id="sha256:x",
            )
        )
    sink.write_sync(SystemEvent(event="tool_quarantined", detail={"tool": "x  allow", "n": 2}))
    sink.close_sync()
    result = run_cli("logs", "show", "--log-dir", str(logs))
    assert result.returncode == 0, result.stderr
    table = result.stdout
    assert "list_notes" not in table
    assert "alice " not in table
    rows = [columns(row) for row in table.splitlines() if "decision  " in row]
    assert [row[3:7] for row in rows] == [
        ['"9         …', "root", "read_file", "deny"],
        ['"1 root"', "bob", '"read file"', "deny"],
        ["notification", '"a\\u2800b"', "notifications/initialized", "deny"],
    ]
    assert all(row[7].startswith("denied by rule deny-env: path /home/alice/.env") for row in rows)
    quarantined = next(r for r in table.splitlines() if "tool_quarantined" in r)
    assert columns(quarantined)[7] == 'tool="x  allow" n=2'
    assert max(len(row) for row in table.splitlines()) <= sum(WIDTHS) + 2 * len(WIDTHS) + 100


def test_wide_characters_take_two_columns_so_the_columns_after_them_line_up(
    tmp_path: Path, run_cli: Any
) -> None:
    """A subject or tool name in CJK characters was padded and cut by characters, and
    each such character takes two columns on a terminal: every column after it was pushed
    right. Columns are counted in terminal cells now; combining marks take none."""
    logs = tmp_path / "logs"
    sink = JsonlAuditSink(logs)
    sink.start_sync()
    for subject, tool in (
        ("alice", "read_file"),
        ("名前", "ファイル"),  # short: padded by cells
        ("名前名前名前名前", "ファイルを読む道具ファイルを読む道具"),  # long: cut by cells
        ("e\u0301mile", "cafe\u0301"),  # combining acute accents: no cells
        ("a名名名名名名", "x"),  # a wide character that would cross the edge: cut before it
    ):
        sink.write_sync(
            DecisionEvent(
                session_id="s1",
                request_id="r1",
                subject_id=subject,
                subject_provenance="os",
                mcp_method="tools/call",
                tool_name=tool,
                effect="deny",
                rule_id="deny-all",
                reason="denied",
                policy_id="sha256:x",
            )
        )
    sink.close_sync()
    result = run_cli("logs", "show", "--log-dir", str(logs))
    assert result.returncode == 0, result.stderr
    # what a terminal shows: a wide character as two cells, a combining mark on the one before
    shown = [
        "".join("WW" if ch in "名前ファイルを読む道具" else ch for ch in row).replace("\u0301", "")
        for row in result.stdout.splitlines()
        if "decision  " in row
    ]
    assert [columns(row)[4:8] for row in shown] == [
        ["alice", "read_file", "deny", "denied"],
        ["WWWW", "WWWWWWWW", "deny", "denied"],
        ["WWWWWWWWWW…", "WWWWWWWWWWWWWWWWWWWWWWWW…", "deny", "denied"],
        ["emile", "cafe", "deny", "denied"],
        ["aWWWWWWWWWW…", "x", "deny", "denied"],
    ]


def test_a_follower_of_a_just_rotated_stream_beside_a_stray_file(tmp_path: Path) -> None:
    """``decisions.².jsonl`` beside a stream whose current file is empty (just rotated)
    ended ``logs tail`` (and the writer's start) with ValueError: ``int("²")``. It is no
    rotated file of the writer's, and is passed over."""
    logs = tmp_path / "logs"
    write_log(logs)
    current = logs / "decisions.jsonl"
    current.rename(logs / "decisions.1.jsonl")
    current.write_bytes(b"")
    (logs / "decisions.².jsonl").write_bytes(b"")
    follower = StreamFollower(logs, "decisions")
    try:
        assert follower.poll() == []
        sink = JsonlAuditSink(logs)
        sink.start_sync()
        sink.close_sync()
        records = follower.poll()
    finally:
        follower.close()
    assert [(r["event"], r["seq"]) for r in records] == [("stream_opened", 3)]
    assert follower.unreadable == []


def interleaved_log(logs: Path, records: int, rotate_at: int = 4096) -> int:
    """A real log of ``records`` records written to three streams in turn, each stream's
    file rotated past ``rotate_at`` bytes; returns how many records it holds in all."""
    sink = JsonlAuditSink(logs, JsonlConfig(max_file_bytes=rotate_at, durability="flush"))
    sink.start_sync()
    for i in range(records):
        if i % 3 == 0:
            sink.write_sync(SystemEvent(event="e", detail={"i": i, "pad": "x" * 100}))
        else:
            sink.write_sync(
                DecisionEvent(
                    stream="decisions",
                    session_id="s1",
                    request_id=str(i),
                    subject_id="alice",
                    subject_provenance="os",
                    mcp_method="tools/call",
                    tool_name="read_file",
                    effect="allow",
                    reason="allowed by rule r",
                    policy_id="sha256:x",
                )
                if i % 3 == 1
                else OperationEvent(
                    session_id="s1",
                    request_id=str(i),
                    direction="client_to_server",
                    outcome="forwarded",
                    mcp_method="tools/call",
                    tool_name="read_file",
                )
            )
    sink.close_sync()
    return records + len(STREAMS)  # and stream_opened in each


def test_logs_show_orders_every_stream_and_rotated_file_by_time(
    tmp_path: Path, run_cli: Any
) -> None:
    logs = tmp_path / "logs"
    total = interleaved_log(logs, 600)
    assert len(list(logs.glob("*.*.jsonl"))) > 20  # many rotated files
    result = run_cli("logs", "show", "--log-dir", str(logs), "--json")
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(shown) == total
    order = [(r["ts"], r["stream"], r["seq"]) for r in shown]
    assert order == sorted(order)
    for stream in STREAMS:  # each stream whole, in seq order
        seqs = [r["seq"] for r in shown if r["stream"] == stream]
        assert seqs == list(range(1, len(seqs) + 1))
    just = run_cli("logs", "show", "--log-dir", str(logs), "--json", "--stream", "system")
    assert [json.loads(line) for line in just.stdout.splitlines()] == [
        r for r in shown if r["stream"] == "system"
    ]


def test_logs_show_prints_each_record_as_it_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``logs show`` read the whole trail into memory and sorted it: 1e6 records took
    3.4 GB (/tmp/rev-audit/repro3_show_memory.sh). Now it merges the streams as it reads
    them: when it prints a record it has read at most one more record of each stream, and
    its memory stays far below the log's size."""
    logs = tmp_path / "logs"
    total = interleaved_log(logs, 3000, rotate_at=64 * 1024)
    size = sum(path.stat().st_size for path in logs.glob("*.jsonl"))
    read, shown, ahead = 0, 0, 0

    def counted(handle: Any) -> Any:
        nonlocal read
        for line in real_lines(handle):
            read += 1
            yield line

    def echo(*args: Any, err: bool = False, **kwargs: Any) -> None:
        nonlocal shown, ahead
        ahead = max(ahead, read - shown)  # records read but not yet shown
        shown += 1

    real_lines = audit_cli.record_lines
    monkeypatch.setattr(audit_cli, "record_lines", counted)
    monkeypatch.setattr(click, "echo", echo)
    show = ["--log-dir", str(logs), "--json"]
    audit_cli.show.main(show, standalone_mode=False)  # caches filled (re, click) before
    read, shown, ahead = 0, 0, 0
    tracemalloc.start()
    try:
        audit_cli.show.main(show, standalone_mode=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (read, shown) == (total, total)
    assert ahead <= len(STREAMS)  # the one record of each stream the merge holds
    assert peak < size / 10, (peak, size)
