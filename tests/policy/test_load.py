"""Reading policy files from a real file system: strict JSON, sizes, odd file types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_acp.errors import PolicyError
from mcp_acp.policy.engine import AcpPolicyEngine
from mcp_acp.policy.load import load_policy

ALLOW_X = {"id": "b", "effect": "allow", "conditions": {"tool_name": "x"}}
DENY_X = {"id": "a", "effect": "deny", "conditions": {"tool_name": "x"}}
#: ``rules`` twice: a last-wins reader sees only the allow rule.
TWICE = (
    f'{{"version": "1",\n "rules": [{json.dumps(DENY_X)}],\n "rules": [{json.dumps(ALLOW_X)}]}}\n'
)


def test_a_key_given_twice_is_refused_with_its_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(TWICE)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}:3: rules: key 'rules' appears twice in one object")
    nested = '{"rules": [{"id": "a", "effect": "deny",\n "effect": "allow",'
    path.write_text(nested + ' "conditions": {"tool_name": "x"}}]}')
    with pytest.raises(PolicyError, match=r":2: rules\[0\]\.effect: key 'effect' appears twice"):
        load_policy(path)


def test_reload_refuses_a_key_given_twice_and_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"rules": [DENY_X]}))
    engine = AcpPolicyEngine.from_file(path)
    good = engine.policy_id
    path.write_text(TWICE)
    errors = engine.reload()
    assert errors
    assert "appears twice" in errors[0]
    assert engine.policy_id == good
