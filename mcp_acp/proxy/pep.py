"""The policy enforcement point: one place every request passes, in both directions.

For each request it builds the ``DecisionRequest`` (subject from the identity provider,
action and resource from the message, environment from the session), asks the policy
engine, asks a human when the rule says ``ask`` (unless the same approval is remembered),
applies the session's rate limits, and writes the decision record — durably, *before* the
caller acts on the verdict. Any doubt is a deny, and the denial is recorded: no identity, an
identity provider that fails in another way, a request that cannot be prepared for a
decision, an engine error, an approver failure or timeout. If the record cannot be written,
:class:`AuditError` propagates and nothing passes. A subject that changes mid-session is a
binding violation: the request is denied and the verdict carries the error the proxy shuts
down with. A decision cut short — the client cancels the request, or the session ends (a
signal, the backend gone, a fail-closed shutdown) while it is decided or a human is asked —
is a recorded denial too, naming what cut it short.

Untrusted content (the "toxic agent flow"): the session becomes *exposed* — once, for the
rest of the session, remembering the first cause — when a ``tools/call`` of a tool with the
side effect ``untrusted_content`` is allowed (before it is forwarded: its content may come
back at any moment), or when the relay finds hidden-instruction markers in the answer to a
``tools/call``, ``resources/read``, ``prompts/get``, ``tasks/result`` or the handshake, or
in a ``sampling/createMessage`` request of the backend's that it relays to the client
(:meth:`EnforcementPoint.expose`).
From then on a ``tools/call`` allowed without a human seeing it (by the policy, or a
remembered approval) that writes, deletes, executes or has the side effect
``network_egress`` goes to a human first (``builtin-untrusted-content``, never remembered),
unless ``proxy.untrusted_content`` is ``off``.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Literal, TypeVar

import attrs

from mcp_acp.audit.events import AuditEvent, DecisionEvent, SystemEvent, without_secrets
from mcp_acp.audit.redact import TOO_MANY_STRINGS, secret_kinds
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.errors import (
    AuditError,
    AuthenticationError,
    McpAcpError,
    SessionBindingError,
    exception_text,
)
from mcp_acp.models import (
    NEVER_CACHED,
    ApprovalOutcome,
    ApprovalRequest,
    ApprovalResult,
    ApprovalTerms,
    Decision,
    DecisionRequest,
    Effect,
    PathArgument,
    PostureStatus,
    Subject,
)
from mcp_acp.policy.protected import PathGuard, Protected
from mcp_acp.protocols import Approver, IdentityProvider, PolicyEngine
from mcp_acp.proxy.limits import ApprovalCache, Dropped, TokenBucket, ToolRateLimit
from mcp_acp.proxy.summary import approval_arguments, approval_summary
from mcp_acp.request import build_decision_request, resolve_path_arguments
from mcp_acp.shutdown import ShutdownCoordinator
from mcp_acp.tools import UNTRUSTED_CONTENT, ToolRegistry

__all__ = [
    "BuildError",
    "Companion",
    "EnforcementPoint",
    "Exposure",
    "Limits",
    "PluginRaised",
    "Session",
    "Verdict",
    "contained",
    "decide",
    "failure",
    "first_subject",
    "plugin_call",
    "subject_of",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Given whether the request is allowed, one more record to write with the decision.
Companion = Callable[[bool], AuditEvent | None] | None
#: Messages dropped by the flood guards are recorded together, this long after the first.
DROPPED_REPORT_SECONDS = 1.0
#: Operations that, after untrusted content, go to a human (with side effect network_egress).
RISKY_OPERATIONS = frozenset({"write", "delete", "execute"})
#: At a fail-closed shutdown, how long recording the decisions cut short (and, in the
#: relay, answering them) may hold up the exit, each.
AT_EXIT_SECONDS = 1.0
#: How many requests of one session may wait for a human at once; one more that would be
#: asked is denied at once. Each holds its message until it is answered (up to 300 s).
MAX_PENDING_APPROVALS = 100


#: Where a 2026-07-28 request's envelope (its ``_meta``) says what the client is.
CLIENT_INFO = "io.modelcontextprotocol/clientInfo"


def _named(info: Any) -> tuple[str | None, str | None]:
    """A ``clientInfo`` object's name and version (None for what is not a string)."""
    if not isinstance(info, Mapping):
        return None, None
    name, version = info.get("name"), info.get("version")
    return (
        name if isinstance(name, str) else None,
        version if isinstance(version, str) else None,
    )


