"""Audit trail: the event types (exported here), and in their own modules the hash chain
(``chain``), the built-in ``jsonl`` sink (``jsonl``) and its stream writer (``writer``), the
trail that fails closed (``trail``), redaction (``redact``), and the ``audit`` and ``logs``
commands (``cli``, ``follow``)."""

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
