"""Policy decision benchmark: the built-in ``acp`` engine against Cedar (``cedarpy``).

Run with ``nox -s bench`` or ``python bench/policy_bench.py [--quick]``. See
``bench/README.md`` ("Policy decision") for what is measured and the latest results.

For each size (10, 100, 1,000 and 10,000 rules) the same policy is generated twice from a
fixed seed: as an acp policy file (:class:`mcp_acp.policy.model.PolicyFile`) and as Cedar
text. Both engines then decide the same requests, in the same process:

* acp: ``AcpPolicyEngine.decide(request)`` on requests built once with
  ``build_decision_request(..., resolve_paths=False)`` (no filesystem I/O);
* Cedar: ``cedarpy.is_authorized(request, policy_set, entities)`` with the policy set
  parsed once, the entities built once and the request dicts (context pre-serialised to
  JSON) built once.

Before timing, every benchmark request is decided by both engines and the allow/deny
decisions must agree; a disagreement stops the run. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mcp_acp.models import DecisionRequest, Effect, Provenance, Subject
from mcp_acp.policy.compile import compile_policy
from mcp_acp.policy.engine import AcpPolicyEngine
from mcp_acp.policy.model import PolicyFile
from mcp_acp.policy.view import RequestView
from mcp_acp.request import build_decision_request
from mcp_acp.tools import ToolRegistry

SEED = 20240611
SIZES = (10, 100, 1_000, 10_000)
QUICK_SIZES = (10, 100)
DISTINCT_REQUESTS = 1_000
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RESULTS = Path(__file__).parent / "results" / "policy.md"

#: Timed calls per size (acp, cedar). Fewer for big policies: Cedar evaluates every
#: policy on every call, so 10,000 rules cost milliseconds per call.
ITERATIONS: dict[int, tuple[int, int]] = {
    10: (20_000, 20_000),
    100: (20_000, 20_000),
    1_000: (20_000, 5_000),
    10_000: (10_000, 1_000),
}
QUICK_ITERATIONS = (2_000, 2_000)
ROUNDS = 5  # acp and cedarpy take turns, so outside load hits both alike

# ---------------------------------------------------------------------------- world

#: Users and the groups they belong to (OIDC ``groups`` for acp, parents for Cedar).
USERS: dict[str, tuple[str, ...]] = {
    "alice": ("eng",),
    "bob": ("ops",),
    "carol": ("eng", "data"),
    "dave": ("qa",),
    "erin": ("contractors", "eng"),
    "mallory": ("eng",),
    "frank": (),
}
ALLOW_GROUPS = ("eng", "ops", "data", "qa")
FS_TOOLS = (
    "read_file",
    "read_text_file",
    "list_directory",
    "directory_tree",
    "search_files",
    "get_file_info",
    "write_file",
    "edit_file",
    "create_directory",
)
GIT_TOOLS = ("git_status", "git_log", "git_diff", "git_show", "git_add", "git_commit")
SVC_TOOLS = tuple(f"svc{s:02d}_{verb}" for s in range(30) for verb in ("read", "write", "list"))
ALL_TOOLS = FS_TOOLS + GIT_TOOLS + SVC_TOOLS
FIXED_GLOBS = ("git_*", "read_*", "list_*")
FREEZE_TOOLS = ("write_*", "edit_*", "*_write")
SUB_PATHS = ("", "README.md", "src/main.py", "docs/guide.md", "data/2024/report.csv")


@dataclass(frozen=True)
class BenchRequest:
    """One request in both engines' forms (built once, outside the timed loop)."""

    kind: str  # "hit", "deny" or "miss": how it was generated, not what it decides
    user: str
    tool: str
    path: str
    acp: DecisionRequest
    cedar: dict[str, Any]


@dataclass
class Workload:
    """A generated policy in both languages and the requests to decide against it."""

    size: int
    policy_data: dict[str, Any]
    policy_json: str
    cedar_text: str
    cedar_entities_json: str
    requests: list[BenchRequest] = field(default_factory=list)


def _path_cedar(var: str, prefix: str) -> str:
    """acp's ``PREFIX/**`` (the directory itself and everything below) in Cedar."""
    return f'({var} == "{prefix}" || {var} like "{prefix}/*")'


def _any(terms: Sequence[str]) -> str:
    return terms[0] if len(terms) == 1 else "(" + " || ".join(terms) + ")"


