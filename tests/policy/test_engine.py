"""The acp engine: each condition, combining, built-in protections, explanations, reload."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from policy_helpers import REGISTRY, make_engine, make_request

from mcp_acp.models import Effect, PostureStatus, Provenance, Subject
from mcp_acp.policy.compile import Check
from mcp_acp.policy.engine import AcpConfig, AcpPolicyEngine
from mcp_acp.policy.model import PolicyFile
from mcp_acp.policy.protected import protected_overlap
from mcp_acp.registry import PluginContext


def rule(effect: str, rule_id: str | None = None, **conditions: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"effect": effect, "conditions": conditions}
    if rule_id:
        out["id"] = rule_id
    return out


def effect_of(engine: AcpPolicyEngine, **request: Any) -> Effect:
    return engine.decide(make_request(**request)).effect


# ---------------------------------------------------------------- conditions


def test_tool_name_globs_ignore_case() -> None:
    engine = make_engine(rule("allow", tool_name="read_*"))
    assert effect_of(engine, tool="READ_FILE") is Effect.ALLOW
    assert effect_of(engine, tool="write_file") is Effect.DENY


@pytest.mark.parametrize(
    ("pattern", "look_alike"),
    [
        ("read_file", "read_f\u0131le"),  # dotless i: re.IGNORECASE folds it to 'i'
        ("read_file", "READ_F\u0130LE"),  # dotted capital I
        ("kill_*", "\u212aill_all"),  # KELVIN SIGN K
        ("list_*", "li\u017ft_secrets"),  # LONG S
    ],
)
def test_allow_rules_and_the_registry_fold_ascii_case_only(pattern: str, look_alike: str) -> None:
    """A non-ASCII look-alike is another tool: an allow rule for ``read_file`` does not
    allow it with a dotless i (U+0131), and the registry does not give it read_file's facts."""
    engine = make_engine(
        rule("allow", "named", tool_name=pattern), rule("allow", "fs", side_effects="fs_read")
    )
    decision = engine.decide(make_request(tool=look_alike))
    assert decision.effect is Effect.DENY, decision.reason
    assert not decision.matched
    facts = REGISTRY.facts(look_alike)  # at most what its ASCII words suggest (heuristics)
    assert not facts.source.startswith("registry"), facts.source
    assert not facts.side_effects
    assert effect_of(engine, tool=pattern.replace("*", "x").upper()) is Effect.ALLOW
    # deny rules fold all they can (Unicode case and compatibility forms; the İ of
    # 'READ_FİLE' folds to 'i' plus a combining dot, which no fold removes)
    deny = make_engine(rule("allow", tool_name="*"), rule("deny", "no", tool_name=pattern))
    denied = deny.decide(make_request(tool=look_alike)).rule_id == "no"
    assert denied is ("\u0130" not in look_alike)


def test_method_globs_are_case_sensitive_and_segment_bound() -> None:
    engine = make_engine(rule("allow", mcp_method="resources/*"))
    assert (
        effect_of(engine, method="resources/read", tool=None, params={"uri": "https://x/y"})
        is Effect.ALLOW
    )
    assert effect_of(engine, method="Resources/read", tool=None) is Effect.DENY
    assert effect_of(engine, method="resources/templates/read", tool=None) is Effect.DENY


def test_list_means_any_of_and_empty_list_never_matches() -> None:
    engine = make_engine(rule("allow", tool_name=["read_file", "list_directory"]))
    assert effect_of(engine, tool="list_directory") is Effect.ALLOW
    never = make_engine(rule("allow", tool_name=[]))
    assert effect_of(never, tool="read_file") is Effect.DENY


def test_conditions_and_together() -> None:
    engine = make_engine(rule("allow", tool_name="read_file", subject_id="alice"))
    assert effect_of(engine, subject_id="alice") is Effect.ALLOW
    assert effect_of(engine, subject_id="bob") is Effect.DENY


def test_operations_allow_needs_every_operation_listed() -> None:
    engine = make_engine(rule("allow", operations="read"))
    assert effect_of(engine, tool="read_file") is Effect.ALLOW
    assert effect_of(engine, tool="move_file") is Effect.DENY  # write + delete
    assert effect_of(engine, tool="frobnicate") is Effect.DENY  # unknown never matches
    deny = make_engine(rule("allow", tool_name="*"), rule("deny", operations="delete"))
    assert effect_of(deny, tool="move_file") is Effect.DENY  # deny: any operation
    assert effect_of(deny, tool="frobnicate") is Effect.ALLOW


def test_annotations_raise_risk_but_never_lower_it() -> None:
    engine = make_engine(rule("allow", operations="read"))
    assert effect_of(engine, tool="read_file", annotations={"destructiveHint": True}) is Effect.DENY
    assert (
        effect_of(engine, tool="delete_entities", annotations={"readOnlyHint": True}) is Effect.DENY
    )
    facts = make_request(tool="delete_all", annotations={"readOnlyHint": True}).action
    assert facts.operations == frozenset({"delete"})


