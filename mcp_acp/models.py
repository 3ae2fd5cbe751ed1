"""The values that flow between the proxy and its plugins.

These are built once per request on the hot path, so they are frozen ``attrs`` classes with
slots: cheap to construct, immutable, comparable. (pydantic is used at the edges instead —
config, policy files and audit records — where validation and JSON Schemas are needed.)

A policy decision is asked for with a :class:`DecisionRequest`, whose four parts follow
the ABAC vocabulary: who (:class:`Subject`), does what (:class:`Action`), to what
(:class:`Resource`), in which circumstances (:class:`Environment`). Every attribute has a
:class:`Provenance`, the trust level of where its value came from, so a rule can refuse
to rely on a value the client merely claimed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "NEVER_CACHED",
    "Action",
    "ApprovalOutcome",
    "ApprovalRequest",
    "ApprovalResult",
    "ApprovalTerms",
    "Decision",
    "DecisionRequest",
    "Effect",
    "Environment",
    "MatchedRule",
    "PathArgument",
    "PostureResult",
    "PostureStatus",
    "Provenance",
    "Resource",
    "ResourceType",
    "StoredToken",
    "Subject",
    "TlsFinding",
    "TlsSeverity",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Copy a mapping into a read-only view, so a frozen model stays frozen."""
    if not value:
        return _EMPTY
    return MappingProxyType(dict(value))


class Provenance(enum.IntEnum):
    """Where an attribute's value came from; a higher value is more trustworthy.

    Order (most to least trusted)::

        TOKEN > MTLS > CONFIG > REQUEST > DERIVED > CLIENT_HINT

    * ``TOKEN`` — from a signature-verified token (e.g. the ``sub`` of a validated JWT).
    * ``MTLS`` — from a verified TLS peer certificate.
    * ``CONFIG`` — from the operator's config file (e.g. the backend id).
    * ``REQUEST`` — from the MCP message itself, parsed by the proxy (method, tool name).
    * ``DERIVED`` — computed by mcp-acp from other values (operations inferred from a
      tool name, a normalised path).
    * ``CLIENT_HINT`` — asserted by the client without proof (``clientInfo.name``,
      tool annotations). An attribute with no recorded provenance counts as this.
    """

    CLIENT_HINT = 0
    DERIVED = 1
    REQUEST = 2
    CONFIG = 3
    MTLS = 4
    TOKEN = 5


class Effect(enum.StrEnum):
    """What a policy decides for a request."""

    ALLOW = "allow"
    DENY = "deny"
    ASK = "ask"
    """Ask a human (HITL); the :class:`Approver` decides allow or deny."""


class ResourceType(enum.StrEnum):
    """What kind of MCP object a request is about."""

    TOOL = "tool"
    RESOURCE = "resource"
    PROMPT = "prompt"
    SERVER = "server"


@attrs.frozen(slots=True)
class Subject:
    """Who is asking.

    ``provenance`` says how the identity was established: ``TOKEN`` for a validated OIDC
    token; the built-in ``local`` identity (the OS user) reports ``CONFIG``.
    """

    subject_id: str
    provenance: Provenance
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    client_id: str | None = None
    scopes: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    auth_time: datetime | None = None
    token_age_seconds: float | None = None
    claims: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=_frozen_mapping)


@attrs.frozen(slots=True)
class Action:
    """What the subject wants to do.

    ``operations`` (read, write, delete, execute, …) and ``side_effects`` are inferred by
    the proxy from its tool registry; an empty set means *unknown*, which never matches a
    rule that names an operation.
    """

    mcp_method: str
    tool_name: str | None = None
    operations: frozenset[str] = frozenset()
    side_effects: frozenset[str] = frozenset()


@attrs.frozen(slots=True)
class PathArgument:
    """One path-typed argument of a request, as the client sent it.

    ``role`` is ``path``, ``source`` or ``dest``. ``resolved`` is where the path really
    leads once symlinks are followed (filled in by the proxy, which may do I/O; the policy
    engine may not). A rule must hold for both.
    """

    argument: str
    path: str
    role: str = "path"
    resolved: str | None = None
    unresolvable: str | None = None
    """Why following the path's symlinks failed (a loop, no permission); the path is then
    treated as ambiguous and denied."""


