"""The patterns mcp-acp runs over text it does not control end in linear time.

A backend's answer is screened for hidden-instruction tags, and a client's arguments for
credential shapes, on the proxy's event loop: a pattern that backtracks over its input
would let one message hold the loop — no other request served, no signal answered. Each
case is a string built to make such a pattern quadratic; it runs in a child process, which
must finish at all (the bound is a hang detector, not a speed target: the patterns before
took minutes to hours on these strings, the fixed ones a fraction of a second)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HANG = 60  # seconds: a pattern that is linear ends far inside this, a quadratic one never

CASES = {
    # "<" then a million spaces: "<\s*/?\s*" could read the spaces in N ways
    "tag-after-spaces": (
        "from mcp_acp.proxy.screening import screen_result, screen_entry\n"
        "text = '<' + ' ' * 1_000_000\n"
        "assert screen_result({'content': [{'type': 'text', 'text': text}]}) == []\n"
        "half = '<' + ' ' * 500_000  # two halves joined: the split-tag pass (within budget)\n"
        "assert screen_result({'content': [{'type': 'text', 'text': half},"
        " {'type': 'text', 'text': half}]}) == []\n"
    ),
    # "eyJ" 300,000 times: a JWT tried at every "eyJ" read the rest of the run each time
    "jwt-run": (
        "from mcp_acp.audit.redact import redact, secret_kinds\n"
        "text = 'eyJ' * 300_000\n"
        "assert secret_kinds({'arguments': text}) == []\n"
        "assert redact(text) == text\n"
    ),
    # each service key's prefix 200,000 times in one run of key characters: a prefix tried
    # inside the run would read the rest of it each time
    "service-key-runs": (
        "from mcp_acp.audit.redact import redact, secret_kinds\n"
        "from mcp_acp.config import redact_text\n"
        "for prefix in ('github_pat_', 'glpat-', 'sk-', 'sk-ant-', 'xoxb-', 'AIza', 'sk_live_'):\n"
        "    text = '+' + prefix * 200_000\n"
        "    secret_kinds({'arguments': text})\n"
        "    redact(text)\n"
        "    redact_text(text)\n"
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_string_is_screened_in_linear_time(case: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CASES[case] + "print('done')"],
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"


def test_the_patterns_still_find_what_they_are_for() -> None:
    """The linear patterns find the same things: a tag with spaces and a slash, a JWT on its
    own, after ``Bearer``, in quotes or after ``=``."""
    from mcp_acp.audit.redact import REDACTED, redact, secret_kinds
    from mcp_acp.proxy.screening import screen_result

    for tag in ("<IMPORTANT>", "< / important >", "</ system>", "<  instructions x>"):
        (finding,) = screen_result({"text": f"a {tag} b"})
        assert "hidden-instruction tag" in finding
    assert screen_result({"text": "<importantly> not a tag"}) == []
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    for text in (jwt, f"Bearer {jwt}", f'"{jwt}"', f"token={jwt}"):
        assert "a JWT" in secret_kinds({"a": text})
        assert jwt not in redact(text)
        assert REDACTED in redact(text)
