"""Properties over generated policies and requests, and the differential test.

One Hypothesis test checks, on each of 10,000 generated policy/request pairs: default deny,
deny-overrides,
rule-order independence, determinism, and agreement with the naive reference evaluator in
``naive_policy.py`` (no index, no regexes). A second one feeds arbitrary text (totality).
``PROPERTY_EXAMPLES`` lowers the count for quick local runs.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive_policy import naive_decide
from policy_helpers import make_request

from mcp_acp.models import Effect, PostureStatus, Provenance, Subject
from mcp_acp.policy.engine import AcpPolicyEngine
from mcp_acp.policy.model import FIELD_ATTRIBUTES, PolicyFile

CASES = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "10000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TOOLS = [
    "read_file",
    "write_file",
    "move_file",
    "run_command",
    "fetch",
    "frobnicate",
    "git_status",
    "delete_entities",
    "Read_File",
    "list_directory",
]
TOOL_GLOBS = [*TOOLS, "read_*", "*_file", "git_*", "*", "*e*", "READ_FILE", "?etch", "run*"]
METHODS = [
    "tools/call",
    "tools/call",
    "tools/call",
    "resources/read",
    "prompts/get",
    "tools/list",
    "ping",
    "sampling/createMessage",
    "notifications/progress",
]
METHOD_GLOBS = [*METHODS, "tools/*", "*/list", "resources/*", "**", "*"]
PATHS = [
    "/srv/a/x.txt",
    "/srv/a/secrets/k.pem",
    "/srv/b",
    "/etc/passwd",
    "/srv",
    "/SRV/A/x",
    "/srv/a/../b",
    "relative/x",
    "/srv/protected/c",
    "/SRV/Protected/c",
    "/srv/a/Secrets/K.PEM",
    "/srv/a/.env",
]
PATH_GLOBS = [
    "/srv/**",
    "/srv/*",
    "/srv/a/**",
    "**/secrets/**",
    "/etc/**",
    "/**",
    "/srv/a/*.txt",
    "**/*.pem",
    "/srv/a/?.txt",
    "**",
    "/srv/**/k.pem",
]
URI_GLOBS = [
    "file:///srv/**",
    "file:///srv/a/*",
    "file:///etc/**",
    "https://h/**",
    "https://h/a",
    "HTTPS://H:443/a/**",
    "memo://n/*",
    "**",
]
OPS = ["read", "write", "delete", "execute"]
EFFECTS = ["read", "fs_read", "fs_write", "code_exec", "network_egress"]
PROTECTED = ("/srv/protected",)


def some(values: list[str], max_size: int = 3) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), max_size=max_size, unique=True)


conditions = st.fixed_dictionaries(
    {},
    optional={
        "mcp_method": some(METHOD_GLOBS),
        "tool_name": some(TOOL_GLOBS),
        "operations": some(OPS),
        "side_effects": some(EFFECTS),
        "path_pattern": some(PATH_GLOBS),
        "source_path": some(PATH_GLOBS, 2),
        "dest_path": some(PATH_GLOBS, 2),
        "extension": some(["txt", ".pem", "PEM", "md", ".env"]),
        "scheme": some(["file", "HTTPS", "memo"], 2),
        "uri": some(URI_GLOBS),
        "resource_type": some(["tool", "resource", "prompt", "server"], 2),
        "backend_id": some(["fs", "f*", "git"], 2),
        "backend_identity": some(
            [
                "DNS:notes.internal",
                "dns:NOTES.internal",
                "DNS:*.internal",
                "DNS:**.internal",
                "DNS:key.internal",
                "URI:spiffe://x/**",
                "URI:spiffe://x/a/*",
                "IP:10.0.0.7",
            ],
            2,
        ),
        "subject_id": some(["alice", "bob", "a*"], 2),
        "scopes": some(["s1", "s2", "s3"]),
        "scopes_all": some(["s1", "s2", "s3"]),
        "groups": some(["g1", "g2"], 2),
        "mcp_client_name": some(["claude-ai", "cursor", "claude-*"], 2),
        "posture": some(["disk", "sip"], 2),
    },
).filter(bool)


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    effect = draw(st.sampled_from(["allow", "deny", "ask", "hitl"]))
    cond = draw(conditions)
    if effect != "deny" and draw(st.booleans()):
        keys = sorted({*cond, *(FIELD_ATTRIBUTES[f].split(".")[0] for f in cond)})
        chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True))
        levels = st.sampled_from(["token", "mtls", "config", "request", "derived", "client_hint"])
        cond["min_provenance"] = {key: draw(levels) for key in chosen}
    return {"effect": effect, "conditions": cond}


@st.composite
def policies(draw: st.DrawFn) -> PolicyFile:
    drawn = draw(st.lists(rules(), max_size=8))
    for index, rule in enumerate(drawn):
        rule["id"] = f"r{index}"
    return PolicyFile.model_validate({"version": "1", "rules": drawn})


@st.composite
def requests(draw: st.DrawFn) -> Any:
    method = draw(st.sampled_from(METHODS))
    tool = draw(st.sampled_from(TOOLS))
    args: dict[str, Any] = {}
    for name in draw(some(["path", "paths", "source", "destination", "cwd"], 3)):
        args[name] = draw(st.sampled_from(PATHS)) if name != "paths" else draw(some(PATHS))
    params: dict[str, Any] = {}
    if method == "tools/call":
        params = {"name": tool, "arguments": args}
    elif method == "resources/read":
        params = {
            "uri": draw(
                st.sampled_from(
                    [
                        "file:///srv/a/x.txt",
                        "https://h/a",
                        "file:///etc/passwd",
                        "file:///srv/a/%2e%2e",
                        "file://localhost/srv//a/x.txt",
                        "FILE:/ETC/passwd",
                        "https://H:443/%61/b?q",
                        "https://h/a/../b",
                        "https://h/A#x",
                        "memo://n/x",
                        "memo://N/x",
                        "notes",
                    ]
                )
            )
        }
    subject = Subject(
        subject_id=draw(st.sampled_from(["alice", "bob", "carol"])),
        provenance=draw(st.sampled_from(list(Provenance))),
        scopes=frozenset(draw(some(["s1", "s2", "s3"]))),
        groups=frozenset(draw(some(["g1", "g2"]))),
    )
    posture = {
        name: draw(st.sampled_from(list(PostureStatus))) for name in draw(some(["disk", "sip"], 2))
    }
    return make_request(
        method,
        tool,
        params=params,
        subject=subject,
        client_name=draw(st.sampled_from(["claude-ai", "Cursor", None])),
        posture=posture,
        backend_id=draw(st.sampled_from(["fs", "git"])),
        backend_identity=draw(
            st.sampled_from(
                [
                    (),
                    ("DNS:notes.internal", "IP:10.0.0.7"),
                    ("DNS:a.b.internal",),
                    ("DNS:internal",),
                    ("DNS:\u212aey.internal",),  # KELVIN SIGN: 'key' only to deny rules
                    ("URI:spiffe://x/a/b",),
                    ("URI:SPIFFE://X/a/b", "DNS:*.internal"),
                    ("IP:10.0.0.8",),
                ]
            )
        ),
        annotations=draw(
            st.sampled_from([None, {"destructiveHint": True}, {"readOnlyHint": True}])
        ),
        resolve=False,
    )


def engine(policy: PolicyFile) -> AcpPolicyEngine:
    return AcpPolicyEngine(policy, protected=[Path(p) for p in PROTECTED])


@CASES
@given(policies(), requests(), st.randoms(use_true_random=False))
def test_properties_and_agreement_with_the_naive_evaluator(
    policy: PolicyFile, request: Any, rnd: random.Random
) -> None:
    decision = engine(policy).decide(request)
    matched_ids = {m.rule_id for m in decision.matched}
    effects = {m.effect for m in decision.matched}

    # differential: the indexed, compiled engine equals a loop over every rule
    expected_effect, expected_matched = naive_decide(policy, request, PROTECTED)
    assert decision.effect is expected_effect, decision.reason
    assert matched_ids == expected_matched

    # default deny: allow or ask only ever comes from a matching rule (or is discovery)
    if decision.effect is not Effect.DENY and decision.rule_id != "discovery":
        assert decision.rule_id in matched_ids
    if not decision.matched and decision.rule_id != "discovery":
        assert decision.effect is Effect.DENY
    # deny overrides ask overrides allow
    if Effect.DENY in effects:
        assert decision.effect is Effect.DENY
    elif Effect.ASK in effects:
        assert decision.effect is Effect.ASK
    # determinism
    again = engine(policy).decide(request)
    assert (again.effect, again.rule_id, again.matched, again.reason) == (
        decision.effect,
        decision.rule_id,
        decision.matched,
        decision.reason,
    )
    # rule-order independence
    shuffled = list(policy.rules)
    rnd.shuffle(shuffled)
    reordered = engine(policy.model_copy(update={"rules": shuffled})).decide(request)
    assert reordered.effect is decision.effect
    assert set(reordered.matched) == set(decision.matched)


#: Fixed policies for the totality test, together using every kind of condition.
FIXED_POLICIES = [
    PolicyFile.model_validate(
        {
            "rules": [
                {
                    "effect": "allow",
                    "conditions": {
                        "tool_name": "read_*",
                        "path_pattern": "/srv/**",
                        "operations": "read",
                        "min_provenance": {"action": "derived", "resource": "request"},
                    },
                },
                {
                    "effect": "deny",
                    "conditions": {"path_pattern": "**/secrets/**", "extension": "pem"},
                },
                {
                    "effect": "ask",
                    "conditions": {
                        "source_path": "/srv/**",
                        "dest_path": "/tmp/**",
                        "side_effects": ["fs_write"],
                    },
                },
                {
                    "effect": "allow",
                    "conditions": {
                        "mcp_method": "resources/*",
                        "scheme": "file",
                        "uri": "file:///srv/**",
                        "resource_type": "resource",
                    },
                },
                {"effect": "deny", "conditions": {"tool_name": "*exec*", "groups": "contractors"}},
                {
                    "effect": "allow",
                    "conditions": {
                        "subject_id": "a*",
                        "issuer": "https://idp",
                        "audience": "aud",
                        "client_id": "c",
                        "scopes": "s1",
                        "scopes_all": ["s1", "s2"],
                        "roles": "r",
                        "backend_id": "fs",
                        "mcp_client_name": "claude*",
                        "mcp_client_version": "1.*",
                        "posture": "disk",
                        "time": {
                            "days": ["mon"],
                            "start": "22:00",
                            "end": "06:00",
                            "timezone": "Asia/Tokyo",
                        },
                    },
                },
            ]
        }
    ),
    PolicyFile.model_validate({"rules": [{"effect": "allow", "conditions": {"tool_name": "*"}}]}),
]
ENGINES = [engine(p) for p in FIXED_POLICIES]


@CASES
@given(
    st.sampled_from(ENGINES),
    st.text(max_size=40),
    st.dictionaries(
        st.sampled_from(["path", "paths", "source", "destination", "cwd", "x"]),
        st.one_of(st.text(max_size=30), st.integers(), st.none(), st.lists(st.text(max_size=10))),
        max_size=4,
    ),
    st.sampled_from(METHODS),
    st.text(max_size=30),
)
def test_totality_on_arbitrary_input(
    subject: AcpPolicyEngine, name: str, args: dict[str, Any], method: str, uri: str
) -> None:
    params = {"name": name, "arguments": args} if method == "tools/call" else {"uri": uri}
    request = make_request(method, params=params, resolve=False)
    decision = subject.decide(request)
    assert decision.rule_id != "builtin-engine-error", decision.reason
    assert decision.effect in (Effect.ALLOW, Effect.DENY, Effect.ASK)