@attrs.define
class Session:
    """One client connection: a random id, the subject it is bound to, and what the client
    said about itself."""

    id: str = attrs.field(factory=lambda: secrets.token_urlsafe(24))
    subject: Subject | None = None
    client_name: str | None = None
    client_version: str | None = None
    posture: dict[str, PostureStatus] = attrs.field(factory=dict)
    #: An ``initialize`` went to the backend (and was not refused): the handshake era, in
    #: which it serves every request as the client that handshake named (``client_name``,
    #: ``client_version``).
    handshake: bool = False
    #: ``initialize`` requests forwarded and not answered yet: meanwhile, which client a
    #: backend would serve a request whose envelope names another as is not known.
    unanswered_handshakes: int = 0

    def bind(self, subject: Subject) -> None:
        """Bind the session to ``subject`` (once, at start; a session left unbound is
        bound to the first subject :meth:`EnforcementPoint.build` sees)."""
        self.subject = subject

    def check_binding(self, subject: Subject) -> None:
        """Raise :class:`SessionBindingError` if ``subject`` is not the bound one."""
        bound = self.subject
        if bound is None:
            return
        if (subject.subject_id, subject.issuer) != (bound.subject_id, bound.issuer):
            raise SessionBindingError(
                f"the subject changed mid-session: {bound.subject_id!r} "
                f"(issuer {bound.issuer!r}) became {subject.subject_id!r} "
                f"(issuer {subject.issuer!r})",
                fix="start a new session (restart the proxy) as the new subject",
            )

    def client_of(self, method: str, params: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """The client's name and version for deciding one of its requests, as the backend
        knows it when it serves that request: an ``initialize``'s own ``clientInfo``; once
        an ``initialize`` has gone to the backend (the handshake era), what it said,
        whatever a request carries; before (the 2026-07-28 era), what the request's own
        envelope says (``params._meta``), never another request's — or, if it has none, what
        the last forwarded one said. A ``clientInfo`` in any other request's params is not
        read: no backend reads it there.

        While an ``initialize`` is unanswered, a request whose envelope names another client
        raises :class:`ValueError` (denied): a backend of the handshake era serves it as the
        handshake's client, one of the 2026-07-28 era (which refuses the handshake) as the
        envelope's, and which one this backend is, its answer has not said yet."""
        if method == "initialize":
            return _named(params.get("clientInfo"))
        meta = params.get("_meta")
        enveloped = isinstance(meta, Mapping) and CLIENT_INFO in meta
        own = _named(meta[CLIENT_INFO]) if enveloped else None  # type: ignore[index]
        session = self.client_name, self.client_version
        if self.unanswered_handshakes and own is not None and own[0] != session[0]:
            raise ValueError(
                f"its envelope names the client {own[0]!r}, and an initialize naming "
                f"{session[0]!r} is not answered yet: send requests after the handshake's answer"
            )
        if not self.handshake and own is not None:
            return own
        return session

    def forwarded(
        self, method: str, params: Mapping[str, Any]
    ) -> tuple[str | None, str | None, bool] | None:
        """A request of the client's goes to the backend. An ``initialize`` begins the
        handshake era: from now on the backend serves requests as the client it names —
        unless it refuses it (:meth:`handshake_refused`, given what this returned: the
        session's client before). Before any handshake, what a request's envelope says the
        client is becomes the session's (``mcp-acp status``; and what deciding on what the
        backend sends, such as filtering a list, takes)."""
        if method == "initialize":
            before = self.client_name, self.client_version, self.handshake
            self.client_name, self.client_version = _named(params.get("clientInfo"))
            self.handshake = True
            self.unanswered_handshakes += 1
            return before
        if not self.handshake:
            meta = params.get("_meta")
            if isinstance(meta, Mapping) and CLIENT_INFO in meta:
                self.client_name, self.client_version = _named(meta[CLIENT_INFO])
        return None

    def handshake_answered(self, refused: tuple[str | None, str | None, bool] | None) -> None:
        """The backend answered an ``initialize``: with a result (``refused`` None), or with
        an error — then the session's client is again what it was before that handshake
        (``refused``, as :meth:`forwarded` returned it)."""
        self.unanswered_handshakes = max(0, self.unanswered_handshakes - 1)
        if refused is not None:
            self.client_name, self.client_version, self.handshake = refused


#: The methods whose messages may expose the session by naming something: the key naming
#: it in the ``session_exposed`` record (the tool called, the resource read, the prompt got,
#: the task whose result was fetched), and how a sentence names it. A method not here (the
#: backend's ``sampling/createMessage``) names nothing.
_NAMED = {
    "tools/call": ("tool", "{}"),
    "resources/read": ("uri", "resource {}"),
    "prompts/get": ("prompt", "prompt {}"),
    "tasks/result": ("task", "the result of task {}"),
}
#: The handshake's answers, which name nothing: the server's ``instructions`` and info.
_HANDSHAKE = frozenset({"initialize", "server/discover"})


@attrs.frozen(slots=True)
class Exposure:
    """Why the session has seen untrusted content: the first cause — the message that
    carried it (``method``: the client's ``tools/call``, ``resources/read``,
    ``prompts/get``, ``tasks/result``, ``initialize`` or ``server/discover``, or the
    backend's ``sampling/createMessage``), what that names (the tool, the resource's URI,
    the prompt, the task;
    None for the handshake and a backend's request), its request id (a backend's request:
    the backend's own id), and why (the tool returns untrusted content; its result carries
    a marker)."""

    method: str
    name: str | None
    request_id: str
    why: str

    @property
    def label(self) -> str:
        """What carried the content, as a sentence names it: ``fetch`` (a tool),
        ``resource note://x``, ``prompt greet``, ``the backend's answer to initialize``,
        ``the backend's sampling/createMessage``."""
        named = _NAMED.get(self.method)
        if named is not None and self.name is not None:
            return named[1].format(self.name)
        if self.method in _HANDSHAKE:
            return f"the backend's answer to {self.method}"
        return f"the backend's {self.method}"

    def detail(self) -> dict[str, str]:
        """What the ``session_exposed`` record says of the cause: ``method``, then ``tool``,
        ``uri``, ``prompt`` or ``task`` (whatever the method names), and ``why``."""
        detail = {"method": self.method}
        named = _NAMED.get(self.method)
        if named is not None and self.name is not None:
            detail[named[0]] = self.name
        detail["why"] = self.why
        return detail

    def __str__(self) -> str:
        return f"{self.label}, request {self.request_id}: {self.why}"


@attrs.frozen(slots=True)
class Verdict:
    """What to do with a request, and why (the sentence the client is told). ``fatal`` is
    set when the session must end after the denial is sent (a binding violation).
    ``unsettled``: a request a human approved, allowed, whose caller says what became of it
    (:meth:`EnforcementPoint.settled`) — see ``check(..., forwards=True)``."""

    allowed: bool
    rule_id: str | None
    reason: str
    fatal: McpAcpError | None = None
    unsettled: _Deciding | None = attrs.field(default=None, eq=False, repr=False)


class BuildError(McpAcpError):
    """No ``DecisionRequest`` could be built, for a reason other than a missing identity or a
    binding violation: the identity provider raised something other than
    :class:`AuthenticationError` (``builtin-identity-error``), or preparing the request
    failed (``builtin-request-error``). :meth:`EnforcementPoint.check` records it as a
    denial under ``rule_id``; other callers of :meth:`EnforcementPoint.build` (the relay's
    list filtering) catch it as an :class:`McpAcpError` and fail closed. Never an exit."""

    def __init__(self, rule_id: str, what: str, cause: Exception, subject: Subject | None) -> None:
        super().__init__(f"{what}: {failure(cause)}")
        self.cause = cause
        self.rule_id = rule_id
        self.subject = subject


async def subject_of(identity: IdentityProvider) -> Subject:
    """``identity``'s current subject, for each request and for the start-up gate. Its own
    errors (no identity, an audit record it could not write) pass; anything else it raises
    — a full disk while saving a refreshed token, a claim out of range — or an answer that
    is not a :class:`Subject` is a :class:`BuildError`."""
    try:
        subject = await plugin_call(identity.current_subject())
    except (AuthenticationError, SessionBindingError, AuditError):
        raise
    except Exception as exc:  # providers should raise AuthenticationError; fail closed
        raise BuildError("builtin-identity-error", "identity provider error", exc, None) from exc
    if not isinstance(subject, Subject):
        wrong = TypeError(f"current_subject() returned {type(subject).__name__}, not a Subject")
        raise BuildError("builtin-identity-error", "identity provider error", wrong, None)
    return subject


def decide(engine: PolicyEngine, request: DecisionRequest) -> Decision:
    """``engine.decide(request)``, fail closed: what the engine raises — a ``sys.exit()``
    or ``KeyboardInterrupt`` of its own too — or answers that is not a :class:`Decision`
    with an :class:`Effect` and a readable reason, is a deny (``builtin-engine-error``)
    saying what went wrong. What the enforcement point decides with, and what a program of
    its own that asks an engine directly should call."""
    try:
        try:
            decision = engine.decide(request)
        except BaseException as raised:  # sys.exit() in a plugin is its failure too
            raise contained(raised) from raised
        if not isinstance(decision, Decision):
            if inspect.iscoroutine(decision):  # an async def decide: never run
                decision.close()
            raise TypeError(f"decide() returned {type(decision).__name__}, not a Decision")
        if not isinstance(decision.effect, Effect):  # "allow" is no Effect.ALLOW
            effect = decision.effect
            raise TypeError(
                f"decide() returned a Decision whose effect is {type(effect).__name__} "
                f"{effect!r}, not an Effect"
            )
        if not isinstance(decision.reason, str):  # rendered now: it goes on record
            raise TypeError("the decision's reason is not a string")
        return decision
    except Exception as exc:  # engines should be total; fail closed if one is not
        log.error("policy engine raised: %s", exc)
        return Decision.deny(
            f"denied: policy engine error: {failure(exc)}",
            policy_id=str(getattr(engine, "policy_id", "unknown")),
            rule_id="builtin-engine-error",
        )


async def first_subject(identity: IdentityProvider) -> Subject:
    """The identity gate at the start of a session (``mcp-acp run``'s, and a program's of
    its own, before ``Session.bind``): :func:`subject_of`, with a provider that fails with
    anything but mcp-acp's own errors — a bug, a full disk, a ``sys.exit()``, an answer that
    is no :class:`Subject` — refusing the start like an authentication failure (exit 14),
    naming what it raised; never a traceback, nor the provider's own exit status."""
    try:
        return await subject_of(identity)
    except BuildError as exc:
        if isinstance(exc.cause, McpAcpError):  # one of ours: it keeps its own exit code
            raise exc.cause from None
        raise AuthenticationError(
            f"the identity provider failed: {failure(exc.cause)}",
            fix="see the provider's documentation; 'mcp-acp --debug run' shows the traceback",
        ) from exc


@attrs.frozen(slots=True)
class _Terms:
    """How one approval is asked for: how long it waits, how long it would be remembered,
    and why it would not be (None: it would)."""

    timeout_seconds: float
    remember_seconds: float
    not_remembered: str | None


@attrs.frozen(slots=True)
class _Answer:
    """How a request was decided: the decision to record, whether it passes, what to record
    with it (who approved, …) and the sentence the client is told."""

    decision: Decision
    allowed: bool
    extra: dict[str, Any]
    reason: str


def _directed(deciding: _Deciding, decision: AuditEvent) -> AuditEvent:
    """``decision`` as recorded: marked ``server_to_client`` if the backend sent the request
    (the client's and the backend's ids may look alike; the records must not)."""
    if deciding.from_backend and isinstance(decision, DecisionEvent):
        return decision.model_copy(update={"direction": "server_to_client"})
    return decision


@attrs.define(eq=False)
class _Deciding:
    """One request :meth:`EnforcementPoint.check` is deciding: what it was asked, the human
    being asked about it (if one is), and whether its decision record is on its way."""

    method: str
    params: Mapping[str, Any]
    request_id: Any
    companion: Companion
    asking: tuple[DecisionRequest, Decision] | None = None
    recording: bool = False
    #: sent by the backend (its decision record says ``direction: server_to_client``)
    from_backend: bool = False
    #: the records on their way say the request passes: the companion says "forwarded"
    passing: bool = False
    #: the approvals asked for it, whose answerers are told what became of the request
    approvals: list[str] = attrs.field(factory=list)
    #: what became of a "remember" the human asked for (``remembered``, ``not remembered: …``)
    remembering: str = ""
    #: what the arguments carry that looks like a credential, once looked for ("" none)
    credentials: str | None = None


@attrs.define
class Limits:
    """The session's memory between requests (see :mod:`mcp_acp.proxy.limits`)."""

    approvals: ApprovalCache = attrs.field(factory=lambda: ApprovalCache(600.0))
    tool_calls: ToolRateLimit = attrs.field(factory=lambda: ToolRateLimit(30))
    flood: TokenBucket = attrs.field(factory=lambda: TokenBucket(50.0, 100))
    #: notifications from the client; notifications and requests from the backend
    client_notifications: TokenBucket = attrs.field(factory=lambda: TokenBucket(100.0, 200))
    backend_messages: TokenBucket = attrs.field(factory=lambda: TokenBucket(100.0, 200))
    dropped: Dropped = attrs.field(factory=Dropped)


#: The member naming what a request acts on, by method: it must be a string. The policy
#: would see another value as its ``repr()`` (``"None"``, which a rule for any tool
#: matches) while the backend acts on whatever it reads.
NAMED_BY: dict[str, str] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}


