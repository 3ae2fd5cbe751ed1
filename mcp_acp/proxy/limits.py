"""What the enforcement point remembers between requests: approvals given with
``--remember``, and how fast a session sends requests.

* :class:`ApprovalCache` — an approval a human chose to remember holds for the same call
  again (:func:`approval_key`: subject, backend, method, tool or resource or prompt, each
  path under its argument name, every other argument) until its TTL ends. Tools with a
  side effect in :data:`~mcp_acp.models.NEVER_CACHED` are never cached (the approver turns
  such an answer into a one-off), and a policy reload clears it.
* :class:`ToolRateLimit` — calls of one tool (its name with case folded) in one session
  within a sliding 60 s window; past the limit, each further call needs a human even where
  the policy allows it.
* :class:`TokenBucket` — a flood guard: a client request that finds the global bucket
  empty is denied outright; a notification (either side's) or a backend request that finds
  its side's bucket empty is dropped;
* :class:`Dropped` — what the flood guards dropped, counted until it is recorded (one
  record for many, so that a flood cannot fill the disk with one record per message).

All clocks are monotonic, injectable for tests.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from mcp_acp.audit.events import payload_digest
from mcp_acp.models import NEVER_CACHED, Decision, DecisionRequest
from mcp_acp.policy.glob import deny_skeleton

__all__ = [
    "ApprovalCache",
    "ApprovalKey",
    "CachedApproval",
    "Dropped",
    "TokenBucket",
    "ToolRateLimit",
    "approval_key",
]

Clock = Callable[[], float]


@attrs.frozen(slots=True)
class ApprovalKey:
    """What a remembered approval is remembered for: "the same call again"."""

    subject_id: str
    issuer: str
    backend_id: str
    method: str
    tool: str  # a tools/call's tool name; "" for other methods
    uri: str  # a resource's URI
    name: str  # the tool's, or the prompt's, name
    #: every path: argument name, its place in the argument's list (0 for a single path),
    #: role, the path normalised, whether it was written ending in a separator (``dir/``,
    #: ``dir/.``), where it really leads
    paths: tuple[tuple[str, int, str, str, bool, str], ...]
    #: every other argument: its name and the SHA-256 of its canonical JSON
    arguments: tuple[tuple[str, str], ...]


def approval_key(request: DecisionRequest, params: Mapping[str, Any]) -> ApprovalKey:
    """The key of ``request`` (whose message carried ``params``): subject (id and issuer),
    backend, method, tool — or a resource's URI, a prompt's name —, each path under its
    argument name and its place in that argument's list, normalised (``a/./b`` and ``a//b``
    are ``a/b``) together with whether it ends in a separator (``dir/`` and ``dir/.`` are
    not ``dir``) and where it really leads, and every other argument by the SHA-256 of its
    canonical JSON (sorted keys, no whitespace): remembering one call is not remembering
    another URL, other SQL, or the same paths swapped (between arguments, or in a list).

    An argument counts as a path argument only when its value is exactly its path (or its
    list of paths); one that holds a path and more (``--output=/x``, an object with a
    ``path`` in it) is compared whole as well. For methods other than ``tools/call`` and
    ``prompts/get``, the arguments are the params but ``_meta``."""
    by_argument: defaultdict[str, list[str]] = defaultdict(list)
    entries = []
    for p in request.resource.paths:
        place = len(by_argument[p.argument])  # a list of paths is kept in its order
        by_argument[p.argument].append(p.path)
        normal = os.path.normpath(p.path)
        entries.append(
            (p.argument, place, p.role, normal, _names_contents(p.path), p.resolved or "")
        )
    paths = tuple(sorted(entries))
    method = request.action.mcp_method
    if method in ("tools/call", "prompts/get"):
        arguments = params.get("arguments")
    else:
        arguments = {k: v for k, v in params.items() if k != "_meta"}
    if isinstance(arguments, Mapping):
        others = tuple(
            sorted(
                (str(name), payload_digest(value)[0])
                for name, value in arguments.items()
                if not _only_paths(value, by_argument.get(name))
            )
        )
    else:  # missing, or not an object: compared whole
        others = (("", payload_digest(arguments)[0]),)
    return ApprovalKey(
        subject_id=request.subject.subject_id,
        issuer=request.subject.issuer or "",
        backend_id=request.resource.backend_id or "",
        method=method,
        tool=request.action.tool_name or "",
        uri=request.resource.uri or "",
        name=request.resource.name or "",
        paths=paths,
        arguments=others,
    )


def _names_contents(path: str) -> bool:
    """Whether ``path`` is written ending in a separator (``dir/``, ``dir/.``): normalised
    away, yet another operation for some tools — rsync copies a ``src/``'s contents and
    ``src`` itself; ``link/`` is the directory a link leads to, ``link`` the link."""
    return path.endswith(("/", "/."))


def _only_paths(value: Any, paths: list[str] | None) -> bool:
    """Whether an argument's ``value`` is nothing but its ``paths``: the path, or the list
    of them, as the request's path arguments hold them."""
    if paths is None:
        return False
    values = value if isinstance(value, list) else [value]
    return values == paths and all(isinstance(v, str) for v in values)


@attrs.frozen(slots=True)
class CachedApproval:
    """Who approved, under which rule of which policy, and until when."""

    approved_by: str | None
    rule_id: str | None
    policy_id: str
    expires_at: float


