"""What the audit tests share: a realistic decision record, and a writer killed at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from mcp_acp.audit.events import DecisionEvent

#: A writer of ``system`` events that ends with ``os._exit``: what a kill -9 or the
#: shutdown coordinator's exit leaves behind (no close, so the head is not marked closed).
_KILLED_WRITER = """\
import os, sys
from pathlib import Path
from mcp_acp.audit.jsonl import JsonlAuditSink
from mcp_acp.audit.events import SystemEvent
sink = JsonlAuditSink(Path(sys.argv[1]))
sink.start_sync()
for n in range(int(sys.argv[2])):
    sink.write_sync(SystemEvent(event=f'e{n}'))
os._exit(0)
"""


def decision(request_id: str, **fields: Any) -> DecisionEvent:
    values: dict[str, Any] = {
        "session_id": "s1",
        "request_id": request_id,
        "subject_id": "alice",
        "subject_provenance": "token",
        "mcp_method": "tools/call",
        "tool_name": "read_file",
        "effect": "allow",
        "rule_id": "r1",
        "reason": "allowed by rule r1",
        "policy_id": "sha256:x",
    }
    values.update(fields)
    return DecisionEvent(**values)


def killed_writer(log_dir: Path, records: int) -> None:
    """Write ``records`` system events to ``log_dir`` in a child process killed at once."""
    argv = [sys.executable, "-c", _KILLED_WRITER, str(log_dir), str(records)]
    subprocess.run(argv, check=True, timeout=60)
