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
  folded; allow rules compare them exactly (tool names: case-insensitively).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

import attrs

from mcp_acp.models import Effect, MatchedRule, Provenance
from mcp_acp.policy.glob import compile_glob, deny_skeleton, literal_prefix
from mcp_acp.policy.model import Conditions, PolicyFile, Rule, TimeWindow
from mcp_acp.policy.view import PathView, RequestView

__all__ = ["Check", "CompiledPolicy", "CompiledRule", "compile_policy"]

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


class _Globs(Check):
    """A single-valued attribute against any of several globs."""

    __slots__ = ("_deny", "_get", "_regexes", "label", "patterns")

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
    ) -> None:
        super().__init__(field, attribute)
        self.label = label
        self.patterns = tuple(patterns)
        self._get = get
        self._deny = deny
        compiled = [deny_skeleton(p) for p in patterns] if deny else patterns
        self._regexes = tuple(
            compile_glob(p, paths=paths, ignore_case=ignore_case or deny) for p in compiled
        )

    def test(self, view: RequestView) -> bool:
        value: str | None = self._get(view)
        if value is None:
            return False
        if self._deny:
            value = deny_skeleton(value)
        return any(r.fullmatch(value) for r in self._regexes)

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
        wants = {"any": "any of", "all": "all of", "subset": "only"}[self.mode]
        verb = "has" if self.test(view) else "does not have"
        return f"{self.label} {_fmt(have)} {verb} {wants} {_fmt(sorted(self.values))}"


class _PathCheck(Check):
    """``path_pattern`` / ``source_path`` / ``dest_path`` of one rule, together.

    allow/ask: each field present governs the path arguments of its role (``path_pattern``
    all of them); every governed argument must exist and match in all its views, and every
    path argument of the request must be governed by some field (a move's destination is
    never waved through by a rule that only looked at the source).
    deny: each field present must find at least one argument of its role with any view
    matching.
    """

    __slots__ = ("_deny", "fields")

    _ROLES: ClassVar[dict[str, str | None]] = {
        "path_pattern": None,
        "source_path": "source",
        "dest_path": "dest",
    }

    def __init__(self, fields: dict[str, list[str]], *, deny: bool) -> None:
        super().__init__("+".join(fields), "resource.paths")
        self._deny = deny
        self.fields = {
            name: (
                tuple(patterns),
                tuple(
                    compile_glob(deny_skeleton(p) if deny else p, ignore_case=deny)
                    for p in patterns
                ),
            )
            for name, patterns in fields.items()
        }

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
        roles = self._ROLES
        if self._deny:
            for name, (_, regexes) in self.fields.items():
                role = roles[name]
                if not any(
                    self._hit(p.deny_views, regexes, False)
                    for p in paths
                    if role is None or p.role == role
                ):
                    return False
            return True
        covered: set[int] = set()
        for name, (_, regexes) in self.fields.items():
            role = roles[name]
            governed = False
            for index, p in enumerate(paths):
                if role is None or p.role == role:
                    if not self._hit(p.allow_views, regexes, True):
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


class _ExtensionCheck(Check):
    __slots__ = ("_deny", "values")

    def __init__(self, values: Iterable[str], *, deny: bool) -> None:
        super().__init__("extension", "resource.paths")
        self.values = frozenset(v.lower().lstrip(".") for v in values)
        self._deny = deny

    def test(self, view: RequestView) -> bool:
        if not view.paths:
            return False
        hits = [not p.extensions.isdisjoint(self.values) for p in view.paths]
        if self._deny:
            return any(hits)
        return all(hits) and all(p.extensions <= self.values for p in view.paths)

    def describe(self, view: RequestView) -> str:
        have = sorted({e for p in view.paths for e in p.extensions}) or ["(none)"]
        verb = "matches" if self.test(view) else "does not match"
        return f"extension {_fmt(have)} {verb} {_fmt(sorted(self.values))}"


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
        day = _DAYS[local.weekday()]
        if start <= end:
            return day in self.window.days and start <= now <= end
        # a window across midnight belongs to the day it started on
        if now >= start:
            return day in self.window.days
        yesterday = _DAYS[(local.weekday() - 1) % 7]
        return now <= end and yesterday in self.window.days

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

    def matches(self, view: RequestView) -> bool:
        for check in self.checks:  # noqa: SIM110 - a plain loop is faster than all(genexpr)
            if not check.test(view):
                return False
        return True