class ApprovalCache:
    """Remembered approvals, each until its TTL ends (``ttl_seconds`` unless the policy
    set another for it)."""

    def __init__(self, ttl_seconds: float, clock: Clock = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: dict[ApprovalKey, CachedApproval] = {}

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def get(
        self, request: DecisionRequest, decision: Decision, *, params: Mapping[str, Any]
    ) -> CachedApproval | None:
        """The approval remembered for ``request`` (its message's ``params``), if one was
        given under the rule and the policy of ``decision`` and has not expired: what was
        approved under a policy another has replaced no longer holds, even before
        :meth:`clear` is called."""
        key = approval_key(request, params)
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= self._clock():
            del self._entries[key]
            return None
        if entry is None or (entry.policy_id, entry.rule_id) != (
            decision.policy_id,
            decision.rule_id,
        ):
            return None
        return entry

    def remember(
        self,
        request: DecisionRequest,
        approved_by: str | None,
        decision: Decision,
        ttl_seconds: float | None = None,
        *,
        params: Mapping[str, Any],
    ) -> bool:
        """Remember an approval of ``request`` (its message's ``params``) asked for by
        ``decision`` for ``ttl_seconds`` (default: the cache's); whether it was (never with
        a TTL of 0, nor for a tool with a side effect in
        :data:`~mcp_acp.models.NEVER_CACHED`)."""
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        if ttl <= 0 or NEVER_CACHED.intersection(request.action.side_effects):
            return False
        self._entries[approval_key(request, params)] = CachedApproval(
            approved_by, decision.rule_id, decision.policy_id, self._clock() + ttl
        )
        return True

    def clear(self) -> None:
        self._entries.clear()

    def forget_tool(self, tool: str) -> int:
        """Drop every approval remembered for ``tool`` (its definition changed: what was
        approved was the old one); how many there were."""
        keys = [k for k in self._entries if k.method == "tools/call" and k.tool == tool]
        for key in keys:
            del self._entries[key]
        return len(keys)

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, v in self._entries.items() if v.expires_at <= now]:
            del self._entries[key]


class ToolRateLimit:
    """At most ``per_minute`` calls of one tool within any 60 s (0 = no limit).

    A tool is its name with case folded (:func:`~mcp_acp.policy.glob.deny_skeleton`: ASCII
    case, as the policy's and the registry's tool globs ignore it, and for other names
    what deny rules fold too): ``Echo`` and ``ECHO`` are ``echo`` to the policy, so they
    spend one budget, not one each. A tool whose window has emptied is forgotten, so that
    made-up names cannot grow the memory without bound."""

    WINDOW = 60.0
    #: Tools tracked before the first sweep of those whose window has emptied.
    SWEEP_AT = 64

    def __init__(self, per_minute: int, clock: Clock = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._calls: dict[str, deque[float]] = {}
        self._sweep_at = self.SWEEP_AT

    def __len__(self) -> int:
        """How many tools are tracked (for tests)."""
        return len(self._calls)

    def exceeded(self, tool: str) -> int | None:
        """How many calls of ``tool`` the window already holds, if that is the limit or more."""
        if self.per_minute <= 0:
            return None
        key = deny_skeleton(tool)
        calls = self._calls.get(key)
        if calls is None:
            return None
        cutoff = self._clock() - self.WINDOW
        while calls and calls[0] <= cutoff:
            calls.popleft()
        if not calls:
            del self._calls[key]
        return len(calls) if len(calls) >= self.per_minute else None

    def count(self, tool: str) -> None:
        if self.per_minute <= 0:
            return
        now = self._clock()
        self._calls.setdefault(deny_skeleton(tool), deque()).append(now)
        if len(self._calls) > self._sweep_at:  # amortised: the next sweep at twice the size
            cutoff = now - self.WINDOW
            for key in [k for k, calls in self._calls.items() if calls[-1] <= cutoff]:
                del self._calls[key]
            self._sweep_at = max(self.SWEEP_AT, 2 * len(self._calls))


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one token per request."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Dropped:
    """Messages a flood guard dropped, counted by side (``client``, ``backend``) and method
    until :meth:`take` hands the counts on to be recorded.

    The method is the sender's text: at most :attr:`MAX_METHODS` distinct ones are counted
    by name (each cut to :attr:`MAX_METHOD_CHARS` characters), the rest together under
    ``"(other)"`` — a flood of made-up method names cannot grow the counts, or the record,
    without bound."""

    MAX_METHODS = 20
    MAX_METHOD_CHARS = 64
    OTHER = "(other)"

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def __bool__(self) -> bool:
        return bool(self._counts)

    def add(self, side: str, method: str) -> None:
        method = method[: self.MAX_METHOD_CHARS]
        if (side, method) not in self._counts and len(self._counts) >= self.MAX_METHODS:
            method = self.OTHER
        self._counts[(side, method)] += 1

    def take(self) -> dict[str, dict[str, int]]:
        """The counts so far, by side and method; counting starts again from nothing."""
        counts: dict[str, dict[str, int]] = {}
        for (side, method), count in sorted(self._counts.items()):
            counts.setdefault(side, {})[method] = count
        self._counts.clear()
        return counts