def _tool_cedar(tools: Sequence[str]) -> tuple[str, list[str]]:
    """(resource scope, when-clauses) for an acp ``tool_name`` any-of list."""
    if all("*" not in t for t in tools):
        if len(tools) == 1:
            return f'resource == Tool::"{tools[0]}"', []
        members = ", ".join(f'Tool::"{t}"' for t in tools)
        return "resource", [f"resource in [{members}]"]
    return "resource", [_any([f'context.tool like "{t}"' for t in tools])]


def _subject_cedar(kind: str | None, values: Sequence[str]) -> tuple[str, list[str]]:
    """(principal scope, when-clauses) for acp ``groups`` / ``subject_id`` any-of lists."""
    entity = {"groups": "Group", "subject_id": "User"}.get(kind or "")
    if entity is None:
        return "principal", []
    op = "in" if entity == "Group" else "=="
    if len(values) == 1:
        return f'principal {op} {entity}::"{values[0]}"', []
    members = ", ".join(f'{entity}::"{v}"' for v in values)
    return "principal", [f"principal in [{members}]"]


def _cedar_policy(
    rule_id: str, effect: str, principal: str, resource: str, clauses: Sequence[str]
) -> str:
    keyword = "permit" if effect == "allow" else "forbid"
    head = f'@id("{rule_id}")\n{keyword} (\n  {principal},\n  action == Action::"call_tool",'
    head += f"\n  {resource}\n)"
    if clauses:
        head += "\nwhen { " + " && ".join(clauses) + " }"
    return head + ";"


def _allow_rule(rng: random.Random, index: int, projects: int) -> tuple[dict[str, Any], str]:
    """A typical allow rule: a tool (or a few, or a prefix glob) on one project's tree."""
    shape = rng.random()
    if shape < 0.8:
        tools = [rng.choice(FS_TOOLS + GIT_TOOLS) if rng.random() < 0.5 else rng.choice(SVC_TOOLS)]
    elif shape < 0.9:
        tools = rng.sample(ALL_TOOLS, 2)
    else:
        tools = [rng.choice((*FIXED_GLOBS, f"svc{rng.randrange(30):02d}_*"))]
    prefix = f"/srv/p{rng.randrange(projects)}"
    conditions: dict[str, Any] = {"tool_name": tools, "path_pattern": f"{prefix}/**"}
    subject_kind: str | None = None
    subject_values: list[str] = []
    who = rng.random()
    if who < 0.2:
        subject_kind, subject_values = "groups", rng.sample(ALLOW_GROUPS, rng.choice((1, 2)))
    elif who < 0.3:
        names = [u for u in USERS if u != "mallory"]
        subject_kind, subject_values = "subject_id", rng.sample(names, rng.choice((1, 2)))
    if subject_kind:
        conditions[subject_kind] = subject_values
    rule_id = f"allow-{index}"
    principal, clauses = _subject_cedar(subject_kind, subject_values)
    resource, tool_clauses = _tool_cedar(tools)
    clauses = [*clauses, *tool_clauses, _path_cedar("context.path", prefix)]
    rule = {"id": rule_id, "effect": "allow", "conditions": conditions}
    return rule, _cedar_policy(rule_id, "allow", principal, resource, clauses)


def _deny_rule(rng: random.Random, index: int, projects: int) -> tuple[dict[str, Any], str]:
    """Deny rules: secrets anywhere, one banned user, release freezes, contractors off HR."""
    rule_id = f"deny-{index}"
    if index == 0:
        conditions: dict[str, Any] = {"path_pattern": "**/secrets/**"}
        clauses = ['(context.path like "*/secrets/*" || context.path like "*/secrets")']
        principal = "principal"
    elif index == 1:
        conditions = {"subject_id": "mallory", "tool_name": "*"}
        clauses, principal = [], 'principal == User::"mallory"'
    elif index % 2 == 0:
        prefix = f"/srv/p{rng.randrange(projects)}/release"
        conditions = {"tool_name": list(FREEZE_TOOLS), "path_pattern": f"{prefix}/**"}
        tool_terms = [f'context.tool like "{t}"' for t in FREEZE_TOOLS]
        clauses, principal = [_any(tool_terms), _path_cedar("context.path", prefix)], "principal"
    else:
        prefix = f"/srv/p{rng.randrange(projects)}/hr"
        conditions = {"groups": "contractors", "path_pattern": f"{prefix}/**"}
        clauses = [_path_cedar("context.path", prefix)]
        principal = 'principal in Group::"contractors"'
    rule = {"id": rule_id, "effect": "deny", "conditions": conditions}
    return rule, _cedar_policy(rule_id, "deny", principal, "resource", clauses)


