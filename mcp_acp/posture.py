"""The posture monitor: a healthy device is a precondition of every request.

:meth:`PostureMonitor.gate` runs every configured :class:`~mcp_acp.protocols.PostureCheck`
before the proxy serves: any result but ``PASS`` refuses the start (``PostureError``, exit
15). :meth:`PostureMonitor.watch` re-runs them every ``interval`` seconds; after
``failure_threshold`` unhealthy rounds in a row it marks the session unhealthy (the
enforcement point then denies everything), records ``device_health_failed`` in the auth
stream and ends the process through the shutdown coordinator. A check that raises
(anything: ``SystemExit``, ``KeyboardInterrupt`` and a ``CancelledError`` of its own
making too) or outlives ``timeout`` is ``UNKNOWN``, and ``UNKNOWN`` is unhealthy. The
monitor's task is supervised (:meth:`PostureMonitor.start_watching`): if it ends while the
session runs, whatever the cause, the device's health is unknown and the session ends the
same way.

Each round's results are also the ``posture`` of the session's :class:`Environment`, so a
rule can require named checks; where two checks share a name, the worse result stands
(:func:`by_name`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from mcp_acp.audit.events import AuthEvent, AuthEventName
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.errors import AuditError, McpAcpError, PostureError, exception_text
from mcp_acp.models import PostureResult, PostureStatus
from mcp_acp.protocols import PostureCheck

__all__ = ["PostureMonitor", "by_name", "run_check"]

log = logging.getLogger(__name__)


class _Broke(Exception):
    """A check raised something that is not an ``Exception`` (or cancelled itself): carried
    as an ``Exception`` back to the proxy's loop, where it ends the check, not the round."""

    def __init__(self, raised: BaseException) -> None:
        super().__init__(raised)
        self.raised = raised


class _StillRunning(Exception):
    """The check's run of an earlier round has not returned (it blocks its thread)."""


#: How long a round that gives up on a check waits for it to end once told to stop.
CANCEL_GRACE_SECONDS = 2.0

#: The checks whose run has not returned yet: one thread per check at most, however many
#: rounds give up on it.
_running: set[int] = set()


class _DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """The default executor of a check's private loop (its ``asyncio.to_thread`` and
    ``run_in_executor(None, …)`` calls): each call on a daemon thread of its own, none
    pooled (a ``ThreadPoolExecutor`` only because asyncio takes no other kind).

    A ``ThreadPoolExecutor``'s own threads are joined when the interpreter exits, however
    the executor was shut down: a check that leaves one that never returns (blocking I/O)
    would keep ``mcp-acp posture`` from ever exiting. A daemon thread is not waited for."""

    def submit(  # type: ignore[override]  # (the base's ParamSpec signature: same calls)
        self, fn: Callable[..., object], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[object]:
        future: concurrent.futures.Future[object] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # the caller's to see, as with any executor
                future.set_exception(exc)
            else:
                future.set_result(result)

        name = f"posture-check-worker {getattr(fn, '__name__', 'call')}"
        threading.Thread(target=run, name=name, daemon=True).start()
        return future


def _run_alone(
    check: PostureCheck, started: Callable[[asyncio.AbstractEventLoop, asyncio.Task[object]], None]
) -> object:
    """``check.check()`` on a private event loop of this (the check's own) thread.

    Not ``asyncio.run``: that would wait at the end for the loop's worker threads, and a
    check may leave one that never returns; nor do those threads keep the process from
    exiting (:class:`_DaemonExecutor`). Whatever the check raises is returned as
    ``_Broke`` (``CancelledError`` included: a cancellation the proxy made is told apart
    by the caller)."""
    loop = asyncio.new_event_loop()
    loop.set_default_executor(_DaemonExecutor())
    try:
        task = loop.create_task(check.check())
        started(loop, task)
        try:
            return loop.run_until_complete(task)
        except BaseException as exc:  # carried back, named in the result
            return _Broke(exc)
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _checked(check: PostureCheck) -> object:
    """``check.check()`` on a thread of its own, so that a check that blocks (a synchronous
    call inside its ``async def``) blocks only that thread: the proxy's loop still serves,
    answers signals and gives up on the check at its timeout. Cancelled (a timeout, or the
    session ending), it cancels the check's task in the check's loop; a check that never
    returns is left behind, and its next round is ``UNKNOWN`` at once."""
    key = id(check)
    if key in _running:
        raise _StillRunning
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[object] = loop.create_future()
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[object]]] = []
    abandoned = threading.Event()  # the round gave up: the check is to stop when it starts

    def started(own: asyncio.AbstractEventLoop, task: asyncio.Task[object]) -> None:
        running.append((own, task))
        if abandoned.is_set():
            task.cancel()

    def deliver(value: object) -> None:
        if not outcome.done():
            outcome.set_result(value)

    def work() -> None:
        try:
            value = _run_alone(check, started)
        finally:
            _running.discard(key)
        with contextlib.suppress(RuntimeError):  # the proxy's loop is closed: nobody waits
            loop.call_soon_threadsafe(deliver, value)

    _running.add(key)
    name = str(getattr(check, "name", type(check).__name__))
    try:
        threading.Thread(target=work, name=f"posture-check {name}", daemon=True).start()
    except BaseException:
        _running.discard(key)
        raise
    try:
        value = await asyncio.shield(outcome)  # cancelled, it is still awaited below
    except asyncio.CancelledError:
        abandoned.set()
        for own, task in running:  # stop the check in its own loop, if it still listens
            with contextlib.suppress(RuntimeError):
                own.call_soon_threadsafe(task.cancel)
        # a check that listens ends what it started (a subprocess, say); one that blocks
        # is not waited for beyond the grace
        await asyncio.wait([outcome], timeout=CANCEL_GRACE_SECONDS)
        raise
    if isinstance(value, _Broke):
        raise value
    return value