@attrs.frozen(slots=True)
class Resource:
    """What the action is applied to.

    ``paths`` lists *every* path-typed argument (a copy has a source and a destination);
    a policy must check all of them, not just the first.
    """

    resource_type: ResourceType
    backend_id: str
    name: str | None = None
    uri: str | None = None
    scheme: str | None = None
    paths: tuple[PathArgument, ...] = ()
    backend_identity: tuple[str, ...] = ()
    """The backend's identity, when a TLS provider's context verified its certificate: the
    certificate's subjectAltName names in canonical form (``DNS:…``, ``URI:…``, ``IP:…``;
    see :mod:`mcp_acp.backend_identity`). Empty otherwise: a stdio backend, plain HTTP, or
    HTTPS verified against the system's trust store."""


@attrs.frozen(slots=True)
class Environment:
    """The circumstances of the request."""

    time: datetime
    session_id: str
    request_id: str
    mcp_client_name: str | None = None
    mcp_client_version: str | None = None
    posture: Mapping[str, PostureStatus] = attrs.field(default=_EMPTY, converter=_frozen_mapping)
    #: the session has seen untrusted content (see mcp_acp.proxy.pep): derived by the proxy
    untrusted_content_seen: bool = False


@attrs.frozen(slots=True)
class DecisionRequest:
    """Everything a :class:`~mcp_acp.protocols.PolicyEngine` may look at, gathered up front.

    ``provenance`` maps dotted attribute names (``"subject.subject_id"``,
    ``"environment.mcp_client_name"``, ``"resource.paths"``) to their trust level. A name
    that is missing counts as :attr:`Provenance.CLIENT_HINT`; see :meth:`provenance_of`.
    """

    subject: Subject
    action: Action
    resource: Resource
    environment: Environment
    provenance: Mapping[str, Provenance] = attrs.field(default=_EMPTY, converter=_frozen_mapping)

    def provenance_of(self, attribute: str) -> Provenance:
        """Trust level of ``attribute``; unknown attributes get the lowest level."""
        if attribute.startswith("subject."):
            return self.provenance.get(attribute, self.subject.provenance)
        return self.provenance.get(attribute, Provenance.CLIENT_HINT)


@attrs.frozen(slots=True)
class MatchedRule:
    """A rule that matched a request, and its effect."""

    rule_id: str
    effect: Effect


#: Side effects whose approvals are never remembered, whatever a policy or the config says:
#: a remembered approval is keyed on the subject, the tool and its paths, not on the other
#: arguments, so remembering one command would let a different one through.
NEVER_CACHED = frozenset({"code_exec", "process_spawn", "sudo_elevate", "container_exec"})


@attrs.frozen(slots=True)
class ApprovalTerms:
    """What a policy says about asking a human, carried by its decisions. ``None`` leaves a
    setting to the proxy's config.

    ``timeout_seconds``: how long a request waits for an answer before it is denied
    (``proxy.approval_timeout_seconds``). ``remember_seconds``: how long an approval given
    with ``--remember`` holds, 0 never (``proxy.approval_cache_seconds``).
    ``remember_side_effects``: an approval is remembered only if every side effect of the
    tool is one of these (``None``: any). Side effects in :data:`NEVER_CACHED` never are,
    whatever the terms. ``remember_source`` and ``side_effects_source`` name the settings
    the two came from, to tell the human why an approval is not remembered.
    """

    timeout_seconds: float | None = None
    remember_seconds: float | None = None
    remember_side_effects: frozenset[str] | None = None
    remember_source: str = ""
    side_effects_source: str = ""


@attrs.frozen(slots=True)
class Decision:
    """The answer of a policy engine, with enough to explain it to a human.

    ``rule_id`` is the winning rule (``None`` when no rule matched and the default deny
    applied; built-in protections use ids starting with ``builtin-``); ``matched`` every rule
    that matched, in policy order, with its effect; ``reason`` one readable sentence;
    ``policy_id`` the content hash of the policy that decided; ``approval`` the policy's
    terms for asking a human (an ``ask``, or a built-in escalation of an ``allow``), or
    ``None`` to leave them to the proxy's config.
    """

    effect: Effect
    policy_id: str
    rule_id: str | None = None
    matched: tuple[MatchedRule, ...] = ()
    policy_version: str | None = None
    eval_ns: int = 0
    _reason: str | None = attrs.field(default=None, alias="reason", kw_only=True, eq=False)
    _explain: Callable[[], str] | None = attrs.field(
        default=None, alias="explain", kw_only=True, eq=False, repr=False
    )
    approval: ApprovalTerms | None = attrs.field(default=None, kw_only=True, eq=False)

    @property
    def reason(self) -> str:
        """One readable sentence. An engine may pass ``explain`` instead of ``reason``, to
        render the sentence only when someone reads it (it is then kept)."""
        if self._reason is None:
            text = self._explain() if self._explain is not None else "(no explanation)"
            object.__setattr__(self, "_reason", text)
            return text
        return self._reason

    @property
    def eval_us(self) -> float:
        """Evaluation time in microseconds."""
        return self.eval_ns / 1000

    def to_json(self) -> dict[str, Any]:
        """The decision as a JSON-ready dict (``policy explain --json``, audit records)."""
        return {
            "effect": self.effect.value,
            "rule": self.rule_id,
            "matched": [{"rule": m.rule_id, "effect": m.effect.value} for m in self.matched],
            "explanation": self.reason,
            "policy_id": self.policy_id,
            "policy_version": self.policy_version,
            "eval_us": round(self.eval_us, 3),
        }

    @classmethod
    def deny(cls, reason: str, *, policy_id: str, rule_id: str | None = None) -> Decision:
        """A deny decision; the shortcut for fail-closed paths."""
        return cls(effect=Effect.DENY, reason=reason, policy_id=policy_id, rule_id=rule_id)


