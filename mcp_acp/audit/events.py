"""Audit event types: one model per stream, strict (``extra="forbid"``) and frozen.

Streams: ``operations`` (what went over the wire), ``decisions`` (what the policy said and
why), ``auth`` (identity and session lifecycle), ``system`` (start-up, plugins, shutdown).
``request_id`` and ``session_id`` join records across streams.

Arguments and results are recorded as SHA-256 + size, never verbatim by default; a token,
cookie or Authorization value must never appear in any field.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from mcp_acp.audit.redact import SECRET_WORDS

if TYPE_CHECKING:
    from mcp_acp.models import Decision, DecisionRequest

__all__ = [
    "EVENT_MODELS",
    "STREAMS",
    "AuditEvent",
    "AuthEvent",
    "AuthEventName",
    "ChainEvent",
    "DecisionEvent",
    "MatchedRuleRecord",
    "OperationEvent",
    "Stream",
    "SystemEvent",
    "argument_fields",
    "payload_digest",
    "without_secrets",
]

Stream = Literal["operations", "decisions", "auth", "system"]
STREAMS: tuple[Stream, ...] = ("operations", "decisions", "auth", "system")

AuthEventName = Literal[
    "token_validated",
    "token_invalid",
    "token_refreshed",
    "token_refresh_failed",
    "session_started",
    "session_ended",
    "device_health_passed",
    "device_health_failed",
]


def _now() -> datetime:
    return datetime.now(UTC)


#: "00" … "99", and ".000Z" … ".999Z": ``_iso_ms`` looks the fields up instead of formatting
#: numbers, which was most of its cost.
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))
_MILLIS = tuple(f".{n:03d}Z" for n in range(1000))


def _iso_ms(ts: datetime) -> str:
    """``2026-11-26T18:23:28.113Z``. A plain function, not a ``field_serializer`` method (half
    the cost), building the text from lookup tables (half again: ``%``-formatting seven
    numbers was ~11,000 instructions, ``isoformat`` more): it runs for every record."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    two = _TWO_DIGITS
    year = ts.year
    return (
        f"{two[year // 100]}{two[year % 100]}-{two[ts.month]}-{two[ts.day]}"
        f"T{two[ts.hour]}:{two[ts.minute]}:{two[ts.second]}{_MILLIS[ts.microsecond // 1000]}"
    )


#: What a text holds if :func:`~mcp_acp.config.redact_prose` would change it — a URL (its
#: query, its password), a ``name=value`` pair, or a credential's shape: most hold none,
#: and pass with this one search.
_MAY_HOLD_SECRET = re.compile(
    r"//|=|(?i:bearer|basic)\s|eyJ|-----BEGIN|gh[pousr]_|github_pat_|glpat-|AKIA|sk-|xox|AIza|k_live_"
)
#: Or a ``Name: value`` header whose name looks secret (``X-Api-Key: …``, ``"token":"…"``):
#: a colon and a blank or a quote, and one of the words every secret name holds
#: (:data:`~mcp_acp.audit.redact.SECRET_WORDS`) — searches that each read the text once, a
#: superset of what the header pattern finds.
_COLON_BLANK = re.compile(r":[ \t\"']")
#: :data:`~mcp_acp.audit.redact.SECRET_WORDS` are looked for in the lower-cased text: a
#: case-insensitive regex alternation took 2.6 µs on a 40-character reason, paid by every
#: record.


def _may_hold_secret(text: str) -> bool:
    """Whether :func:`~mcp_acp.config.redact_prose` may change ``text`` (false only if not)."""
    if _MAY_HOLD_SECRET.search(text) is not None:
        return True
    if _COLON_BLANK.search(text) is None:
        return False
    lowered = text.lower()
    return any(word in lowered for word in SECRET_WORDS)