def test_side_effects_never_match_when_unknown() -> None:
    engine = make_engine(rule("allow", side_effects=["fs_read"]))
    assert effect_of(engine, tool="read_file") is Effect.ALLOW
    assert effect_of(engine, tool="fetch") is Effect.DENY  # network_egress


def test_source_and_dest_both_need_checking() -> None:
    source_only = make_engine(rule("allow", source_path="/srv/in/**"))
    move = {"source": "/srv/in/a", "destination": "/etc/cron.d/x"}
    assert effect_of(source_only, tool="move_file", arguments=move) is Effect.DENY
    both = make_engine(rule("allow", source_path="/srv/in/**", dest_path="/srv/out/**"))
    assert effect_of(both, tool="move_file", arguments=move) is Effect.DENY
    good = {"source": "/srv/in/a", "destination": "/srv/out/a"}
    assert effect_of(both, tool="move_file", arguments=good) is Effect.ALLOW
    anywhere = make_engine(rule("allow", path_pattern="/srv/**"))
    assert effect_of(anywhere, tool="move_file", arguments=good) is Effect.ALLOW
    assert effect_of(anywhere, tool="move_file", arguments=move) is Effect.DENY
    deny_dest = make_engine(rule("allow", path_pattern="/**"), rule("deny", dest_path="/etc/**"))
    assert effect_of(deny_dest, tool="move_file", arguments=move) is Effect.DENY
    assert effect_of(deny_dest, tool="move_file", arguments=good) is Effect.ALLOW


def test_path_condition_needs_a_path() -> None:
    engine = make_engine(rule("allow", path_pattern="/**"))
    assert effect_of(engine, tool="list_allowed_directories") is Effect.DENY


def test_extension() -> None:
    engine = make_engine(rule("allow", extension=[".md", "TXT"]))
    assert effect_of(engine, arguments={"path": "/a/readme.MD"}) is Effect.ALLOW
    assert effect_of(engine, arguments={"path": "/a/notes.txt"}) is Effect.ALLOW
    assert effect_of(engine, arguments={"path": "/a/key.pem"}) is Effect.DENY
    assert effect_of(engine, arguments={"path": "/a/Makefile"}) is Effect.DENY
    deny = make_engine(rule("allow", path_pattern="/**"), rule("deny", extension="pem"))
    assert (
        effect_of(
            deny, tool="read_multiple_files", arguments={"paths": ["/a/ok.txt", "/a/key.PEM"]}
        )
        is Effect.DENY
    )


def test_a_deny_rule_on_an_extension_stops_the_dotfile_of_that_name() -> None:
    """``"extension": ".env"`` — "with or without the dot" — read as the extension of
    ``prod.env`` only: ``.env`` itself has none (as Python's ``splitext`` and Node's
    ``extname`` say), so the deny rule let the file it names through. A deny rule now also
    takes a dotfile's name for its extension; an allow rule still never matches one."""
    deny = make_engine(rule("allow", path_pattern="/**"), rule("deny", extension=".env"))
    for path in ("/app/.env", "/app/.ENV", "/app/prod.env"):
        assert effect_of(deny, arguments={"path": path}) is Effect.DENY, path
    for path in ("/app/.env.local", "/app/.envrc", "/app/env"):
        assert effect_of(deny, arguments={"path": path}) is Effect.ALLOW, path
    allow = make_engine(rule("allow", extension="env"))
    assert effect_of(allow, arguments={"path": "/app/prod.env"}) is Effect.ALLOW
    assert effect_of(allow, arguments={"path": "/app/.env"}) is Effect.DENY


def test_uri_and_scheme() -> None:
    engine = make_engine(rule("allow", scheme="https", uri="https://docs.example/a/**"))

    def read(uri: str) -> Effect:
        return effect_of(engine, method="resources/read", tool=None, params={"uri": uri})

    assert read("https://docs.example/a/b") is Effect.ALLOW
    assert read("HTTPS://Docs.Example/a/b") is Effect.ALLOW  # scheme and host ignore case
    assert read("https://docs.example/A/b") is Effect.DENY  # the path does not
    assert read("http://docs.example/a") is Effect.DENY


def test_backend_and_resource_type() -> None:
    engine = make_engine(rule("allow", backend_id="fs-*", resource_type="tool"))
    assert effect_of(engine, backend_id="fs-home") is Effect.ALLOW
    assert effect_of(engine, backend_id="git") is Effect.DENY
    assert (
        effect_of(
            engine, backend_id="fs-home", method="prompts/get", tool=None, params={"name": "x"}
        )
        is Effect.DENY
    )


