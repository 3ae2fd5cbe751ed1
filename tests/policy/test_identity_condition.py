"""``backend_identity`` conditions: the names of the backend's verified TLS certificate.

Parsing (canonical form, what is refused at load) and matching, hostile cases included: no
identity, another identity, case and look-alike tricks, a wildcard certificate, one kind
of name posing as another, and provenance that cannot be had by omission."""

from __future__ import annotations

from typing import Any

import pytest
from policy_helpers import make_engine, make_request
from pydantic import ValidationError

from mcp_acp.models import Effect, Provenance
from mcp_acp.policy.model import PolicyFile

NOTES = ("DNS:notes.internal.example", "IP:10.0.0.7")


def rule(effect: str, **conditions: Any) -> dict[str, Any]:
    return {"id": f"{effect}-it", "effect": effect, "conditions": conditions}


def allow(patterns: Any, **more: Any) -> Any:
    return make_engine(rule("allow", tool_name="read_file", backend_identity=patterns, **more))


def effect(engine: Any, identity: tuple[str, ...]) -> Effect:
    return engine.decide(make_request(backend_identity=identity)).effect


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("DNS:notes.internal.example", "DNS:notes.internal.example"),
        ("dns:Notes.Internal.EXAMPLE", "DNS:notes.internal.example"),
        ("DNS:*.internal.example", "DNS:*.internal.example"),
        ("DNS:**.internal.example", "DNS:**.internal.example"),
        ("uri:spiffe://example.org/ns/Prod/**", "URI:spiffe://example.org/ns/Prod/**"),
        ("IP:10.0.0.7", "IP:10.0.0.7"),
        ("ip:2001:DB8:0:0:0:0:0:1", "IP:2001:db8::1"),
    ],
)
def test_patterns_are_stored_in_canonical_form(written: str, stored: str) -> None:
    policy = PolicyFile.model_validate({"rules": [rule("allow", backend_identity=written)]})
    assert policy.rules[0].conditions.backend_identity == [stored]