async def run_check(check: PostureCheck, timeout: float) -> PostureResult:
    """One check, bounded: anything it raises, or a timeout, is ``UNKNOWN``, never a pass.
    What it answers is returned as a plain :class:`PostureResult`: a subclass whose
    ``passed`` said otherwise than its ``status`` would have passed a failing device.

    That includes ``SystemExit``, ``KeyboardInterrupt`` and a ``CancelledError`` the check
    raises on its own, and a check that blocks its thread; only the cancellation of the
    task running it (the session ending) passes through."""
    name = str(getattr(check, "name", type(check).__name__))
    try:
        result = await asyncio.wait_for(_checked(check), timeout=timeout)
    except TimeoutError:
        detail = f"no answer within {timeout:g} s"
    except _StillRunning:
        detail = "its run of an earlier round has not returned (the check blocks)"
    except _Broke as broke:  # a check that breaks is not a healthy device
        if isinstance(broke.raised, asyncio.CancelledError):
            detail = "the check failed: CancelledError (it was not cancelled)"
        else:
            detail = f"the check failed: {_what(broke.raised)}"
    except Exception as exc:
        detail = f"the check failed: {_what(exc)}"
    else:
        malformed = _malformed(result)
        if malformed is None and isinstance(result, PostureResult):
            if type(result) is PostureResult:
                return result
            # a subclass: its own ``passed`` (or anything else it overrides) could say
            # otherwise than its status — rebuilt from the fields checked, it cannot
            return PostureResult(
                check=result.check,
                status=result.status,
                detail=result.detail,
                checked_at=_when(result),
            )
        detail = f"the check returned {malformed}"
    return PostureResult(
        check=name, status=PostureStatus.UNKNOWN, detail=detail, checked_at=datetime.now(UTC)
    )


#: The fields of a check's ``PostureResult`` that are read — a name to key the session's
#: posture by, a status, a detail to record — and the type each must have: an attrs
#: class checks none of them, and a list as the name, say, broke the start-up gate.
_FIELDS = (("check", str), ("status", PostureStatus), ("detail", str))


def _when(result: PostureResult) -> datetime:
    """``result``'s ``checked_at`` if it is a ``datetime``, else now."""
    checked_at = result.checked_at
    return checked_at if isinstance(checked_at, datetime) else datetime.now(UTC)


