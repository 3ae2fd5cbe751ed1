"""The audit trail as the proxy uses it: every sink, write-ahead, fail closed.

* :meth:`AuditTrail.record` writes an event to every sink and returns only when all of them
  have it durably. If one cannot, the event goes to the fallback file outside the log
  directory, :class:`~mcp_acp.errors.AuditError` is raised (the caller denies the request in
  flight), and the shutdown coordinator ends the process a moment later — after the denial
  has gone out.
* :meth:`AuditTrail.enforce` is the write-ahead primitive: the decision record first, then,
  only if it is durable, the forwarding.
* :meth:`AuditTrail.monitor` checks every sink's health periodically (file still there, still
  ours, still writable) and shuts down on the first failure, even with no request in flight.
* A watchdog thread, started with the trail, shuts down when records are waiting and none
  has been written for ``write_timeout`` seconds (a disk or network mount that stopped
  answering, a sink that never returns): a write that hangs would otherwise hold every
  request — and, on the event loop, the signals that would end the process — for ever.

A sink that fails with anything but ``AuditError`` (an ``OSError``, a bug) fails closed just
the same, as an ``AuditError`` that names the sink — its config field, registered name and
plugin, as the runtime describes it — since the exception alone does not say which sink.
So does a sink whose write is cancelled when its caller was not (its own writer task was
cancelled: the ``CancelledError`` is the sink's, not a client's cancellation), and one
whose ``write_soon`` returns anything but an asyncio future.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from mcp_acp.audit.events import AuditEvent, AuthEvent, SystemEvent
from mcp_acp.errors import AuditError, exception_text
from mcp_acp.protocols import AuditSink
from mcp_acp.shutdown import ShutdownCoordinator, within

__all__ = ["AuditTrail"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long denials may take to reach the client before the process ends. Nothing else
#: passes meanwhile: the relay answers with a denial whatever the backend still sends.
SHUTDOWN_GRACE_SECONDS = 0.2
#: When a request's decision cannot be written, how long to wait for its companion record
#: (written, or kept in the fallback file) before the request's denial is recorded after it:
#: within the grace above, and longer than the 20 ms a companion may wait for its fsync.
COMPANION_WAIT_SECONDS = 0.1
#: A sink's write cancelled by the sink itself (its writer task cancelled), in its failure's
#: message: the ``CancelledError`` says nothing.
_CANCELLED = "failed: its write was cancelled, and not by mcp-acp"


class AuditTrail:
    """All configured sinks behind one fail-closed ``record``."""

    def __init__(
        self,
        sinks: Sequence[AuditSink],
        coordinator: ShutdownCoordinator,
        *,
        health_interval: float = 30.0,
        names: Sequence[str] | None = None,
        write_timeout: float = 30.0,
    ) -> None:
        """``names`` describes each sink in error messages (``audit sink 'jsonl' (plugin
        'jsonl-audit', config field audit.sinks[0])``); by default its position and type.
        ``write_timeout``: how long records may wait with none written before the trail
        fails (see :meth:`_watch`)."""
        if not sinks:
            raise AuditError(
                "no audit sink is configured", fix="configure at least one sink under audit.sinks"
            )
        self.sinks = tuple(sinks)
        self.names = (
            tuple(names)
            if names is not None
            else tuple(f"audit sink #{i} ({type(s).__name__})" for i, s in enumerate(sinks))
        )
        self.coordinator = coordinator
        self.health_interval = health_interval
        self._failed: AuditError | None = None
        self._soon: set[asyncio.Future[Any]] = set()  # record_soon's writes in progress
        self.write_timeout = write_timeout
        # For the watchdog (set on the loop, read from its thread): how many writes and
        # health checks are in progress, and when one last ended (or the first began).
        self._waiting = 0
        self._progress = time.monotonic()
        self._watchdog: threading.Thread | None = None
        self._closed = threading.Event()
        self._hung_at_exit: dict[int, AuditError] = {}  # sinks whose write_sync overran
        self._starting: str | None = None  # the sink whose start() is in progress
        # who the session is for, as its session_started said: session_ended at a
        # shutdown (posture lost, the trail failed) names them too
        self._subject: dict[str, Any] = {}
        coordinator.on_session_end(self._record_session_end)

    @property
    def failed(self) -> AuditError | None:
        """Why the trail failed, once it has: from then on nothing passes (every record is
        refused, and the relay withholds what is still on its way) until the process ends."""
        return self._failed

    async def start(self) -> None:
        """Open every sink with its write test; ``AuditError`` means: do not start. The
        watchdog times each sink's start like a write: one that does not return within
        ``write_timeout`` (a network sink that never connects, a hung mount) fails the trail
        and ends the process, instead of holding start-up for ever."""
        if self._watchdog is None or not self._watchdog.is_alive():
            self._closed = threading.Event()
            self._watchdog = threading.Thread(
                target=self._watch, name="mcp-acp-audit-watchdog", daemon=True
            )
            self._watchdog.start()
        try:
            for index, sink in enumerate(self.sinks):
                self._starting = self.names[index]
                self._begun()
                try:
                    await sink.start()
                except AuditError:
                    raise
                except BaseException as exc:  # a sink that breaks its contract: do not start
                    if not _sinks_own(exc):
                        raise
                    raise self._sink_error(index, exc, "failed to start") from exc
                finally:
                    self._ended()
                    self._starting = None
        except BaseException:
            self._closed.set()  # not started: no watchdog left behind
            raise

    def _begun(self) -> None:
        """A write (or health check) begins: the watchdog times it."""
        if not self._waiting:
            self._progress = time.monotonic()
        self._waiting += 1

    def _ended(self) -> None:
        self._waiting -= 1
        self._progress = time.monotonic()

    def _watch(self) -> None:
        """(The watchdog thread.) Fail the trail, and end the process, once writes have
        been waiting for ``write_timeout`` seconds with none done. From a thread of its
        own: a write that hangs in the kernel (``fsync`` on a hung mount) may hold the event
        loop itself, and the loop's signal handlers with it."""
        tick = min(self.write_timeout / 4, 1.0)
        while not self._closed.wait(tick):
            waiting = self._waiting
            stalled = time.monotonic() - self._progress
            if waiting and stalled > self.write_timeout and self._failed is None:
                starting = self._starting
                what = (
                    f"{starting} did not finish starting (its write test) in {stalled:.0f} s"
                    if starting is not None
                    else f"no audit record was written in {stalled:.0f} s while {waiting} waited"
                )
                error = AuditError(
                    f"{what} (audit.write_timeout_seconds is {self.write_timeout:g}): the "
                    "storage behind the trail does not answer",
                    fix="check the file system of audit.log_dir (a hung disk or network "
                    "mount?) and every audit sink; nothing passed meanwhile",
                )
                self._failed = error
                self._keep(SystemEvent(event="audit_stalled", detail={"error": str(error)}), error)
                self.coordinator.trigger(error, detail="audit write watchdog")
                return

    async def record(self, event: AuditEvent) -> None:
        """Write ``event`` to every sink durably, or raise ``AuditError`` (and shut down)."""
        if type(event) is AuthEvent and event.event == "session_started":
            self._subject = {"subject_id": event.subject_id, "issuer": event.issuer}
        if self._failed is not None:
            self._keep(event, self._failed)
            raise self._failed
        self._begun()
        try:
            if len(self.sinks) == 1:
                await self._write(0, event)
            else:
                await asyncio.gather(*(self._write(i, event) for i in range(len(self.sinks))))
        except AuditError as error:
            self._fail_soon(error)
            self._keep(event, error)
            raise
        finally:
            self._ended()

    async def _write(self, index: int, event: AuditEvent) -> None:
        try:
            await self.sinks[index].write(event)
        except AuditError:
            raise
        except BaseException as exc:  # a sink that breaks its contract still fails closed
            if not _sinks_own(exc):
                raise
            cancelled = isinstance(exc, asyncio.CancelledError)
            raise self._sink_error(index, exc, _CANCELLED if cancelled else "failed") from exc

    def _sink_error(self, index: int, exc: BaseException, what: str = "failed") -> AuditError:
        """``exc``, raised by sink ``index``, as the :class:`AuditError` it stands for,
        naming the sink (an ``AuditError`` is the sink's own word and stays as it is)."""
        if isinstance(exc, AuditError):
            return exc
        raised = str(exc) if isinstance(exc, _SinkRaised) else exception_text(exc)
        return AuditError(
            f"{self.names[index]} {what}: {raised}",
            fix="check what that sink writes to (its options, its permissions, free space); "
            "a sink should raise AuditError, so report anything else to its plugin's authors",
        )

    def record_soon(self, event: AuditEvent) -> None:
        """Write ``event`` without waiting for it — for a record nothing waits on (a response,
        recorded as it is relayed). A failure fails the trail as in :meth:`record` (the event
        to the fallback file, then shutdown); :meth:`close` waits for it."""
        self._hand_over(event)

    def _hand_over(self, event: AuditEvent) -> asyncio.Future[Any] | None:
        """:meth:`record_soon`; the future of the write, or None if it failed at once."""
        if self._failed is not None:
            self._keep(event, self._failed)
            return None
        one = self.sinks[0] if len(self.sinks) == 1 else None
        write_soon = getattr(one, "write_soon", None)
        direct = write_soon is not None  # else record() times the write itself
        if direct:
            self._begun()
        try:
            future: Any = (
                write_soon(event)
                if write_soon is not None
                else asyncio.ensure_future(self.record(event))
            )
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the sink's failure
            if direct:
                self._ended()
            if not _sinks_own(exc):
                raise
            cancelled = isinstance(exc, asyncio.CancelledError)
            error = self._sink_error(0, exc, _CANCELLED if cancelled else "failed")
            self._fail_soon(error)
            self._keep(event, error)
            return None
        if not asyncio.isfuture(future):  # an ``async def write_soon``: a coroutine, not run
            self._ended()
            if inspect.iscoroutine(future):
                future.close()
            error = self._sink_error(
                0, TypeError(f"write_soon() returned {type(future).__name__}, not a future")
            )
            self._fail_soon(error)
            self._keep(event, error)
            return None
        self._soon.add(future)
        future.add_done_callback(lambda done: self._written(event, done, direct))
        return future

    def _written(self, event: AuditEvent, future: asyncio.Future[Any], direct: bool) -> None:
        self._soon.discard(future)
        if direct:
            self._ended()
        error = self._soon_error(future)  # retrieved, even where record() has it in hand
        if error is None or not direct:  # record() has already failed the trail
            return
        self._fail_soon(error)  # direct: the one sink's write_soon
        self._keep(event, error)

    def _soon_error(self, future: asyncio.Future[Any]) -> AuditError | None:
        """What the settled ``future`` of a handed-over write says: ``None`` if it was
        written, else the failure, naming the sink. Nothing in mcp-acp cancels such a
        future: cancelled, it was the sink's doing — a record lost like any other."""
        if future.cancelled():
            return self._sink_error(0, asyncio.CancelledError(), _CANCELLED)
        raised = future.exception()
        return None if raised is None else self._sink_error(0, raised)

    async def record_decision(self, decision: AuditEvent, companion: AuditEvent) -> None:
        """Write-ahead for one request: return once ``decision`` is durable and ``companion``
        (the request's operation record) is written, or raise ``AuditError`` (and shut
        down) if either fails.

        The companion is handed over like :meth:`record_soon`, in the same loop iteration as
        the decision: a sink with ``write_soon`` (the ``jsonl`` sink) writes both before it
        syncs the decision, and syncs the companion's stream with its next fsync (at most
        20 ms later) — so a request waits for one fsync, not two. The decision is the record
        that must be durable before the request is enforced; the companion, written but not
        yet synced, survives the process being killed, not a power loss in those 20 ms."""
        written = self._hand_over(companion)
        try:
            await self.record(decision)
        except AuditError:
            if written is not None:
                # the companion's fate first (durable, or kept in the fallback file): what the
                # caller records next about this request (its denial) must come after it
                await asyncio.wait({written}, timeout=COMPANION_WAIT_SECONDS)
            raise
        if written is None or not written.done():
            return  # on its way (another sink's commit): a failure still shuts down
        error = self._soon_error(written)  # record()'s are AuditErrors already
        if error is not None:  # the trail has failed (see _written): deny this request
            raise error

    async def enforce(self, decision: AuditEvent, forward: Callable[[], Awaitable[T]]) -> T:
        """Write-ahead: ``forward`` runs only once ``decision`` is durable."""
        await self.record(decision)
        return await forward()

    async def monitor(self) -> None:
        """Check the sinks' health every ``health_interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.health_interval)
            for index, sink in enumerate(self.sinks):
                check = getattr(sink, "check_health", None)
                if check is None:
                    continue
                self._begun()  # a check that hangs (a hung mount) is a stall too
                try:
                    answer = await asyncio.to_thread(check)
                    if inspect.isawaitable(answer):  # an async def check_health: never run
                        if inspect.iscoroutine(answer):
                            answer.close()
                        raise TypeError(
                            "check_health() returned an awaitable (an async def?); mcp-acp "
                            "calls it without awaiting, so the sink's health was never checked"
                        )
                except BaseException as exc:  # not only AuditError: the monitor must not die
                    if not _sinks_own(exc):
                        raise  # the monitor cancelled: the session ends
                    error = self._sink_error(index, exc, "failed its health check")
                    self._keep(
                        SystemEvent(event="audit_health_failed", detail={"error": str(error)}),
                        error,
                    )
                    self._failed = error
                    self.coordinator.trigger(error, detail="audit health monitor")
                finally:
                    self._ended()

    async def close(self) -> None:
        if self._soon:  # records written without waiting: on record before closing
            await asyncio.wait(set(self._soon))
        for sink in self.sinks:
            self._begun()  # closing syncs the last records: a close that hangs is a stall
            try:
                await sink.close()
            except BaseException as exc:  # closing is best effort; the records are durable
                if not _sinks_own(exc):
                    raise
                log.warning("closing audit sink: %s", exc)
            finally:
                self._ended()
        self._closed.set()  # the watchdog watched the last writes too

    def record_at_exit(self, event: AuditEvent) -> None:
        """Best effort, at shutdown (the shutdown coordinator's callbacks, synchronous: the
        event loop does not run again): ``event`` into every sink that writes synchronously
        (``write_sync``) and still works. Never raises; an event a sink refuses, or cannot
        take (it has no ``write_sync``, or its write does not finish within the shutdown
        coordinator's ``io_timeout`` — it is then not asked again), goes to the fallback
        file."""
        for index, sink in enumerate(self.sinks):
            if index in self._hung_at_exit:
                self._keep(event, self._hung_at_exit[index])
                continue
            write_sync = getattr(sink, "write_sync", None)
            if write_sync is None:
                self._keep(
                    event,
                    AuditError(
                        f"{self.names[index]} cannot record at exit: it has no write_sync()",
                        fix="this record is kept here instead; a sink records what happens "
                        "at a fail-closed exit only with write_sync(event) (see "
                        "mcp_acp.protocols.AuditSink): ask its plugin's authors for one",
                    ),
                )
                continue

            def attempt(write: Callable[[AuditEvent], object] = write_sync) -> Exception | None:
                try:
                    answer = write(event)
                except Exception as exc:  # the trail is failing; the fallback has the rest
                    return exc
                except BaseException as exc:  # a sink's sys.exit(): on a thread, it said nothing
                    return _SinkRaised(exc)
                if inspect.isawaitable(answer):  # an async def write_sync: nothing was written
                    if inspect.iscoroutine(answer):
                        answer.close()
                    return TypeError("write_sync() returned an awaitable, and nothing awaits it")
                return None

            timeout = self.coordinator.io_timeout
            finished, raised = within(timeout, attempt)
            if not finished:
                raised = TimeoutError(f"its write did not finish within {timeout:g} s")
                self._hung_at_exit[index] = self._sink_error(index, raised, "is hung")
            if raised is not None:
                log.warning("%s not recorded by %s: %s", event.event, self.names[index], raised)
                self._keep(event, self._sink_error(index, raised))

    def _record_session_end(self, reason: str) -> None:
        """Best effort, at shutdown: ``session_ended`` into every sink that still works."""
        event = AuthEvent(
            event="session_ended",
            session_id=self.coordinator.session_id,
            reason=reason,
            **self._subject,
        )
        self.record_at_exit(event)

    def _keep(self, event: AuditEvent, error: AuditError) -> None:
        payload: dict[str, Any]
        try:
            payload = event.model_dump(mode="json", exclude_none=True)
        except Exception as exc:  # the event itself cannot be written: keep what names it
            payload = {
                "stream": str(getattr(event, "stream", "")),
                "event": str(getattr(event, "event", type(event).__name__)),
                "unserialisable": f"the event cannot be serialised: {type(exc).__name__}",
            }
        self.coordinator.record_fallback(payload, error)

    def _fail_soon(self, error: AuditError) -> None:
        first = self._failed is None
        self._failed = error
        if not first:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to wait on (a thread): fail now
            self.coordinator.trigger(error, detail="audit write failed")
            return  # (trigger ends the process; a coordinator in a test may return)
        loop.call_later(
            SHUTDOWN_GRACE_SECONDS,
            functools.partial(self.coordinator.trigger, error, detail="audit write failed"),
        )


class _SinkRaised(Exception):
    """What a sink's synchronous write raised that is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``), carried out of it as one: named as it was raised."""

    def __init__(self, raised: BaseException) -> None:
        text = exception_text(raised)
        super().__init__(text)


def _sinks_own(exc: BaseException) -> bool:
    """Whether ``exc``, raised out of a sink's method, is the sink's failure — anything
    (``SystemExit`` and ``KeyboardInterrupt`` of its own too: a plugin's ``sys.exit()``
    must not end the proxy with the record unwritten and unreported) but the cancellation
    of the task that called it, or ``GeneratorExit`` (that coroutine being closed)."""
    if isinstance(exc, GeneratorExit):
        return False
    return not (isinstance(exc, asyncio.CancelledError) and _asked_to_cancel())


def _asked_to_cancel() -> bool:
    """Whether the current task is being cancelled: a ``CancelledError`` now is its caller's
    (a client's request cancelled, the session ending), not one a sink raised on its own."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
