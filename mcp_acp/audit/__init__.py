"""Audit trail: event types now; the fail-closed ``jsonl`` sink arrives with its issue."""

from mcp_acp.audit.events import (
    AuditEvent,
    AuthEvent,
    AuthEventName,
    DecisionEvent,
    OperationEvent,
    Stream,
    SystemEvent,
)

__all__ = [
    "AuditEvent",
    "AuthEvent",
    "AuthEventName",
    "DecisionEvent",
    "OperationEvent",
    "Stream",
    "SystemEvent",
]