def _malformed(result: object) -> str | None:
    """What is wrong with a check's answer (``None``: a ``PostureResult`` of the declared
    field types)."""
    if not isinstance(result, PostureResult):
        return f"{type(result).__name__}, not a PostureResult"
    for field, kind in _FIELDS:
        value = getattr(result, field)
        if not isinstance(value, kind):
            return f"a PostureResult whose {field} is {type(value).__name__}, not {kind.__name__}"
    return None


def _what(exc: BaseException) -> str:
    return exception_text(exc)


def _summary(results: Sequence[PostureResult]) -> list[dict[str, str]]:
    return [{"check": r.check, "status": r.status.value, "detail": r.detail} for r in results]


#: Two results of one name (two entries of one check, as two ``linux-disk-encryption``
#: entries with different ``paths``): the worse stands — a failure over an unknown over a
#: pass — so a failing entry never reads as passed because another of its name passed.
_WORSE = {PostureStatus.PASS: 0, PostureStatus.UNKNOWN: 1, PostureStatus.FAIL: 2}


def by_name(results: Sequence[PostureResult]) -> dict[str, PostureStatus]:
    """Each check's name -> its status; for a name several results share, the worst."""
    combined: dict[str, PostureStatus] = {}
    for result in results:
        seen = combined.get(result.check)
        if seen is None or _WORSE[result.status] > _WORSE[seen]:
            combined[result.check] = result.status
    return combined


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
        self._watching: asyncio.Task[None] | None = None
        self._stopping = False  # the session is ending: the monitor may stop
        self._reported = False  # on_failure has been called

    async def run(self) -> list[PostureResult]:
        """Every check once, concurrently; the session's posture is updated."""
        results = list(await asyncio.gather(*(run_check(c, self.timeout) for c in self.checks)))
        self.posture.clear()
        self.posture.update(by_name(results))
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

    def start_watching(self) -> asyncio.Task[None] | None:
        """Run :meth:`watch` as a task of its own, supervised (None: there are no checks).

        The monitor is part of what protects the session: if its task ends before
        :meth:`stop_watching` — a bug, a check that cancels it — the device's health is no
        longer known, and that is a posture failure like any other (``on_failure``)."""
        if not self.checks:
            return None
        self._watching = asyncio.ensure_future(self.watch())
        self._watching.add_done_callback(self._watch_ended)
        return self._watching

    def stop_watching(self) -> None:
        """The session is ending: stop the monitor (not a failure; a loss the monitor has
        found and is recording is still reported, :meth:`_lost`)."""
        self._stopping = True
        if self._watching is not None:
            self._watching.cancel()

    def _watch_ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping or self._reported:
            return
        if task.cancelled():
            why = "its task was cancelled"
        elif (exc := task.exception()) is not None:
            log.error("the posture monitor failed", exc_info=exc)
            why = _what(exc)
        else:
            why = "it returned"
        reason = f"the posture monitor stopped ({why})"
        self.failed = self.failed or reason  # the enforcement point denies everything
        self._fail(
            PostureError(
                f"device posture unknown: {reason}",
                fix="see mcp-acp's log ('mcp-acp --debug run' shows the traceback); a "
                "posture check plugin may be at fault; then restart",
            )
        )

    def _fail(self, error: PostureError) -> None:
        self._reported = True
        if self.on_failure is not None:
            self.on_failure(error)

    async def _lost(self, results: Sequence[PostureResult]) -> None:
        reason = _reason(results)
        self.failed = reason  # from now on the enforcement point denies everything
        try:
            # if the trail fails too, it shuts the process down itself; posture still failed
            with contextlib.suppress(AuditError):
                await self._record("device_health_failed", results, reason)
        finally:  # also if the session ends meanwhile (stop_watching): the device was lost
            self._fail(
                PostureError(
                    f"device posture lost: {reason}",
                    fix="fix the device state (see 'mcp-acp posture'), then restart",
                )
            )

    def describe(self) -> dict[str, Any]:
        """For ``mcp-acp status``."""
        return {name: status.value for name, status in by_name(self.last).items()}
