"""The policy file format: what is refused at load time, before any decision is made."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mcp_acp.policy.model import PolicyFile


def policy(*rules: dict[str, Any], **top: Any) -> PolicyFile:
    return PolicyFile.model_validate({"version": "1", "rules": list(rules), **top})


ALLOW_READ = {"effect": "allow", "conditions": {"tool_name": "read_*"}}


def test_hitl_is_an_alias_of_ask() -> None:
    rule = policy({"effect": "hitl", "conditions": {"tool_name": "write_file"}}).rules[0]
    assert rule.effect == "ask"


def test_ids_are_generated_from_content_and_stable() -> None:
    first = policy(ALLOW_READ).rules[0].id
    again = policy(ALLOW_READ).rules[0].id
    other = policy({"effect": "deny", "conditions": {"tool_name": "read_*"}}).rules[0].id
    assert first == again
    assert first != other
    assert first is not None
    assert first.startswith("rule-")


def test_policy_id_changes_with_content() -> None:
    assert policy(ALLOW_READ).policy_id() != policy().policy_id()
    assert policy(ALLOW_READ).policy_id() == policy(ALLOW_READ).policy_id()


def test_a_single_string_means_a_one_item_list() -> None:
    conditions = policy(ALLOW_READ).rules[0].conditions
    assert conditions.tool_name == ["read_*"]


@pytest.mark.parametrize(
    ("rules", "top", "message"),
    [
        ([{"effect": "allow", "conditions": {}}], {}, "at least one condition"),
        ([{"effect": "allow"}], {}, "conditions"),
        (
            [{"effect": "allow", "conditions": {"min_provenance": {"subject": "token"}}}],
            {},
            "at least one condition",
        ),
        ([], {"default_action": "allow"}, "default_action"),
        ([{"effect": "permit", "conditions": {"tool_name": "x"}}], {}, "effect"),
        ([{**ALLOW_READ, "id": "a"}, {**ALLOW_READ, "id": "a"}], {}, "duplicate rule id 'a'"),
        ([ALLOW_READ, ALLOW_READ], {}, "duplicate rule id"),
        ([{"effect": "allow", "conditions": {"path_pattern": "/srv/../etc/**"}}], {}, "'..'"),
        ([{"effect": "allow", "conditions": {"path_pattern": "srv/**"}}], {}, "absolute"),
        ([{"effect": "allow", "conditions": {"path_pattern": "C:\\\\x"}}], {}, "'/' separators"),
        ([{"effect": "allow", "conditions": {"path_pattern": "/a\u0000b"}}], {}, "NUL"),
        (  # no normalised path ends with '/': the pattern would never match
            [{"effect": "deny", "conditions": {"path_pattern": "/srv/private/"}}],
            {},
            "ends with '/', which no path has once normalised; "
            "write '/srv/private' or '/srv/private/\\*\\*'",
        ),
        ([{"effect": "deny", "conditions": {"path_pattern": "/srv/**/"}}], {}, "write '/srv/"),
        ([{"effect": "deny", "conditions": {"path_pattern": [5]}}], {}, "valid string"),
        ([{"effect": "deny", "conditions": {"uri": [None]}}], {}, "valid string"),
        ([{"effect": "deny", "conditions": {"mcp_method": [7]}}], {}, "valid string"),
        (
            [{"effect": "allow", "conditions": {"tool_name": "x", "colour": "red"}}],
            {},
            "Extra inputs",
        ),
        (
            [
                {
                    "effect": "ask",
                    "conditions": {"tool_name": "bash"},
                    "approval": {
                        "cache_ttl_seconds": 60,
                        "cacheable_side_effects": ["code_exec"],
                    },
                }
            ],
            {},
            "never cached",
        ),
        ([{**ALLOW_READ, "approval": {"cache_ttl_seconds": 60}}], {}, "only valid on effect 'ask'"),
        (
            [
                {
                    "effect": "ask",
                    "conditions": {"tool_name": "write_file"},
                    "approval": {"cacheable_side_effects": ["fs_write"]},
                }
            ],
            {},
            "cacheable_side_effects is never used with cache_ttl_seconds 0",
        ),
        (
            [ALLOW_READ],
            {"hitl": {"approval_ttl_seconds": 0, "cache_side_effects": ["fs_write"]}},
            "cache_side_effects is never used with approval_ttl_seconds 0",
        ),
        ([ALLOW_READ], {"hitl": {"timeout_seconds": 301}}, "less than or equal to 300"),
        ([ALLOW_READ], {"hitl": {"cache_side_effects": ["container_exec"]}}, "never cached"),
        (
            [{"effect": "allow", "conditions": {"time": {"timezone": "Mars/Olympus"}}}],
            {},
            "unknown time zone",
        ),
        ([{"effect": "allow", "conditions": {"tool_name": []}}], {}, None),
    ],
)
def test_bad_policies_are_refused(
    rules: list[dict[str, Any]], top: dict[str, Any], message: str | None
) -> None:
    if message is None:  # an empty any-of list is valid: it simply never matches
        assert policy(*rules, **top).rules[0].conditions.tool_name == []
        return
    with pytest.raises(ValidationError, match=message):
        policy(*rules, **top)
