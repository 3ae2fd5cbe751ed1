"""Audit event types: one model per stream, strict (``extra="forbid"``) and frozen.

Streams: ``operations`` (what went over the wire), ``decisions`` (what the policy said and
why), ``auth`` (identity and session lifecycle), ``system`` (start-up, plugins, shutdown).
``request_id`` and ``session_id`` join records across streams.

Arguments and results are recorded as SHA-256 + size, never verbatim by default; a token,
cookie or Authorization value must never appear in any field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

__all__ = [
    "AuditEvent",
    "AuthEvent",
    "AuthEventName",
    "DecisionEvent",
    "OperationEvent",
    "Stream",
    "SystemEvent",
]

Stream = Literal["operations", "decisions", "auth", "system"]

AuthEventName = Literal[
    "token_validated",
    "token_invalid",
    "token_refreshed",
    "token_refresh_failed",
    "session_started",
    "session_ended",
]


def _now() -> datetime:
    return datetime.now(UTC)


class AuditEvent(BaseModel):
    """Fields every audit record has. Subclass per stream; do not use directly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: Stream
    event: str = Field(description="What happened, e.g. 'decision' or 'session_started'.")
    ts: datetime = Field(default_factory=_now, description="UTC time, ISO-8601 with ms.")
    session_id: str | None = None
    request_id: str | None = None

    @field_serializer("ts")
    def _iso_ms(self, ts: datetime) -> str:
        return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DecisionEvent(AuditEvent):
    """One policy decision, written *before* it is enforced."""

    stream: Literal["decisions"] = "decisions"
    event: Literal["decision"] = "decision"
    subject_id: str
    mcp_method: str
    tool_name: str | None = None
    effect: Literal["allow", "deny", "ask"]
    final_effect: Literal["allow", "deny"] | None = Field(
        default=None, description="After human approval, when the effect was 'ask'."
    )
    rule_id: str | None = None
    matched_rules: tuple[str, ...] = ()
    reason: str
    policy_id: str
    eval_ns: int = 0
    approver: str | None = None
    approved_by: str | None = None
    approval_seconds: float | None = None


class OperationEvent(AuditEvent):
    """One message relayed (or refused) between client and backend."""

    stream: Literal["operations"] = "operations"
    direction: Literal["client_to_server", "server_to_client"]
    mcp_method: str | None = None
    outcome: Literal["forwarded", "denied", "error", "response"]
    arguments_sha256: str | None = None
    arguments_size: int | None = None
    duration_ms: float | None = None


class AuthEvent(AuditEvent):
    """Identity and session lifecycle."""

    stream: Literal["auth"] = "auth"
    event: AuthEventName
    subject_id: str | None = None
    issuer: str | None = None
    reason: str | None = None


class SystemEvent(AuditEvent):
    """Process lifecycle: start-up, loaded plugins, configuration, shutdown."""

    stream: Literal["system"] = "system"
    detail: dict[str, Any] = Field(default_factory=dict)