def test_subject_claims() -> None:
    engine = make_engine(
        rule(
            "allow",
            issuer="https://idp.test",
            audience="urn:mcp-acp:proxy",
            client_id="mcp-acp-cli",
            scopes=["mcp:tools", "admin"],
            groups="eng",
            roles=["reader"],
        )
    )
    good = {
        "issuer": "https://idp.test",
        "audience": ("urn:mcp-acp:proxy",),
        "client_id": "mcp-acp-cli",
        "scopes": frozenset({"mcp:tools"}),
        "groups": frozenset({"eng", "ops"}),
        "roles": frozenset({"reader"}),
    }
    assert effect_of(engine, **good) is Effect.ALLOW
    for key, bad in (
        ("issuer", "https://idp.test/"),
        ("audience", ("other",)),
        ("client_id", "x"),
        ("scopes", frozenset({"*"})),
        ("groups", frozenset()),
        ("roles", frozenset({"writer"})),
    ):
        assert effect_of(engine, **{**good, key: bad}) is Effect.DENY, key


def test_scopes_all_needs_every_scope() -> None:
    engine = make_engine(rule("allow", scopes_all=["mcp:tools", "mcp:write"]))
    assert effect_of(engine, scopes=frozenset({"mcp:tools", "mcp:write", "x"})) is Effect.ALLOW
    assert effect_of(engine, scopes=frozenset({"mcp:tools"})) is Effect.DENY


def test_client_name_and_version() -> None:
    engine = make_engine(rule("allow", mcp_client_name="claude-*", mcp_client_version="1.*"))
    assert effect_of(engine, client_name="Claude-AI", client_version="1.2") is Effect.ALLOW
    assert effect_of(engine, client_name="cursor", client_version="1.2") is Effect.DENY
    assert effect_of(engine, client_name="claude-ai", client_version="2.0") is Effect.DENY
    assert effect_of(engine, client_name=None) is Effect.DENY


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2026, 11, 25, 8, 0, tzinfo=UTC), Effect.ALLOW),  # Wed 09:00 Vienna
        (datetime(2026, 11, 25, 7, 59, tzinfo=UTC), Effect.DENY),  # Wed 08:59 Vienna
        (datetime(2026, 11, 25, 16, 30, tzinfo=UTC), Effect.ALLOW),  # Wed 17:30 Vienna
        (datetime(2026, 11, 25, 16, 30, 59, tzinfo=UTC), Effect.ALLOW),  # all of 17:30
        (datetime(2026, 11, 25, 16, 31, tzinfo=UTC), Effect.DENY),
        (datetime(2026, 11, 28, 10, 0, tzinfo=UTC), Effect.DENY),  # Saturday
    ],
)
def test_time_window_in_its_time_zone(when: datetime, expected: Effect) -> None:
    engine = make_engine(
        rule(
            "allow",
            tool_name="*",
            time={
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "start": "09:00",
                "end": "17:30",
                "timezone": "Europe/Vienna",
            },
        )
    )
    assert effect_of(engine, now=when) is expected


def test_time_window_across_midnight() -> None:
    engine = make_engine(
        rule("allow", tool_name="*", time={"days": ["fri"], "start": "22:00", "end": "02:00"})
    )
    assert effect_of(engine, now=datetime(2026, 11, 27, 23, 0, tzinfo=UTC)) is Effect.ALLOW
    assert effect_of(engine, now=datetime(2026, 11, 28, 1, 0, tzinfo=UTC)) is Effect.ALLOW
    assert effect_of(engine, now=datetime(2026, 11, 28, 3, 0, tzinfo=UTC)) is Effect.DENY
    assert effect_of(engine, now=datetime(2026, 11, 27, 1, 0, tzinfo=UTC)) is Effect.DENY


def test_an_end_in_whole_minutes_covers_the_whole_minute() -> None:
    """Before, "end": "23:59" stopped at 23:59:00: a deny rule for the whole day (or two
    windows meant to meet, "00:00"-"08:59" and "09:00"-...) left 59 seconds uncovered, where
    the request fell through to the rules below. An end with seconds is kept to the second."""
    whole_day = make_engine(
        rule("allow", tool_name="*"),
        rule("deny", tool_name="*", time={"start": "00:00", "end": "23:59"}),
    )
    for second in (0, 30, 59):
        when = datetime(2026, 11, 27, 23, 59, second, tzinfo=UTC)
        assert effect_of(whole_day, now=when) is Effect.DENY, second
    to_the_second = make_engine(
        rule("deny", tool_name="*", time={"start": "09:00", "end": "17:30:10"}),
        rule("allow", tool_name="*"),
    )
    when = datetime(2026, 11, 27, 17, 30, 10, tzinfo=UTC)
    assert effect_of(to_the_second, now=when) is Effect.DENY
    assert effect_of(to_the_second, now=when.replace(second=11)) is Effect.ALLOW
    night = make_engine(
        rule("deny", tool_name="*", time={"days": ["fri"], "start": "22:00", "end": "06:00"}),
        rule("allow", tool_name="*"),
    )
    saturday_6 = datetime(2026, 11, 28, 6, 0, 59, tzinfo=UTC)
    assert effect_of(night, now=saturday_6) is Effect.DENY
    assert effect_of(night, now=saturday_6.replace(minute=1, second=0)) is Effect.ALLOW


