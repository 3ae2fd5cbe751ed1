"""A gate of your own on the mcp-acp library: decide one MCP request, record the decision
durably, and only then act on it.

    python examples/library/gate.py tools/call \
        '{"name": "read_file", "arguments": {"path": "/tmp/x"}}'

It reads the config file `mcp-acp init` wrote (`--config`, `MCP_ACP_CONFIG` or the default
place) and uses the components it selects, as `mcp-acp run` does: every audit sink, behind
one fail-closed trail, every posture check (the device must pass them all before anything
is decided, as `mcp-acp run` refuses to start otherwise), the identity provider and the
policy engine. It prints the effect and the reason, and exits 0 for allow, 1 for deny or
ask (a gate without a human to ask denies), and an mcp-acp exit code (10-17) if something
it needs fails (15: the device's posture).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

from mcp_acp.audit.events import DecisionEvent
from mcp_acp.config import resolve_config_path
from mcp_acp.errors import McpAcpError
from mcp_acp.models import Effect
from mcp_acp.proxy.pep import decide, first_subject
from mcp_acp.request import build_decision_request
from mcp_acp.runtime import load_runtime
from mcp_acp.tools import ToolRegistry


async def gate(method: str, params: dict[str, Any]) -> int:
    runtime = load_runtime(resolve_config_path())
    session_id = str(uuid.uuid4())
    trail = runtime.audit_trail(runtime.shutdown_coordinator(session_id))
    await trail.start()  # every sink's write test: no trail, no decision
    try:
        # posture.checks: every one must pass (PostureError, exit 15, otherwise; on record)
        posture = runtime.posture_monitor(trail, session_id=session_id)
        await posture.gate()
        identity = runtime.build("identity", record_auth=trail.record)
        engine = runtime.build("policy")
        # a provider's failure — a bug, sys.exit(), no Subject — is AuthenticationError
        # (exit 14), one line: never a traceback, nor its own exit status (0 reads "allow")
        subject = await first_subject(identity)
        request = build_decision_request(
            method=method,
            params=params,
            subject=subject,
            registry=ToolRegistry.default(runtime.config.tools.registry),
            backend_id="example-gate",
            session_id=session_id,
            request_id="1",
            posture=posture.posture,  # what a policy's posture conditions read
        )
        # the engine's decision; anything it raises (sys.exit() too) or answers that is no
        # Decision is a deny, builtin-engine-error — never a traceback, nor its exit status
        decision = decide(engine, request)
        # Write-ahead: the decision is durable before anything acts on it. If it cannot be
        # written, record() raises AuditError and the coordinator ends the process (exit 13).
        await trail.record(DecisionEvent.of(request, decision))
    finally:
        await trail.close()
    print(f"{decision.effect.value}: {decision.reason}")
    return 0 if decision.effect is Effect.ALLOW else 1


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: gate.py METHOD PARAMS_JSON", file=sys.stderr)
        return 2
    try:
        return asyncio.run(gate(sys.argv[1], json.loads(sys.argv[2])))
    except McpAcpError as error:
        print(error.user_line(), file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