def without_secrets(value: Any) -> Any:
    """``value`` with every credential in its strings replaced by ``<redacted>``
    (:func:`~mcp_acp.config.redact_prose`: a URL's query values and password, secret
    ``name=value`` pairs, bearer tokens, JWTs, PEM keys, …), at any depth. For the text
    that records quote from requests: a policy's reason names the URI it matched
    (``uri https://api.example/x?access_token=…``), a denial the ambiguous one, an
    exposure the resource read."""
    if isinstance(value, str):
        if not _may_hold_secret(value):
            return value
        from mcp_acp.config import redact_prose  # config imports this package

        return redact_prose(value)
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_secrets(v) for v in value]
    return value


#: A text or ``detail`` written with its credentials redacted (:func:`without_secrets`).
_Text = Annotated[str, PlainSerializer(without_secrets, return_type=str)]
_Detail = Annotated[dict[str, Any], PlainSerializer(without_secrets, return_type=dict[str, Any])]


class AuditEvent(BaseModel):
    """Fields every audit record has. Subclass per stream; do not use directly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: Stream
    event: str = Field(description="What happened, e.g. 'decision' or 'session_started'.")
    ts: Annotated[datetime, PlainSerializer(_iso_ms, return_type=str)] = Field(
        default_factory=_now, description="UTC time, ISO-8601 with ms."
    )
    session_id: str | None = None
    request_id: str | None = None


class MatchedRuleRecord(BaseModel):
    """A rule that matched, as recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: str
    effect: Literal["allow", "deny", "ask"]


class DecisionEvent(AuditEvent):
    """One policy decision, written *before* it is enforced (write-ahead)."""

    stream: Literal["decisions"] = "decisions"
    event: Literal["decision"] = "decision"
    subject_id: str
    subject_provenance: str
    mcp_method: str
    tool_name: str | None = None
    backend_id: str | None = None
    backend_identity: tuple[str, ...] | None = Field(
        default=None, description="Names of the backend's verified TLS certificate (mTLS)."
    )
    backend_identity_provenance: str | None = Field(
        default=None, description="Where backend_identity came from ('mtls'), when present."
    )
    paths: tuple[str, ...] = Field(default=(), description="Every path argument, as sent.")
    effect: Literal["allow", "deny", "ask"]
    final_effect: Literal["allow", "deny"] | None = Field(
        default=None, description="After human approval, when the effect was 'ask'."
    )
    rule_id: str | None = None
    matched: tuple[MatchedRuleRecord, ...] = ()
    reason: _Text
    policy_id: str
    eval_us: float = 0.0
    approver: str | None = None
    approved_by: str | None = None
    approval_seconds: float | None = None
    approval_cached: bool | None = Field(
        default=None, description="True when a remembered approval answered the 'ask'."
    )
    approval_remembered: bool | None = Field(
        default=None, description="True when this approval was remembered for later."
    )
    direction: Literal["server_to_client"] | None = Field(
        default=None,
        description="'server_to_client' for a request or notification the backend sent; "
        "absent for the client's. Its request_id is the backend's own id.",
    )

    @classmethod
    def of(cls, request: DecisionRequest, decision: Decision, **extra: Any) -> DecisionEvent:
        """The record of ``decision`` about ``request``. (Validated from a dict, the matched
        rules too: the same checks as ``cls(...)``, without building keyword arguments and
        a model per matched rule first — this runs for every request.)"""
        return cls.model_validate(
            {
                "session_id": request.environment.session_id,
                "request_id": request.environment.request_id,
                "subject_id": request.subject.subject_id,
                "subject_provenance": request.subject.provenance.name.lower(),
                "mcp_method": request.action.mcp_method,
                "tool_name": request.action.tool_name,
                "backend_id": request.resource.backend_id,
                "backend_identity": request.resource.backend_identity or None,
                "backend_identity_provenance": (
                    request.provenance_of("resource.backend_identity").name.lower()
                    if request.resource.backend_identity
                    else None
                ),
                "paths": tuple(p.path for p in request.resource.paths),
                "effect": decision.effect.value,
                "rule_id": decision.rule_id,
                "matched": tuple(
                    {"rule": m.rule_id, "effect": m.effect.value} for m in decision.matched
                ),
                "reason": decision.reason,
                "policy_id": decision.policy_id,
                "eval_us": round(decision.eval_us, 3),
                **extra,
            }
        )


