"""The extension contracts of mcp-acp — what a plugin implements.

Each contract is a small :class:`typing.Protocol`; implement it with any class (no base
class to inherit), then register a factory for it from a plugin (see
:mod:`mcp_acp.hookspecs`). Methods that do I/O are ``async``; the policy engine is a pure,
synchronous function. What a factory returns is checked against its contract when it is
built (:data:`mcp_acp.runtime.CONTRACTS`): every member below present, attributes of their
type, ``async def`` exactly where a contract has it, and an optional member (found by name,
see each docstring) a plain ``def`` where it is present — else a ``PluginError`` naming the
component, before it is used.

Rules every implementation follows, because the proxy fails closed:

* raise the matching :mod:`mcp_acp.errors` exception when you cannot do your job — never
  return a made-up "ok";
* never log or return secrets (tokens, keys, Authorization values);
* be safe to call concurrently from one event loop.

The data exchanged is defined in :mod:`mcp_acp.models` (per-request values) and
:mod:`mcp_acp.audit.events` (audit records) and re-exported here for convenience.
"""

from __future__ import annotations

import ssl
from typing import Protocol, runtime_checkable

from mcp_acp.audit.events import (
    AuditEvent,
    AuthEvent,
    DecisionEvent,
    OperationEvent,
    SystemEvent,
)
from mcp_acp.models import (
    Action,
    ApprovalOutcome,
    ApprovalRequest,
    ApprovalResult,
    Decision,
    DecisionRequest,
    Effect,
    Environment,
    PathArgument,
    PostureResult,
    PostureStatus,
    Provenance,
    Resource,
    ResourceType,
    StoredToken,
    Subject,
    TlsFinding,
    TlsSeverity,
)

__all__ = [
    "Action",
    "ApprovalOutcome",
    "ApprovalRequest",
    "ApprovalResult",
    "Approver",
    "AuditEvent",
    "AuditSink",
    "AuthEvent",
    "Decision",
    "DecisionEvent",
    "DecisionRequest",
    "Effect",
    "Environment",
    "IdentityProvider",
    "OperationEvent",
    "PathArgument",
    "PolicyEngine",
    "PostureCheck",
    "PostureResult",
    "PostureStatus",
    "Provenance",
    "Resource",
    "ResourceType",
    "StoredToken",
    "Subject",
    "SystemEvent",
    "TlsFinding",
    "TlsProvider",
    "TlsSeverity",
    "TokenStorage",
]


@runtime_checkable
class IdentityProvider(Protocol):
    """Answers *who is asking* for each request.

    ``current_subject`` is called for every request (an implementation may reuse a
    validated identity for a short, configured time). Raise
    :class:`~mcp_acp.errors.AuthenticationError` when there is no valid identity — the
    request is then denied (``builtin-no-identity``) and the denial recorded. Anything else
    raised (an ``OSError`` from a token store, a bug) denies the request too, recorded as
    ``builtin-identity-error`` with the exception's type and message. Set
    ``Subject.provenance`` honestly: ``TOKEN`` only for values taken from a verified token.
    """

    async def current_subject(self) -> Subject:
        """Return the subject of the current request, or raise ``AuthenticationError``."""
        ...


@runtime_checkable
class TokenStorage(Protocol):
    """Keeps one :class:`StoredToken` per issuer (OS keychain, encrypted file, …).

    Writes must be atomic: after a crash the store holds either the old or the new token,
    never half of one. Raise :class:`~mcp_acp.errors.AuthenticationError` when the store
    exists but cannot be trusted (wrong permissions, corrupt, wrong key).

    Optional, found by name, a plain ``def``: ``lock_path(issuer)`` returning the
    :class:`~pathlib.Path` of the lock file that every process using this store's token
    for ``issuer`` takes around read → refresh → write — the same file for every process
    that shares the token, whatever its config directory (the built-in encrypted file: a
    file beside the token file; the keychain: one in the user's state directory per
    item; see :mod:`mcp_acp.tokens.locks`). Without it, a per-user lock per issuer is used.
    """

    description: str
    """Human-readable backend name for ``auth status``, e.g. ``"keychain (SecretService)"``."""

    def load(self, issuer: str) -> StoredToken | None:
        """Return the token stored for ``issuer``, or ``None`` if there is none."""
        ...

    def save(self, token: StoredToken) -> None:
        """Store ``token`` for ``token.issuer``, replacing any previous one atomically."""
        ...

    def delete(self, issuer: str) -> None:
        """Remove the token for ``issuer``; no error if there was none."""
        ...


@runtime_checkable
class PostureCheck(Protocol):
    """One device fact (disk encryption, system integrity, …).

    ``check`` returns ``PASS``, ``FAIL`` or ``UNKNOWN`` with a detail a human can act on.
    It should not raise; if it does, or exceeds its timeout, the runner records
    ``UNKNOWN`` — and ``UNKNOWN`` is never treated as passing. Keep subprocess calls thin
    and parse their output in a separate, testable function.
    """

    name: str
    """The name rules and config refer to, e.g. ``"disk-encryption"``."""

    async def check(self) -> PostureResult:
        """Probe the device once and report."""
        ...