def test_posture_requires_every_named_check_passing() -> None:
    engine = make_engine(rule("allow", tool_name="*", posture=["disk-encryption", "sip"]))
    both = {"disk-encryption": PostureStatus.PASS, "sip": PostureStatus.PASS}
    assert effect_of(engine, posture=both) is Effect.ALLOW
    for status in (PostureStatus.FAIL, PostureStatus.UNKNOWN):
        assert effect_of(engine, posture={**both, "sip": status}) is Effect.DENY
    assert effect_of(engine, posture={"disk-encryption": PostureStatus.PASS}) is Effect.DENY


def test_min_provenance_refuses_weak_attributes() -> None:
    engine = make_engine(
        rule(
            "allow", subject_id="alice", tool_name="read_file", min_provenance={"subject": "token"}
        )
    )
    assert effect_of(engine, subject_provenance=Provenance.TOKEN) is Effect.ALLOW
    assert effect_of(engine, subject_provenance=Provenance.CONFIG) is Effect.DENY
    by_client = make_engine(
        rule("allow", mcp_client_name="claude-ai", min_provenance={"mcp_client_name": "request"})
    )
    assert by_client.decide(make_request()).effect is Effect.DENY
    trace = by_client.trace(make_request())
    assert (
        "environment.mcp_client_name (client_hint) below the required request"
        in trace[0].details[0]
    )
    derived_ops = make_engine(
        rule("allow", operations="read", min_provenance={"operations": "derived"})
    )
    assert effect_of(derived_ops, tool="read_file") is Effect.ALLOW


