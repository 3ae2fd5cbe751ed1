"""``mcp-server-git`` from PyPI as the real backend, driven by the SDK client in the
2026-07-28 era: reads pass, history changes are refused by policy, and the repository shows
that the refused calls never ran."""

from __future__ import annotations

from pathlib import Path

import mcp_types as types
import pytest
from mcp import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from proxy_helpers import DENIED, GIT_SERVER, configure, decisions, git, records, sdk_client


def text_of(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


async def test_git_reads_pass_and_history_changes_never_run(
    git_repo: Path, isolated_home: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    git(tmp_path, "init", "-q", str(elsewhere))
    policy = {
        "version": "1",
        "rules": [
            {
                "id": "no-history-changes",
                "effect": "deny",
                "conditions": {"tool_name": ["git_commit", "git_reset"]},
            },
            {
                "id": "read-repo",
                "effect": "allow",
                "conditions": {"operations": "read", "path_pattern": f"{git_repo}/**"},
            },
        ],
    }
    log_dir = configure(isolated_home, str(GIT_SERVER), ["--repository", str(git_repo)], policy)
    head = git(git_repo, "rev-parse", "HEAD")
    repo = {"repo_path": str(git_repo)}

    async with sdk_client(isolated_home, "auto") as client:
        assert client.protocol_version in MODERN_PROTOCOL_VERSIONS

        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"git_status", "git_log", "git_diff_staged"} <= names
        assert not names & {"git_commit", "git_reset", "git_add", "git_checkout"}

        status = text_of(await client.call_tool("git_status", repo))
        assert "Changes to be committed" in status
        assert "README.md" in status
        assert "+second" in text_of(await client.call_tool("git_diff_staged", repo))

        for tool, arguments in [
            ("git_commit", {**repo, "message": "should never exist"}),
            ("git_reset", repo),
        ]:
            with pytest.raises(MCPError) as denied:
                await client.call_tool(tool, arguments)
            assert denied.value.code == DENIED
            assert "denied by rule no-history-changes" in denied.value.error.message

        log = text_of(await client.call_tool("git_log", repo))
        assert "first commit" in log
        assert "should never exist" not in log

        # another repository: the proxy refuses it before the server's own --repository
        # confinement could (which would answer with an isError result, not -32003)
        with pytest.raises(MCPError) as outside:
            await client.call_tool("git_status", {"repo_path": str(elsewhere)})
        assert outside.value.code == DENIED
        assert "no rule matched tools/call git_status" in outside.value.error.message

    # the repository is exactly as it was: no commit, the staged change still staged
    assert git(git_repo, "rev-parse", "HEAD") == head
    assert git(git_repo, "log", "--format=%s").splitlines() == ["first commit"]
    assert git(git_repo, "diff", "--cached", "--name-only").split() == ["README.md"]
    assert (git_repo / "README.md").read_text() == "first\nsecond\n"

    decided = [(r.get("tool_name"), r["effect"], r.get("rule_id")) for r in decisions(log_dir)]
    assert ("git_commit", "deny", "no-history-changes") in decided
    assert ("git_reset", "deny", "no-history-changes") in decided
    assert ("git_status", "allow", "read-repo") in decided
    operations = records(log_dir, "operations")
    forwarded = {r.get("tool_name") for r in operations if r.get("outcome") == "forwarded"}
    assert forwarded == {"git_status", "git_diff_staged", "git_log", None}  # None: discover, list
