"""``mcp-acp run``: compose the parts, in a fail-closed start order, and relay one session.

Start order — each step must succeed before the next: config and plugins (validated) →
audit trail (write test on every stream) → TLS checks (an HTTPS backend with
``backend.tls``; every finding audited) → identity (the token loaded, validated or
refreshed; its auth events recorded) → policy → posture gate → control socket → backend →
serve. A start-up
failure is recorded as ``startup_refused`` (when the trail works), shown on the desktop
where the platform can, and ends the process with its failure class's exit code.

Signals are handled from the first line of :func:`serve` (:class:`_Signals`). SIGTERM,
SIGINT or SIGQUIT before ``session_started`` ends the start-up, recorded as
``startup_refused``, exit 128 + the signal's number (143, 130, 131); after it, they, like
the client closing its input, end the session, recorded as ``session_ended``, exit 0. A
second one while the first is still being acted on ends the process at once (the
backend's process group ended, the control socket removed; exit 143, 130 or 131).
SIGHUP reloads the policy (the last-known-good stays on error; both audited), one reload
at a time: SIGHUPs during a reload make one more reload after it, and a SIGHUP before the
policy engine exists, one reload once it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import ssl
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from mcp_acp.audit.events import AuthEvent, SystemEvent, without_secrets
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.control import ControlServer
from mcp_acp.errors import AuditError, BackendError, McpAcpError, exception_text, one_line
from mcp_acp.models import Subject, TlsFinding, TlsSeverity
from mcp_acp.posture import PostureMonitor
from mcp_acp.protocols import Approver, IdentityProvider, PolicyEngine
from mcp_acp.proxy.channel import BackendChannel, open_channel
from mcp_acp.proxy.limits import ApprovalCache, TokenBucket, ToolRateLimit
from mcp_acp.proxy.messages import pipe_sized_reads
from mcp_acp.proxy.pep import EnforcementPoint, Limits, Session, first_subject
from mcp_acp.proxy.pins import ToolPins, backend_key
from mcp_acp.proxy.relay import ClientPipe, ClientWriter, Relay
from mcp_acp.runtime import Runtime, load_runtime
from mcp_acp.shutdown import ShutdownCoordinator
from mcp_acp.startup import resume_collection
from mcp_acp.tools import ToolRegistry

__all__ = ["serve"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The signals that stop the proxy. Stopped before the session started, the exit code is
#: 128 + the signal's number, as a shell reports a process that a signal ended.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


class _Stopped(Exception):
    """A stop signal came before the work it interrupted was done."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"{self.name} received")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _Signals:
    """SIGTERM, SIGINT, SIGQUIT and SIGHUP as the event loop sees them, from the first line of
    :func:`serve` to the end of the process: none of them may kill the proxy before it has
    recorded why it ends.

    A stop signal runs the :meth:`when_stopped` callbacks (the backend's process group gets
    SIGTERM) and interrupts the step :meth:`unless_stopped` is waiting for; a second one,
    while the first is still being acted on, calls ``force`` (set once there is a shutdown
    coordinator to end the process with). A SIGHUP calls the :meth:`on_reload` callback; one
    that came before it was set is kept for it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.received: int | None = None  # the first stop signal
        self.force: Callable[[int], object] | None = None
        self._stop = asyncio.Event()
        self._reload: Callable[[], None] | None = None
        self._reload_asked = False
        self._stopping: list[Callable[[], None]] = []
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int) -> None:
        if self.received is None:
            self.received = signum
            self._stop.set()
            for callback in self._stopping:
                callback()
        elif self.force is not None:
            self.force(signum)

    def _on_hup(self) -> None:
        if self._reload is None:
            self._reload_asked = True  # no policy engine yet: reloaded once there is one
        else:
            self._reload()

    def when_stopped(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` at the first stop signal (at once, if it has come)."""
        self._stopping.append(callback)
        if self.received is not None:
            callback()

    def on_reload(self, reload: Callable[[], None]) -> None:
        """What a SIGHUP does from now on (and at once, if one came before)."""
        self._reload = reload
        if self._reload_asked:
            self._reload_asked = False
            reload()

    async def unless_stopped(self, work: Awaitable[T]) -> T:
        """``work``'s outcome, or :class:`_Stopped` once a stop signal has come (even if
        ``work`` ended meanwhile, perhaps because the backend ended on the signal): ``work``
        is cancelled and awaited first. After a stop signal, nothing new starts."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            if self.received is None:
                await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.received is None:  # only the work can have ended the wait
            return task.result()
        if not task.cancelled():
            task.exception()  # an outcome nobody will see: retrieved, so it is not logged
        raise _Stopped(self.received)


class _BlockingOut:
    """Our stdout when it is a regular file or ``/dev/null`` (the event loop only watches
    pipes, sockets and terminals): plain writes, which do not block for long there."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    async def drain(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False  # a write that fails says so (the relay then ends the session)

    def fileno(self) -> int:
        return self.fd


