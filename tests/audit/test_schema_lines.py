"""``mcp-acp schema audit`` describes the lines the real sink writes: every field of every
line (the record's and the chain's) is in the schema of its stream, every field the schema
requires is in every line, and the chain fields have the type and pattern it says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from mcp_acp.audit.events import (
    EVENT_MODELS,
    AuthEvent,
    DecisionEvent,
    MatchedRuleRecord,
    OperationEvent,
    SystemEvent,
    argument_fields,
)
from mcp_acp.audit.jsonl import JsonlAuditSink

SINK_EVENTS = ("stream_opened", "partial_line_quarantined")


def write_every_kind(log_dir: Path) -> None:
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    sink.write_sync(
        DecisionEvent(
            session_id="s1",
            request_id="r1",
            subject_id="alice",
            subject_provenance="token",
            mcp_method="tools/call",
            tool_name="read_file",
            paths=("/srv/a",),
            effect="ask",
            final_effect="allow",
            rule_id="r",
            matched=(MatchedRuleRecord(rule="r", effect="ask"),),
            reason="asked",
            policy_id="sha256:x",
            approver="cli",
            approved_by="bob",
            approval_seconds=1.5,
        )
    )
    sink.write_sync(
        OperationEvent(
            session_id="s1",
            request_id="r1",
            direction="client_to_server",
            outcome="forwarded",
            mcp_method="tools/call",
            tool_name="read_file",
            **argument_fields({"path": "/srv/a"}),
        )
    )
    sink.write_sync(  # a backend's sampling request carrying a marker: recorded with it
        OperationEvent(
            session_id="s1",
            request_id="m1",
            direction="server_to_client",
            outcome="forwarded",
            mcp_method="sampling/createMessage",
            findings=["params.systemPrompt: control character U+001B"],
            **argument_fields({"messages": [], "systemPrompt": "\x1b[8m"}),
        )
    )
    sink.write_sync(AuthEvent(event="session_started", subject_id="alice", issuer="local"))
    sink.write_sync(SystemEvent(event="plugins_loaded", detail={"count": 4}))
    sink.close_sync()
    with (log_dir / "auth.jsonl").open("ab") as handle:
        handle.write(b'{"half a')  # a crash mid-write: the next start records it
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    sink.close_sync()
    # a crash after records were written, before the head named them: the next start
    # records them (stream_opened's past_head)
    crash = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from mcp_acp.audit import writer\n"
        "from mcp_acp.audit.jsonl import JsonlAuditSink\n"
        "from mcp_acp.audit.events import SystemEvent\n"
        "sink = JsonlAuditSink(Path(sys.argv[1]))\n"
        "sink.start_sync()\n"
        "writer.write_head = lambda fd, head: None\n"
        "sink.write_sync(SystemEvent(event='plugins_loaded', detail={'count': 4}))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", crash, str(log_dir)], check=True, timeout=60)
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    sink.close_sync()
    opened = json.loads((log_dir / "system.jsonl").read_bytes().splitlines()[-1])
    assert opened["detail"]["past_head"] == {
        "first_seq": opened["seq"] - 1,
        "last_seq": opened["seq"] - 1,
    }


def test_every_line_the_sink_writes_fits_the_exported_schema(tmp_path: Path, run_cli: Any) -> None:
    """The exported schemas said ``additionalProperties: false`` without the chain fields,
    so every real line failed validation against them (/tmp/review4/vs.py)."""
    logs = tmp_path / "logs"
    write_every_kind(logs)
    exported = json.loads(run_cli("schema", "audit", check=True).stdout)["streams"]
    seen: set[str] = set()
    for stream in ("operations", "decisions", "auth", "system"):
        for number, line in enumerate((logs / f"{stream}.jsonl").read_text().splitlines(), 1):
            record = json.loads(line)
            kind = "chain" if record["event"] in SINK_EVENTS else stream
            seen.add(record["event"])
            schema, where = exported[kind], f"{stream}.jsonl:{number} ({kind})"
            assert schema["additionalProperties"] is False
            assert set(schema["required"]) <= record.keys(), where
            assert record.keys() <= schema["properties"].keys(), where
            for name in ("seq", "prev_hash", "hash"):
                assert name in schema["required"]
                rule, value = schema["properties"][name], record[name]
                if rule["type"] == "integer":
                    assert type(value) is int
                    assert value >= rule["minimum"]
                else:
                    assert isinstance(value, str)
                    assert re.search(rule["pattern"], value), where
            # the record's own fields are what its model says
            body = {k: v for k, v in record.items() if k not in ("seq", "prev_hash", "hash")}
            EVENT_MODELS[kind].model_validate(body)
    assert seen >= {*SINK_EVENTS, "decision", "operation", "session_started", "plugins_loaded"}


def test_a_line_without_its_chain_fields_does_not_fit(run_cli: Any) -> None:
    exported = json.loads(run_cli("schema", "audit", check=True).stdout)["streams"]
    for schema in exported.values():
        assert {"seq", "prev_hash", "hash", "stream", "event", "ts"} <= set(schema["required"])
        assert schema["properties"]["hash"]["pattern"] == "^[0-9a-f]{64}$"