@pytest.mark.parametrize(
    ("min_provenance", "message"),
    [
        ({"subject": "token"}, "the rule tests no such attribute"),
        ({"colour": "token"}, "neither a condition field"),
        ("token", "valid dictionary"),
    ],
)
def test_min_provenance_must_name_what_the_rule_tests(min_provenance: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicyFile.model_validate(
            {"rules": [rule("allow", tool_name="x", min_provenance=min_provenance)]}
        )


def test_min_provenance_is_refused_on_deny_rules() -> None:
    with pytest.raises(ValueError, match="deny rules match on any evidence"):
        PolicyFile.model_validate(
            {"rules": [rule("deny", tool_name="x", min_provenance={"tool_name": "request"})]}
        )


# ---------------------------------------------------------------- combining


def test_deny_overrides_ask_overrides_allow() -> None:
    allow, ask, deny = (
        rule("allow", "a", tool_name="*"),
        rule("ask", "b", tool_name="*"),
        rule("deny", "c", tool_name="read_*"),
    )
    assert make_engine(allow, ask, deny).decide(make_request()).rule_id == "c"
    assert make_engine(deny, ask, allow).decide(make_request()).effect is Effect.DENY
    decision = make_engine(allow, ask).decide(make_request())
    assert (decision.effect, decision.rule_id) == (Effect.ASK, "b")
    assert [(m.rule_id, m.effect) for m in decision.matched] == [
        ("a", Effect.ALLOW),
        ("b", Effect.ASK),
    ]


def test_no_match_is_deny_with_a_readable_reason() -> None:
    decision = make_engine(rule("allow", tool_name="list_*")).decide(make_request())
    assert decision.effect is Effect.DENY
    assert decision.rule_id is None
    assert decision.reason == "denied by default: no rule matched tools/call read_file"


def test_hitl_alias_decides_ask() -> None:
    engine = make_engine({"effect": "hitl", "conditions": {"tool_name": "read_file"}})
    assert effect_of(engine) is Effect.ASK


def test_explanation_names_rule_and_evidence() -> None:
    engine = make_engine(
        rule("allow", tool_name="*"), rule("deny", "deny-secrets", path_pattern="**/secrets/**")
    )
    decision = engine.decide(make_request(arguments={"path": "/x/secrets/a"}))
    assert decision.reason == "denied by rule deny-secrets: path /x/secrets/a matches **/secrets/**"
    assert decision.policy_id.startswith("sha256:")
    assert decision.policy_version == "1"
    assert decision.eval_ns > 0
    as_json = decision.to_json()
    assert set(as_json) == {
        "effect",
        "rule",
        "matched",
        "explanation",
        "policy_id",
        "policy_version",
        "eval_us",
    }


# ---------------------------------------------------------------- built-ins


@pytest.mark.parametrize(
    "method",
    [
        "initialize",
        "ping",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "notifications/initialized",
        "server/discover",
    ],
)
def test_discovery_is_a_named_allow(method: str) -> None:
    decision = make_engine().decide(make_request(method=method, tool=None))
    assert (decision.effect, decision.rule_id) == (Effect.ALLOW, "discovery")


def test_a_deny_rule_can_still_stop_discovery() -> None:
    engine = make_engine(rule("deny", "no-listing", mcp_method="tools/list", subject_id="eve"))
    assert (
        engine.decide(make_request(method="tools/list", tool=None, subject_id="eve")).rule_id
        == "no-listing"
    )


def test_unknown_methods_are_denied_by_default() -> None:
    assert (
        make_engine(rule("allow", tool_name="*"))
        .decide(make_request(method="sampling/createMessage", tool=None))
        .effect
        is Effect.DENY
    )


def test_config_and_log_dirs_are_always_protected(tmp_path: Path) -> None:
    config_dir, log_dir = tmp_path / "cfg", tmp_path / "logs"
    config_dir.mkdir()
    log_dir.mkdir()
    (tmp_path / "cfg-link").symlink_to(config_dir)
    engine = make_engine(
        rule("allow", "everything", path_pattern="/**"), protected=(config_dir, log_dir)
    )
    for target in (
        config_dir / "policy.json",
        log_dir / "decisions.jsonl",
        log_dir,
        tmp_path / "cfg-link" / "config.json",
    ):
        decision = engine.decide(make_request(tool="write_file", arguments={"path": str(target)}))
        assert (decision.effect, decision.rule_id) == (Effect.DENY, "builtin-protected-path")
    sibling = make_request(tool="read_file", arguments={"path": f"{tmp_path}/cfg-other"})
    assert engine.decide(sibling).effect is Effect.ALLOW


def test_a_protected_path_in_another_case_is_denied_as_a_deny_rule_would(
    tmp_path: Path,
) -> None:
    """A protected path is a deny, and deny rules fold case and compatibility forms (on a
    case-insensitive file system, the default on macOS, ``.../MCP-ACP/policy.json`` opens
    the config directory's policy): the guard folds as they do, on every system."""
    config_dir, log_dir = tmp_path / "cfg" / "mcp-acp", tmp_path / "Stra\u00dfe"
    config_dir.mkdir(parents=True)
    (tmp_path / "Link").symlink_to(tmp_path / "cfg")
    engine = make_engine(
        rule("allow", "everything", path_pattern="/**"),
        rule("deny", "secrets", path_pattern="**/secrets/**"),
        protected=(config_dir, log_dir),
    )
    upper = str(config_dir).upper()
    for target in (
        upper,
        f"{upper}/policy.json",
        f"{tmp_path}/cfg/MCP-ACP/policy.json",
        f"{tmp_path}/CFG/mcp-acp",
        f"{tmp_path}/Link/MCP-ACP/x",  # where a link leads, folded too
        f"{tmp_path}/STRASSE/decisions.jsonl",  # Unicode case: '\u00df' folds to 'ss'
    ):
        decision = engine.decide(make_request(tool="read_file", arguments={"path": target}))
        assert (decision.effect, decision.rule_id) == (Effect.DENY, "builtin-protected-path"), (
            target
        )
    # exactly what a deny rule does with the same spelling
    secret = make_request(tool="read_file", arguments={"path": f"{tmp_path}/SECRETS/k"})
    assert engine.decide(secret).rule_id == "secrets"
    for sibling in (f"{tmp_path}/cfg/MCP-ACP-other", f"{tmp_path}/CFG/x"):
        decision = engine.decide(make_request(tool="read_file", arguments={"path": sibling}))
        assert decision.effect is Effect.ALLOW, sibling
    uri = make_request(
        method="resources/read", tool=None, params={"uri": f"file://{upper}/policy.json"}
    )
    assert engine.decide(uri).rule_id == "builtin-protected-path"


def test_prompt_and_completion_paths_meet_the_guard_and_the_rules(tmp_path: Path) -> None:
    """A prompt may read the file an argument names, and a completion lists the names
    that begin with the value being completed: what starts like a path there — a prompt's
    arguments, a completion's ``ref.uri`` (a ``file:`` template), ``argument.value`` and
    ``context.arguments`` — is a path, so mcp-acp's own directories stay out of reach
    and path rules apply, while text that is no path leaves the request as it was."""
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    engine = make_engine(
        rule("allow", "prompts", mcp_method="prompts/get"),
        rule("allow", "completions", mcp_method="completion/complete"),
        rule("deny", "secrets", path_pattern="**/secrets/**"),
        protected=(config_dir,),
    )

    def prompt(arguments: dict[str, Any]) -> Any:
        params = {"name": "summarise", "arguments": arguments}
        return engine.decide(make_request(method="prompts/get", tool=None, params=params))

    def complete(**params: Any) -> Any:
        request = make_request(method="completion/complete", tool=None, params=params)
        return engine.decide(request)

    policy = str(config_dir / "policy.json")
    ref = {"type": "ref/prompt", "name": "summarise"}
    argument = {"name": "file", "value": "notes"}
    denied = [
        prompt({"file": policy}),
        prompt({"style": "short", "file": f"file://{policy}"}),
        complete(
            ref={"type": "ref/resource", "uri": f"file://{config_dir}/{{name}}"}, argument=argument
        ),
        complete(ref=ref, argument={"name": "file", "value": f"{config_dir}/po"}),
        complete(ref=ref, argument=argument, context={"arguments": {"dir": str(config_dir)}}),
    ]
    assert [d.rule_id for d in denied] == ["builtin-protected-path"] * 5
    assert prompt({"file": f"{tmp_path}/secrets/k"}).rule_id == "secrets"
    assert complete(ref=ref, argument={"name": "f", "value": f"{tmp_path}/secrets/"}).rule_id == (
        "secrets"
    )
    # as in an unknown tool's arguments: a path the backend resolves itself is not guessed
    assert complete(ref=ref, argument={"name": "f", "value": "~/.c"}).rule_id == (
        "builtin-ambiguous-path"
    )
    assert prompt({"file": f"{tmp_path}/cfg/../cfg/x"}).rule_id == "builtin-ambiguous-path"
    for allowed in (
        prompt({"style": "short", "topic": "why /tmp fills up"}),
        prompt({"file": f"{tmp_path}/notes.md"}),
        complete(ref=ref, argument=argument),
        complete(ref={"type": "ref/resource", "uri": "note://{week}"}, argument=argument),
    ):
        assert allowed.effect is Effect.ALLOW, allowed
    seen = make_request(
        method="completion/complete",
        tool=None,
        params={
            "ref": ref,
            "argument": argument,
            "context": {"arguments": {"dir": "/srv/a", "n": 3}},
        },
    )
    assert [(p.argument, p.path) for p in seen.resource.paths] == [
        ("context.arguments.dir", "/srv/a")
    ]


def test_the_audit_fallback_file_is_protected_and_not_its_directory(tmp_path: Path) -> None:
    """The fallback file lives outside the log directory, maybe in a shared one (``/tmp``):
    it is protected itself, with the shutdown record written beside it, and nothing else
    there. One definition (``PluginContext.protected_dirs``) for the engine and the proxy."""
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "policy.json").write_text(
        json.dumps({"version": "1", "rules": [rule("allow", "everything", path_pattern="/**")]})
    )
    shared = tmp_path / "shared"
    context = PluginContext(
        tmp_path / "cfg" / "config.json", tmp_path / "logs", fallback_path=shared / "fb.jsonl"
    )
    assert context.protected_dirs == {
        "config directory": tmp_path / "cfg",
        "audit log directory": tmp_path / "logs",
        "audit fallback file": shared / "fb.jsonl",
        "audit fallback shutdown record": shared / "shutdowns.jsonl",
    }
    engine = AcpPolicyEngine.from_config(AcpConfig(), context)
    for target, what in (
        (shared / "fb.jsonl", "audit fallback file"),
        (f"{shared}/FB.jsonl", "audit fallback file"),
        (shared / "shutdowns.jsonl", "audit fallback shutdown record"),
    ):
        decision = engine.decide(make_request(tool="write_file", arguments={"path": str(target)}))
        assert (decision.effect, decision.rule_id) == (Effect.DENY, "builtin-protected-path")
        assert f"is mcp-acp's protected {what} " in decision.reason
    for other in (shared, shared / "notes.txt", shared / "fb.jsonl.old"):
        decision = engine.decide(make_request(tool="write_file", arguments={"path": str(other)}))
        assert decision.effect is Effect.ALLOW, other
    inside = make_request(tool="read_file", arguments={"path": str(tmp_path / "logs" / "x")})
    assert "is inside mcp-acp's protected audit log directory" in engine.decide(inside).reason


