"""The posture monitor with real checks: the example plugin's ``marker-file`` check on a
real file (flipped by deleting the file), a check that never answers, ones that raise
(``Exception`` or not), one that blocks its thread, one that cancels the monitor's own
task; the
real audit trail on disk; and the enforcement point with a rule that requires posture."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mcp_acp_example_posture import MarkerFileCheck

from mcp_acp.audit.jsonl import JsonlAuditSink
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.builtins.deny_approver import DenyApprover
from mcp_acp.builtins.local_identity import LocalIdentityProvider
from mcp_acp.errors import McpAcpError, PostureError
from mcp_acp.models import PostureResult, PostureStatus
from mcp_acp.policy.engine import AcpPolicyEngine
from mcp_acp.posture import PostureMonitor, run_check
from mcp_acp.proxy.pep import EnforcementPoint, Session
from mcp_acp.shutdown import ShutdownCoordinator
from mcp_acp.tools import ToolRegistry


class Hangs:
    name = "hangs"

    async def check(self) -> PostureResult:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class Raises:
    name = "raises"

    async def check(self) -> PostureResult:
        raise OSError("no such device")


class Lies:
    name = "lies"

    async def check(self) -> Any:
        return "pass"  # not a PostureResult: not a pass either


class RaisesBase:
    """A check that raises what is not an ``Exception``."""

    name = "raises-base"

    def __init__(self, raised: BaseException) -> None:
        self.raised = raised

    async def check(self) -> PostureResult:
        raise self.raised


class StopsTheMonitor:
    """A check that cancels the monitor's own task (a plugin meddling with the proxy's
    tasks), then passes."""

    name = "stops-the-monitor"

    async def check(self) -> PostureResult:
        # a check runs in an event loop of its own: the monitor's task is found the hard way
        for task in [t for t in gc.get_objects() if isinstance(t, asyncio.Task)]:
            if task.get_coro().__qualname__ == "PostureMonitor.watch":  # type: ignore[union-attr]
                task.get_loop().call_soon_threadsafe(task.cancel)
        return PostureResult(
            check=self.name, status=PostureStatus.PASS, detail="", checked_at=datetime.now(UTC)
        )


class Blocks:
    """A check that blocks its thread (a synchronous wait inside its ``async def``) until
    ``release`` is set — or, on code that runs checks in the proxy's own loop, blocks
    that loop for 10 s and then passes."""

    name = "blocks"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.returned = threading.Event()

    async def check(self) -> PostureResult:
        self.entered.set()
        self.release.wait(10)
        self.returned.set()
        return PostureResult(
            check=self.name, status=PostureStatus.PASS, detail="", checked_at=datetime.now(UTC)
        )


@pytest.fixture
async def trail(tmp_path: Path) -> Any:
    log_dir = tmp_path / "log"
    trail = AuditTrail(
        [JsonlAuditSink(log_dir)],
        ShutdownCoordinator(log_dir=log_dir, fallback_path=tmp_path / "fallback.jsonl"),
    )
    await trail.start()
    yield trail, log_dir
    await trail.close()


def auth_events(log_dir: Path) -> list[dict[str, Any]]:
    lines = (log_dir / "auth.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"].startswith("device_health")]


@pytest.mark.parametrize(
    ("check", "detail"),
    [
        (Hangs(), "no answer within 0.2 s"),
        (Raises(), "OSError: no such device"),
        (Lies(), "returned str, not a PostureResult"),
    ],
)
async def test_a_broken_check_is_unknown(check: Any, detail: str) -> None:
    result = await asyncio.wait_for(run_check(check, 0.2), timeout=5)
    assert result.status is PostureStatus.UNKNOWN
    assert detail in result.detail
    assert not result.passed


@pytest.mark.parametrize(
    ("raised", "detail"),
    [
        (asyncio.CancelledError(), "CancelledError (it was not cancelled)"),
        (SystemExit(0), "SystemExit: 0"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (GeneratorExit(), "GeneratorExit"),
    ],
    ids=["CancelledError", "SystemExit", "KeyboardInterrupt", "GeneratorExit"],
)
def test_a_check_that_raises_a_base_exception_is_unknown(
    raised: BaseException, detail: str
) -> None:
    """Not only ``Exception``: in a task, SystemExit and KeyboardInterrupt would stop the
    event loop, and a CancelledError of the check's own would end the monitor. (The check
    runs in an event loop of its own: what escapes it must fail this test, not pytest.)"""

    async def round_() -> PostureResult:
        return await asyncio.ensure_future(run_check(RaisesBase(raised), 5))

    try:
        result: PostureResult | BaseException = asyncio.run(round_())
    except BaseException as escaped:
        result = escaped
    assert isinstance(result, PostureResult), f"escaped run_check: {result!r}"
    assert result.status is PostureStatus.UNKNOWN
    assert result.detail == f"the check failed: {detail}"


async def test_a_check_that_blocks_its_thread_is_unknown_and_the_loop_goes_on() -> None:
    """The check blocks where only its own thread waits: its round gives up at the timeout
    while the proxy's loop keeps running; the next round does not start a second thread
    for it; once it returns, it is checked again as usual."""
    check = Blocks()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.ensure_future(tick())
    try:
        first = await run_check(check, 0.3)
        assert check.entered.is_set()
        assert (first.status, first.detail) == (PostureStatus.UNKNOWN, "no answer within 0.3 s")
        assert ticks > 0  # the loop ran while the check blocked
        assert not check.returned.is_set()
        second = await run_check(check, 5)
        assert (second.status, second.detail) == (
            PostureStatus.UNKNOWN,
            "its run of an earlier round has not returned (the check blocks)",
        )
    finally:
        ticking.cancel()
        check.release.set()
    for _ in range(500):  # its thread lets go of it once the check returns
        third = await run_check(check, 5)
        if third.passed:
            break
        await asyncio.sleep(0.01)
    assert third.passed


async def test_cancelling_a_round_still_cancels_it() -> None:
    """The session ending cancels the round: that passes through, it is no check result."""
    runs = asyncio.ensure_future(run_check(Hangs(), 60))
    await asyncio.sleep(0.05)  # the check has started
    runs.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runs


async def test_a_monitor_that_stops_while_the_session_runs_is_a_posture_failure(
    trail: Any,
) -> None:
    trail, _ = trail
    failures: list[McpAcpError] = []
    monitor = PostureMonitor(
        [StopsTheMonitor()],
        trail,
        session_id="s1",
        posture={},
        interval=0.01,
        on_failure=failures.append,
    )
    watching = monitor.start_watching()
    assert watching is not None
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(watching, timeout=5)
    await asyncio.sleep(0)  # the task's done callbacks
    [error] = failures
    assert isinstance(error, PostureError)
    assert error.exit_code == 15
    assert "the posture monitor stopped (its task was cancelled)" in str(error)
    assert monitor.failed  # the enforcement point denies everything from now on


async def test_stopping_the_monitor_at_the_end_of_the_session_is_no_failure(
    trail: Any, tmp_path: Path
) -> None:
    trail, _ = trail
    marker = tmp_path / "enrolled"
    marker.write_text("yes\n")
    failures: list[McpAcpError] = []
    monitor = PostureMonitor(
        [MarkerFileCheck(marker)],
        trail,
        session_id="s1",
        posture={},
        interval=0.01,
        on_failure=failures.append,
    )
    watching = monitor.start_watching()
    assert watching is not None
    await asyncio.sleep(0.1)  # some healthy rounds
    monitor.stop_watching()
    with pytest.raises(asyncio.CancelledError):
        await watching
    await asyncio.sleep(0)
    assert failures == []
    assert monitor.failed is None
    assert PostureMonitor([], trail, session_id="s2", posture={}).start_watching() is None


async def test_gate_refuses_to_start_and_records_why(trail: Any, tmp_path: Path) -> None:
    trail, log_dir = trail
    posture: dict[str, PostureStatus] = {}
    monitor = PostureMonitor(
        [MarkerFileCheck(tmp_path / "enrolled"), Hangs()],
        trail,
        session_id="s1",
        posture=posture,
        timeout=0.2,
    )
    with pytest.raises(PostureError) as refused:
        await monitor.gate()
    assert refused.value.exit_code == 15
    assert "marker-file is fail" in str(refused.value)
    assert "hangs is unknown: no answer within 0.2 s" in str(refused.value)
    assert posture == {"marker-file": PostureStatus.FAIL, "hangs": PostureStatus.UNKNOWN}
    [event] = auth_events(log_dir)
    assert event["event"] == "device_health_failed"
    assert [c["status"] for c in event["detail"]["checks"]] == ["fail", "unknown"]


class PassingResult(PostureResult):
    """A result whose ``passed`` says yes, whatever its status says."""

    @property
    def passed(self) -> bool:
        return True


class SaysItPasses:
    name = "disk-encryption"

    async def check(self) -> PostureResult:
        now = datetime.now(UTC)
        return PassingResult(
            check=self.name, status=PostureStatus.FAIL, detail="not encrypted", checked_at=now
        )


async def test_a_result_whose_passed_lies_does_not_pass_the_gate(trail: Any) -> None:
    """A check answering a ``PostureResult`` subclass whose ``passed`` is always true, with
    the status ``fail``: the gate refuses, on the status — before, the device passed, and
    ``device_health_passed`` was recorded with a failed check in it."""
    trail, log_dir = trail
    result = await run_check(SaysItPasses(), 5)
    assert type(result) is PostureResult
    assert not result.passed
    monitor = PostureMonitor([SaysItPasses()], trail, session_id="s1", posture={})
    with pytest.raises(PostureError, match="disk-encryption is fail: not encrypted"):
        await monitor.gate()
    [event] = auth_events(log_dir)
    assert event["event"] == "device_health_failed"


async def test_a_check_that_flips_mid_run_ends_the_session(trail: Any, tmp_path: Path) -> None:
    trail, log_dir = trail
    marker = tmp_path / "enrolled"
    marker.write_text("yes\n")
    failures: list[McpAcpError] = []
    posture: dict[str, PostureStatus] = {}
    monitor = PostureMonitor(
        [MarkerFileCheck(marker)],
        trail,
        session_id="s1",
        posture=posture,
        interval=0.05,
        failure_threshold=2,
        on_failure=failures.append,
    )
    await monitor.gate()
    watching = asyncio.create_task(monitor.watch())
    await asyncio.sleep(0.3)
    assert not failures  # healthy rounds
    marker.unlink()
    await asyncio.wait_for(watching, timeout=5)  # ends once the device is unhealthy
    assert posture == {"marker-file": PostureStatus.FAIL}
    [error] = failures
    assert isinstance(error, PostureError)
    assert "device posture lost: marker-file is fail" in str(error)
    assert monitor.failed is not None
    events = auth_events(log_dir)
    assert [e["event"] for e in events] == ["device_health_passed", "device_health_failed"]


async def test_threshold_counts_rounds_in_a_row(trail: Any, tmp_path: Path) -> None:
    trail, _ = trail
    flaky = Flaky([False, True, False, True, False, False])
    failures: list[McpAcpError] = []
    monitor = PostureMonitor(
        [flaky],
        trail,
        session_id="s1",
        posture={},
        interval=0.01,
        failure_threshold=2,
        on_failure=failures.append,
    )
    await asyncio.wait_for(monitor.watch(), timeout=5)
    assert flaky.calls == 6  # single bad rounds were forgiven; two in a row were not
    assert len(failures) == 1


class Flaky:
    name = "flaky"

    def __init__(self, outcomes: list[bool]) -> None:
        self.outcomes = outcomes
        self.calls = 0

    async def check(self) -> PostureResult:
        ok = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        status = PostureStatus.PASS if ok else PostureStatus.FAIL
        return PostureResult(
            check=self.name, status=status, detail="", checked_at=datetime.now(UTC)
        )


async def test_rules_see_posture_and_lost_posture_denies_everything(
    trail: Any, tmp_path: Path
) -> None:
    trail, _ = trail
    policy = tmp_path / "policy.json"
    rule = {"tool_name": "read_file", "posture": ["marker-file"]}
    policy.write_text(
        json.dumps(
            {
                "version": "1",
                "rules": [{"id": "healthy-reads", "effect": "allow", "conditions": rule}],
            }
        )
    )
    session = Session()
    lost: list[str | None] = [None]
    pep = EnforcementPoint(
        engine=AcpPolicyEngine.from_file(policy),
        trail=trail,
        identity=LocalIdentityProvider("alice"),
        approver=DenyApprover(),
        registry=ToolRegistry.default(),
        backend_id="fs",
        session=session,
        unhealthy=lambda: lost[0],
    )
    read = {"name": "read_file", "arguments": {"path": "/data/a"}}
    session.posture["marker-file"] = PostureStatus.PASS
    assert (await pep.check("tools/call", read, 1)).allowed
    session.posture["marker-file"] = PostureStatus.UNKNOWN
    assert not (await pep.check("tools/call", read, 2)).allowed  # the rule needs a pass
    session.posture["marker-file"] = PostureStatus.PASS
    lost[0] = "marker-file is fail: gone"
    verdict = await pep.check("tools/call", read, 3)
    assert not verdict.allowed
    assert verdict.rule_id == "builtin-posture"
    assert "device posture lost" in verdict.reason


class Says:
    """A check named ``same`` that answers ``status``."""

    name = "same"

    def __init__(self, status: PostureStatus) -> None:
        self.status = status

    async def check(self) -> PostureResult:
        return PostureResult(
            check=self.name, status=self.status, detail="", checked_at=datetime.now(UTC)
        )


@pytest.mark.parametrize(
    ("statuses", "worst"),
    [
        (["fail", "pass"], "fail"),
        (["pass", "fail"], "fail"),
        (["unknown", "pass"], "unknown"),
        (["pass", "unknown"], "unknown"),
        (["fail", "unknown", "pass"], "fail"),
        (["pass", "unknown", "fail"], "fail"),
        (["pass", "pass"], "pass"),
    ],
)
async def test_checks_that_share_a_name_show_the_worst_result(
    trail: Any, statuses: list[str], worst: str
) -> None:
    """Two entries of one check (one name): what rules and ``mcp-acp status`` see of the
    name is the worst result — a failure over an unknown over a pass — in any order."""
    trail, _ = trail
    posture: dict[str, PostureStatus] = {}
    monitor = PostureMonitor(
        [Says(PostureStatus(s)) for s in statuses], trail, session_id="s1", posture=posture
    )
    results = await monitor.run()
    assert [r.status.value for r in results] == statuses  # each result is kept, in order
    assert posture == {"same": PostureStatus(worst)}
    assert monitor.describe() == {"same": worst}


class HeldHealthSink(JsonlAuditSink):
    """The ``jsonl`` sink, except that the write of ``device_health_failed`` waits (after it
    is durable) until ``release`` is set: the moment the monitor records a lost posture."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir)
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def write(self, event: Any) -> None:
        await super().write(event)
        if getattr(event, "event", None) == "device_health_failed":
            self.holding.set()
            await self.release.wait()


