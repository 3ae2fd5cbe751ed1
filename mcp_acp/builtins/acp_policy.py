"""Built-in ``acp`` policy engine (see :mod:`mcp_acp.policy.engine`), registered like any plugin."""

from __future__ import annotations

from mcp_acp.hookspecs import hookimpl
from mcp_acp.policy.engine import AcpConfig, AcpPolicyEngine
from mcp_acp.registry import Register


@hookimpl
def register_policy_engines(register: Register) -> None:
    register(
        "acp",
        AcpPolicyEngine.from_config,
        AcpConfig,
        summary="JSON rules: deny overrides ask overrides allow; default deny",
    )
