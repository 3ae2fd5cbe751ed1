"""The policy enforcement point: one place every request passes, in both directions.

For each request it builds the ``DecisionRequest`` (subject from the identity provider,
action and resource from the message, environment from the session), asks the policy
engine, asks a human when the rule says ``ask``, and writes the decision record — durably,
*before* the caller acts on the verdict. Any doubt is a deny: no identity, an engine error,
an approver failure or timeout. If the record cannot be written, :class:`AuditError`
propagates and nothing passes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

import attrs

from mcp_acp.audit.events import DecisionEvent
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.errors import AuthenticationError
from mcp_acp.models import (
    ApprovalOutcome,
    ApprovalRequest,
    ApprovalResult,
    Decision,
    DecisionRequest,
    Effect,
    PostureStatus,
)
from mcp_acp.protocols import Approver, IdentityProvider, PolicyEngine
from mcp_acp.request import build_decision_request
from mcp_acp.tools import ToolRegistry

__all__ = ["EnforcementPoint", "Session", "Verdict"]

log = logging.getLogger(__name__)


@attrs.define
class Session:
    """One client connection: a random id, and what the client said about itself."""

    id: str = attrs.field(factory=lambda: secrets.token_urlsafe(24))
    client_name: str | None = None
    client_version: str | None = None
    posture: dict[str, PostureStatus] = attrs.field(factory=dict)

    def learn_client(self, params: Mapping[str, Any]) -> None:
        """From ``initialize`` params, or a request's ``_meta`` (2026-07-28 era)."""
        info = params.get("clientInfo")
        meta = params.get("_meta")
        if not isinstance(info, dict) and isinstance(meta, dict):
            info = meta.get("io.modelcontextprotocol/clientInfo")
        if isinstance(info, dict):
            name, version = info.get("name"), info.get("version")
            self.client_name = name if isinstance(name, str) else self.client_name
            self.client_version = version if isinstance(version, str) else self.client_version


@attrs.frozen(slots=True)
class Verdict:
    """What to do with a request, and why (the sentence the client is told)."""

    allowed: bool
    rule_id: str | None
    reason: str


class EnforcementPoint:
    """Decides, asks, records. One instance per session."""

    def __init__(
        self,
        *,
        engine: PolicyEngine,
        trail: AuditTrail,
        identity: IdentityProvider,
        approver: Approver,
        registry: ToolRegistry,
        backend_id: str,
        session: Session,
        approval_timeout: float = 60.0,
    ) -> None:
        self.engine = engine
        self.trail = trail
        self.identity = identity
        self.approver = approver
        self.registry = registry
        self.backend_id = backend_id
        self.session = session
        self.approval_timeout = approval_timeout

    async def build(
        self,
        method: str,
        params: Mapping[str, Any],
        request_id: Any,
        annotations: Mapping[str, Any] | None = None,
    ) -> DecisionRequest:
        subject = await self.identity.current_subject()
        return await asyncio.to_thread(
            build_decision_request,  # follows symlinks: file-system I/O, off the loop
            method=method,
            params=params,
            subject=subject,
            registry=self.registry,
            backend_id=self.backend_id,
            session_id=self.session.id,
            request_id=str(request_id),
            client_name=self.session.client_name,
            client_version=self.session.client_version,
            posture=self.session.posture,
            annotations=annotations,
        )

    def _decide(self, request: DecisionRequest) -> Decision:
        try:
            return self.engine.decide(request)
        except Exception as exc:  # engines should be total; fail closed if one is not
            log.error("policy engine raised: %s", exc)
            return Decision.deny(
                f"denied: policy engine error: {type(exc).__name__}: {exc}",
                policy_id=getattr(self.engine, "policy_id", "unknown"),
                rule_id="builtin-engine-error",
            )

    async def check(
        self,
        method: str,
        params: Mapping[str, Any],
        request_id: Any,
        annotations: Mapping[str, Any] | None = None,
    ) -> Verdict:
        """Decide one request and record the decision before returning the verdict."""
        try:
            request = await self.build(method, params, request_id, annotations)
        except AuthenticationError as exc:
            # no identity: nothing to decide about; the denial itself is on record
            await self.trail.record(
                DecisionEvent(
                    session_id=self.session.id,
                    request_id=str(request_id),
                    subject_id="(none)",
                    subject_provenance="client_hint",
                    mcp_method=method,
                    effect="deny",
                    rule_id="builtin-no-identity",
                    reason=str(exc),
                    policy_id=getattr(self.engine, "policy_id", "unknown"),
                )
            )
            return Verdict(False, "builtin-no-identity", str(exc))
        decision = self._decide(request)
        extra: dict[str, Any] = {}
        allowed = decision.effect is Effect.ALLOW
        reason = decision.reason
        if decision.effect is Effect.ASK:
            outcome = await self._ask(request, decision)
            allowed = outcome.result.allows
            extra = {
                "final_effect": "allow" if allowed else "deny",
                "approver": outcome.approver,
                "approved_by": outcome.answered_by,
                "approval_seconds": round(outcome.elapsed_seconds, 3),
            }
            if not allowed:
                reason = (
                    f"{decision.reason}; not approved ({outcome.result.value}"
                    + (f": {outcome.detail}" if outcome.detail else "")
                    + ")"
                )
        await self.trail.record(DecisionEvent.of(request, decision, **extra))
        return Verdict(allowed, decision.rule_id, reason)

    async def _ask(self, request: DecisionRequest, decision: Decision) -> ApprovalOutcome:
        paths = ", ".join(p.path for p in request.resource.paths) or "no paths"
        summary = (
            f"{request.subject.subject_id} wants {request.action.mcp_method} "
            f"{request.action.tool_name or ''} ({paths}); rule {decision.rule_id}"
        )
        approval = ApprovalRequest(
            approval_id=secrets.token_hex(8),  # hex: never starts with "-", easy to type
            request=request,
            decision=decision,
            summary=summary,
            timeout_seconds=self.approval_timeout,
            cacheable="code_exec" not in request.action.side_effects,
        )
        started = time.monotonic()
        try:
            return await asyncio.wait_for(
                self.approver.request_approval(approval), timeout=self.approval_timeout
            )
        except TimeoutError:
            return ApprovalOutcome(
                ApprovalResult.TIMEOUT,
                approver=type(self.approver).__name__,
                elapsed_seconds=time.monotonic() - started,
                detail="no answer before the timeout",
            )
        except Exception as exc:  # an approver that fails is a deny
            return ApprovalOutcome(
                ApprovalResult.DENY,
                approver=type(self.approver).__name__,
                elapsed_seconds=time.monotonic() - started,
                detail=f"approver failed: {type(exc).__name__}: {exc}",
            )