class PostureStatus(enum.StrEnum):
    """Outcome of one posture check. ``UNKNOWN`` is never treated as passing."""

    PASS = "pass"  # noqa: S105 - a status, not a password
    FAIL = "fail"
    UNKNOWN = "unknown"


@attrs.frozen(slots=True)
class PostureResult:
    """One device fact: which check, its status, and a human-readable detail."""

    check: str
    status: PostureStatus
    detail: str
    checked_at: datetime

    @property
    def passed(self) -> bool:
        return self.status is PostureStatus.PASS


class TlsSeverity(enum.StrEnum):
    """Outcome of one TLS start-up check. ``REFUSE`` stops start-up."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    REFUSE = "refuse"


@attrs.frozen(slots=True)
class TlsFinding:
    """One TLS start-up check (a file's permissions, a certificate's validity, …):
    audited as a ``tls_check`` system event whatever its outcome."""

    check: str
    severity: TlsSeverity
    detail: str
    facts: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=_frozen_mapping)


def _redacted(value: str | None) -> str:
    return "None" if value is None else "'<redacted>'"


@attrs.frozen(slots=True, repr=False)
class StoredToken:
    """Tokens as a :class:`~mcp_acp.protocols.TokenStorage` keeps them.

    ``repr()`` never shows a token value, so a stray log line cannot leak one.
    ``issuer`` keys the tokens: they are never used with another authorization server.
    """

    issuer: str
    access_token: str
    expires_at: datetime
    refresh_token: str | None = None
    id_token: str | None = None
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    scope: str | None = None

    def __repr__(self) -> str:
        return (
            f"StoredToken(issuer={self.issuer!r}, access_token={_redacted(self.access_token)}, "
            f"refresh_token={_redacted(self.refresh_token)}, id_token={_redacted(self.id_token)}, "
            f"expires_at={self.expires_at.isoformat()!r}, scope={self.scope!r})"
        )


class ApprovalResult(enum.StrEnum):
    """What a human (or the approver on their behalf) answered."""

    ALLOW_ONCE = "allow_once"
    ALLOW_AND_CACHE = "allow_and_cache"
    DENY = "deny"
    TIMEOUT = "timeout"

    @property
    def allows(self) -> bool:
        return self in (ApprovalResult.ALLOW_ONCE, ApprovalResult.ALLOW_AND_CACHE)


@attrs.frozen(slots=True)
class ApprovalRequest:
    """A request an ``ask`` rule sent to a human.

    ``summary`` is what the human is shown, one line: the full tool name (or the resource's
    URI, the prompt's name) and every argument by name — every path untruncated, any other
    value cut after 200 characters (see :mod:`mcp_acp.proxy.summary`); ``arguments`` is the
    request's arguments whole, as the client sent them (``None`` if it sent none);
    ``cacheable`` is whether an approval may be remembered (never for a tool with a side
    effect in :data:`NEVER_CACHED`); when it may not, ``not_remembered`` says why, for the
    human (``"never remembered: container_exec"``). The summary and the arguments come from
    the client: escape them before a terminal shows them.
    """

    approval_id: str
    request: DecisionRequest
    decision: Decision
    summary: str
    timeout_seconds: float
    cacheable: bool = False
    not_remembered: str | None = None
    arguments: Any = None


@attrs.frozen(slots=True)
class ApprovalOutcome:
    """The answer to an :class:`ApprovalRequest`: result, who answered, and how long it took."""

    result: ApprovalResult
    approver: str
    answered_by: str | None = None
    elapsed_seconds: float = 0.0
    detail: str | None = None
