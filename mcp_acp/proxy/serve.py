"""``mcp-acp run``: compose the parts, in a fail-closed start order, and relay one session.

Start order — each step must succeed before the next: config and plugins (validated) →
audit trail (write test on every stream) → TLS checks (an HTTPS backend with
``backend.tls``; every finding audited) → identity (the token loaded, validated or
refreshed; its auth events recorded) → policy → posture gate → backend → serve. A start-up
failure is recorded as ``startup_refused`` (when the trail works), shown on the desktop
where the platform can, and ends the process with its failure class's exit code. SIGHUP
reloads the policy (the last-known-good stays on error; both audited); SIGTERM/SIGINT and
the client closing its input end the session, recorded as ``session_ended``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from mcp_acp.audit.events import AuthEvent, SystemEvent
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.control import ControlServer
from mcp_acp.errors import AuthenticationError, BackendError, McpAcpError, one_line
from mcp_acp.models import Subject, TlsFinding, TlsSeverity
from mcp_acp.posture import PostureMonitor
from mcp_acp.protocols import Approver, IdentityProvider, PolicyEngine
from mcp_acp.proxy.channel import BackendChannel, open_channel
from mcp_acp.proxy.limits import ApprovalCache, TokenBucket, ToolRateLimit
from mcp_acp.proxy.messages import pipe_sized_reads
from mcp_acp.proxy.pep import BuildError, EnforcementPoint, Limits, Session, subject_of
from mcp_acp.proxy.pins import ToolPins, backend_key
from mcp_acp.proxy.relay import ClientWriter, Relay
from mcp_acp.runtime import Runtime, load_runtime
from mcp_acp.shutdown import ShutdownCoordinator
from mcp_acp.startup import resume_collection
from mcp_acp.tools import ToolRegistry

__all__ = ["serve"]

log = logging.getLogger(__name__)


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
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout
    )
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
    except Exception as exc:  # a provider that fails is a refusal, never a pass
        findings = [
            TlsFinding("provider", TlsSeverity.REFUSE, f"{type(exc).__name__}: {exc}"),
        ]
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
        notify("mcp-acp did not start", error.user_line())


async def serve(config_path: Path) -> int:
    """Run one proxied session on stdio; return the process exit code."""
    runtime = load_runtime(config_path)
    session = Session()
    shutdown = runtime.shutdown_coordinator(session_id=session.id)
    trail = runtime.audit_trail(shutdown)
    try:
        await trail.start()
    except McpAcpError as exc:
        await _refuse_start(None, session, exc, runtime)
        raise
    try:
        started = await _start(runtime, trail, session)
    except McpAcpError as exc:
        await _refuse_start(trail, session, exc, runtime)
        raise
    return await _serve(runtime, trail, session, shutdown, started)


class _Started(NamedTuple):
    """What the start-up steps produced, in the order they ran."""

    channel: BackendChannel
    identity: IdentityProvider
    engine: PolicyEngine
    approver: Approver
    subject: Subject
    posture: PostureMonitor


async def _first_subject(identity: IdentityProvider) -> Subject:
    """The identity gate. A provider that fails with anything but mcp-acp's own errors (a
    bug, a full disk) refuses the start like an authentication failure (exit 14), with
    what it raised; never an unrecorded internal error."""
    try:
        return await subject_of(identity)
    except BuildError as exc:
        if isinstance(exc.cause, McpAcpError):  # one of ours: it keeps its own exit code
            raise exc.cause from None
        raise AuthenticationError(
            f"the identity provider failed: {type(exc.cause).__name__}: {exc.cause}",
            fix="see the provider's documentation; 'mcp-acp --debug run' shows the traceback",
        ) from exc


async def _start(runtime: Runtime, trail: AuditTrail, session: Session) -> _Started:
    """Tool pins readable → plugins recorded → TLS gate → identity (token loaded,
    validated or refreshed) → policy → posture gate → ``session_started``. Any failure
    raises and nothing is served."""
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
    subject = await _first_subject(identity)
    session.bind(subject)
    checks = [
        runtime.build(field)
        for field in sorted(f for f in runtime.components if f.startswith("posture.checks"))
    ]
    posture = PostureMonitor(
        checks,
        trail,
        session_id=session.id,
        posture=session.posture,
        interval=runtime.config.posture.interval_seconds,
        timeout=runtime.config.posture.timeout_seconds,
        failure_threshold=runtime.config.posture.failure_threshold,
        on_failure=trail.coordinator.trigger,
    )
    await posture.gate()  # PostureError (exit 15) unless every check passes
    await trail.record(
        AuthEvent(
            event="session_started",
            session_id=session.id,
            subject_id=subject.subject_id,
            issuer=subject.issuer,
        )
    )
    return _Started(channel, identity, engine, approver, subject, posture)


async def _serve(
    runtime: Runtime,
    trail: AuditTrail,
    session: Session,
    shutdown: ShutdownCoordinator,
    parts: _Started,
) -> int:
    """Start the backend, then relay the session until the client, a signal or the backend
    ends it."""
    # Every gate has passed: start the backend now, so that it boots while the relay is
    # built. The relay's own start() call gets the same outcome and records it
    # (backend_started, or backend_start_failed and this BackendError raised again).
    with contextlib.suppress(BackendError):
        await parts.channel.start()
    resume_collection()  # paused by the executable for start-up (mcp_acp.startup)
    try:
        return await _relay(runtime, trail, session, shutdown, parts)
    finally:
        await parts.channel.close()  # the relay closes it too, unless it never got to run


async def _relay(
    runtime: Runtime,
    trail: AuditTrail,
    session: Session,
    shutdown: ShutdownCoordinator,
    parts: _Started,
) -> int:
    """Relay the session until the client, a signal or the backend ends it."""
    settings = runtime.config.proxy
    rates = settings.rate_limits
    channel, identity, engine, approver, subject, posture = parts
    pep = EnforcementPoint(
        engine=engine,
        trail=trail,
        identity=identity,
        approver=approver,
        registry=ToolRegistry.default(runtime.config.tools.registry),
        backend_id=channel.backend_id,
        session=session,
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
    control = ControlServer(settings.socket_dir)
    control.register("status", lambda command, who: _status(pep, approver, started))
    for name, operation in getattr(approver, "control_ops", dict)().items():
        control.register(name, operation)  # e.g. the 'cli' approver's list/approve/deny
    await control.start()  # ready before the first request can wait for an answer
    reader, writer = await _stdio()
    monitor = asyncio.create_task(trail.monitor())
    posture.start_watching()  # supervised: if it stops while we serve, we stop (exit 15)
    loop = asyncio.get_running_loop()
    relaying = asyncio.ensure_future(relay.run(reader, writer))
    ended = "the client closed the session"

    def stop(name: str) -> None:
        nonlocal ended
        ended = f"{name} received"
        pep.ending = f"the proxy was stopped ({ended})"  # the reason for what it cuts short
        relaying.cancel()

    # reloading is optional for a policy engine: the built-in one has it
    reload: Callable[[], list[str]] | None = getattr(engine, "reload", None)

    async def reload_policy(reload: Callable[[], list[str]]) -> None:
        try:
            errors = await asyncio.to_thread(reload)
        except Exception as exc:  # any engine's failure is a failed reload, recorded
            errors = [one_line(f"policy reload failed: {type(exc).__name__}: {exc}")]
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

    loop.add_signal_handler(signal.SIGTERM, stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, stop, "SIGINT")
    if reload is not None:
        reloads: set[asyncio.Task[None]] = set()  # referenced until done, or GC may drop one

        def on_sighup(reload: Callable[[], list[str]] = reload) -> None:
            task = asyncio.ensure_future(reload_policy(reload))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    code = 0
    try:
        code = await relaying
        if code == BackendError.exit_code:
            ended = "the backend exited"
        elif relay.ended_by is not None:
            ended = relay.ended_by  # the client's output closed
    except asyncio.CancelledError:
        code = 0
    except BackendError:
        ended = "the backend could not be started"
        raise
    finally:
        monitor.cancel()
        posture.stop_watching()
        with contextlib.suppress(Exception):
            await control.close()
        with contextlib.suppress(Exception):
            await trail.record(
                AuthEvent(
                    event="session_ended",
                    session_id=session.id,
                    subject_id=subject.subject_id,
                    reason=ended,
                )
            )
        await trail.close()
    return code