def cedar_entities() -> list[dict[str, Any]]:
    """Users with their groups as parents, and the groups (built once, reused)."""
    groups = sorted({g for gs in USERS.values() for g in gs})
    users = [
        {
            "uid": {"type": "User", "id": name},
            "attrs": {},
            "parents": [{"type": "Group", "id": g} for g in gs],
        }
        for name, gs in USERS.items()
    ]
    return users + [{"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []} for g in groups]


def generate_policy(size: int, seed: int = SEED) -> tuple[dict[str, Any], str]:
    """``size`` rules as acp policy data and as Cedar text, rule for rule."""
    rng = random.Random(f"{seed}-policy-{size}")  # noqa: S311 - test data, not secrets
    projects = max(4, size // 2)
    denies = max(3, size // 100)
    rules: list[dict[str, Any]] = []
    cedar: list[str] = []
    deny_slots = set(rng.sample(range(size), denies))  # deny rules spread through the file
    deny_index = allow_index = 0
    for slot in range(size):
        if slot in deny_slots:
            rule, text = _deny_rule(rng, deny_index, projects)
            deny_index += 1
        else:
            rule, text = _allow_rule(rng, allow_index, projects)
            allow_index += 1
        rules.append(rule)
        cedar.append(text)
    return {"version": "1", "rules": rules}, "\n\n".join(cedar) + "\n"


# ---------------------------------------------------------------------------- requests

REGISTRY = ToolRegistry.default()
SUBJECTS = {
    name: Subject(subject_id=name, provenance=Provenance.TOKEN, groups=frozenset(groups))
    for name, groups in USERS.items()
}


def _path_argument(tool: str) -> str:
    facts = REGISTRY.facts(tool)
    return next(name for name, role in facts.path_arguments.items() if role == "path")


def make_request(kind: str, user: str, tool: str, path: str, number: int) -> BenchRequest:
    acp = build_decision_request(
        method="tools/call",
        params={"name": tool, "arguments": {_path_argument(tool): path}},
        subject=SUBJECTS[user],
        registry=REGISTRY,
        backend_id="fs",
        session_id="bench",
        request_id=f"r-{number}",
        client_name="bench",
        client_version="1.0.0",
        now=NOW,
        resolve_paths=False,
    )
    cedar = {
        "principal": {"type": "User", "id": user},
        "action": {"type": "Action", "id": "call_tool"},
        "resource": {"type": "Tool", "id": tool},
        # a string context is passed through as is; a dict would be json.dumps'ed per call
        "context": json.dumps({"tool": tool, "path": path}),
    }
    return BenchRequest(kind, user, tool, path, acp, cedar)


def _tool_for(rng: random.Random, tools: Sequence[str]) -> str:
    """A concrete tool name matching one of ``tools`` (literals or prefix globs)."""
    pick = rng.choice(tools)
    if "*" not in pick:
        return pick
    if pick.startswith("*"):
        return rng.choice([t for t in ALL_TOOLS if t.endswith(pick[1:])])
    return rng.choice([t for t in ALL_TOOLS if t.startswith(pick[:-1])])


def _user_for(rng: random.Random, conditions: dict[str, Any]) -> str:
    if "groups" in conditions:
        wanted = set(conditions["groups"])
        return rng.choice([u for u, gs in USERS.items() if wanted.intersection(gs)])
    if "subject_id" in conditions:
        return str(rng.choice(conditions["subject_id"]))
    return rng.choice(list(USERS))


def generate_requests(
    policy_data: dict[str, Any], count: int = DISTINCT_REQUESTS, seed: int = SEED
) -> list[BenchRequest]:
    """A shuffled mix: ~50% aimed at an allow rule, ~15% at a deny rule, ~35% random."""
    rules = policy_data["rules"]
    size = len(rules)
    rng = random.Random(f"{seed}-requests-{size}")  # noqa: S311 - test data, not secrets
    allows = [r for r in rules if r["effect"] == "allow"]
    scoped_denies = [r for r in rules if r["effect"] == "deny" and "/srv/" in str(r["conditions"])]
    projects = max(4, size // 2)
    out: list[BenchRequest] = []
    for number in range(count):
        roll = rng.random()
        sub = rng.choice(SUB_PATHS)
        if roll < 0.65:  # aimed at an allow rule (and, for 15%, made to hit a deny rule)
            rule = rng.choice(allows)
            cond = rule["conditions"]
            tool, user = _tool_for(rng, cond["tool_name"]), _user_for(rng, cond)
            base = cond["path_pattern"].removesuffix("/**")
            kind = "hit"
            if roll >= 0.5:
                kind = "deny"
                sub = rng.choice(("secrets/token.txt", "app/secrets", "secrets"))
                if rng.random() < 0.5 and scoped_denies:
                    deny = rng.choice(scoped_denies)["conditions"]
                    base = deny["path_pattern"].removesuffix("/**")
                    sub = "2024/plan.txt"
                    if "groups" in deny:
                        user = "erin"
                    else:
                        tool = rng.choice(("write_file", "edit_file", "svc03_write"))
            path = f"{base}/{sub}" if sub else base
        else:  # random: mostly no rule matches (default deny)
            kind = "miss"
            tool, user = rng.choice(ALL_TOOLS), rng.choice(list(USERS))
            base = f"/srv/p{rng.randrange(projects * 2)}"
            path = f"{base}/{sub}" if sub else base
        out.append(make_request(kind, user, tool, path, number))
    return out


def build_workload(size: int, seed: int = SEED, requests: int = DISTINCT_REQUESTS) -> Workload:
    policy_data, cedar_text = generate_policy(size, seed)
    workload = Workload(
        size=size,
        policy_data=policy_data,
        policy_json=json.dumps(policy_data),
        cedar_text=cedar_text,
        cedar_entities_json=json.dumps(cedar_entities()),
    )
    workload.requests = generate_requests(policy_data, requests, seed)
    return workload


# ---------------------------------------------------------------------------- engines


def acp_engine(workload: Workload) -> AcpPolicyEngine:
    return AcpPolicyEngine(PolicyFile.model_validate_json(workload.policy_json))


def cedar_handles(workload: Workload) -> tuple[Any, Any]:
    import cedarpy

    policy_set = cedarpy.PolicySet.from_str(workload.cedar_text)
    entities = cedarpy.Entities.from_json_str(workload.cedar_entities_json)
    return policy_set, entities


@dataclass(frozen=True)
class Mismatch:
    request: BenchRequest
    acp: str
    cedar: str


def check_equivalence(
    workload: Workload, engine: AcpPolicyEngine, policy_set: Any, entities: Any
) -> tuple[list[Mismatch], int]:
    """Decide every request with both engines; returns disagreements and the allow count.

    ``ask`` (which the generated policies never produce) would count as not-allow.
    """
    import cedarpy

    if len(policy_set) != workload.size:
        raise RuntimeError(f"cedar parsed {len(policy_set)} policies, expected {workload.size}")
    mismatches = []
    allowed = 0
    for request in workload.requests:
        decision = engine.decide(request.acp)
        result = cedarpy.is_authorized(request.cedar, policy_set, entities)
        if result.diagnostics.errors:
            raise RuntimeError(f"cedar evaluation errors: {result.diagnostics.errors}")
        acp_allows = decision.effect is Effect.ALLOW
        allowed += acp_allows
        if acp_allows != result.allowed:
            mismatches.append(Mismatch(request, decision.effect.value, result.decision.name))
    return mismatches, allowed


# ---------------------------------------------------------------------------- timing


def _time_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs, in milliseconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e6


@dataclass
class Timed:
    """One engine's call, its inputs and how many calls to time."""

    call: Callable[[Any], object]
    inputs: Sequence[Any]
    iterations: int
    timings: list[int] = field(default_factory=list)


def time_interleaved(engines: Sequence[Timed], rounds: int = ROUNDS) -> None:
    """Per-call latencies in ns, into each :attr:`Timed.timings`.

    Every engine is warmed up, then the engines take turns in ``rounds`` rounds, each
    timing its share of calls one by one, so that load from elsewhere on the machine
    falls on both alike. The garbage collector stays enabled, as in a real process.
    """
    for engine in engines:
        n = len(engine.inputs)
        for i in range(min(2_000, max(100, engine.iterations // 5))):
            engine.call(engine.inputs[i % n])
    clock = time.perf_counter_ns
    for round_ in range(rounds):
        for engine in engines:
            call, inputs, n = engine.call, engine.inputs, len(engine.inputs)
            first = engine.iterations * round_ // rounds
            last = engine.iterations * (round_ + 1) // rounds
            gc.collect()
            timings = [0] * (last - first)
            for j, i in enumerate(range(first, last)):
                item = inputs[i % n]
                start = clock()
                call(item)
                timings[j] = clock() - start
            engine.timings.extend(timings)


def percentile(values: Sequence[int], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


@dataclass(frozen=True)
class SizeResult:
    size: int
    validate_ms: float
    engine_ms: float
    acp_p50_us: float
    acp_p99_us: float
    acp_calls: int
    acp_candidates: float
    acp_allowed_p50_us: float
    acp_denied_p50_us: float
    cedar_parse_ms: float
    cedar_entities_ms: float
    cedar_p50_us: float
    cedar_p99_us: float
    cedar_calls: int
    requests: int
    allowed: int
    policy_bytes: int
    cedar_bytes: int

    @property
    def acp_compile_ms(self) -> float:
        return self.validate_ms + self.engine_ms

    @property
    def ratio(self) -> float:
        return self.cedar_p50_us / self.acp_p50_us


def run_size(size: int, iterations: tuple[int, int], log: Callable[[str], None]) -> SizeResult:
    import cedarpy

    workload = build_workload(size)
    repeat = 5 if size <= 1_000 else 3
    validate_ms = _time_ms(lambda: PolicyFile.model_validate_json(workload.policy_json), repeat)
    policy = PolicyFile.model_validate_json(workload.policy_json)
    engine_ms = _time_ms(lambda: AcpPolicyEngine(policy), repeat)
    cedar_parse_ms = _time_ms(lambda: cedarpy.PolicySet.from_str(workload.cedar_text), repeat)
    cedar_entities_ms = _time_ms(
        lambda: cedarpy.Entities.from_json_str(workload.cedar_entities_json), repeat
    )
    engine = acp_engine(workload)
    policy_set, entities = cedar_handles(workload)

    mismatches, allowed = check_equivalence(workload, engine, policy_set, entities)
    if mismatches:
        for m in mismatches[:10]:
            r = m.request
            log(f"  MISMATCH {r.kind} {r.user} {r.tool} {r.path}: acp={m.acp} cedar={m.cedar}")
        raise SystemExit(f"{size} rules: {len(mismatches)} decisions differ between engines")
    n = len(workload.requests)
    log(f"  {size} rules: engines agree on all {n} requests ({allowed} allowed)")

    acp_n, cedar_n = iterations
    acp = Timed(engine.decide, [r.acp for r in workload.requests], acp_n)
    cedar = Timed(
        lambda req: cedarpy.is_authorized(req, policy_set, entities),
        [r.cedar for r in workload.requests],
        cedar_n,
    )
    time_interleaved([acp, cedar])
    acp_times, cedar_times = acp.timings, cedar.timings
    # diagnostics, outside the timed loop: how many rules the acp index leaves to test,
    # and the latency of allowed and denied requests apart (allows build an explanation)
    compiled = compile_policy(policy)
    candidates = statistics.mean(
        len(compiled.candidates(RequestView(r.acp))) for r in workload.requests
    )
    allows = [engine.decide(r.acp).effect is Effect.ALLOW for r in workload.requests]
    acp_allowed = [t for i, t in enumerate(acp_times) if allows[i % n]]
    acp_denied = [t for i, t in enumerate(acp_times) if not allows[i % n]]
    return SizeResult(
        size=size,
        validate_ms=validate_ms,
        engine_ms=engine_ms,
        acp_p50_us=percentile(acp_times, 50) / 1e3,
        acp_p99_us=percentile(acp_times, 99) / 1e3,
        acp_calls=acp_n,
        acp_candidates=candidates,
        acp_allowed_p50_us=percentile(acp_allowed, 50) / 1e3,
        acp_denied_p50_us=percentile(acp_denied, 50) / 1e3,
        cedar_parse_ms=cedar_parse_ms,
        cedar_entities_ms=cedar_entities_ms,
        cedar_p50_us=percentile(cedar_times, 50) / 1e3,
        cedar_p99_us=percentile(cedar_times, 99) / 1e3,
        cedar_calls=cedar_n,
        requests=n,
        allowed=allowed,
        policy_bytes=len(workload.policy_json.encode()),
        cedar_bytes=len(workload.cedar_text.encode()),
    )


# ---------------------------------------------------------------------------- report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cedar = metadata.version("cedarpy")
    except metadata.PackageNotFoundError:
        cedar = "not installed"
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.release()}, "
        f"cedarpy {cedar}"
    )


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: Sequence[SizeResult]) -> str:
    lines = [
        "| rules | acp compile ms | acp p50 µs | acp p99 µs | cedarpy parse ms "
        "| cedarpy p50 µs | cedarpy p99 µs | cedarpy/acp p50 ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cells = (
            f"{r.size:,}",
            _num(r.acp_compile_ms),
            _num(r.acp_p50_us),
            _num(r.acp_p99_us),
            _num(r.cedar_parse_ms),
            _num(r.cedar_p50_us),
            _num(r.cedar_p99_us),
            f"{r.ratio:.1f}x",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details(results: Sequence[SizeResult]) -> str:
    lines = [
        "| rules | acp validate ms | acp engine ms | cedarpy entities ms | acp calls "
        "| cedarpy calls | distinct requests | allowed | acp candidate rules per decision "
        "| acp p50 allowed / denied µs | acp JSON KiB | Cedar text KiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cells = (
            f"{r.size:,}",
            _num(r.validate_ms),
            _num(r.engine_ms),
            _num(r.cedar_entities_ms),
            f"{r.acp_calls:,}",
            f"{r.cedar_calls:,}",
            f"{r.requests:,}",
            f"{r.allowed:,} ({100 * r.allowed / r.requests:.0f}%)",
            f"{r.acp_candidates:.1f}",
            f"{_num(r.acp_allowed_p50_us)} / {_num(r.acp_denied_p50_us)}",
            f"{r.policy_bytes / 1024:,.0f}",
            f"{r.cedar_bytes / 1024:,.0f}",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: Sequence[SizeResult]) -> list[str]:
    """The issue's targets, each reported as met, not met, or not measured in this run."""
    by_size = {r.size: r for r in results}
    checks: list[tuple[int, str, Callable[[SizeResult], float], float, str]] = [
        (100, "acp p50 <= 20 µs at 100 rules", lambda r: r.acp_p50_us, 20.0, "<="),
        (10_000, "acp p50 <= 50 µs at 10,000 rules", lambda r: r.acp_p50_us, 50.0, "<="),
        (100, "cedarpy/acp p50 >= 10x at 100 rules", lambda r: r.ratio, 10.0, ">="),
        (1_000, "cedarpy/acp p50 >= 50x at 1,000 rules", lambda r: r.ratio, 50.0, ">="),
    ]
    out = []
    for size, label, get, limit, op in checks:
        result = by_size.get(size)
        if result is None:
            out.append(f"- {label}: not measured in this run")
            continue
        value = get(result)
        ok = value <= limit if op == "<=" else value >= limit
        shown = f"{value:.1f}x" if op == ">=" else f"{value:.1f} µs"
        out.append(f"- {label}: {'met' if ok else 'NOT met'} ({shown})")
    return out


def report(results: Sequence[SizeResult], machine_line: str, when: str) -> str:
    return "\n".join(
        [
            "# Policy decision benchmark",
            "",
            f"Machine: {machine_line}  ",
            f"Date: {when}  ",
            f"Command: `python bench/policy_bench.py` (seed {SEED})",
            "",
            table(results),
            "",
            "Targets:",
            "",
            *targets(results),
            "",
            "Details (compile = validate + engine; per-call timings use time.perf_counter_ns):",
            "",
            details(results),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 rules, fewer calls")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"write the report here (default: {RESULTS} for a full run, nowhere for --quick)",
    )
    args = parser.parse_args(argv)
    try:
        import cedarpy  # noqa: F401
    except ImportError:
        print("cedarpy is not installed: pip install -r bench/requirements.txt", file=sys.stderr)
        return 2

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    machine_line = machine()
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    log(f"machine: {machine_line}")
    sizes = QUICK_SIZES if args.quick else SIZES
    results = []
    for size in sizes:
        iterations = QUICK_ITERATIONS if args.quick else ITERATIONS[size]
        started = time.perf_counter()
        results.append(run_size(size, iterations, log))
        log(f"  {size} rules done in {time.perf_counter() - started:.1f} s")
    text = report(results, machine_line, when)
    print(text)
    output = args.output if args.output is not None else (None if args.quick else RESULTS)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        log(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
