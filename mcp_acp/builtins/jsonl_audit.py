"""Built-in ``jsonl`` audit sink (see :mod:`mcp_acp.audit.jsonl`), registered like any plugin."""

from __future__ import annotations

from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig
from mcp_acp.hookspecs import hookimpl
from mcp_acp.registry import Register


@hookimpl
def register_audit_sinks(register: Register) -> None:
    register(
        "jsonl",
        JsonlAuditSink.from_config,
        JsonlConfig,
        summary="hash-chained JSONL per stream, fsync + group commit, fail closed",
    )
