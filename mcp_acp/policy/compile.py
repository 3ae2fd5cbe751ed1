"""Compile a :class:`PolicyFile` once per load into indexed matchers.

Each condition becomes a :class:`Check` with a fast ``test`` and a slower ``describe`` used
only to explain a decision. Rules are indexed by literal tool name, by literal tool-name
prefix and by literal MCP method, so a decision looks at the few rules that can match, not
at all of them.

Matching semantics shared by all checks:

* a list means any-of; an empty list never matches;
* for values a request has several of (paths, operations, side effects, extensions), an
  ``allow``/``ask`` rule needs *every* value to match, a ``deny`` rule matches if *any* does;
* deny rules compare paths, URIs and tool names with case and Unicode compatibility forms
  folded; allow rules compare them exactly (tool names: ASCII-case-insensitively, so a
  non-ASCII look-alike never matches an ASCII name).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

import attrs

from mcp_acp.models import ApprovalTerms, Effect, MatchedRule, Provenance
from mcp_acp.policy.glob import compile_glob, deny_skeleton, literal_prefix
from mcp_acp.policy.model import Conditions, HitlSettings, PolicyFile, Rule, TimeWindow
from mcp_acp.policy.view import PathView, RequestView

__all__ = ["Check", "CompiledPolicy", "CompiledRule", "approval_terms", "compile_policy"]

_PROVENANCE = {p.name.lower(): p for p in Provenance}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Check:
    """One condition of one rule."""

    __slots__ = ("attribute", "field")

    def __init__(self, field: str, attribute: str) -> None:
        self.field = field
        self.attribute = attribute

    def test(self, view: RequestView) -> bool:
        raise NotImplementedError

    def describe(self, view: RequestView) -> str:
        """Why this check matched or not, in a few words (for explanations and traces)."""
        raise NotImplementedError


def _fmt(patterns: Sequence[str]) -> str:
    return patterns[0] if len(patterns) == 1 else "[" + ", ".join(patterns) + "]"


Getter = Callable[[RequestView], Any]
Matcher = Callable[[str], "re.Match[str] | None"]


def _union(regexes: Sequence[re.Pattern[str]]) -> Matcher:
    """One ``fullmatch`` for any of several anchored globs (one regex call, not a loop)."""
    if len(regexes) == 1:
        return regexes[0].fullmatch
    if not regexes:
        return lambda _: None
    combined = "|".join(f"(?:{r.pattern})" for r in regexes)
    return re.compile(combined, regexes[0].flags).fullmatch


class _Globs(Check):
    """A single-valued attribute against any of several globs."""

    __slots__ = ("_deny", "_folded", "_get", "_match", "_regexes", "label", "patterns")

    def __init__(
        self,
        field: str,
        attribute: str,
        label: str,
        patterns: Sequence[str],
        get: Getter,
        *,
        paths: bool,
        ignore_case: bool,
        deny: bool = False,
        folded: Getter | None = None,
    ) -> None:
        super().__init__(field, attribute)
        self._folded = folded  # the view's precomputed folded value, for deny rules
        self.label = label
        self.patterns = tuple(patterns)
        self._get = get
        self._deny = deny
        compiled = [deny_skeleton(p) for p in patterns] if deny else patterns
        # allow/ask rules fold ASCII case at most: Unicode folding would make the dotless
        # i (U+0131) of a look-alike of 'read_file' an 'i'; deny rules fold all they can
        self._regexes = tuple(
            compile_glob(p, paths=paths, ignore_case=ignore_case or deny, ascii_case=not deny)
            for p in compiled
        )
        self._match = _union(self._regexes)

    def test(self, view: RequestView) -> bool:
        if self._deny and self._folded is not None:
            value: str | None = self._folded(view)
        else:
            value = self._get(view)
            if value is not None and self._deny:
                value = deny_skeleton(value)
        return value is not None and self._match(value) is not None

    def describe(self, view: RequestView) -> str:
        value: str | None = self._get(view)
        if value is None:
            return f"{self.label} (none) does not match {_fmt(self.patterns)}"
        probe = deny_skeleton(value) if self._deny else value
        for pattern, regex in zip(self.patterns, self._regexes, strict=True):
            if regex.fullmatch(probe):
                return f"{self.label} {value} matches {pattern}"
        return f"{self.label} {value} does not match {_fmt(self.patterns)}"


class _OneOf(Check):
    """A single-valued attribute that must equal one of the listed values."""

    __slots__ = ("_get", "label", "values")

    def __init__(
        self, field: str, attribute: str, label: str, values: Iterable[str], get: Getter
    ) -> None:
        super().__init__(field, attribute)
        self.label = label
        self.values = frozenset(values)
        self._get = get

    def test(self, view: RequestView) -> bool:
        return self._get(view) in self.values

    def describe(self, view: RequestView) -> str:
        verb = "is one of" if self.test(view) else "is not one of"
        return f"{self.label} {self._get(view)} {verb} {_fmt(sorted(self.values))}"


class _Flag(Check):
    """A yes-or-no attribute that must have the given value."""

    __slots__ = ("_get", "label", "value")

    def __init__(self, field: str, attribute: str, label: str, value: bool, get: Getter) -> None:
        super().__init__(field, attribute)
        self.label = label
        self.value = value
        self._get = get

    def test(self, view: RequestView) -> bool:
        return bool(self._get(view)) is self.value

    def describe(self, view: RequestView) -> str:
        return f"{self.label}: {'yes' if self._get(view) else 'no'}"


class _SetCheck(Check):
    """A set-valued attribute: ``any`` (overlap), ``all`` (has every listed value) or
    ``subset`` (non-empty, and every value it has is listed — for allow rules)."""

    __slots__ = ("_get", "label", "mode", "values")

    def __init__(
        self,
        field: str,
        attribute: str,
        label: str,
        values: Iterable[str],
        get: Getter,
        mode: Literal["any", "all", "subset"],
    ) -> None:
        super().__init__(field, attribute)
        self.label = label
        self.values = frozenset(values)
        self._get = get
        self.mode = mode

    def test(self, view: RequestView) -> bool:
        have: frozenset[str] = self._get(view)
        if self.mode == "any":
            return not have.isdisjoint(self.values)
        if self.mode == "all":
            return bool(self.values) and self.values <= have
        return bool(have) and have <= self.values

    def describe(self, view: RequestView) -> str:
        have = sorted(self._get(view)) or ["(none)"]
        listed = _fmt(sorted(self.values))
        if self.mode == "subset":  # "has only" read as if the request lacked something
            within = "all in" if self.test(view) else "not all in"
            return f"{self.label} {_fmt(have)} {within} {listed}"
        wants = {"any": "any of", "all": "all of"}[self.mode]
        verb = "has" if self.test(view) else "does not have"
        return f"{self.label} {_fmt(have)} {verb} {wants} {listed}"


class _PathCheck(Check):
    """``path_pattern`` / ``source_path`` / ``dest_path`` of one rule, together.

    allow/ask: each field present governs the path arguments of its role (``path_pattern``
    all of them); every governed argument must exist and match in all its views, and every
    path argument of the request must be governed by some field (a move's destination is
    never waved through by a rule that only looked at the source).
    deny: each field present must find at least one argument of its role with any view
    matching.
    """

    __slots__ = ("_deny", "_matchers", "fields")

    _ROLES: ClassVar[dict[str, str | None]] = {
        "path_pattern": None,
        "source_path": "source",
        "dest_path": "dest",
    }

    def __init__(self, fields: dict[str, list[str]], *, deny: bool) -> None:
        super().__init__("+".join(fields), "resource.paths")
        self._deny = deny
        self.fields: dict[str, tuple[tuple[str, ...], tuple[re.Pattern[str], ...]]] = {
            name: (
                tuple(patterns),
                tuple(
                    compile_glob(deny_skeleton(p) if deny else p, ignore_case=deny)
                    for p in patterns
                ),
            )
            for name, patterns in fields.items()
        }
        self._matchers = tuple(
            (self._ROLES[name], _union(regexes)) for name, (_, regexes) in self.fields.items()
        )

    def _governed(self, name: str, paths: tuple[PathView, ...]) -> list[PathView]:
        role = self._ROLES[name]
        return [p for p in paths if role is None or p.role == role]

    @staticmethod
    def _hit(views: Sequence[str], regexes: Sequence[re.Pattern[str]], every: bool) -> bool:
        if every:
            for view in views:
                for regex in regexes:
                    if regex.fullmatch(view):
                        break
                else:
                    return False
            return True
        return any(r.fullmatch(v) for v in views for r in regexes)

    def test(self, view: RequestView) -> bool:
        paths = view.paths
        if not paths:
            return False
        if self._deny:  # each field: some argument of its role, in some view, matches
            for role, match in self._matchers:
                if not any(
                    match(folded) is not None
                    for p in paths
                    if role is None or p.role == role
                    for folded in p.deny_views
                ):
                    return False
            return True
        covered: set[int] = set()
        for role, match in self._matchers:  # each field: every argument of its role, in
            governed = False  # every view, matches; and every argument is covered
            for index, p in enumerate(paths):
                if role is None or p.role == role:
                    for real in p.allow_views:
                        if match(real) is None:
                            return False
                    governed = True
                    covered.add(index)
            if not governed:
                return False
        return len(covered) == len(paths)

    @staticmethod
    def _first(
        views: Sequence[str], patterns: Sequence[str], regexes: Sequence[re.Pattern[str]]
    ) -> str | None:
        """The first pattern that one of ``views`` matches (for explanations)."""
        for view in views:
            for pattern, regex in zip(patterns, regexes, strict=True):
                if regex.fullmatch(view):
                    return pattern
        return None

    def describe(self, view: RequestView) -> str:
        if not view.paths:
            return "the request has no path arguments"
        parts = []
        for name, (patterns, regexes) in self.fields.items():
            for p in self._governed(name, view.paths):
                views = p.deny_views if self._deny else p.allow_views
                ok = self._hit(views, regexes, not self._deny)
                where = f" (resolves to {p.allow_views[1]})" if len(p.allow_views) > 1 else ""
                if ok:
                    shown = self._first(views, patterns, regexes)
                    parts.append(f"path {p.shown}{where} matches {shown}")
                else:
                    parts.append(f"path {p.shown}{where} does not match {_fmt(patterns)}")
        if not self._deny:
            governed_roles = {self._ROLES[n] for n in self.fields}
            for p in view.paths:
                if None not in governed_roles and p.role not in governed_roles:
                    parts.append(f"{p.role} path {p.shown} is not covered by this rule")
        return "; ".join(parts) or "no path argument of the role this rule names"


class _UriCheck(Check):
    """``uri``: globs on the resource URI's normal form (patterns are stored in it too).

    allow/ask: every view matches — for a ``file:`` URI, the path as requested and where
    its symlinks lead. deny: any deny view matches (folded; also without the query and
    with escapes decoded)."""

    __slots__ = ("_deny", "_match", "_regexes", "patterns")

    def __init__(self, patterns: Sequence[str], *, deny: bool) -> None:
        super().__init__("uri", "resource.uri")
        self.patterns = tuple(patterns)
        self._deny = deny
        self._regexes = tuple(
            compile_glob(deny_skeleton(p) if deny else p, ignore_case=deny) for p in patterns
        )
        self._match = _union(self._regexes)

    def test(self, view: RequestView) -> bool:
        if self._deny:
            return any(self._match(v) is not None for v in view.uri_deny_views)
        views = view.uri_views
        return bool(views) and all(self._match(v) is not None for v in views)

    def describe(self, view: RequestView) -> str:
        if not view.uri_views:
            return f"uri (none) does not match {_fmt(self.patterns)}"
        shown = view.uri_views[0]
        where = f" (resolves to {view.uri_views[1]})" if len(view.uri_views) > 1 else ""
        views = view.uri_deny_views if self._deny else view.uri_views
        if self.test(view):
            for pattern, regex in zip(self.patterns, self._regexes, strict=True):
                if any(regex.fullmatch(v) for v in views):
                    return f"uri {shown}{where} matches {pattern}"
        return f"uri {shown}{where} does not match {_fmt(self.patterns)}"


class _ExtensionCheck(Check):
    __slots__ = ("_deny", "values")

    def __init__(self, values: Iterable[str], *, deny: bool) -> None:
        super().__init__("extension", "resource.paths")
        self.values = frozenset(v.lower().lstrip(".") for v in values)
        self._deny = deny

    def test(self, view: RequestView) -> bool:
        if not view.paths:
            return False
        if self._deny:  # a dotfile's name too: "extension": ".env" stops the file .env
            return any(not _deny_extensions(p).isdisjoint(self.values) for p in view.paths)
        hits = [not p.extensions.isdisjoint(self.values) for p in view.paths]
        return all(hits) and all(p.extensions <= self.values for p in view.paths)

    def describe(self, view: RequestView) -> str:
        have = sorted(
            {e for p in view.paths for e in (_deny_extensions(p) if self._deny else p.extensions)}
        ) or ["(none)"]
        verb = "matches" if self.test(view) else "does not match"
        return f"extension {_fmt(have)} {verb} {_fmt(sorted(self.values))}"


def _deny_extensions(path: PathView) -> frozenset[str]:
    """What a deny rule's ``extension`` sees in a path: its extensions, and the name of a
    dotfile with no other dot (``.env`` is ``env``), which has no extension of its own."""
    names = {view.rsplit("/", 1)[-1] for view in path.allow_views}
    dotfiles = {n[1:].lower() for n in names if n.startswith(".") and "." not in n[1:] and n[1:]}
    return path.extensions | dotfiles if dotfiles else path.extensions


class _IdentityCheck(Check):
    """``backend_identity``: some name of the backend's verified certificate matches some
    pattern of its kind. The names are claims about one server, not several objects, so
    allow and deny rules alike need only one; a backend with no identity matches nothing.

    ``DNS:`` globs go label by label, ``URI:`` globs segment by segment, ``IP:`` is exact.
    Names and patterns are canonical (ASCII DNS names lower-case), so allow rules compare
    exactly: a look-alike such as the Kelvin sign in ``\u212aey.internal`` is not
    ``key.internal``. Deny rules fold case and compatibility forms of both, so it is."""

    __slots__ = ("_deny", "_matchers", "patterns")

    def __init__(self, patterns: Sequence[str], *, deny: bool) -> None:
        super().__init__("backend_identity", "resource.backend_identity")
        self.patterns = tuple(patterns)
        self._deny = deny
        regexes: dict[str, list[re.Pattern[str]]] = {}
        for pattern in patterns:
            kind, _, value = pattern.partition(":")
            if deny:
                value = deny_skeleton(value)
            if kind == "DNS":
                regex = compile_glob(value, separator=".", ignore_case=deny)
            elif kind == "URI":
                regex = compile_glob(value, ignore_case=deny)
            else:  # IP: no wildcards (refused at load), so the glob is the literal address
                regex = compile_glob(value, paths=False, ignore_case=deny)
            regexes.setdefault(kind, []).append(regex)
        self._matchers = {kind: _union(found) for kind, found in regexes.items()}

    def _match(self, name: str) -> bool:
        kind, _, value = name.partition(":")
        match = self._matchers.get(kind)
        if match is None or not value:  # an empty name names nothing
            return False
        return match(deny_skeleton(value) if self._deny else value) is not None

    def test(self, view: RequestView) -> bool:
        return any(self._match(name) for name in view.backend_identity)

    def describe(self, view: RequestView) -> str:
        names = view.backend_identity
        if not names:
            return f"backend identity (none) does not match {_fmt(self.patterns)}"
        hits = [name for name in names if self._match(name)]
        if hits:
            return f"backend identity {hits[0]} matches {_fmt(self.patterns)}"
        return f"backend identity {_fmt(names)} does not match {_fmt(self.patterns)}"


class _TimeCheck(Check):
    __slots__ = ("window", "zone")

    def __init__(self, window: TimeWindow) -> None:
        super().__init__("time", "environment.time")
        self.window = window
        self.zone = ZoneInfo(window.timezone)

    def _local(self, view: RequestView) -> datetime:
        return view.request.environment.time.astimezone(self.zone)

    def test(self, view: RequestView) -> bool:
        local = self._local(view)
        now = local.time().replace(microsecond=0, tzinfo=None)
        start, end = self.window.start, self.window.end
        # an end in whole minutes ('17:30') covers its whole minute, to 17:30:59: else
        # '00:00'-'23:59' would leave out the last 59 seconds of every day
        until = now.replace(second=0) if end.second == 0 and end.microsecond == 0 else now
        day = _DAYS[local.weekday()]
        if start <= end:
            return day in self.window.days and start <= now and until <= end
        # a window across midnight belongs to the day it started on
        if now >= start:
            return day in self.window.days
        yesterday = _DAYS[(local.weekday() - 1) % 7]
        return until <= end and yesterday in self.window.days

    def describe(self, view: RequestView) -> str:
        local = self._local(view)
        verb = "is inside" if self.test(view) else "is outside"
        w = self.window
        return (
            f"time {local:%a %H:%M} {w.timezone} {verb} {','.join(w.days)} "
            f"{w.start:%H:%M}-{w.end:%H:%M}"
        )


class _ProvenanceCheck(Check):
    __slots__ = ("requirements",)

    def __init__(self, requirements: Sequence[tuple[str, Provenance]]) -> None:
        super().__init__("min_provenance", "")
        self.requirements = tuple(dict.fromkeys(requirements))

    def _weak(self, view: RequestView) -> list[tuple[str, Provenance]]:
        req = view.request
        return [(a, level) for a, level in self.requirements if req.provenance_of(a) < level]

    def test(self, view: RequestView) -> bool:
        return not self._weak(view)

    def describe(self, view: RequestView) -> str:
        weak = self._weak(view)
        if not weak:
            return "every attribute it relies on is trusted enough"
        return "; ".join(
            f"{a} ({view.request.provenance_of(a).name.lower()}) below the required "
            f"{level.name.lower()}"
            for a, level in weak
        )


@attrs.frozen(slots=True)
class CompiledRule:
    index: int
    rule_id: str
    effect: Effect
    checks: tuple[Check, ...]
    description: str
    matched: MatchedRule  # what a decision lists when this rule matches
    approval: ApprovalTerms | None = None  # what a decision by this rule carries

    def matches(self, view: RequestView) -> bool:
        for check in self.checks:  # noqa: SIM110 - a plain loop is faster than all(genexpr)
            if not check.test(view):
                return False
        return True


def _subject(attr: str) -> Getter:
    return attrgetter(f"request.subject.{attr}")


def _checks(conditions: Conditions, effect: Effect) -> list[Check]:
    """The checks of one rule, cheapest and most selective first."""
    deny = effect is Effect.DENY
    c = conditions
    checks: list[Check] = []
    if c.mcp_method is not None:
        checks.append(
            _Globs(
                "mcp_method",
                "action.mcp_method",
                "method",
                c.mcp_method,
                attrgetter("method"),
                paths=True,
                ignore_case=False,
            )
        )
    if c.tool_name is not None:
        checks.append(
            _Globs(
                "tool_name",
                "action.tool_name",
                "tool",
                c.tool_name,
                attrgetter("tool"),
                paths=False,
                ignore_case=True,
                deny=deny,
                folded=attrgetter("tool_skeleton"),
            )
        )
    if c.resource_type is not None:
        checks.append(
            _OneOf(
                "resource_type",
                "resource.resource_type",
                "resource type",
                c.resource_type,
                attrgetter("resource_type"),
            )
        )
    if c.backend_id is not None:
        checks.append(
            _Globs(
                "backend_id",
                "resource.backend_id",
                "backend",
                c.backend_id,
                attrgetter("backend_id"),
                paths=False,
                ignore_case=True,
            )
        )
    if c.backend_identity is not None:
        checks.append(_IdentityCheck(c.backend_identity, deny=deny))
    many: Literal["any", "subset"] = "any" if deny else "subset"
    if c.operations is not None:
        checks.append(
            _SetCheck(
                "operations",
                "action.operations",
                "operations",
                c.operations,
                attrgetter("operations"),
                many,
            )
        )
    if c.side_effects is not None:
        checks.append(
            _SetCheck(
                "side_effects",
                "action.side_effects",
                "side effects",
                c.side_effects,
                attrgetter("side_effects"),
                many,
            )
        )
    if c.subject_id is not None:
        checks.append(
            _Globs(
                "subject_id",
                "subject.subject_id",
                "subject",
                c.subject_id,
                _subject("subject_id"),
                paths=False,
                ignore_case=False,
            )
        )
    if c.issuer is not None:
        checks.append(_OneOf("issuer", "subject.issuer", "issuer", c.issuer, _subject("issuer")))
    if c.client_id is not None:
        checks.append(
            _OneOf(
                "client_id", "subject.client_id", "client id", c.client_id, _subject("client_id")
            )
        )
    if c.audience is not None:
        checks.append(
            _SetCheck(
                "audience",
                "subject.audience",
                "audience",
                c.audience,
                lambda v: frozenset(v.request.subject.audience),
                "any",
            )
        )
    for field in ("scopes", "groups", "roles"):
        values = getattr(c, field)
        if values is not None:
            checks.append(
                _SetCheck(field, f"subject.{field}", field, values, _subject(field), "any")
            )
    if c.scopes_all is not None:
        checks.append(
            _SetCheck(
                "scopes_all", "subject.scopes", "scopes", c.scopes_all, _subject("scopes"), "all"
            )
        )
    if c.mcp_client_name is not None:
        checks.append(
            _Globs(
                "mcp_client_name",
                "environment.mcp_client_name",
                "client",
                c.mcp_client_name,
                attrgetter("client_name"),
                paths=False,
                ignore_case=True,
            )
        )
    if c.mcp_client_version is not None:
        checks.append(
            _Globs(
                "mcp_client_version",
                "environment.mcp_client_version",
                "client version",
                c.mcp_client_version,
                attrgetter("client_version"),
                paths=False,
                ignore_case=False,
            )
        )
    if c.posture is not None:
        checks.append(
            _SetCheck(
                "posture",
                "environment.posture",
                "passed posture checks",
                c.posture,
                attrgetter("passed_posture"),
                "all",
            )
        )
    if c.untrusted_content_seen is not None:
        checks.append(
            _Flag(
                "untrusted_content_seen",
                "environment.untrusted_content_seen",
                "untrusted content seen",
                c.untrusted_content_seen,
                attrgetter("untrusted_content_seen"),
            )
        )
    if c.time is not None:
        checks.append(_TimeCheck(c.time))
    if c.scheme is not None:
        checks.append(
            _OneOf(
                "scheme",
                "resource.uri",
                "scheme",
                [s.lower() for s in c.scheme],
                attrgetter("scheme"),
            )
        )
    if c.uri is not None:
        checks.append(_UriCheck(c.uri, deny=deny))
    path_fields = {
        name: getattr(c, name)
        for name in ("path_pattern", "source_path", "dest_path")
        if getattr(c, name) is not None
    }
    if path_fields:
        checks.append(_PathCheck(path_fields, deny=deny))
    if c.extension is not None:
        checks.append(_ExtensionCheck(c.extension, deny=deny))
    if c.min_provenance is not None and not deny:
        checks.append(
            _ProvenanceCheck([(a, _PROVENANCE[level]) for a, level in c.provenance_requirements()])
        )
    return checks


def _path_key(pattern: str) -> str | None:
    """The directory every path this pattern matches lies in (or is), if it has one."""
    prefix = literal_prefix(pattern)
    if prefix == pattern:
        return pattern  # no wildcard: the path itself
    if not prefix.startswith("/"):
        return None  # starts with '**' or another wildcard: anywhere
    return prefix[: prefix.rfind("/")] or "/"


def _tool_keys(tools: Sequence[str]) -> list[tuple[str, str]] | None:
    """``("exact"|"prefix", folded literal)`` per tool glob, or None if one is unindexable."""
    keys = []
    for tool in tools:
        prefix = literal_prefix(tool)
        if not prefix or not prefix.isascii():
            return None
        keys.append(("exact" if prefix == tool else "prefix", prefix.lower()))
    return keys


class RuleIndex:
    """Finds the rules that can possibly match a request — a superset, never one short.

    A rule is filed under the most selective literals it has: its tool names combined with
    the directory its path patterns start with, or either alone, or its MCP method; rules
    with none of these are always considered. Keys are case-folded for tools (tool globs
    ignore case) and for deny rules' paths (deny rules fold case); a request with non-ASCII
    tool names or paths, where folding is subtle, skips the index and gets every rule.
    """

    def __init__(self, rules: Sequence[tuple[int, Conditions, Effect]]) -> None:
        self.size = len(rules)
        self.always: list[int] = []
        self.by_method: dict[str, list[int]] = {}
        self.by_tool: dict[str, list[int]] = {}
        self.by_tool_prefix: dict[int, dict[str, list[int]]] = {}
        self.by_tool_path: dict[str, dict[str, list[int]]] = {}
        self.by_path: dict[str, list[int]] = {}
        self.by_path_folded: dict[str, list[int]] = {}
        for index, conditions, effect in rules:
            self._file(index, conditions, effect is Effect.DENY)
        self.prefix_lengths = tuple(sorted(self.by_tool_prefix))
        self.directories = frozenset(
            {*self.by_path, *self.by_path_folded}.union(*self.by_tool_path.values())
        )

    def _file(self, index: int, c: Conditions, deny: bool) -> None:
        if c.tool_name is not None and not c.tool_name:
            return  # an empty any-of list never matches
        tools = _tool_keys(c.tool_name) if c.tool_name is not None else None
        paths = self._path_keys(c, deny)
        if tools is not None:
            for kind, key in tools:
                if kind == "prefix":
                    table = self.by_tool_prefix.setdefault(len(key), {})
                    table.setdefault(key, []).append(index)
                elif paths is not None:
                    table = self.by_tool_path.setdefault(key, {})
                    for path in paths:
                        table.setdefault(path, []).append(index)
                else:
                    self.by_tool.setdefault(key, []).append(index)
            return
        if paths is not None:
            table = self.by_path_folded if deny else self.by_path
            for path in paths:
                table.setdefault(path, []).append(index)
            return
        methods = c.mcp_method
        if methods and all(literal_prefix(m) == m for m in methods):
            for method in methods:
                self.by_method.setdefault(method, []).append(index)
            return
        self.always.append(index)

    @staticmethod
    def _path_keys(c: Conditions, deny: bool) -> list[str] | None:
        field = c.path_pattern or c.source_path or c.dest_path
        if not field:
            return None
        keys = [_path_key(pattern) for pattern in field]
        if any(k is None or not k.isascii() for k in keys):
            return None
        return [deny_skeleton(k) if deny else k for k in keys if k is not None]

    def candidates(self, view: RequestView) -> list[int] | None:
        """Indexes of the rules to evaluate, in policy order; None means all of them."""
        tool = view.tool
        if (tool is not None and not tool.isascii()) or not view.ascii_paths:
            return None
        found = set(self.always)
        hits = self.by_method.get(view.method)
        if hits:
            found.update(hits)
        key = tool.lower() if tool is not None else None
        if key is not None:
            hits = self.by_tool.get(key)
            if hits:
                found.update(hits)
            for length in self.prefix_lengths:
                if length <= len(key):
                    hits = self.by_tool_prefix[length].get(key[:length])
                    if hits:
                        found.update(hits)
        directories = self.directories
        if directories and view.paths:
            by_path, folded = self.by_path, self.by_path_folded
            by_dir = self.by_tool_path.get(key) if key is not None else None
            seen: set[str] = set()
            for path in view.paths:
                for start in {*path.allow_views, *path.deny_views}:
                    directory = start
                    while True:  # the path itself, then each parent up to "/"
                        if directory in directories and directory not in seen:
                            seen.add(directory)
                            for table in (by_path, folded, by_dir):
                                hits = table.get(directory) if table else None
                                if hits:
                                    found.update(hits)
                        if directory == "/":
                            break
                        directory = directory[: directory.rfind("/")] or "/"
        return sorted(found)


class CompiledPolicy:
    """A policy ready to decide: rules with their checks, and the index to find them."""

    def __init__(self, policy: PolicyFile, policy_id: str) -> None:
        self.policy = policy
        self.policy_id = policy_id
        self.version = policy.version
        #: the policy-wide approval terms, carried by every decision no ask rule made
        self.approval = approval_terms(policy.hitl, None)
        self.rules = tuple(
            _compile_rule(i, rule, policy.hitl, self.approval)
            for i, rule in enumerate(policy.rules)
        )
        self.index = RuleIndex(
            [
                (r.index, rule.conditions, r.effect)
                for r, rule in zip(self.rules, policy.rules, strict=True)
            ]
        )

    def candidates(self, view: RequestView) -> Sequence[CompiledRule]:
        """Rules that can possibly match ``view``, in policy order."""
        found = self.index.candidates(view)
        if found is None:
            return self.rules
        rules = self.rules
        return [rules[i] for i in found]


def approval_terms(hitl: HitlSettings | None, rule: Rule | None) -> ApprovalTerms | None:
    """The approval terms of a decision by ``rule`` (None: by no ask rule) under a policy
    whose ``hitl`` section is ``hitl``. A rule's ``approval`` sets the remembering terms;
    else the ``hitl`` section does, where it sets them (its ``cache_side_effects`` left out:
    only tools without side effects); the timeout is the ``hitl`` section's. None when the
    policy sets nothing: the proxy's config decides."""
    if rule is not None and rule.approval is not None:
        where = f"rule {rule.id}'s approval"
        return ApprovalTerms(
            timeout_seconds=hitl.timeout_seconds if hitl else None,
            remember_seconds=rule.approval.cache_ttl_seconds,
            remember_side_effects=frozenset(rule.approval.cacheable_side_effects),
            remember_source=f"{where}.cache_ttl_seconds",
            side_effects_source=f"{where}.cacheable_side_effects",
        )
    if hitl is None:
        return None
    given = hitl.approval_ttl_seconds is not None
    return ApprovalTerms(
        timeout_seconds=hitl.timeout_seconds,
        remember_seconds=hitl.approval_ttl_seconds,
        remember_side_effects=frozenset(hitl.cache_side_effects or ()),
        remember_source="the policy's hitl.approval_ttl_seconds"
        if given
        else "proxy.approval_cache_seconds",
        side_effects_source="the policy's hitl.cache_side_effects",
    )


def _compile_rule(
    index: int, rule: Rule, hitl: HitlSettings | None, policy_wide: ApprovalTerms | None
) -> CompiledRule:
    assert rule.id is not None  # noqa: S101 - PolicyFile assigns every id
    effect = Effect(rule.effect)
    return CompiledRule(
        index,
        rule.id,
        effect,
        tuple(_checks(rule.conditions, effect)),
        rule.description,
        MatchedRule(rule.id, effect),
        approval_terms(hitl, rule) if effect is Effect.ASK else policy_wide,
    )


def compile_policy(policy: PolicyFile) -> CompiledPolicy:
    """Compile ``policy``; pure and deterministic."""
    return CompiledPolicy(policy, policy.policy_id())