def test_protected_overlap_compares_as_decisions_do(tmp_path: Path) -> None:
    """What init and config validate warn about: a directory whose every path a decision
    would find protected (also through a link), or that holds a protected one."""
    config_dir = tmp_path / "cfg"
    (config_dir / "project").mkdir(parents=True)
    (tmp_path / "link").symlink_to(config_dir / "project")
    assert protected_overlap(config_dir / "project", config_dir) == "inside"
    assert protected_overlap(config_dir, config_dir) == "inside"
    assert protected_overlap(tmp_path / "link", config_dir) == "inside"
    assert protected_overlap(tmp_path, config_dir) == "holds"
    assert protected_overlap(tmp_path / "CFG" / "project", config_dir) == "inside"  # folded
    assert protected_overlap(tmp_path / "cfg-other", config_dir) is None


def test_engine_errors_are_denies() -> None:
    engine = make_engine(rule("allow", tool_name="*"))

    class Exploding(Check):
        def test(self, view: object) -> bool:
            raise RuntimeError("boom")

    compiled_rule = engine._compiled.rules[0]
    object.__setattr__(compiled_rule, "checks", (Exploding("x", "y"),))
    decision = engine.decide(make_request())
    assert (decision.effect, decision.rule_id) == (Effect.DENY, "builtin-engine-error")
    assert "RuntimeError: boom" in decision.reason


