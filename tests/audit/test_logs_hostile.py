"""``mcp-acp logs show|tail`` against hostile logs: records that are not what the writer
writes, a ``--since`` beyond the calendar, and rotation under a follower."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mcp_acp.audit.events import DecisionEvent, SystemEvent
from mcp_acp.audit.jsonl import JsonlAuditSink


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
            f"skipped unreadable line {system}:3: no ts with a time zone",
            f"skipped unreadable line {system}:4: not a JSON record",
            f"skipped unreadable line {system}:5: not a JSON object",
            f"skipped unreadable line {system}:6: no ts with a time zone",
        ]
    table = run_cli("logs", "show", "--log-dir", str(logs)).stdout
    assert '{"x": [1]}' in table  # the object is shown as JSON, in its column
    assert "plugins_loaded" in table
    assert "denied by rule deny-secrets" in table


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
