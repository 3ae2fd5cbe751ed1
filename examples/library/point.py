"""Your own policy engine, in your own program, behind mcp-acp's enforcement point.

    python examples/library/point.py ROOT tools/call \
        '{"name": "read_file", "arguments": {"path": "ROOT/notes.md"}}'

A policy engine is any object with ``decide(request) -> Decision`` and a ``policy_id``
(the ``PolicyEngine`` contract in ``mcp_acp/protocols.py``): in-process it needs no plugin.
Here it allows reads under ROOT and denies everything else. The enforcement point
(``EnforcementPoint.check``, what ``mcp-acp run`` calls for every request) adds what the
proxy enforces around any engine: the protected paths, the credential and untrusted-content
escalations, asking the configured approver, and the decision record written before the
verdict returns. Exit 0 if allowed, 1 if not, an mcp-acp exit code (10-17) on failure.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from mcp_acp.config import resolve_config_path
from mcp_acp.errors import McpAcpError
from mcp_acp.models import Decision, DecisionRequest, Effect
from mcp_acp.proxy.pep import EnforcementPoint, Session, first_subject
from mcp_acp.runtime import load_runtime
from mcp_acp.tools import ToolRegistry


class ReadsUnder:
    """A ``PolicyEngine``: a read whose every path resolves under ``root`` is allowed."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.policy_id = f"reads-under:{self.root}"  # recorded with every decision

    def decide(self, request: DecisionRequest) -> Decision:
        paths = [Path(p.resolved or p.path) for p in request.resource.paths]
        inside = bool(paths) and all(p.is_relative_to(self.root) for p in paths)
        if request.action.operations == {"read"} and inside:
            return Decision(Effect.ALLOW, self.policy_id, "read-under-root", reason="read in root")
        return Decision(Effect.DENY, self.policy_id, None, reason=f"only reads under {self.root}")


async def check(root: Path, method: str, params: dict[str, Any]) -> int:
    runtime = load_runtime(resolve_config_path())
    session = Session()  # a random session id
    trail = runtime.audit_trail(runtime.shutdown_coordinator(session.id))
    await trail.start()  # every sink's write test: no trail, no decision
    try:
        # posture.checks: every one must pass before anything is decided (exit 15 if not);
        # the monitor keeps session.posture, which the point's decision requests read
        posture = runtime.posture_monitor(trail, session_id=session.id, posture=session.posture)
        await posture.gate()
        identity = runtime.build("identity", record_auth=trail.record)
        # bound once: a request by any other subject in this session is denied and ends it
        # (a provider's failure, sys.exit() included: AuthenticationError, exit 14)
        session.bind(await first_subject(identity))
        point = EnforcementPoint(
            engine=ReadsUnder(root),  # or runtime.build("policy"): the configured engine
            trail=trail,
            identity=identity,
            approver=runtime.build("approver"),
            registry=ToolRegistry.default(runtime.config.tools.registry),
            backend_id="example-point",
            session=session,
            protected=runtime.protected_dirs,  # mcp-acp's config and log directories, …
            unhealthy=lambda: posture.failed,  # posture lost (posture.start_watching()): deny
        )
        verdict = await point.check(method, params, request_id=1)  # recorded before it returns
    finally:
        await trail.close()
    print(f"{'allowed' if verdict.allowed else 'denied'}: {verdict.reason}")
    return 0 if verdict.allowed else 1


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: point.py ROOT METHOD PARAMS_JSON", file=sys.stderr)
        return 2
    try:
        return asyncio.run(check(Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])))
    except McpAcpError as error:
        print(error.user_line(), file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