def _subject(attr: str) -> Getter:
    return lambda view: getattr(view.request.subject, attr)


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
                lambda v: v.method,
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
                lambda v: v.tool,
                paths=False,
                ignore_case=True,
                deny=deny,
            )
        )
    if c.resource_type is not None:
        checks.append(
            _OneOf(
                "resource_type",
                "resource.resource_type",
                "resource type",
                c.resource_type,
                lambda v: v.resource_type,
            )
        )
    if c.backend_id is not None:
        checks.append(
            _Globs(
                "backend_id",
                "resource.backend_id",
                "backend",
                c.backend_id,
                lambda v: v.backend_id,
                paths=False,
                ignore_case=True,
            )
        )
    many: Literal["any", "subset"] = "any" if deny else "subset"
    if c.operations is not None:
        checks.append(
            _SetCheck(
                "operations",
                "action.operations",
                "operations",
                c.operations,
                lambda v: v.operations,
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
                lambda v: v.side_effects,
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
                lambda v: v.client_name,
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
                lambda v: v.client_version,
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
                lambda v: v.passed_posture,
                "all",
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
                lambda v: v.scheme,
            )
        )
    if c.uri is not None:
        checks.append(
            _Globs(
                "uri",
                "resource.uri",
                "uri",
                c.uri,
                lambda v: v.uri,
                paths=True,
                ignore_case=False,
                deny=deny,
            )
        )
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


class CompiledPolicy:
    """A policy ready to decide: rules with their checks, and the indexes to find them."""

    def __init__(self, policy: PolicyFile, policy_id: str) -> None:
        self.policy = policy
        self.policy_id = policy_id
        self.version = policy.version
        self.rules = tuple(_compile_rule(i, rule) for i, rule in enumerate(policy.rules))
        self.always: list[int] = []
        self.by_method: dict[str, list[int]] = {}
        self.by_tool: dict[str, list[int]] = {}
        self.by_tool_prefix: dict[int, dict[str, list[int]]] = {}
        for compiled, rule in zip(self.rules, policy.rules, strict=True):
            self._index(compiled.index, rule.conditions, compiled.effect)
        self.prefix_lengths = tuple(sorted(self.by_tool_prefix))

    def _index(self, index: int, conditions: Conditions, effect: Effect) -> None:
        tools = conditions.tool_name
        if tools is not None and effect is not Effect.DENY:
            # exact and prefix keys are lower-case, as tool globs ignore case
            if not tools:
                return  # an empty any-of list never matches: nothing to index
            keys = [literal_prefix(t) for t in tools]
            if all(keys):
                for tool, key in zip(tools, keys, strict=True):
                    if key == tool:
                        self.by_tool.setdefault(key.lower(), []).append(index)
                    else:
                        table = self.by_tool_prefix.setdefault(len(key), {})
                        table.setdefault(key.lower(), []).append(index)
                return
        methods = conditions.mcp_method
        if methods and all(literal_prefix(m) == m for m in methods):
            for method in methods:
                self.by_method.setdefault(method, []).append(index)
            return
        # deny rules on tool names fold case and compatibility forms, which an exact
        # index cannot see, so they are always considered
        self.always.append(index)

    def candidates(self, view: RequestView) -> list[CompiledRule]:
        """Rules that can possibly match ``view``, in policy order."""
        found = set(self.always)
        found.update(self.by_method.get(view.method, ()))
        tool = view.tool
        if tool is not None:
            lower = tool.lower()
            found.update(self.by_tool.get(lower, ()))
            for length in self.prefix_lengths:
                if length <= len(lower):
                    found.update(self.by_tool_prefix[length].get(lower[:length], ()))
        return [self.rules[i] for i in sorted(found)]


def _compile_rule(index: int, rule: Rule) -> CompiledRule:
    assert rule.id is not None  # noqa: S101 - PolicyFile assigns every id
    effect = Effect(rule.effect)
    return CompiledRule(
        index,
        rule.id,
        effect,
        tuple(_checks(rule.conditions, effect)),
        rule.description,
        MatchedRule(rule.id, effect),
    )


def compile_policy(policy: PolicyFile) -> CompiledPolicy:
    """Compile ``policy``; pure and deterministic."""
    return CompiledPolicy(policy, policy.policy_id())