async def test_a_posture_lost_as_the_session_ends_is_still_a_posture_failure(
    tmp_path: Path,
) -> None:
    """The device fails a round; while the monitor records it, the client closes the session
    and the proxy stops the monitor. The loss is on record and the enforcement point
    denies, so the process must end as a posture failure (exit 15), not as a clean end of
    session: stopping the monitor used to cancel it before it reported the failure."""
    log_dir = tmp_path / "log"
    sink = HeldHealthSink(log_dir)
    trail = AuditTrail(
        [sink], ShutdownCoordinator(log_dir=log_dir, fallback_path=tmp_path / "fallback.jsonl")
    )
    await trail.start()
    failures: list[McpAcpError] = []
    monitor = PostureMonitor(
        [Flaky([False])],
        trail,
        session_id="s1",
        posture={},
        interval=0.01,
        on_failure=failures.append,
    )
    watching = monitor.start_watching()
    assert watching is not None
    await asyncio.wait_for(sink.holding.wait(), timeout=5)
    monitor.stop_watching()  # the session ends meanwhile
    sink.release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await watching
    await asyncio.sleep(0)
    await trail.close()
    [error] = failures
    assert isinstance(error, PostureError)
    assert "device posture lost: flaky is fail" in str(error)
    assert [e["event"] for e in auth_events(log_dir)] == ["device_health_failed"]