class EnforcementPoint:
    """Decides, asks, records. One instance per session."""

    def __init__(
        self,
        *,
        engine: PolicyEngine,
        trail: AuditTrail,
        identity: IdentityProvider,
        approver: Approver,
        registry: ToolRegistry,
        backend_id: str,
        session: Session,
        backend_identity: tuple[str, ...] = (),
        approval_timeout: float = 60.0,
        limits: Limits | None = None,
        shutdown: ShutdownCoordinator | None = None,
        unhealthy: Callable[[], str | None] | None = None,
        outbound_secrets: str = "ask",
        untrusted_content: str = "ask",
        protected: Protected = (),
    ) -> None:
        self.engine = engine
        #: ambiguous paths, and paths in ``protected`` (mcp-acp's config and log
        #: directories and its audit fallback file: :attr:`Runtime.protected_dirs`),
        #: denied before any engine decides
        self.guard = PathGuard(protected)
        self.trail = trail
        self.identity = identity
        self.approver = approver
        self.registry = registry
        self.backend_id = backend_id
        #: Set by the relay once the backend channel has started (see BackendChannel).
        self.backend_identity = backend_identity
        self.session = session
        self.approval_timeout = approval_timeout
        self.limits = limits or Limits()
        self.shutdown = shutdown
        self.unhealthy = unhealthy  # why the device lost its posture, once it has
        #: "ask": a tools/call the policy allows whose arguments carry a credential's shape
        #: (redact.secret_kinds) goes to a human (builtin-secret-outbound); "off": it does not
        self.outbound_secrets = outbound_secrets
        #: "ask": once the session is exposed, a tools/call the policy allows that writes,
        #: deletes, executes or egresses goes to a human (builtin-untrusted-content); "off":
        #: it does not (the exposure is still tracked and recorded)
        self.untrusted_content = untrusted_content
        #: Why the session has seen untrusted content, once it has (see :meth:`expose`).
        self.exposure: Exposure | None = None
        self.counts = {"allowed": 0, "denied": 0, "asked": 0}
        #: Why the session is ending, once it is: the reason recorded for the decisions it
        #: cuts short (set by whoever ends it: the relay, the proxy on a signal).
        self.ending: str | None = None
        self._deciding: set[_Deciding] = set()  # check() calls in progress
        self._waiting = 0  # requests waiting for a human's answer
        self._dropped_report: asyncio.TimerHandle | None = None
        self._policy_generation = 0  # policy reloads so far
        if shutdown is not None:
            shutdown.on_session_end(self._shutting_down)

    def _shutting_down(self, reason: str) -> None:
        """The shutdown coordinator's callback: it is ending the process (``reason``)."""
        error = self.shutdown.triggered if self.shutdown is not None else None
        if error is not None:  # the reason without its fix: that is for the operator
            reason = f"{error.kind} failure: {error.message}"
        self.record_cut_short(f"the proxy shut down ({reason})")

    def _client_of(self, method: str, params: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """:meth:`Session.client_of`; a client not known yet is a :class:`BuildError`."""
        try:
            return self.session.client_of(method, params)
        except ValueError as exc:
            raise BuildError(
                "builtin-request-error", "the client is not known yet", exc, self.session.subject
            ) from exc

    def fail(self, error: McpAcpError) -> None:
        """End the session for ``error`` (through the shutdown coordinator, if there is one)."""
        log.error("session ends: %s", error)
        if self.shutdown is not None:
            self.shutdown.trigger(error)

    def expose(self, method: str, name: str | None, request_id: Any, why: str) -> bool:
        """The session has seen untrusted content: the ``method`` message ``request_id``
        carried it — the client's call of the tool ``name``, read of the resource ``name``
        (its URI), get of the prompt ``name``; the handshake's answer, or the backend's
        request (``name`` None) — because ``why``. The first cause is kept for the rest of
        the session, and recorded once (``session_exposed``, handed to the trail like a
        relayed answer); later ones change nothing. Whether this call exposed the session."""
        if self.exposure is not None:
            return False
        self.exposure = Exposure(method, name, str(request_id), why)
        shown = without_secrets(str(self.exposure))
        log.warning("the session has seen untrusted content (%s)", shown)
        self.trail.record_soon(
            SystemEvent(
                event="session_exposed",
                session_id=self.session.id,
                request_id=str(request_id),
                detail={**self.exposure.detail(), "escalation": self.untrusted_content},
            )
        )
        return True

    def policy_reloaded(self) -> None:
        """A new policy: approvals remembered under the old one no longer hold, and an
        approval still pending answers the old policy's question (see :meth:`_ask_human`)."""
        self._policy_generation += 1
        self.limits.approvals.clear()

    def admit(self, side: Literal["client", "backend"], method: str) -> bool:
        """Whether a message ``side`` sends on its own — a notification, or a request from
        the backend — may go on to :meth:`check`: it spends a token of that side's bucket.

        One that finds the bucket empty is dropped without a decision record of its own:
        it is counted (:class:`~mcp_acp.proxy.limits.Dropped`), and the messages dropped
        within :data:`DROPPED_REPORT_SECONDS` of the first are recorded together in one
        ``messages_dropped`` system record — a flood costs one record a second, not one per
        message."""
        bucket = (
            self.limits.client_notifications if side == "client" else (self.limits.backend_messages)
        )
        if bucket.take():
            return True
        self.drop(side, method)
        return False

    def drop(self, side: Literal["client", "backend"], what: str) -> None:
        """Count one message from ``side`` that is not passed on — dropped by its flood
        limit, an answer to no request, or refused before any decision (not JSON, invalid,
        ambiguous, too large, a request id in use: answered with an error, if it is a
        request) — for the next ``messages_dropped`` record."""
        if not self.limits.dropped:
            loop = asyncio.get_running_loop()
            self._dropped_report = loop.call_later(DROPPED_REPORT_SECONDS, self.report_dropped)
        self.limits.dropped.add(side, what)

    def report_dropped(self) -> None:
        """Record the messages dropped since the last report, if any (by timer, and at the
        end of the session). Handed to the trail like a relayed answer: if it cannot be
        written, the trail fails and the proxy shuts down."""
        if self._dropped_report is not None:
            self._dropped_report.cancel()
            self._dropped_report = None
        if not self.limits.dropped:
            return
        counts = self.limits.dropped.take()
        limits = self.limits
        log.warning("messages not passed on: %s", counts)
        self.trail.record_soon(
            SystemEvent(
                event="messages_dropped",
                session_id=self.session.id,
                detail={
                    "dropped": counts,
                    "limits": {
                        side: {"per_second": bucket.rate, "burst": bucket.burst}
                        for side, bucket in (
                            ("client", limits.client_notifications),
                            ("backend", limits.backend_messages),
                        )
                    },
                },
            )
        )

    async def build(
        self,
        method: str,
        params: Mapping[str, Any],
        request_id: Any,
        annotations: Mapping[str, Any] | None = None,
        client: tuple[str | None, str | None] | None = None,
    ) -> DecisionRequest:
        """The ``DecisionRequest`` for one message; ``client``: the client's name and version
        for it (:meth:`Session.client_of`), else the session's. Raises
        :class:`AuthenticationError` (no identity), :class:`SessionBindingError`,
        :class:`AuditError` (the identity provider could not record an auth event) or
        :class:`BuildError` (anything else — among it a request that names no tool, prompt or
        resource as a string (:data:`NAMED_BY`): its name as the policy would see it,
        ``"None"``, would match a rule for any, and the backend would act on whatever it
        reads)."""
        subject = await subject_of(self.identity)
        if self.session.subject is None:  # a session nobody bound: to its first subject
            self.session.bind(subject)
        self.session.check_binding(subject)
        if client is None:
            client = self.session.client_name, self.session.client_version
        client_name, client_version = client
        try:
            member = NAMED_BY.get(method)
            if member is not None and not isinstance(params.get(member), str):
                value = params.get(member)
                what = "null" if value is None else f"of type {type(value).__name__}"
                raise ValueError(
                    f"params.{member} of a {method} must be what it names, a string; here it "
                    f"is {what if member in params else 'missing'}"
                )
            request = build_decision_request(
                method=method,
                params=params,
                subject=subject,
                registry=self.registry,
                backend_id=self.backend_id,
                session_id=self.session.id,
                request_id=str(request_id),
                client_name=client_name,
                client_version=client_version,
                posture=self.session.posture,
                annotations=annotations,
                backend_identity=self.backend_identity,
                resolve_paths=False,
                untrusted_content_seen=self.exposure is not None,
            )
            paths = request.resource.paths
            if paths:
                # following symlinks is file-system I/O (a slow mount can block): off the loop
                resolved = await asyncio.to_thread(resolve_path_arguments, paths)
                resource = attrs.evolve(request.resource, paths=resolved)
                request = attrs.evolve(request, resource=resource)
        except Exception as exc:  # a message that breaks the builder (urlsplit refuses some
            # URIs, e.g. "http://[x") is denied and recorded, never left unanswered
            raise BuildError(
                "builtin-request-error", "the request could not be prepared", exc, subject
            ) from exc
        return request

    def _decide(self, request: DecisionRequest) -> Decision:
        return decide(self.engine, request)

    @property
    def _approver_name(self) -> str:
        return str(getattr(self.approver, "name", type(self.approver).__name__))

    @property
    def _policy_id(self) -> str:
        return str(getattr(self.engine, "policy_id", "unknown"))

    async def _record(self, deciding: _Deciding, decision: AuditEvent, allowed: bool) -> None:
        """The decision record durable — and the caller's companion record written (another
        stream; see :meth:`AuditTrail.record_decision`) — before returning."""
        deciding.recording = True  # from here on, this record is the request's
        decision = _directed(deciding, decision)
        companion = deciding.companion
        other = companion(allowed) if companion is not None else None
        deciding.passing = allowed and other is not None
        if other is None:
            await self.trail.record(decision)
        else:
            await self.trail.record_decision(decision, other)

    @staticmethod
    def _not_forwarded(deciding: _Deciding, why: str) -> AuditEvent | None:
        """The companion record correcting one that said "forwarded" (``deciding.passing``):
        the request was not forwarded, because ``why`` while its decision was recorded."""
        deciding.passing = False  # corrected once
        event = deciding.companion(False) if deciding.companion is not None else None
        text = f"not forwarded: {why} while its decision was being recorded"
        if event is not None and "reason" in type(event).model_fields:
            event = event.model_copy(update={"reason": text})
        return event

    def _denial(
        self, deciding: _Deciding, rule_id: str, reason: str, subject: Subject | None
    ) -> DecisionEvent:
        """The record of a denial that came before any policy decision. A ``tools/call``
        record names the tool asked for."""
        method, params = deciding.method, deciding.params
        named = params.get("name") if method == "tools/call" else None
        return DecisionEvent(
            session_id=self.session.id,
            request_id=str(deciding.request_id),
            subject_id=subject.subject_id if subject else "(none)",
            subject_provenance=subject.provenance.name.lower() if subject else "client_hint",
            mcp_method=method,
            tool_name=named if isinstance(named, str) else None,
            effect="deny",
            rule_id=rule_id,
            reason=reason,
            policy_id=self._policy_id,
        )

    async def _refuse(
        self, deciding: _Deciding, rule_id: str, reason: str, subject: Subject | None
    ) -> Verdict:
        """Record a denial that came before any policy decision (no identity, an identity
        provider or request error, a binding violation, a flood, a quarantined tool, resource
        or prompt) and return it."""
        await self._record(deciding, self._denial(deciding, rule_id, reason, subject), False)
        self.counts["denied"] += 1
        return Verdict(False, rule_id, reason)

    def _cut_short(self, deciding: _Deciding, why: str) -> DecisionEvent:
        """The record of a request whose decision was cut short (``why``): a denial — of the
        approval, if a human was being asked."""
        if deciding.asking is not None:
            request, decision = deciding.asking
            event = DecisionEvent.of(
                request, decision, final_effect="deny", approver=self._approver_name
            )
            return event.model_copy(update={"reason": f"{decision.reason}; not approved: {why}"})
        reason = f"denied: {why} before the request was decided"
        return self._denial(deciding, "builtin-cut-short", reason, self.session.subject)

    def record_cut_short(self, why: str) -> None:
        """At a fail-closed shutdown (a callback of the shutdown coordinator, which exits
        once it returns; synchronous — the event loop does not run again): a denial, and the
        caller's companion record, for each request still being decided or waiting for a
        human, whose decision record is not already on its way — and for one whose allow
        is on its way, a companion record saying it was not forwarded after all. Best effort
        and bounded (:data:`AT_EXIT_SECONDS`): what the trail cannot take goes to its
        fallback file. Whoever answered an approval of such a request is told what became
        of it (for an answer that can no longer reach them: see ``ended_at_exit`` in
        :mod:`mcp_acp.builtins.cli_approver`)."""
        self.ending = why
        deadline = time.monotonic() + AT_EXIT_SECONDS
        for deciding in list(self._deciding):
            if deciding.recording:  # its decision record is on its way; the request stays
                if deciding.passing and (other := self._not_forwarded(deciding, why)):
                    self.trail.record_at_exit(other)  # not forwarded: the process ends
                    self.counts["denied"] += 1
                recorded = f"not forwarded: {why} while its decision was being recorded"
                self._settle(deciding, recorded)
                continue
            if time.monotonic() > deadline:
                log.error("shutting down: decisions cut short and not recorded in time")
                return
            deciding.recording = True
            cut_short = self._cut_short(deciding, why)
            self.trail.record_at_exit(_directed(deciding, cut_short))
            other = deciding.companion(False) if deciding.companion is not None else None
            if other is not None:
                self.trail.record_at_exit(other)
            self.counts["denied"] += 1
            self._settle(deciding, f"denied: {cut_short.reason}")

    async def check(
        self,
        method: str,
        params: Mapping[str, Any],
        request_id: Any,
        annotations: Mapping[str, Any] | None = None,
        *,
        flood_guard: bool = True,
        companion: Companion = None,
        withheld: tuple[str, str] | None = None,
        from_backend: bool = False,
        forwards: bool = False,
    ) -> Verdict:
        """Decide one request and record the decision before returning the verdict.

        ``flood_guard`` spends a token of the global bucket (client requests do;
        notifications and the backend's requests do not). ``companion(allowed)`` may return
        one more record (the relay's operation record), written with the decision and
        durable soon after it (see :meth:`AuditTrail.record_decision`). ``withheld``, for a
        request using a list entry the relay holds back (a quarantined tool, resource or
        prompt, or a tool changed since it was pinned), is the rule id and the reason: the
        request is denied before any policy decision. ``from_backend``: the backend sent it
        (a request for the client, a notification); its decision record says so
        (``direction: server_to_client``), since its id is the backend's own.

        Whoever answered an approval of the request is told what became of it
        (``approval_settled``): at once if it is denied; if it is allowed, at once too —
        unless ``forwards``: the caller forwards it, and may still refuse it (the audit trail
        failed since its decision was recorded), so the caller says which with
        :meth:`settled` once it knows.

        A decision cut short — the task cancelled (the client cancelled the request, the
        session ends) — is recorded as a denial before the cancellation goes on, naming why
        (:attr:`ending`, else the client's cancellation); at a fail-closed shutdown
        :meth:`record_cut_short` records it instead.

        Once the decision is being recorded it stands — the decision record is on its way
        and says what was decided. If it allows the request, the companion record handed
        over with it says "forwarded"; a cancellation then means the caller will not forward
        the request after all, so a second companion record, denied, says why ("not
        forwarded: the proxy was stopped … while its decision was being recorded"): the
        request's last operation record is true. (The relay does not cancel a decision on
        its way to the record for the client's own cancellation — it forwards the request
        as recorded; what cancels it then is the session ending.)"""
        deciding = _Deciding(method, params, request_id, companion, from_backend=from_backend)
        self._deciding.add(deciding)
        try:
            verdict = await self._check(
                deciding, annotations, flood_guard=flood_guard, withheld=withheld
            )
        except asyncio.CancelledError:
            why = self.ending or "cancelled by the client"
            self._settle(deciding, f"not forwarded: {why}")
            if not deciding.recording:
                await self._record(deciding, self._cut_short(deciding, why), False)
                self.counts["denied"] += 1
            elif deciding.passing and (other := self._not_forwarded(deciding, why)):
                self.trail.record_soon(other)
                self.counts["denied"] += 1
            raise
        except AuditError as error:
            self._settle(deciding, f"denied: the audit trail cannot be written ({error})")
            raise
        finally:
            self._deciding.discard(deciding)
        if not verdict.allowed:
            self._settle(deciding, f"denied: {verdict.reason}")
        elif forwards and deciding.approvals:
            return attrs.evolve(verdict, unsettled=deciding)
        else:
            remembering = deciding.remembering
            self._settle(deciding, f"allowed; {remembering}" if remembering else "allowed")
        return verdict

    def settled(self, verdict: Verdict, refused: str | None = None) -> None:
        """For a caller of ``check(..., forwards=True)``: what became of the request
        ``verdict`` allowed — forwarded (``refused`` None), or not after all, ``refused``
        saying why (``"denied: the audit trail cannot be written (…)"``). Whoever approved it
        is told (``approval_settled``); nothing happens if nobody did."""
        deciding = verdict.unsettled
        if deciding is None:
            return
        if refused is not None:
            self._settle(deciding, refused)
            return
        remembering = f"; {deciding.remembering}" if deciding.remembering else ""
        self._settle(deciding, f"allowed and forwarded{remembering}")

    def _settle(self, deciding: _Deciding, outcome: str) -> None:
        """Tell the approver what became of the request its approvals asked about, once it
        is decided and on record (``approval_settled``, if the approver has it: the ``cli``
        approver's ``approve`` answers with it)."""
        approvals, deciding.approvals = deciding.approvals, []
        settled = getattr(self.approver, "approval_settled", None)
        if not callable(settled):
            return
        for approval_id in approvals:
            try:
                settled(approval_id, outcome)
            except BaseException as exc:  # telling is a courtesy; the decision stands —
                # and a plugin's sys.exit() here must not end the proxy with the request
                # unanswered (a plain def: nothing can cancel it)
                log.warning(
                    "approver %s: approval_settled failed: %s",
                    self._approver_name,
                    failure(exc if isinstance(exc, Exception) else PluginRaised(exc)),
                )

    async def _check(
        self,
        deciding: _Deciding,
        annotations: Mapping[str, Any] | None,
        *,
        flood_guard: bool,
        withheld: tuple[str, str] | None,
    ) -> Verdict:
        method, params, request_id = deciding.method, deciding.params, deciding.request_id
        if flood_guard and not self.limits.flood.take():
            flood = self.limits.flood
            reason = (
                f"denied: too many requests (more than {flood.rate:g}/s, "
                f"burst {flood.burst}); slow down"
            )
            return await self._refuse(deciding, "builtin-rate-flood", reason, self.session.subject)
        lost = self.unhealthy() if self.unhealthy is not None else None
        if lost:
            return await self._refuse(
                deciding,
                "builtin-posture",
                f"denied: device posture lost: {lost}",
                self.session.subject,
            )
        if withheld is not None:
            held_by, why = withheld
            return await self._refuse(deciding, held_by, f"denied: {why}", self.session.subject)
        try:
            # the backend's requests name no client of their own: the session's
            client = None if deciding.from_backend else self._client_of(method, params)
            request = await self.build(method, params, request_id, annotations, client)
        except AuthenticationError as exc:
            # no identity: nothing to decide about; the denial itself is on record
            return await self._refuse(deciding, "builtin-no-identity", str(exc), None)
        except SessionBindingError as exc:
            verdict = await self._refuse(
                deciding, "builtin-session-binding", str(exc), self.session.subject
            )
            return attrs.evolve(verdict, fatal=exc)
        except BuildError as exc:  # like an engine error: deny this request, keep serving
            log.error("request %r denied (%s): %s", request_id, exc.rule_id, exc)
            return await self._refuse(deciding, exc.rule_id, f"denied: {exc}", exc.subject)
        guarded = self.guard.check_request(request)
        if guarded is None:
            decision = self._decide(request)
        else:  # whatever the engine would say
            rule_id, reason = guarded
            decision = Decision.deny(reason, policy_id=self._policy_id, rule_id=rule_id)
        answer = _Answer(decision, decision.effect is Effect.ALLOW, {}, decision.reason)
        seen = False  # whether a human saw this very call
        if decision.effect is Effect.ASK:
            cached = self.limits.approvals.get(request, decision, params=params)
            if cached is not None and self._terms(request, decision).not_remembered is None:
                extra = {
                    "final_effect": "allow",
                    "approver": "cache",
                    "approved_by": cached.approved_by,
                    "approval_cached": True,
                }
                answer = _Answer(decision, True, extra, decision.reason)
            else:
                answer = await self._ask_human(deciding, request, decision)
                seen = True
        # a credential going out, or a risky call after untrusted content: asked about unless
        # a human saw this very call (not for the policy's allow, nor for a remembered
        # approval: a human saw the same call before, not in this session's state)
        if answer.allowed and not seen:
            found = [
                (rule, why)
                for rule, why in (
                    ("builtin-secret-outbound", self._credentials(deciding)),
                    ("builtin-untrusted-content", self._exposed(deciding, request)),
                )
                if why
            ]
            if found:  # one question, naming every reason
                why = "; ".join(why for _, why in found)
                answer = await self._escalate(deciding, request, answer.decision, found[0][0], why)
        tool = request.action.tool_name
        if answer.allowed and tool is not None and method == "tools/call":
            calls = self.limits.tool_calls.exceeded(tool)
            if calls is not None:  # over the limit: allowed only if a human says so now
                why = (
                    f"{calls} calls of {tool!r} in the last 60 s "
                    f"(limit {self.limits.tool_calls.per_minute})"
                )
                answer = await self._escalate(
                    deciding, request, answer.decision, "builtin-rate-limit", why
                )
            if answer.allowed:
                self.limits.tool_calls.count(tool)
        allowed = answer.allowed
        if allowed and tool is not None and UNTRUSTED_CONTENT in request.action.side_effects:
            # before the call is forwarded: its content may come back at any moment
            self.expose(method, tool, request_id, "the tool returns untrusted content")
        record = DecisionEvent.of(request, answer.decision, **answer.extra)
        await self._record(deciding, record, allowed)
        self.counts["allowed" if allowed else "denied"] += 1
        return Verdict(allowed, answer.decision.rule_id, answer.reason)

    async def _escalate(
        self,
        deciding: _Deciding,
        request: DecisionRequest,
        decision: Decision,
        rule_id: str,
        why: str,
    ) -> _Answer:
        """A call the policy allowed that a built-in rule (``rule_id``, because ``why``)
        sends to a human: allowed only if one says so now — never remembered."""
        said = decision.reason
        escalation = Decision(
            effect=Effect.ASK,
            policy_id=decision.policy_id,
            rule_id=rule_id,
            explain=lambda: f"ask: {why}; policy said: {said}",
            approval=decision.approval,  # the policy's timeout
        )
        return await self._ask_human(
            deciding, request, escalation, not_remembered=f"never remembered: {rule_id}"
        )

    def _exposed(self, deciding: _Deciding, request: DecisionRequest) -> str:
        """Why a ``tools/call`` that writes, deletes, executes or has the side effect
        ``network_egress`` needs a human: the session has seen untrusted content; "" if it
        has not, if the call does none of these, or if the check is off."""
        exposure = self.exposure
        if exposure is None or self.untrusted_content != "ask" or deciding.method != "tools/call":
            return ""
        action = request.action
        if action.operations & RISKY_OPERATIONS or "network_egress" in action.side_effects:
            return f"the session has seen untrusted content ({exposure})"
        return ""

    def _credentials(self, deciding: _Deciding) -> str:
        """What a ``tools/call``'s arguments carry that looks like a credential (or that was
        not scanned), as a sentence; "" if nothing, or if the check is off. Scanned once."""
        if deciding.method != "tools/call" or self.outbound_secrets != "ask":
            return ""
        if deciding.credentials is None:
            kinds = secret_kinds(deciding.params.get("arguments"))
            shapes = [kind for kind in kinds if kind != TOO_MANY_STRINGS]
            parts = [f"what looks like {' and '.join(shapes)}"] if shapes else []
            parts += [kind for kind in kinds if kind == TOO_MANY_STRINGS]
            deciding.credentials = f"the arguments carry {' and '.join(parts)}" if parts else ""
        return deciding.credentials

    def _terms(self, request: DecisionRequest, decision: Decision) -> _Terms:
        """How to ask about ``request``, which ``decision`` asks about: the policy's terms
        (``decision.approval``) where it sets them, else the proxy's config."""
        terms = decision.approval or ApprovalTerms()
        timeout = terms.timeout_seconds
        if timeout is None:
            timeout = self.approval_timeout
        remember = terms.remember_seconds
        if remember is None:
            remember = self.limits.approvals.ttl_seconds
        side_effects = request.action.side_effects
        never = sorted(NEVER_CACHED.intersection(side_effects))
        listed = terms.remember_side_effects
        others = sorted(side_effects - listed) if listed is not None else []
        if never:
            why: str | None = f"never remembered: {', '.join(never)}"
        elif remember <= 0:
            why = (
                f"never remembered: {terms.remember_source or 'proxy.approval_cache_seconds'} is 0"
            )
        elif others:
            why = (
                f"never remembered: side effect {', '.join(others)} is not in "
                f"{terms.side_effects_source} ({', '.join(sorted(listed or ())) or 'none'})"
            )
        else:
            why = None
        return _Terms(timeout, remember, why)

    async def _ask_human(
        self,
        deciding: _Deciding,
        request: DecisionRequest,
        decision: Decision,
        *,
        not_remembered: str | None = None,
    ) -> _Answer:
        """Ask the approver about ``request``, which ``decision`` says to ask about.
        ``not_remembered``: why an approval must not be remembered whatever the request (an
        escalation's), if so.

        An approval answers the question of the policy that asked it. If the policy was
        replaced while the human was deciding (SIGHUP), the new one decides the request
        (:meth:`_after_reload`).

        With :data:`MAX_PENDING_APPROVALS` requests of the session waiting already, nobody
        is asked: the request is denied at once."""
        if self._waiting >= MAX_PENDING_APPROVALS:
            why = (
                f"{self._waiting} requests of this session are already waiting for a human "
                f"(at most {MAX_PENDING_APPROVALS}); answer them first"
            )
            log.warning("approval not asked for: %s", why)
            reason = f"{decision.reason}; not approved: {why}"
            refused = {"final_effect": "deny", "approver": self._approver_name}
            return _Answer(
                attrs.evolve(decision, reason=reason, explain=None), False, refused, reason
            )
        self.counts["asked"] += 1
        terms = self._terms(request, decision)
        if not_remembered is not None:
            terms = attrs.evolve(terms, not_remembered=not_remembered)
        generation = self._policy_generation
        deciding.asking = (request, decision)  # cut short while asking: the approval denied
        self._waiting += 1
        try:
            outcome, why_not = await self._ask(deciding, request, decision, terms)
            if why_not is None:  # approved: of the paths as they led when the human was asked
                why_not = await _moved(request.resource.paths)
        finally:
            self._waiting -= 1
        deciding.asking = None
        extra: dict[str, Any] = {
            "final_effect": "allow" if why_not is None else "deny",
            "approver": outcome.approver,
            "approved_by": outcome.answered_by,
            "approval_seconds": round(outcome.elapsed_seconds, 3),
            "approval_remembered": False,
        }
        if why_not is not None:  # on record as the client is told: the rule's reason, and why
            reason = f"{decision.reason}; not approved: {why_not}"
            unapproved = attrs.evolve(decision, reason=reason, explain=None)
            return _Answer(unapproved, False, extra, reason)
        # the engine is swapped on a thread before policy_reloaded() runs: compare both
        now = self._decide(request)
        asked_to_remember = outcome.result is ApprovalResult.ALLOW_AND_CACHE
        if generation != self._policy_generation or now.policy_id != decision.policy_id:
            if asked_to_remember:
                deciding.remembering = "not remembered: the policy changed while the request waited"
            return self._after_reload(decision, now, extra)
        extra["approval_remembered"] = (
            asked_to_remember
            and terms.not_remembered is None
            and self.limits.approvals.remember(
                request,
                outcome.answered_by,
                decision,
                terms.remember_seconds,
                params=deciding.params,
            )
        )
        if asked_to_remember:
            deciding.remembering = (
                "remembered"
                if extra["approval_remembered"]
                else (terms.not_remembered or "not remembered")
            )
        return _Answer(decision, True, extra, decision.reason)

    def _after_reload(self, asked: Decision, now: Decision, extra: dict[str, Any]) -> _Answer:
        """A human approved ``asked`` while the policy that asked was replaced: the approval
        answered a question the policy in force, whose decision is ``now``, may not ask. A
        deny stands; an ask or an allow lets this request pass — the human did approve it —
        and the approval is never remembered."""
        replaced = (
            f"approved by {extra['approved_by'] or 'the approver'} under rule {asked.rule_id} "
            f"of policy {asked.policy_id}, replaced while the request waited"
        )
        allowed = now.effect is not Effect.DENY
        if allowed:
            replaced += ": allowed for this request only, not remembered"
        text = f"{now.reason}; {replaced}"
        extra["final_effect"] = "allow" if allowed else "deny"
        log.warning("approval %s after a policy reload: %s", extra["final_effect"], text)
        return _Answer(attrs.evolve(now, reason=text, explain=None), allowed, extra, text)

    async def _ask(
        self, deciding: _Deciding, request: DecisionRequest, decision: Decision, terms: _Terms
    ) -> tuple[ApprovalOutcome, str | None]:
        """The approver's answer and, unless it allows the request, why not: ``denied by
        <who>``, ``timeout after <N> s`` or ``the approver failed: <error>``. The human is
        shown the request's arguments (:mod:`~mcp_acp.proxy.summary`) and what they carry
        that looks like a credential, if anything."""
        params = deciding.params
        summary = approval_summary(request, params, decision.rule_id, self._credentials(deciding))
        # an approval given before, for this request, was not the last word: say so
        remembering = f"; {deciding.remembering}" if deciding.remembering else ""
        again = f"another approval is asked for (rule {decision.rule_id})"
        self._settle(deciding, f"approved{remembering}; {again}")
        deciding.remembering = ""
        approval = ApprovalRequest(
            approval_id=secrets.token_hex(8),  # hex: never starts with "-", easy to type
            request=request,
            decision=decision,
            summary=summary,
            # a copy: an approver that edits what it is shown (redacting a value for its
            # dialog, say) must not change the request its caller goes on to forward
            arguments=copy.deepcopy(approval_arguments(request.action.mcp_method, params)),
            timeout_seconds=terms.timeout_seconds,
            cacheable=terms.not_remembered is None,
            not_remembered=terms.not_remembered,
        )
        deciding.approvals.append(approval.approval_id)
        started = time.monotonic()
        try:
            outcome = await _within(  # a little grace: the approver reports its own
                plugin_call(self.approver.request_approval(approval)),
                terms.timeout_seconds + 1,
            )
            _check_outcome(outcome)
        except TimeoutError:
            outcome = ApprovalOutcome(
                ApprovalResult.TIMEOUT,
                approver=self._approver_name,
                elapsed_seconds=time.monotonic() - started,
                detail="no answer before the timeout",
            )
        except Exception as exc:  # an approver that fails is a deny
            failed = f"the approver failed: {failure(exc)}"
            log.error("approver %s: %s", self._approver_name, failed)
            outcome = ApprovalOutcome(
                ApprovalResult.DENY,
                approver=self._approver_name,
                elapsed_seconds=time.monotonic() - started,
                detail=failed,
            )
            return outcome, failed
        if outcome.result.allows:
            return outcome, None
        if outcome.result is ApprovalResult.TIMEOUT:
            return outcome, f"timeout after {terms.timeout_seconds:g} s"
        who = outcome.answered_by or f"the {outcome.approver} approver"
        return outcome, f"denied by {who}" + (f" ({outcome.detail})" if outcome.detail else "")


async def _moved(paths: tuple[PathArgument, ...]) -> str | None:
    """Why a request whose ``paths`` a human approved must not be forwarded now: one of
    them leads elsewhere than it did when the human was asked (a link re-pointed while the
    human decided) — the first, in a sentence; None if none does. Followed again off the
    loop (file-system I/O); a path that cannot be followed now has moved too."""
    if not paths:
        return None
    fresh = tuple(attrs.evolve(p, resolved=None, unresolvable=None) for p in paths)
    try:
        now = await asyncio.to_thread(resolve_path_arguments, fresh)
    except Exception as exc:  # fail closed: what cannot be checked again is not forwarded
        return f"its paths could not be followed again: {exception_text(exc)}"
    for then, again in zip(paths, now, strict=True):
        if (then.resolved, then.unresolvable) == (again.resolved, again.unresolvable):
            continue
        was = _quoted(then.resolved or then.path)
        if again.resolved is None:
            now_leads = f"cannot be followed now ({again.unresolvable}); it led to {was}"
        else:
            now_leads = f"now leads to {_quoted(again.resolved)}, not {was}"
        return f"path {_quoted(then.path)} {now_leads} as when it was approved; ask again"
    return None


def _quoted(path: str) -> str:
    return json.dumps(path, ensure_ascii=False)


class PluginRaised(Exception):
    """What a plugin raised that is not an ``Exception`` — ``SystemExit``,
    ``KeyboardInterrupt``, ``GeneratorExit``, a ``CancelledError`` of its own making —
    carried out of it as one (its text: ``SystemExit: 0``): the plugin failed, the request
    is denied as for any failure of it, and the proxy goes on serving. Without this, a
    plugin's ``sys.exit()`` would end the proxy with the request unanswered and unrecorded,
    and its own ``CancelledError`` would pass for the client's cancellation."""

    def __init__(self, raised: BaseException) -> None:
        if isinstance(raised, asyncio.CancelledError):
            text = "CancelledError (raised by the plugin; nothing cancelled the request)"
        else:
            text = exception_text(raised)
        super().__init__(text)
        self.raised = raised


def failure(exc: Exception) -> str:
    """How a plugin's failure reads on record: ``OSError: [Errno 28] …``, ``SystemExit: 0``."""
    return str(exc) if isinstance(exc, PluginRaised) else exception_text(exc)


def contained(raised: BaseException) -> BaseException:
    """What to raise for ``raised``, raised by a plugin's code: itself if it is an
    ``Exception`` (the caller's ``except Exception`` denies), a :class:`PluginRaised` if it
    is any other ``BaseException``. For synchronous plugin code (a policy engine's
    ``decide``), in which nothing can cancel the request."""
    return raised if isinstance(raised, Exception) else PluginRaised(raised)


async def plugin_call(call: Awaitable[T]) -> T:
    """``await call`` (a plugin's coroutine: an approver's ``request_approval``, an
    identity provider's ``current_subject``), with what it raises made an ``Exception``
    (:func:`contained`) — unless the task running it is being cancelled (a timeout, the
    client's ``notifications/cancelled``, the session ending): then a ``CancelledError``
    passes on, whatever the plugin made of it. Run it in the task that awaits the plugin
    (``wait_for`` runs its own on Python 3.11)."""
    try:
        return await call
    except BaseException as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling() > 0:  # ours: a cancellation is under way
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise asyncio.CancelledError from exc
        if isinstance(exc, Exception):
            raise
        raise PluginRaised(exc) from exc


#: How long a plugin call given up on (its timeout, the request cancelled) may take to end
#: once cancelled — an approver withdrawing the question it asked — before it is left.
CANCEL_GRACE_SECONDS = 1.0


async def _within(call: Coroutine[Any, Any, T], seconds: float) -> T:
    """``await call`` (run as a task of its own), or ``TimeoutError`` after ``seconds`` —
    then, and when the caller is cancelled, the task is cancelled and waited for at most
    :data:`CANCEL_GRACE_SECONDS`. ``asyncio.wait_for`` waits for the cancelled task to
    end, so a plugin that catches its ``CancelledError`` and goes on waiting would hold the
    request past its timeout, for ever; here such a task is left behind, and what it
    returns at last is dropped."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        await _abandon(task)
        raise
    if not done:
        await _abandon(task)
        raise TimeoutError
    return task.result()


async def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel ``task``, give it the grace to end, and leave it: whatever it ends with is
    retrieved, and dropped."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)


def _check_outcome(outcome: object) -> None:
    """Raise ``TypeError`` unless ``outcome`` is an :class:`ApprovalOutcome` the proxy can
    read: a plugin's approver that answers anything else has failed (a deny)."""
    if not isinstance(outcome, ApprovalOutcome):
        raise TypeError(
            f"request_approval() returned {type(outcome).__name__}, not an ApprovalOutcome"
        )
    if not isinstance(outcome.result, ApprovalResult):
        raise TypeError(f"its result is {outcome.result!r}, not an ApprovalResult")
    if not isinstance(outcome.approver, str) or not isinstance(outcome.answered_by, str | None):
        raise TypeError("its approver or answered_by is not a string")
    elapsed = outcome.elapsed_seconds
    if isinstance(elapsed, bool) or not isinstance(elapsed, int | float):
        raise TypeError(f"its elapsed_seconds is {elapsed!r}, not a number")