def test_garbage_requests_never_raise() -> None:
    engine = make_engine(rule("allow", tool_name="*", path_pattern="/**"))
    for params in (
        {"name": None},
        {"name": 5, "arguments": "x"},
        {"arguments": {"path": 7}},
        {"name": "read_file", "arguments": {"path": ["/a", None]}},
        {"name": "\x00\u202e", "arguments": {"path": "\udcff"}},
    ):
        request = make_request(params=params)
        assert engine.decide(request).effect in (Effect.DENY, Effect.ALLOW)


# ---------------------------------------------------------------- reload


def test_reload_swaps_and_keeps_last_known_good(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"rules": [rule("allow", "r1", tool_name="read_file")]}))
    engine = AcpPolicyEngine.from_file(path)
    first = engine.policy_id
    assert effect_of(engine) is Effect.ALLOW

    path.write_text(json.dumps({"rules": [rule("deny", "r2", tool_name="read_file")]}))
    assert engine.reload() == []
    assert engine.policy_id != first
    assert effect_of(engine) is Effect.DENY

    good = engine.policy_id
    path.write_text('{"rules": [{"effect": "allow", "conditions": {}}]}')
    errors = engine.reload()
    assert errors
    assert "at least one condition" in errors[0]
    assert engine.policy_id == good
    path.write_text("{not json")
    assert "not valid JSON" in engine.reload()[0]
    assert engine.reload(tmp_path / "missing.json")[0].startswith("no policy file at")
    assert engine.policy_id == good


def test_each_decision_sees_exactly_one_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    policies = [
        json.dumps({"rules": [rule(e, f"r-{e}", tool_name="read_file")]}) for e in ("allow", "deny")
    ]
    path.write_text(policies[0])
    engine = AcpPolicyEngine.from_file(path)
    ids = {}
    for text in policies:
        ids[PolicyFile.model_validate_json(text).policy_id()] = json.loads(text)
    stop = threading.Event()

    def reloader() -> None:
        flip = 0
        while not stop.is_set():
            flip ^= 1
            path.write_text(policies[flip])
            engine.reload()

    thread = threading.Thread(target=reloader)
    thread.start()
    try:
        for _ in range(10_000):
            decision = engine.decide(make_request())
            expected = ids[decision.policy_id]["rules"][0]
            assert decision.effect.value == expected["effect"]
            assert decision.rule_id == expected["id"]
    finally:
        stop.set()
        thread.join()


def test_subject_model_frozen_attributes_for_requests() -> None:
    subject = Subject(subject_id="alice", provenance=Provenance.TOKEN)
    assert make_request(subject=subject).subject is subject


# ---------------------------------------------------------------- compatibility


def test_reads_mcp_acp_extended_policies(tmp_path: Path) -> None:
    """A policy in the prototype's dialect: its condition names, effect 'hitl', the
    policy-wide 'hitl' section. One intended difference: deny outranks hitl here."""
    legacy = {
        "version": "1",
        "default_action": "deny",
        "rules": [
            {
                "id": "reads",
                "effect": "allow",
                "conditions": {
                    "tool_name": "read*",
                    "path_pattern": "/home/u/work/**",
                    "operations": ["read"],
                    "extension": [".py", "md"],
                    "backend_id": "FS",
                    "resource_type": "TOOL",
                    "mcp_method": "tools/call",
                    "subject_id": "u",
                    "side_effects": ["fs_read"],
                },
            },
            {
                "id": "approve-writes",
                "effect": "hitl",
                "conditions": {"tool_name": "write*", "path_pattern": "/home/u/work/**"},
            },
            {
                "id": "file-resources",
                "effect": "allow",
                "conditions": {"scheme": "FILE", "resource_type": "resource"},
            },
            {"id": "private", "effect": "deny", "conditions": {"path_pattern": "**/private/**"}},
            {
                "id": "copies",
                "effect": "allow",
                "conditions": {"source_path": "/tmp/**", "dest_path": "/home/u/work/**"},
            },
        ],
        "hitl": {
            "timeout_seconds": 30,
            "approval_ttl_seconds": 600,
            "cache_side_effects": ["fs_write"],
        },
    }
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(legacy))
    engine = AcpPolicyEngine.from_file(path)
    assert engine.policy.hitl is not None
    assert engine.policy.hitl.timeout_seconds == 30
    read = make_request(
        tool="read_file", arguments={"path": "/home/u/work/a.py"}, subject_id="u", backend_id="fs"
    )
    assert engine.decide(read).rule_id == "reads"
    hitl_vs_deny = make_request(
        tool="write_file", subject_id="u", arguments={"path": "/home/u/work/private/x.md"}
    )
    decision = engine.decide(hitl_vs_deny)
    assert (decision.effect, decision.rule_id) == (Effect.DENY, "private")  # the difference
    assert {m.rule_id for m in decision.matched} == {"approve-writes", "private"}
    write = make_request(tool="write_file", subject_id="u", arguments={"path": "/home/u/work/x"})
    assert engine.decide(write).effect is Effect.ASK
    resource = make_request("resources/read", None, params={"uri": "file:///home/u/work/x"})
    assert engine.decide(resource).rule_id == "file-resources"