#: ``json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
#: default=str)``, with the encoder made once: ``dumps`` with any option builds a new one
#: per call, a third of the digest's cost for a small payload.
_canonical_text = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
).encode


def payload_digest(payload: Any) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of ``payload``'s canonical JSON."""
    body = _canonical_text(payload).encode("utf-8", "surrogatepass")
    return hashlib.sha256(body).hexdigest(), len(body)


def argument_fields(arguments: Any, *, record_payloads: bool = False) -> dict[str, Any]:
    """``arguments_sha256`` and ``arguments_size`` — and, only when payload recording is
    configured, the arguments themselves with secrets redacted."""
    from mcp_acp.audit.redact import redact

    digest, size = payload_digest(arguments)
    fields: dict[str, Any] = {"arguments_sha256": digest, "arguments_size": size}
    if record_payloads and isinstance(arguments, dict):
        fields["arguments"] = redact(arguments)
    return fields


class OperationEvent(AuditEvent):
    """One message relayed (or refused) between client and backend."""

    stream: Literal["operations"] = "operations"
    event: Literal["operation"] = "operation"
    direction: Literal["client_to_server", "server_to_client"]
    mcp_method: str | None = None
    tool_name: str | None = None
    outcome: Literal["forwarded", "denied", "error", "response"]
    arguments_sha256: str | None = None
    arguments_size: int | None = None
    arguments: dict[str, Any] | None = Field(
        default=None, description="Full arguments, only with audit.record_payloads (redacted)."
    )
    result_sha256: str | None = None
    result_size: int | None = None
    error_code: int | None = None
    duration_ms: float | None = None
    reason: _Text | None = Field(
        default=None,
        description="On a request recorded as forwarded that was not forwarded after all "
        "(cancelled while its decision was being recorded, the audit trail failed): a "
        "later record of the same request, outcome denied, saying why.",
    )
    findings: list[str] | None = Field(
        default=None,
        description="The hidden-instruction markers screening found in what the backend has "
        "the client's model read: on the answer (server_to_client) to a tools/call, "
        "resources/read, prompts/get or the handshake (initialize, server/discover), relayed "
        "unchanged; on a sampling/createMessage "
        "request of the backend's (server_to_client, its own id; recorded only with "
        "findings), outcome forwarded (relayed unchanged) or denied. Whatever reached the "
        "client exposed the session to untrusted content.",
    )


class AuthEvent(AuditEvent):
    """Identity and session lifecycle."""

    stream: Literal["auth"] = "auth"
    event: AuthEventName
    subject_id: str | None = None
    issuer: str | None = None
    reason: _Text | None = None
    detail: _Detail | None = Field(
        default=None, description="Event specifics, e.g. each posture check's result."
    )


class SystemEvent(AuditEvent):
    """Process lifecycle: start-up, loaded plugins, configuration, shutdown."""

    stream: Literal["system"] = "system"
    detail: _Detail = Field(default_factory=dict)


class ChainEvent(AuditEvent):
    """Written by the sink itself into any stream: the start-up write test
    (``stream_opened``) and a partial line set aside after a crash."""

    event: Literal["stream_opened", "partial_line_quarantined"]
    detail: dict[str, Any] = Field(
        default_factory=dict,
        description="stream_opened: durability, pid, and past_head ({first_seq, last_seq}) "
        "when the stream went on past its chain head, which was not marked closed (after a "
        "crash): those records were taken though no head confirmed them. "
        "partial_line_quarantined: file.",
    )


#: Every event model, for ``mcp-acp schema audit``.
EVENT_MODELS: dict[str, type[AuditEvent]] = {
    "operations": OperationEvent,
    "decisions": DecisionEvent,
    "auth": AuthEvent,
    "system": SystemEvent,
    "chain": ChainEvent,
}