def _feed_from_thread(reader: asyncio.StreamReader, fd: int) -> None:
    """Read our stdin on a thread when the loop cannot watch it (``< /dev/null``, a file)."""
    loop = asyncio.get_running_loop()

    def pump() -> None:
        while chunk := os.read(fd, 65536):
            loop.call_soon_threadsafe(reader.feed_data, chunk)
        loop.call_soon_threadsafe(reader.feed_eof)

    threading.Thread(target=pump, name="stdin", daemon=True).start()


async def _stdio() -> tuple[asyncio.StreamReader, ClientWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=10 * 1024 * 1024 + 1)
    if _pollable(sys.stdin.fileno()):
        stdin, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        pipe_sized_reads(stdin)
    else:
        _feed_from_thread(reader, sys.stdin.fileno())
    if not _pollable(sys.stdout.fileno()):
        return reader, _BlockingOut(sys.stdout.fileno())
    transport, protocol = await loop.connect_write_pipe(ClientPipe, sys.stdout)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


def _pollable(fd: int) -> bool:
    """Pipes, sockets and terminals can be watched by the event loop; files and
    ``/dev/null`` cannot."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


def _verifies(context: ssl.SSLContext) -> bool:
    """The core's own floor under any provider's context."""
    return (
        context.verify_mode is ssl.CERT_REQUIRED
        and context.check_hostname
        and context.minimum_version >= ssl.TLSVersion.TLSv1_2
    )


async def _tls_gate(runtime: Any, trail: AuditTrail, session: Session) -> ssl.SSLContext | None:
    """Run the TLS provider's start-up checks, audit each finding, and return its context
    (None: no ``backend.tls``, the system's trust store verifies the server)."""
    if "backend.tls" not in runtime.components:
        return None
    provider = runtime.build("backend.tls")
    context: ssl.SSLContext | None = None
    try:
        findings = list(provider.check())
        if not any(f.severity is TlsSeverity.REFUSE for f in findings):
            context = provider.ssl_context()
            if not _verifies(context):
                findings.append(
                    TlsFinding(
                        "context",
                        TlsSeverity.REFUSE,
                        "the provider's context does not verify the server "
                        "(CERT_REQUIRED, hostname check, TLS 1.2 at least)",
                    )
                )
    except BaseException as exc:  # a provider that fails is a refusal, never a pass — and
        # its sys.exit() is no exit with its status, the refusal unrecorded
        findings = [TlsFinding("provider", TlsSeverity.REFUSE, exception_text(exc))]
    for finding in findings:
        await trail.record(
            SystemEvent(
                event="tls_check",
                session_id=session.id,
                detail={
                    **finding.facts,
                    "check": finding.check,
                    "severity": finding.severity.value,
                    "detail": finding.detail,
                },
            )
        )
        if finding.severity in (TlsSeverity.WARNING, TlsSeverity.CRITICAL):
            log.warning("TLS %s: %s", finding.severity.value, finding.detail)
    refused = [f for f in findings if f.severity is TlsSeverity.REFUSE]
    if refused or context is None:
        raise BackendError(
            f"refusing to connect to the backend: TLS check {refused[0].check!r} failed: "
            f"{refused[0].detail}"
            if refused
            else "refusing to connect to the backend: the TLS provider gave no context",
            fix="correct the files under backend.tls.config ('mcp-acp tls status' shows them)",
        )
    return context


def _status(pep: EnforcementPoint, approver: Any, started: float) -> dict[str, Any]:
    """What ``mcp-acp status`` shows of this proxy."""
    session = pep.session
    return {
        "pid": os.getpid(),
        "session_id": session.id,
        "subject": session.subject.subject_id if session.subject else None,
        "client": session.client_name,
        "backend": pep.backend_id,
        "policy_id": getattr(pep.engine, "policy_id", "unknown"),
        "approver": getattr(approver, "name", type(approver).__name__),
        "started_at": started,
        "uptime_seconds": round(time.time() - started, 1),
        "requests": dict(pep.counts),
        "pending_approvals": getattr(approver, "pending_count", 0),
        "remembered_approvals": len(pep.limits.approvals),
        "posture": {name: status.value for name, status in session.posture.items()},
    }


async def _refuse_start(
    trail: AuditTrail | None, session: Session, error: McpAcpError, runtime: Runtime
) -> None:
    """Record why this proxy will not serve (when the trail still works) and say so on the
    desktop: the client that started us may never show our stderr."""
    if trail is not None:
        with contextlib.suppress(Exception):
            await trail.record(
                SystemEvent(
                    event="startup_refused",
                    session_id=session.id,
                    detail={
                        "failure_class": error.kind,
                        "exit_code": error.exit_code,
                        "reason": str(error),
                    },
                )
            )
        with contextlib.suppress(Exception):
            await trail.close()
    notify = runtime.notifier()
    if notify is not None:
        notify("mcp-acp did not start", without_secrets(error.user_line()))


async def _stopped_at_start(trail: AuditTrail, session: Session, stop: _Stopped) -> int:
    """A stop signal before ``session_started``: recorded as ``startup_refused`` (no desktop
    notice: someone asked for it); the exit code says which signal."""
    reason = f"{stop.name} received during start-up"
    with contextlib.suppress(Exception):
        await trail.record(
            SystemEvent(
                event="startup_refused",
                session_id=session.id,
                detail={"failure_class": "signal", "exit_code": stop.exit_code, "reason": reason},
            )
        )
    with contextlib.suppress(Exception):
        await trail.close()
    with contextlib.suppress(Exception):
        print(f"mcp-acp: not started: {reason}", file=sys.stderr, flush=True)
    return stop.exit_code


async def serve(config_path: Path) -> int:
    """Run one proxied session on stdio; return the process exit code (or raise the
    :class:`McpAcpError` that refused the start, recorded first).

    Installs handlers for SIGTERM, SIGINT, SIGQUIT and SIGHUP on the running loop at once (see the
    module docstring); they stay until the loop is closed."""
    signals = _Signals(asyncio.get_running_loop())
    runtime = load_runtime(config_path)
    session = Session()
    shutdown = runtime.shutdown_coordinator(session_id=session.id)
    signals.force = functools.partial(_force, shutdown)
    trail = runtime.audit_trail(shutdown)
    try:
        await trail.start()  # not interrupted: a trail half open could record nothing
    except McpAcpError as exc:
        await _refuse_start(None, session, exc, runtime)
        raise
    control: ControlServer | None = None
    try:
        control = ControlServer(runtime.config.proxy.socket_dir)
        shutdown.on_exit(control.remove_socket)  # a fail-closed exit leaves no socket behind
        started = await signals.unless_stopped(_start(runtime, trail, session, control))
        # not interrupted: a stop signal from here on ends a session that has started
        await trail.record(
            AuthEvent(
                event="session_started",
                session_id=session.id,
                subject_id=started.subject.subject_id,
                issuer=started.subject.issuer,
            )
        )
    except _Stopped as stop:
        await _close(control)
        return await _stopped_at_start(trail, session, stop)
    except McpAcpError as exc:
        await _close(control)
        await _refuse_start(trail, session, exc, runtime)
        raise
    except BaseException:
        if control is not None:
            control.remove_socket()
        raise
    # from here the backend may run: a fail-closed exit (os._exit) ends its process group
    abandon: Callable[[], None] | None = getattr(started.channel, "abandon", None)
    if abandon is not None:  # a stdio backend; an HTTP one is not ours to end
        shutdown.on_exit(abandon)
    terminate: Callable[[], None] | None = getattr(started.channel, "terminate", None)
    if terminate is not None:  # a stop signal for us is one for the backend
        signals.when_stopped(terminate)
    return await _serve(runtime, trail, session, shutdown, started, signals)


async def _close(control: ControlServer | None) -> None:
    """Close the control socket of a start that was refused (if it was opened)."""
    if control is not None:
        with contextlib.suppress(Exception):
            await control.close()


def _force(shutdown: ShutdownCoordinator, signum: int) -> None:
    """A second stop signal: the orderly end is taking too long for whoever sent it."""
    name = signal.Signals(signum).name
    shutdown.stop_now(128 + signum, f"{name} received again while stopping")


class _Started(NamedTuple):
    """What the start-up steps produced, in the order they ran."""

    channel: BackendChannel
    identity: IdentityProvider
    engine: PolicyEngine
    approver: Approver
    subject: Subject
    posture: PostureMonitor
    control: ControlServer


async def _start(
    runtime: Runtime, trail: AuditTrail, session: Session, control: ControlServer
) -> _Started:
    """Tool pins readable → plugins recorded → TLS gate → identity (token loaded,
    validated or refreshed) → policy → posture gate → control socket opened. Any failure
    raises and nothing is served; :func:`serve` then records ``session_started`` (or the
    refusal)."""
    if runtime.config.proxy.tool_pinning:
        ToolPins.beside(runtime.config_path).check()  # a damaged pins file: ConfigError
    plugins = {p.name: p.version for p in runtime.plugins.loaded}
    await trail.record(
        SystemEvent(
            event="plugins_loaded",
            session_id=session.id,
            detail={"plugins": plugins, "allowlist": runtime.plugins.allow_source},
        )
    )
    if runtime.config.proxy.untrusted_content == "off":  # a weaker setting: on record
        log.warning("proxy.untrusted_content is off: untrusted content escalates nothing")
        await trail.record(
            SystemEvent(
                event="untrusted_content_off",
                session_id=session.id,
                detail={"setting": "proxy.untrusted_content", "value": "off"},
            )
        )
    ssl_context = await _tls_gate(runtime, trail, session)
    channel = open_channel(  # connects later
        runtime.config.backend,
        ssl_context=ssl_context,
        withhold_env=runtime.secret_env_names(),  # a backend never sees mcp-acp's secrets
    )

    async def record_auth(event: AuthEvent) -> None:
        await trail.record(event.model_copy(update={"session_id": session.id}))

    identity = runtime.build("identity", record_auth=record_auth)
    engine = runtime.build("policy")
    approver = runtime.build("approver")
    subject = await first_subject(identity)
    session.bind(subject)
    posture = runtime.posture_monitor(trail, session_id=session.id, posture=session.posture)
    await posture.gate()  # PostureError (exit 15) unless every check passes
    # before session_started and the backend: a socket that cannot be opened (a directory
    # not ours, a path too long) is a refused start (ControlError, exit 10), on record
    control.refused_session = channel.backend_session
    await control.start()  # ready before the first request can wait for an answer
    return _Started(channel, identity, engine, approver, subject, posture, control)


async def _serve(
    runtime: Runtime,
    trail: AuditTrail,
    session: Session,
    shutdown: ShutdownCoordinator,
    parts: _Started,
    signals: _Signals,
) -> int:
    """Start the backend, then relay the session until the client, a signal or the backend
    ends it."""
    try:
        # Every gate has passed: start the backend now, so that it boots while the relay
        # is built. The relay's own start() call gets the same outcome and records it
        # (backend_started, or backend_start_failed and this BackendError raised again).
        with contextlib.suppress(BackendError):
            await signals.unless_stopped(parts.channel.start())
        resume_collection()  # paused by the executable for start-up (mcp_acp.startup)
        return await _relay(runtime, trail, session, shutdown, parts, signals)
    except _Stopped as stop:  # while an HTTP backend was being reached: nothing relayed
        await _close(parts.control)
        with contextlib.suppress(AuditError):  # the session's end is recorded all the same
            await trail.record(
                SystemEvent(
                    event="backend_start_failed",
                    session_id=session.id,
                    detail={
                        "backend": parts.channel.backend_id,
                        "error": f"{stop.name} received before it answered",
                    },
                )
            )
        await _end_session(trail, session, parts.subject, f"{stop.name} received")
        return 0
    finally:
        await parts.channel.close()  # the relay closes it too, unless it never got to run
        await _close(parts.control)  # so does the relay


async def _end_session(trail: AuditTrail, session: Session, subject: Subject, why: str) -> None:
    """Record ``session_ended``, then close the trail. If the trail has failed — before
    (its shutdown waits out a short grace, and the session ended within it: the client
    closed its input, a stop signal), or now (``session_ended``, or the last records
    synced at close) — the process ends as that failure: recorded, one line, exit 13;
    never as a clean end of session."""
    with contextlib.suppress(Exception):  # a failure is the trail's: acted on below
        await trail.record(
            AuthEvent(
                event="session_ended",
                session_id=session.id,
                subject_id=subject.subject_id,
                issuer=subject.issuer,
                reason=why,
            )
        )
    await trail.close()
    await asyncio.sleep(0)  # what closing settled (the records it synced last) reports first
    if trail.failed is not None:
        trail.coordinator.trigger(trail.failed, detail=f"audit write failed; then {why}")


def _policy_reloads(
    engine: PolicyEngine, pep: EnforcementPoint, trail: AuditTrail, session: Session
) -> Callable[[], None] | None:
    """What a SIGHUP does: reload the policy, if the engine can (the built-in one can).

    One reload at a time, on a worker thread (reading the file must not stop the loop):
    SIGHUPs during a reload make one more after it, which reads the file as it is then.
    Two reloads at once could finish in the wrong order and leave the older file in force;
    and a reload that never finishes (the file is a FIFO nobody writes) holds one thread,
    not one per SIGHUP. Nothing waits for a reload to end the session."""
    reload: Callable[[], list[str]] | None = getattr(engine, "reload", None)
    if reload is None:
        return None
    again = False
    running: asyncio.Task[None] | None = None

    async def reload_once(reload: Callable[[], list[str]]) -> None:
        try:
            errors = await asyncio.to_thread(reload)
        except Exception as exc:  # any engine's failure is a failed reload, recorded
            errors = [one_line(f"policy reload failed: {exception_text(exc)}")]
        if not errors:
            pep.policy_reloaded()  # remembered approvals belong to the old policy
        event = "policy_reloaded" if not errors else "policy_reload_failed"
        with contextlib.suppress(Exception):
            await trail.record(
                SystemEvent(
                    event=event,
                    session_id=session.id,
                    detail={"policy_id": engine.policy_id, "errors": errors[:20]},
                )
            )

    async def reloading(reload: Callable[[], list[str]]) -> None:
        nonlocal again
        again = True
        while again:
            again = False
            await reload_once(reload)

    def on_sighup() -> None:
        nonlocal again, running
        if running is not None and not running.done():
            again = True
            return
        running = asyncio.ensure_future(reloading(reload))  # referenced: not collected

    return on_sighup


async def _relay(
    runtime: Runtime,
    trail: AuditTrail,
    session: Session,
    shutdown: ShutdownCoordinator,
    parts: _Started,
    signals: _Signals,
) -> int:
    """Relay the session until the client, a signal or the backend ends it."""
    settings = runtime.config.proxy
    rates = settings.rate_limits
    channel, identity, engine, approver, subject, posture, control = parts
    pep = EnforcementPoint(
        engine=engine,
        trail=trail,
        identity=identity,
        approver=approver,
        registry=ToolRegistry.default(runtime.config.tools.registry),
        backend_id=channel.backend_id,
        session=session,
        protected=runtime.protected_dirs,
        approval_timeout=settings.approval_timeout_seconds,
        limits=Limits(
            approvals=ApprovalCache(settings.approval_cache_seconds),
            tool_calls=ToolRateLimit(rates.tool_calls_per_minute),
            flood=TokenBucket(rates.requests_per_second, rates.burst),
            client_notifications=TokenBucket(
                rates.notifications_per_second, rates.notification_burst
            ),
            backend_messages=TokenBucket(rates.notifications_per_second, rates.notification_burst),
        ),
        shutdown=shutdown,
        unhealthy=lambda: posture.failed,
        outbound_secrets=settings.outbound_secrets,
        untrusted_content=settings.untrusted_content,
    )
    relay = Relay(
        pep,
        trail,
        channel,
        record_payloads=runtime.config.audit.record_payloads,
        tool_denial=settings.tool_denial,
        tool_screening=settings.tool_screening,
        pins=ToolPins.beside(runtime.config_path) if settings.tool_pinning else None,
        pins_backend=backend_key(runtime.config.backend),
        review_new_tools=settings.new_tools == "review",
    )
    started = time.time()
    control.register("status", lambda command, who: _status(pep, approver, started))
    for name, operation in getattr(approver, "control_ops", dict)().items():
        control.register(name, operation)  # e.g. the 'cli' approver's list/approve/deny
    ended_at_exit = getattr(approver, "ended_at_exit", None)

    def note_ended(why: str) -> None:
        """Leave the note of the approvals this session held (if the approver keeps them):
        an answer that comes too late is told what became of its approval. The approver's
        failure — a ``sys.exit()`` of its own too — is logged: the session still ends as it
        must (recorded, with its exit code)."""
        if not callable(ended_at_exit):
            return
        try:
            control.record_ended(ended_at_exit(why))
        except BaseException as exc:
            log.error("ended approvals not noted: the approver failed: %s", exception_text(exc))

    # a fail-closed exit; after the enforcement point's callback, so its reason
    shutdown.on_session_end(
        lambda reason: note_ended(pep.ending or f"the proxy shut down ({reason})")
    )
    reader, writer = await _stdio()
    monitor = asyncio.create_task(trail.monitor())
    posture.start_watching()  # supervised: if it stops while we serve, we stop (exit 15)
    relaying = asyncio.ensure_future(relay.run(reader, writer))
    ended = "the client closed the session"

    def stopping() -> None:  # before the relay is cancelled: the reason for what it cuts short
        name = signal.Signals(signals.received or signal.SIGTERM).name
        pep.ending = f"the proxy was stopped ({name} received)"

    signals.when_stopped(stopping)
    reload = _policy_reloads(engine, pep, trail, session)
    if reload is not None:
        signals.on_reload(reload)
    code = 0
    try:
        code = await signals.unless_stopped(relaying)
        if code == BackendError.exit_code:
            ended = "the backend exited"
        elif relay.ended_by is not None:
            ended = relay.ended_by  # the client's output closed
    except _Stopped as stop:
        ended = f"{stop.name} received"
        code = 0
    except BackendError:
        ended = "the backend could not be started"
        raise
    finally:
        monitor.cancel()
        posture.stop_watching()
        note_ended(pep.ending or ended)  # every other end: the relay settled what it held
        with contextlib.suppress(Exception):
            await control.close()
        await _end_session(trail, session, subject, ended)
    if code == BackendError.exit_code:  # one line on stderr, like every other failure
        raise BackendError(
            relay.backend_lost or "the backend went away",
            fix=_BACKEND_URL_FIX if runtime.config.backend.transport == "http" else _BACKEND_FIX,
        )
    return code


_BACKEND_FIX = (
    "its own error output, if any, is above; run backend.command with backend.args by hand "
    "('mcp-acp config show' prints them) to see it fail"
)
_BACKEND_URL_FIX = (
    "check that the server at backend.url is up ('curl -i URL' shows what it answers)"
)