@pytest.mark.parametrize("effect", ["code_exec", "process_spawn", "sudo_elevate", "container_exec"])
def test_code_execution_approvals_are_never_cached(effect: str) -> None:
    with pytest.raises(ValueError, match="never cached"):
        PolicyFile.model_validate({"rules": [], "hitl": {"cache_side_effects": [effect]}})


def test_loose_path_arguments_only_when_they_look_like_paths() -> None:
    email = make_request(
        tool="send_message", arguments={"to": "bob@example.test", "from": "alice@example.test"}
    )
    assert email.resource.paths == ()
    copy = make_request(tool="duplicate_thing", arguments={"from": "/srv/a", "to": "../../etc"})
    assert {(p.role, p.path) for p in copy.resource.paths} == {
        ("source", "/srv/a"),
        ("dest", "../../etc"),
    }
    engine = make_engine(rule("allow", tool_name="*"))
    assert engine.decide(email).effect is Effect.ALLOW
    assert engine.decide(copy).rule_id == "builtin-ambiguous-path"


def test_an_operations_explanation_says_the_request_stays_within_the_list() -> None:
    """``operations`` on an allow rule is a subset test: the explanation says the request's
    operations are all in the rule's list (it said "has only", which read as a shortfall)."""
    engine = make_engine(rule("allow", "reads", operations=["read", "list"]))
    decision = engine.decide(make_request())
    assert decision.reason == "allowed by rule reads: operations read all in [list, read]"


def test_an_unknown_tools_paths_in_json_text_are_read_as_a_server_decodes_them() -> None:
    """Servers on the mcp SDK's ``MCPServer`` (or FastMCP) decode an argument sent as JSON
    text into the object or list its type asks for: the paths in it are read as in that
    value, at any depth; text that is not an object or array of JSON is only text."""
    engine = make_engine(
        rule("deny", "no-env", path_pattern="**/.env"),
        rule("allow", "fs", tool_name="fs_*"),
    )

    def decided(arguments: dict[str, Any]) -> Any:
        return engine.decide(make_request(tool="fs_read", arguments=arguments))

    for hidden in (
        {"opts": json.dumps({"path": "/p/.env"})},
        {"entries": json.dumps(["/p/notes.md", "/p/.env"])},
        {"opts": " " + json.dumps({"inner": json.dumps({"path": "/p/.env"})})},
    ):
        assert decided(hidden).rule_id == "no-env", hidden
    for text in ("{not json", "[1, 2]", '{"path": "notes.md"}', json.dumps({"p": "/p/a"})):
        assert decided({"opts": text}).effect is Effect.ALLOW, text
    request = make_request(tool="fs_read", arguments={"opts": json.dumps({"a": ["/p/x"]})})
    assert [(p.argument, p.path) for p in request.resource.paths] == [("opts.a[0]", "/p/x")]


def test_json_text_nested_past_the_readers_depth_makes_the_paths_ambiguous() -> None:
    """JSON text restarts the nesting the message reader bounds (200 levels), and text in
    text restarts it again: five layers of 190 levels with 100,000 paths in them once
    took 1.4 GB of the proxy's memory for their names. The levels of every layer count
    together now: past 200 the call's paths are ambiguous (the path guard denies them)."""

    def nested(value: object, levels: int) -> object:
        for _ in range(levels):
            value = [value]
        return value

    def paths(opts: object) -> list[tuple[str, str]]:
        request = make_request(tool="fs_read", arguments={"opts": opts})
        return [(p.argument, p.path) for p in request.resource.paths]

    inner = json.dumps(nested("/p/a", 120))
    assert paths(inner) == [("opts" + "[0]" * 120, "/p/a")]  # one layer, 122 levels
    assert paths(json.dumps(nested(inner, 50))) == [("opts" + "[0]" * 170, "/p/a")]
    assert paths(json.dumps(nested(inner, 100))) == [
        ("opts" + "[0]" * 100 + "[0]" * 98, "(nested more than 200 levels deep: not read)")
    ]
