"""Built-in ``cli`` approver: pending approvals answered from another terminal.

The approver keeps its pending approvals in memory and offers three operations on the
proxy's control socket (:mod:`mcp_acp.control`): ``list``, ``approve`` (with
``"remember": true`` to let the proxy cache the approval) and ``deny``. They are what
``mcp-acp approvals list | approve ID [--remember] | deny ID`` sends. The answer is tied
to the user name from the socket's peer credentials.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import attrs
from pydantic import BaseModel, ConfigDict

from mcp_acp.control import Operation
from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import ApprovalOutcome, ApprovalRequest, ApprovalResult
from mcp_acp.registry import PluginContext, Register

__all__ = ["CliApprover", "CliApproverConfig"]


class CliApproverConfig(BaseModel):
    """The ``cli`` approver has no options of its own: the timeout is
    ``proxy.approval_timeout_seconds`` and the socket lives in ``proxy.socket_dir``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@attrs.define
class _Pending:
    request: ApprovalRequest
    answer: asyncio.Future[tuple[ApprovalResult, str]]
    created: float


class CliApprover:
    """Queues approvals until they are answered over the control socket, or time out."""

    name = "cli"

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}

    @classmethod
    def from_config(cls, options: CliApproverConfig, context: PluginContext) -> CliApprover:
        return cls()

    def control_ops(self) -> dict[str, Operation]:
        """The operations this approver serves on the proxy's control socket."""
        return {"list": self._list, "approve": self._approve, "deny": self._deny}

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    async def request_approval(self, request: ApprovalRequest) -> ApprovalOutcome:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[ApprovalResult, str]] = loop.create_future()
        started = time.monotonic()
        self._pending[request.approval_id] = _Pending(request, answer, started)
        try:
            result, who = await asyncio.wait_for(
                asyncio.shield(answer), timeout=request.timeout_seconds
            )
        except TimeoutError:
            result, who = ApprovalResult.TIMEOUT, ""
        finally:
            self._pending.pop(request.approval_id, None)
        if result is ApprovalResult.ALLOW_AND_CACHE and not request.cacheable:
            result = ApprovalResult.ALLOW_ONCE  # e.g. code execution: never remembered
        return ApprovalOutcome(
            result=result,
            approver=self.name,
            answered_by=who or None,
            elapsed_seconds=time.monotonic() - started,
            detail=None if who else "nobody answered in time",
        )

    # ---------------------------------------------------------------- control operations

    def _list(self, command: Mapping[str, Any], who: str) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "pending": [
                {
                    "id": key,
                    "summary": p.request.summary,
                    "rule": p.request.decision.rule_id,
                    "subject": p.request.request.subject.subject_id,
                    "method": p.request.request.action.mcp_method,
                    "tool": p.request.request.action.tool_name,
                    "name": p.request.request.resource.name,
                    "uri": p.request.request.resource.uri,
                    "arguments": p.request.arguments,
                    "paths": [a.path for a in p.request.request.resource.paths],
                    "cacheable": p.request.cacheable,
                    "not_remembered": p.request.not_remembered,
                    "expires_in": round(p.request.timeout_seconds - (now - p.created), 1),
                }
                for key, p in self._pending.items()
            ],
        }

    def _answer(
        self, command: Mapping[str, Any], who: str, result: ApprovalResult
    ) -> dict[str, Any]:
        pending = self._pending.get(str(command.get("id")))
        if pending is None or pending.answer.done():
            return {"error": f"no pending approval {command.get('id')!r}"}
        if result is ApprovalResult.ALLOW_AND_CACHE and not pending.request.cacheable:
            result = ApprovalResult.ALLOW_ONCE
        pending.answer.set_result((result, who))
        return {"ok": True, "result": result.value}

    def _approve(self, command: Mapping[str, Any], who: str) -> dict[str, Any]:
        remember = command.get("remember") is True
        result = ApprovalResult.ALLOW_AND_CACHE if remember else ApprovalResult.ALLOW_ONCE
        return self._answer(command, who, result)

    def _deny(self, command: Mapping[str, Any], who: str) -> dict[str, Any]:
        return self._answer(command, who, ApprovalResult.DENY)


@hookimpl
def register_approvers(register: Register) -> None:
    register(
        "cli",
        CliApprover.from_config,
        CliApproverConfig,
        summary="pending approvals answered with 'mcp-acp approvals' (local socket)",
    )
