"""The built-in ``acp`` policy engine: a pure, total, explainable decision function.

Order of a decision (the first step that decides, wins):

1. **ambiguous path** — any path argument or resource URI that could be read two ways →
   deny (``builtin-ambiguous-path``);
2. **protected paths** — a path the request names in the config directory, the audit log
   directory or the audit fallback files (:class:`~mcp_acp.policy.protected.PathGuard`,
   compared as deny rules compare) → deny (``builtin-protected-path``);
3. **discovery** — ``initialize``, ``ping``, ``server/discover``, the ``*/list`` methods and
   notifications → allow as ``discovery``, unless a deny rule matches (list *results* are
   filtered with the same policy by the proxy);
4. **rules** — deny overrides ask, ask overrides allow; no match → deny. The winning rule is
   the first one in file order with the winning effect.

``decide`` never raises: any internal error becomes a deny that names it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import attrs
from pydantic import BaseModel, ConfigDict, Field

from mcp_acp.config import ConfigPath
from mcp_acp.errors import PolicyError, exception_text, one_line
from mcp_acp.models import Decision, DecisionRequest, Effect, MatchedRule
from mcp_acp.policy.compile import CompiledPolicy, CompiledRule, compile_policy
from mcp_acp.policy.load import check_policy, load_policy, read_policy_text
from mcp_acp.policy.model import PolicyFile
from mcp_acp.policy.protected import PathGuard, Protected
from mcp_acp.policy.view import RequestView
from mcp_acp.registry import PluginContext

__all__ = [
    "DISCOVERY_METHODS",
    "AcpConfig",
    "AcpPolicyEngine",
    "RuleTrace",
    "is_discovery",
]

DISCOVERY_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
    }
)

_RANK = {Effect.ALLOW: 0, Effect.ASK: 1, Effect.DENY: 2}
#: Attributes that only a call's arguments supply (ignored when judging a listing).
_ARGUMENT_ATTRIBUTES = frozenset({"resource.paths", "resource.uri"})
_VERB = {Effect.ALLOW: "allowed", Effect.DENY: "denied", Effect.ASK: "approval required"}


def is_discovery(method: str) -> bool:
    return method in DISCOVERY_METHODS or method.startswith("notifications/")


@attrs.frozen(slots=True)
class RuleTrace:
    """How one rule fared against a request (for ``policy explain``)."""

    rule_id: str
    effect: Effect
    matched: bool
    details: tuple[str, ...]


class AcpConfig(BaseModel):
    """Options of the ``acp`` engine (``policy.config`` in the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: ConfigPath | None = Field(
        default=None,
        description="Policy file; default: policy.json beside the config file. A relative "
        "path is taken from the config file's directory.",
    )


class AcpPolicyEngine:
    """Decides requests against a compiled policy; ``reload`` swaps policies atomically."""

    def __init__(
        self,
        policy: PolicyFile,
        *,
        protected: Protected = (),
        path: Path | None = None,
    ) -> None:
        self._compiled: CompiledPolicy = compile_policy(policy)
        self._guard = PathGuard(protected)  # steps 1 and 2
        self._path = path
        self._reload_lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, *, protected: Protected = ()) -> AcpPolicyEngine:
        return cls(load_policy(path), protected=protected, path=path)

    @classmethod
    def from_config(cls, options: AcpConfig, context: PluginContext) -> AcpPolicyEngine:
        path = options.path or context.config_dir / "policy.json"
        return cls.from_file(path, protected=context.protected_dirs)

    @property
    def policy_id(self) -> str:
        return self._compiled.policy_id

    @property
    def policy(self) -> PolicyFile:
        return self._compiled.policy

    @property
    def path(self) -> Path | None:
        return self._path

    # ------------------------------------------------------------------ deciding

    def decide(self, request: DecisionRequest) -> Decision:
        start = time.perf_counter_ns()
        compiled = self._compiled  # one policy for the whole decision, even during a reload
        approval = compiled.approval
        try:
            effect, winner, matched, reason = self._decide(compiled, RequestView(request))
            rule_id = winner if isinstance(winner, str) or winner is None else winner.rule_id
            if isinstance(winner, CompiledRule):
                approval = winner.approval
        except Exception as exc:  # totality: an engine bug is a deny, never an escape
            effect, rule_id, matched = Effect.DENY, "builtin-engine-error", ()
            reason = f"denied: policy engine error: {exception_text(exc)}"
        # a rule's explanation is rendered when it is first read (the audit record reads it)
        text, lazy = (reason, None) if isinstance(reason, str) else (None, reason)
        return Decision(
            effect=effect,
            reason=text,
            explain=lazy,
            policy_id=compiled.policy_id,
            rule_id=rule_id,
            matched=matched,
            policy_version=compiled.version,
            eval_ns=time.perf_counter_ns() - start,
            approval=approval,
        )

    def _decide(
        self, compiled: CompiledPolicy, view: RequestView
    ) -> tuple[Effect, CompiledRule | str | None, tuple[MatchedRule, ...], str | Callable[[], str]]:
        """Effect, the winning rule (or a built-in's rule id), every matched rule, reason."""
        guarded = self._guard.check(view)
        if guarded is not None:
            rule_id, reason = guarded
            return Effect.DENY, rule_id, (), reason
        candidates = compiled.candidates(view)
        discovery = is_discovery(view.method)
        if discovery:
            candidates = [r for r in candidates if r.effect is Effect.DENY]
        winner: CompiledRule | None = None
        found: list[MatchedRule] = []
        for rule in candidates:
            if rule.matches(view):
                found.append(rule.matched)
                if winner is None or _RANK[rule.effect] > _RANK[winner.effect]:
                    winner = rule  # the first rule of the strongest effect, in file order
        if winner is not None:
            return winner.effect, winner, tuple(found), partial(_explain, winner, view)
        if discovery:
            return Effect.ALLOW, "discovery", (), f"allowed as discovery: {view.method}"
        what = view.method + (f" {view.tool}" if view.tool else "")
        return Effect.DENY, None, (), f"denied by default: no rule matched {what}"

    def could_allow(self, request: DecisionRequest) -> bool:
        """Whether *some* use of this tool/resource/prompt could be allowed or asked for.

        Used to filter list results: path and URI conditions are treated as satisfiable
        (the listing has no arguments yet), so an item is hidden only when no allow or ask
        rule could ever match it, or a deny rule that does not depend on paths matches it.
        """
        try:
            view = RequestView(request)
            possible = False
            for rule in self._compiled.rules:
                relevant = [c for c in rule.checks if c.attribute not in _ARGUMENT_ATTRIBUTES]
                matches = all(check.test(view) for check in relevant)
                if rule.effect is Effect.DENY:
                    if matches and len(relevant) == len(rule.checks):
                        return False
                elif matches:
                    possible = True
            return possible
        except Exception:  # fail closed: an item we cannot judge is not listed
            return False

    def trace(self, request: DecisionRequest) -> list[RuleTrace]:
        """Every rule, whether it matched, and why (slow; for humans)."""
        view = RequestView(request)
        traces = []
        for rule in self._compiled.rules:
            if view.ambiguous is not None:
                traces.append(RuleTrace(rule.rule_id, rule.effect, False, (view.ambiguous,)))
                continue
            results = [(check.test(view), check.describe(view)) for check in rule.checks]
            matched = all(ok for ok, _ in results)
            details = tuple(text for ok, text in results if ok == matched)
            if not matched:
                details = details[:1]
            traces.append(RuleTrace(rule.rule_id, rule.effect, matched, details))
        return traces

    # ------------------------------------------------------------------ reloading

    def reload(self, path: Path | None = None) -> list[str]:
        """Load and compile ``path`` (default: the current file) and swap it in.

        Returns the problems found; if there are any, the last-known-good policy stays
        active. A decision in progress finishes under the policy it started with.
        """
        target = path or self._path
        if target is None:
            return ["no policy file to reload: the engine was built from memory"]
        with self._reload_lock:
            try:
                text = read_policy_text(target)
                policy, errors = check_policy(text, str(target))
                if policy is None:
                    return errors
                compiled = compile_policy(policy)
            except PolicyError as exc:
                return [str(exc)]
            except Exception as exc:  # the last-known-good stays, and the caller records why
                return [one_line(f"policy {target} could not be loaded: {exception_text(exc)}")]
            self._compiled = compiled
            self._path = target
            return []


def _explain(rule: CompiledRule, view: RequestView) -> str:
    because = "; ".join(
        check.describe(view) for check in rule.checks if check.field not in ("min_provenance",)
    )
    return f"{_VERB[rule.effect]} by rule {rule.rule_id}: {because}"