def test_the_same_pattern_written_two_ways_is_the_same_policy() -> None:
    one = PolicyFile.model_validate({"rules": [rule("allow", backend_identity="DNS:A.example")]})
    two = PolicyFile.model_validate({"rules": [rule("allow", backend_identity="dns:a.example")]})
    assert one.policy_id() == two.policy_id()


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("notes.internal.example", "must start with DNS:, URI: or IP:"),
        ("EMAIL:ops@example.org", "must start with DNS:, URI: or IP:"),
        ("CN:notes", "must start with DNS:, URI: or IP:"),
        ("DNS:", "names nothing"),
        ("", "at least 1 character"),
        ("DNS:notes..example", "not a DNS name"),
        ("DNS:notes.example.", "not a DNS name"),
        ("DNS:no tes.example", "not a DNS name"),
        ("DNS:n\u043etes.example", "not a DNS name"),  # Cyrillic o
        ("DNS:\u212aey.example", "not a DNS name"),  # Kelvin sign: lower() would make it 'k'
        ("DNS:a**.example", "whole label"),
        ("IP:10.0.0.*", "not an IP address"),
        ("IP:10.0.0.0/8", "not an IP address"),
        ("URI:spiffe://x/a b", "space or a control character"),
        ("URI:spiffe://x/\n", "space or a control character"),
        ("URI:spiffe://x/a**", "whole segment"),
    ],
)
def test_bad_patterns_are_refused_at_load(pattern: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PolicyFile.model_validate({"rules": [rule("allow", backend_identity=pattern)]})


def test_min_provenance_may_name_it() -> None:
    policy = PolicyFile.model_validate(
        {
            "rules": [
                rule(
                    "allow",
                    backend_identity="DNS:x",
                    min_provenance={"backend_identity": "mtls"},
                )
            ]
        }
    )
    assert policy.rules[0].conditions.provenance_requirements() == [
        ("resource.backend_identity", "mtls")
    ]


# ---------------------------------------------------------------- matching


def test_any_name_of_the_certificate_may_match() -> None:
    engine = allow("DNS:notes.internal.example")
    assert effect(engine, NOTES) is Effect.ALLOW
    assert effect(allow("IP:10.0.0.7"), NOTES) is Effect.ALLOW
    assert effect(allow(["DNS:other.example", "IP:10.0.0.7"]), NOTES) is Effect.ALLOW


@pytest.mark.parametrize("identity", [(), ("DNS:other.internal.example", "IP:10.0.0.8")])
def test_no_identity_or_another_identity_never_matches(identity: tuple[str, ...]) -> None:
    for patterns in ("DNS:notes.internal.example", "DNS:*", "DNS:**", "URI:**", "IP:10.0.0.7"):
        engine = allow(patterns)
        wanted = Effect.ALLOW if identity and patterns == "DNS:**" else Effect.DENY
        assert effect(engine, identity) is wanted, (patterns, identity)


def test_an_empty_name_or_list_never_matches() -> None:
    assert effect(allow([]), NOTES) is Effect.DENY
    for patterns in ("DNS:*", "DNS:**", "URI:**"):
        assert effect(allow(patterns), ("DNS:", "URI:", "", ":")) is Effect.DENY


def test_dns_globs_go_label_by_label() -> None:
    one_label = allow("DNS:*.internal.example")
    assert effect(one_label, ("DNS:notes.internal.example",)) is Effect.ALLOW
    assert effect(one_label, ("DNS:a.b.internal.example",)) is Effect.DENY
    assert effect(one_label, ("DNS:internal.example",)) is Effect.DENY
    assert effect(one_label, ("DNS:notes.internal.example.evil.org",)) is Effect.DENY
    any_depth = allow("DNS:**.internal.example")
    assert effect(any_depth, ("DNS:a.b.internal.example",)) is Effect.ALLOW
    assert effect(any_depth, ("DNS:internal.example",)) is Effect.ALLOW
    assert effect(any_depth, ("DNS:eternal.example",)) is Effect.DENY
    assert effect(any_depth, ("DNS:xinternal.example",)) is Effect.DENY


def test_a_kind_never_matches_another_kind() -> None:
    """A DNS pattern is not satisfied by a URI or IP name carrying the same text."""
    assert effect(allow("DNS:10.0.0.7"), ("IP:10.0.0.7",)) is Effect.DENY
    assert effect(allow("IP:10.0.0.7"), ("DNS:10.0.0.7",)) is Effect.DENY
    assert effect(allow("URI:notes.internal.example"), NOTES) is Effect.DENY
    assert effect(allow("DNS:*"), ("URI:spiffe",)) is Effect.DENY


def test_a_wildcard_certificate_is_not_a_specific_server() -> None:
    """A certificate for ``*.internal.example`` does not prove it is ``notes``."""
    engine = allow("DNS:notes.internal.example")
    assert effect(engine, ("DNS:*.internal.example",)) is Effect.DENY


def test_case_tricks() -> None:
    # patterns are canonical (DNS lower-case), and so are the names the proxy reads
    assert effect(allow("DNS:NOTES.Internal.Example"), NOTES) is Effect.ALLOW
    # a look-alike name is not the name it imitates, however case is folded
    kelvin = ("DNS:\u212aey.internal.example",)  # KELVIN SIGN, lower() and re.I say 'k'
    assert effect(allow("DNS:key.internal.example"), kelvin) is Effect.DENY
    assert effect(allow("DNS:*.internal.example"), kelvin) is Effect.ALLOW  # it is a label
    cyrillic = ("DNS:n\u043etes.internal.example",)
    assert effect(allow("DNS:notes.internal.example"), cyrillic) is Effect.DENY
    # URI paths are case-sensitive for allow rules
    spiffe = ("URI:spiffe://example.org/ns/prod/sa/notes",)
    assert effect(allow("URI:spiffe://example.org/ns/prod/**"), spiffe) is Effect.ALLOW
    assert effect(allow("URI:spiffe://example.org/ns/PROD/**"), spiffe) is Effect.DENY


def test_deny_rules_fold_case_and_look_alikes() -> None:
    def deny(patterns: Any) -> Any:
        return make_engine(
            rule("deny", backend_identity=patterns),
            {"id": "reads", "effect": "allow", "conditions": {"tool_name": "read_file"}},
        )

    assert effect(deny("DNS:key.internal.example"), ("DNS:\u212aey.internal.example",)) is (
        Effect.DENY
    )
    assert effect(
        deny("URI:spiffe://example.org/ns/prod/**"), ("URI:SPIFFE://Example.org/NS/PROD/x",)
    ) is (Effect.DENY)
    assert effect(deny("DNS:evil.example"), NOTES) is Effect.ALLOW
    assert effect(deny("DNS:*"), ()) is Effect.ALLOW  # no identity is no evidence


def test_the_identity_has_provenance_mtls_only_when_present() -> None:
    present = make_request(backend_identity=NOTES)
    absent = make_request()
    assert present.provenance_of("resource.backend_identity") is Provenance.MTLS
    assert absent.provenance_of("resource.backend_identity") is Provenance.CLIENT_HINT
    engine = allow("DNS:**", min_provenance={"resource": "mtls"})
    assert engine.decide(present).effect is Effect.ALLOW
    demanding = allow("DNS:**", min_provenance={"backend_identity": "token"})
    assert demanding.decide(present).effect is Effect.DENY


def test_listing_hides_a_tool_only_an_identity_rule_allows() -> None:
    engine = allow("DNS:notes.internal.example")
    assert engine.could_allow(make_request(backend_identity=NOTES))
    assert not engine.could_allow(make_request())
    assert not engine.could_allow(make_request(backend_identity=("DNS:other.example",)))


def test_explanations_name_the_identity() -> None:
    engine = allow("DNS:notes.internal.example")
    allowed = engine.decide(make_request(backend_identity=NOTES))
    assert "backend identity DNS:notes.internal.example matches" in allowed.reason
    traced = engine.trace(make_request())
    assert "backend identity (none) does not match DNS:notes.internal.example" in traced[0].details
    traced = engine.trace(make_request(backend_identity=("DNS:a.example", "IP:10.0.0.8")))
    assert traced[0].details == (
        "backend identity [DNS:a.example, IP:10.0.0.8] does not match DNS:notes.internal.example",
    )
