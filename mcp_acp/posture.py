"""The posture monitor: a healthy device is a precondition of every request.

:meth:`PostureMonitor.gate` runs every configured :class:`~mcp_acp.protocols.PostureCheck`
before the proxy serves: any result but ``PASS`` refuses the start (``PostureError``, exit
15). :meth:`PostureMonitor.watch` re-runs them every ``interval`` seconds; after
``failure_threshold`` unhealthy rounds in a row it marks the session unhealthy (the
enforcement point then denies everything), records ``device_health_failed`` in the auth
stream and ends the process through the shutdown coordinator. A check that raises or
outlives ``timeout`` is ``UNKNOWN``, and ``UNKNOWN`` is unhealthy.

Each round's results are also the ``posture`` of the session's :class:`Environment`, so a
rule can require named checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from mcp_acp.audit.events import AuthEvent, AuthEventName
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.errors import AuditError, McpAcpError, PostureError
from mcp_acp.models import PostureResult, PostureStatus
from mcp_acp.protocols import PostureCheck

__all__ = ["PostureMonitor", "run_check"]

log = logging.getLogger(__name__)


async def run_check(check: PostureCheck, timeout: float) -> PostureResult:
    """One check, bounded: an exception or a timeout is ``UNKNOWN``, never a pass."""
    name = str(getattr(check, "name", type(check).__name__))
    try:
        result = await asyncio.wait_for(check.check(), timeout=timeout)
    except TimeoutError:
        detail = f"no answer within {timeout:g} s"
    except Exception as exc:  # a check that breaks is not a healthy device
        detail = f"the check failed: {type(exc).__name__}: {exc}"
    else:
        if isinstance(result, PostureResult) and isinstance(result.status, PostureStatus):
            return result
        detail = f"the check returned {type(result).__name__}, not a PostureResult"
    return PostureResult(
        check=name, status=PostureStatus.UNKNOWN, detail=detail, checked_at=datetime.now(UTC)
    )


def _summary(results: Sequence[PostureResult]) -> list[dict[str, str]]:
    return [{"check": r.check, "status": r.status.value, "detail": r.detail} for r in results]


def _reason(results: Sequence[PostureResult]) -> str:
    bad = [r for r in results if r.status is not PostureStatus.PASS]
    return "; ".join(f"{r.check} is {r.status.value}: {r.detail}" for r in bad)


class PostureMonitor:
    """Runs the posture checks at start and every ``interval`` seconds after."""

    def __init__(
        self,
        checks: Sequence[PostureCheck],
        trail: AuditTrail,
        *,
        session_id: str,
        posture: dict[str, PostureStatus],
        interval: float = 300.0,
        timeout: float = 10.0,
        failure_threshold: int = 1,
        on_failure: Callable[[McpAcpError], None] | None = None,
    ) -> None:
        self.checks = tuple(checks)
        self.trail = trail
        self.session_id = session_id
        self.posture = posture  # the session's: what the policy sees
        self.interval = interval
        self.timeout = timeout
        self.failure_threshold = failure_threshold
        self.on_failure = on_failure
        self.failed: str | None = None  # why the device is unhealthy, once it is
        self.last: list[PostureResult] = []
        self._unhealthy_rounds = 0

    async def run(self) -> list[PostureResult]:
        """Every check once, concurrently; the session's posture is updated."""
        results = list(await asyncio.gather(*(run_check(c, self.timeout) for c in self.checks)))
        self.posture.clear()
        self.posture.update({r.check: r.status for r in results})
        self.last = results
        return results

    async def _record(
        self, event: AuthEventName, results: Sequence[PostureResult], reason: str
    ) -> None:
        await self.trail.record(
            AuthEvent(
                event=event,
                session_id=self.session_id,
                reason=reason,
                detail={"checks": _summary(results)},
            )
        )

    async def gate(self) -> list[PostureResult]:
        """The start-up gate: raise ``PostureError`` unless every check passes."""
        results = await self.run()
        if all(r.passed for r in results):
            if results:
                await self._record("device_health_passed", results, "start-up gate")
            return results
        reason = _reason(results)
        self.failed = reason
        await self._record("device_health_failed", results, f"start-up gate: {reason}")
        raise PostureError(
            f"device posture: {reason}",
            fix="fix the device state (see 'mcp-acp posture'), or remove the check from the config",
        )

    async def watch(self) -> None:
        """Re-check every ``interval`` seconds until cancelled or the device is unhealthy."""
        if not self.checks:
            return
        while self.failed is None:
            await asyncio.sleep(self.interval)
            results = await self.run()
            if all(r.passed for r in results):
                self._unhealthy_rounds = 0
                continue
            self._unhealthy_rounds += 1
            log.warning(
                "posture round failed (%d in a row): %s", self._unhealthy_rounds, _reason(results)
            )
            if self._unhealthy_rounds >= self.failure_threshold:
                await self._lost(results)

    async def _lost(self, results: Sequence[PostureResult]) -> None:
        reason = _reason(results)
        self.failed = reason  # from now on the enforcement point denies everything
        # if the trail fails too, it shuts the process down itself; posture still failed
        with contextlib.suppress(AuditError):
            await self._record("device_health_failed", results, reason)
        error = PostureError(
            f"device posture lost: {reason}",
            fix="fix the device state (see 'mcp-acp posture'), then restart",
        )
        if self.on_failure is not None:
            self.on_failure(error)

    def describe(self) -> dict[str, Any]:
        """For ``mcp-acp status``."""
        return {r.check: r.status.value for r in self.last}
