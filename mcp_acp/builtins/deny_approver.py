"""Built-in ``deny`` approver: for headless use, where no human can be asked.

Every ``ask`` decision becomes a deny, recorded as such. It is the default approver, so an
``ask`` rule never turns into an allow by accident.
"""

from __future__ import annotations

from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import ApprovalOutcome, ApprovalRequest, ApprovalResult
from mcp_acp.registry import NoOptions, PluginContext, Register


class DenyApprover:
    """Answers every approval request with ``DENY`` at once."""

    name = "deny"

    @classmethod
    def from_config(cls, options: NoOptions, context: PluginContext) -> DenyApprover:
        return cls()

    async def request_approval(self, request: ApprovalRequest) -> ApprovalOutcome:
        return ApprovalOutcome(
            result=ApprovalResult.DENY,
            approver=self.name,
            detail="headless approver: no human can be asked, so the request is denied",
        )


@hookimpl
def register_approvers(register: Register) -> None:
    register("deny", DenyApprover.from_config, summary="headless: every 'ask' is denied")
