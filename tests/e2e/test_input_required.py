"""Sampling in the 2026-07-28 era, through the real proxy: the server's request to the client
arrives *inside a result* (``resultType: "input_required"``, ``inputRequests``), not as a
JSON-RPC request, and the client retries the call with the answer. The policy must decide it
all the same; a denied one must reach neither the client nor, as an answer, the server."""

from __future__ import annotations

import sys
from pathlib import Path

import mcp_types as types
import pytest
from mcp import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from proxy_helpers import DENIED, E2E, configure, decisions, recording_sampler, records, sdk_client

ASKING_SERVER = E2E / "peers" / "asking_server.py"


@pytest.mark.parametrize("allowed", [False, True], ids=["denied", "allowed"])
async def test_sampling_inside_a_result(allowed: bool, isolated_home: Path, tmp_path: Path) -> None:
    rounds = tmp_path / "rounds.txt"
    rounds.touch()
    policy = {
        "version": "1",
        "rules": [
            {"id": "summarise", "effect": "allow", "conditions": {"tool_name": "summarise"}},
            {
                "id": "allow-sampling" if allowed else "no-sampling",
                "effect": "allow" if allowed else "deny",
                "conditions": {"mcp_method": "sampling/*"},
            },
        ],
    }
    log_dir = configure(isolated_home, sys.executable, [str(ASKING_SERVER), str(rounds)], policy)
    asked, sampling = recording_sampler()

    async with sdk_client(isolated_home, "auto", sampling_callback=sampling) as client:
        assert client.protocol_version in MODERN_PROTOCOL_VERSIONS
        if allowed:
            result = await client.call_tool("summarise", {"text": "hello"})
            content = result.content[0]
            assert isinstance(content, types.TextContent)
            assert content.text == "summary: sampled by the test client"
        else:
            with pytest.raises(MCPError) as denied:
                await client.call_tool("summarise", {"text": "hello"})
            assert denied.value.code == DENIED
            assert "denied by rule no-sampling" in denied.value.error.message
            assert denied.value.error.data == {"rule": "no-sampling"}

    assert len(asked) == (1 if allowed else 0)  # denied: the client never saw the request
    # the server asked once; it got an answer only when sampling was allowed
    assert rounds.read_text().split() == (["asked", "answered"] if allowed else ["asked"])
    sampled = [r for r in decisions(log_dir) if r["mcp_method"] == "sampling/createMessage"]
    assert [(r["effect"], r.get("rule_id")) for r in sampled] == [
        ("allow", "allow-sampling") if allowed else ("deny", "no-sampling")
    ]
    if not allowed:
        refused = [r for r in records(log_dir, "operations") if r.get("outcome") == "denied"]
        assert [(r["direction"], r["error_code"]) for r in refused] == [
            ("server_to_client", DENIED)
        ]