@runtime_checkable
class PolicyEngine(Protocol):
    """The policy decision point: a pure function from request to decision.

    ``decide`` does no I/O, is deterministic, and is *total*: it never raises. Any internal
    failure must come back as a deny ``Decision`` whose reason says what went wrong. The
    proxy still treats an escaping exception, or an answer that is not a ``Decision`` with a
    readable reason, as a deny (and hides the item when filtering a list), but an engine
    should not rely on it.

    Optional, found by name, a plain ``def``: ``could_allow(request) -> bool``, whether
    *some* use of the tool a ``tools/list`` or ``prompts/list`` entry names could be
    allowed or asked for, whatever its arguments (the listing has none yet: ``request``
    carries no paths) — the entry is listed only if so. Without it, the entry is listed
    unless ``decide`` denies that argument-less request. An answer that is not a ``bool``,
    or an exception, hides the entry (see :mod:`mcp_acp.proxy.lists`).
    """

    policy_id: str
    """Content hash of the policy in force; recorded with every decision."""

    def decide(self, request: DecisionRequest) -> Decision:
        """Decide ``request``. Never raises."""
        ...


@runtime_checkable
class Approver(Protocol):
    """Asks a human about a request that a policy rule marked ``ask``.

    Return an :class:`ApprovalOutcome`. Honour ``request.timeout_seconds`` and return
    ``TIMEOUT`` when it passes; the proxy denies on timeout, on ``DENY``, on any
    exception raised here and on an answer that is not an :class:`ApprovalOutcome` (or
    whose ``result`` is not an :class:`ApprovalResult`).

    Optional, found by name, each a plain ``def`` (the built-in ``cli`` approver has them
    all): ``control_ops()`` returning operations for the proxy's control socket
    (:mod:`mcp_acp.control`); ``approval_settled(approval_id, outcome)``, called once the
    proxy has decided and recorded the request an approval asked about and forwarded it or
    refused it, with one sentence saying what became of it (``"allowed and forwarded;
    remembered"``, ``"denied: …"``, ``"not forwarded: …"``) — a policy reloaded while the
    request waited decides again, and an audit trail that fails before the request is sent
    on denies it, so an approval is not the last word; ``ended_at_exit(why)``, at the end
    of the session (synchronous: at a fail-closed exit the event loop does not run again),
    returning each approval it holds or remembers — id -> ``answer``, ``by``, ``outcome``
    — for the note the control socket leaves for answers that come too late
    (:meth:`mcp_acp.control.ControlServer.record_ended`).
    """

    name: str

    async def request_approval(self, request: ApprovalRequest) -> ApprovalOutcome:
        """Ask, wait for the answer (or the timeout), and report it."""
        ...


@runtime_checkable
class AuditSink(Protocol):
    """Records audit events durably. A precondition of every decision, not a side effect.

    ``write`` returns only once the event is durable by the sink's standard (for the
    built-in ``jsonl`` sink: written, flushed and fsynced). If it cannot, raise
    :class:`~mcp_acp.errors.AuditError`: the request is denied and the proxy shuts down.
    ``start`` performs a write test and raises ``AuditError`` if it fails, so a broken
    trail stops start-up instead of the first request.

    Optional, found by name, each a plain ``def`` (the built-in ``jsonl`` sink has them
    all): ``write_sync(event)`` for the shutdown path (without it, what the sink cannot take
    at a fail-closed exit goes to the fallback file); ``write_soon(event)`` returning an
    asyncio future, set once the event is durable, for a record nothing waits on (a relayed
    response, a request's operation record) — handed over at once, so that the sink can
    write it together with the request's decision record (anything but a future, or the
    future cancelled, is the sink's failure); ``check_health()``, raising if the sink can no
    longer write, every ``audit.health_check_seconds``. A ``CancelledError`` out of
    ``write`` when the request was not cancelled is the sink's failure too.
    """

    async def start(self) -> None:
        """Open the sink and prove it can write."""
        ...

    async def write(self, event: AuditEvent) -> None:
        """Record ``event`` durably, or raise ``AuditError``."""
        ...

    async def close(self) -> None:
        """Flush and release resources. Called once at shutdown."""
        ...


@runtime_checkable
class TlsProvider(Protocol):
    """How the proxy reaches an HTTPS backend (``backend.tls`` in the config).

    At start-up the proxy calls ``check`` and audits every finding as a ``tls_check``
    system event; any ``REFUSE`` finding stops start-up before a connection is tried.
    Then ``ssl_context`` supplies the context the HTTP transport uses for every
    connection. The context must verify the server (``CERT_REQUIRED``, hostname checks,
    TLS 1.2 at least): there is no option to weaken that.
    """

    def check(self) -> list[TlsFinding]:
        """Inspect the configured files and certificates; never raise for a bad file —
        report it as a ``REFUSE`` finding naming the file and the fix."""
        ...

    def ssl_context(self) -> ssl.SSLContext:
        """The client context for the backend connection (called after ``check``), built
        from what ``check`` read: reading a file again could read another one, put at its
        path after it was checked."""
        ...
