"""A small real process that records decisions through the audit trail (write-ahead).

    python victim.py LOG_DIR FALLBACK BACKEND_FILE HEALTH_SECONDS [WRITE_TIMEOUT_SECONDS]

Commands on stdin, one per line:
  req ID      -> decision record, then (only if durable) one "backend call" appended to
                 BACKEND_FILE; answers "OK ID" or "DENIED ID: <reason>"
  burst N     -> N decision records as fast as possible, answers "BURST N" at the end
Prints "READY" once the trail has started; exits with the shutdown coordinator's code.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mcp_acp.audit.events import DecisionEvent
from mcp_acp.audit.jsonl import JsonlAuditSink
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.errors import AuditError
from mcp_acp.shutdown import ShutdownCoordinator


def decision(request_id: str) -> DecisionEvent:
    return DecisionEvent(
        session_id="victim",
        request_id=request_id,
        subject_id="alice",
        subject_provenance="config",
        mcp_method="tools/call",
        tool_name="read_file",
        paths=("/srv/a",),
        effect="allow",
        rule_id="r1",
        reason="allowed by rule r1",
        policy_id="sha256:test",
    )


async def main() -> None:
    log_dir, fallback, backend = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    write_timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
    coordinator = ShutdownCoordinator(
        log_dir=log_dir, fallback_path=fallback, session_id="victim", io_timeout=write_timeout
    )
    sink = JsonlAuditSink(log_dir)
    trail = AuditTrail(
        [sink], coordinator, health_interval=float(sys.argv[4]), write_timeout=write_timeout
    )
    try:
        await trail.start()
    except AuditError as error:
        print(f"REFUSED {error}", flush=True)
        sys.exit(error.exit_code)
    monitor = asyncio.create_task(trail.monitor())
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command, _, argument = line.strip().partition(" ")
        if command == "req":

            async def forward(request_id: str = argument) -> None:
                with backend.open("a") as handle:
                    handle.write(request_id + "\n")

            try:
                await trail.enforce(decision(argument), forward)
                print(f"OK {argument}", flush=True)
            except AuditError as error:
                print(f"DENIED {argument}: {error}", flush=True)
        elif command == "burst":
            try:
                await asyncio.gather(
                    *(trail.record(decision(f"b{i}")) for i in range(int(argument)))
                )
                print(f"BURST {argument}", flush=True)
            except AuditError as error:
                print(f"DENIED burst: {error}", flush=True)
    monitor.cancel()
    await trail.close()


if __name__ == "__main__":
    asyncio.run(main())
