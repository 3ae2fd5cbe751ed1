"""Helpers for policy tests: a request builder and an engine from inline rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mcp_acp.models import DecisionRequest, PostureStatus, Provenance, Subject
from mcp_acp.policy.engine import AcpPolicyEngine
from mcp_acp.policy.model import PolicyFile
from mcp_acp.request import build_decision_request
from mcp_acp.tools import ToolRegistry

REGISTRY = ToolRegistry.default()
NOON_WEDNESDAY = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def make_request(
    method: str = "tools/call",
    tool: str | None = "read_file",
    arguments: dict[str, Any] | None = None,
    *,
    params: dict[str, Any] | None = None,
    subject: Subject | None = None,
    subject_provenance: Provenance = Provenance.TOKEN,
    client_name: str | None = "claude-ai",
    client_version: str | None = "1.0.0",
    posture: dict[str, PostureStatus] | None = None,
    annotations: dict[str, Any] | None = None,
    backend_id: str = "fs",
    backend_identity: tuple[str, ...] = (),
    now: datetime = NOON_WEDNESDAY,
    resolve: bool = True,
    **subject_fields: Any,
) -> DecisionRequest:
    if params is None:
        params = {"name": tool, "arguments": arguments or {}} if method == "tools/call" else {}
    if subject is None:
        subject = Subject(
            subject_id=subject_fields.pop("subject_id", "alice"),
            provenance=subject_provenance,
            **subject_fields,
        )
    return build_decision_request(
        method=method,
        params=params,
        subject=subject,
        registry=REGISTRY,
        backend_id=backend_id,
        backend_identity=backend_identity,
        session_id="s-1",
        request_id="r-1",
        client_name=client_name,
        client_version=client_version,
        posture=posture,
        annotations=annotations,
        now=now,
        resolve_paths=resolve,
    )


def make_engine(*rules: dict[str, Any], **kwargs: Any) -> AcpPolicyEngine:
    return AcpPolicyEngine(
        PolicyFile.model_validate({"version": "1", "rules": list(rules)}), **kwargs
    )
