"""The ``mcp`` SDK's own client driving the real ``mcp-acp run``, in both protocol eras,
against a handshake-only backend (the npm filesystem server, on the TypeScript SDK 1.x) and
a backend that speaks both eras (``mcp-server-git``, on the Python SDK 2.3).

``mode="legacy"`` opens with ``initialize``. ``mode="auto"`` probes ``server/discover`` with
the 2026-07-28 envelope: the relay forwards the probe unchanged, so the backend alone decides
the era. The filesystem server answers -32601 and the client falls back to the handshake;
the git server answers, and every later request carries the envelope in ``params._meta``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from proxy_helpers import (
    DENIED,
    E2E,
    GIT_SERVER,
    Proxy,
    configure,
    decisions,
    git,
    proxy_env,
    records,
    sdk_client,
)

from mcp_acp.audit.chain import verify_stream

CLIENT = types.Implementation(name="e2e-sdk-client", version="1.0")
SERVER_INFO = "io.modelcontextprotocol/serverInfo"


@dataclass
class Backend:
    """One real backend, and the calls that show what the proxy did with it."""

    command: str
    args: list[str]
    policy: dict[str, Any]
    server_name: str
    allowed: tuple[str, dict[str, Any], str]  # tool, arguments, text the result starts with
    denied: tuple[str, dict[str, Any], str]  # tool, arguments, rule id
    hidden: tuple[str, ...]  # tools the backend has that the policy never allows
    modern: bool  # speaks the 2026-07-28 era
    untouched: Callable[[], bool]  # the denied call left no trace on the backend's side


def _rules(read_pattern: str, denied_tool: str, rule: str) -> dict[str, Any]:
    # the allow rule names the client: in the 2026-07-28 era the proxy learns the name from
    # every request's _meta, in the handshake era from initialize
    return {
        "version": "1",
        "rules": [
            {"id": rule, "effect": "deny", "conditions": {"tool_name": denied_tool}},
            {
                "id": "read-here",
                "effect": "allow",
                "conditions": {
                    "operations": "read",
                    "path_pattern": read_pattern,
                    "mcp_client_name": CLIENT.name,
                },
            },
        ],
    }


def filesystem_backend(node_peers: Path, tmp_path: Path) -> Backend:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.md").write_text("hello from the project\n")
    target = project / "new.md"
    return Backend(
        command="node",
        args=[str(node_peers), str(project)],
        policy=_rules(f"{project}/**", "write_file", "no-writes"),
        server_name="secure-filesystem-server",
        allowed=("read_text_file", {"path": str(project / "notes.md")}, "hello from the project"),
        denied=("write_file", {"path": str(target), "content": "never"}, "no-writes"),
        hidden=("write_file", "edit_file", "move_file"),
        modern=False,
        untouched=lambda: not target.exists(),
    )


def git_backend(repo: Path) -> Backend:
    head = git(repo, "rev-parse", "HEAD")
    return Backend(
        command=str(GIT_SERVER),
        args=["--repository", str(repo)],
        policy=_rules(f"{repo}/**", "git_commit", "no-commits"),
        server_name="mcp-git",
        allowed=("git_status", {"repo_path": str(repo)}, "Repository status:"),
        denied=("git_commit", {"repo_path": str(repo), "message": "never"}, "no-commits"),
        hidden=("git_commit", "git_add", "git_reset", "git_checkout"),
        modern=True,
        untouched=lambda: git(repo, "rev-parse", "HEAD") == head,
    )


@pytest.mark.parametrize("backend_name", ["filesystem", "git"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_sdk_client_through_the_proxy_in_both_eras(
    mode: str,
    backend_name: str,
    isolated_home: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if backend_name == "filesystem":
        backend = filesystem_backend(request.getfixturevalue("node_peers"), tmp_path)
    else:
        backend = git_backend(request.getfixturevalue("git_repo"))
    log_dir = configure(isolated_home, backend.command, backend.args, backend.policy)
    modern = mode == "auto" and backend.modern

    async with sdk_client(isolated_home, mode, client_info=CLIENT) as client:
        # the era is negotiated with the backend through the relay
        eras = MODERN_PROTOCOL_VERSIONS if modern else HANDSHAKE_PROTOCOL_VERSIONS
        assert client.protocol_version in eras
        assert client.server_info is not None
        assert client.server_info.name == backend.server_name  # the relay is transparent

        listing = await client.list_tools()
        names = {tool.name for tool in listing.tools}
        assert backend.allowed[0] in names
        assert not names & set(backend.hidden)

        tool, arguments, text = backend.allowed
        result = await client.call_tool(tool, arguments)
        assert not result.is_error
        assert isinstance(result.content[0], types.TextContent)
        assert result.content[0].text.startswith(text)

        tool, arguments, rule = backend.denied
        with pytest.raises(MCPError) as denied:
            await client.call_tool(tool, arguments)
        assert denied.value.code == DENIED
        assert f"denied by rule {rule}" in denied.value.error.message
        assert denied.value.error.data == {"rule": rule}
        assert backend.untouched()  # evidence on the backend's side: the call never ran

        # The backend's _meta reaches the client unchanged: in the 2026-07-28 era the server
        # names itself in every result, including the list result the proxy filtered and
        # re-encoded; in the handshake era there is none.
        if modern:
            server_info = {"name": backend.server_name, "version": version("mcp-server-git")}
            assert listing.meta == {SERVER_INFO: server_info}
            assert result.meta == {SERVER_INFO: server_info}
        else:
            assert listing.meta is None
            assert result.meta is None

    methods = [r["mcp_method"] for r in decisions(log_dir)]
    assert ("server/discover" in methods) == (mode == "auto")
    assert ("initialize" in methods) == (not modern)
    by_tool = {(r.get("tool_name"), r["effect"], r.get("rule_id")) for r in decisions(log_dir)}
    assert (backend.allowed[0], "allow", "read-here") in by_tool
    assert (backend.denied[0], "deny", backend.denied[2]) in by_tool
    relayed = {(r.get("tool_name"), r.get("outcome")) for r in records(log_dir, "operations")}
    assert (backend.denied[0], "denied") in relayed
    assert (backend.denied[0], "forwarded") not in relayed
    assert records(log_dir, "auth")[-1]["reason"] == "the client closed the session"
    for stream in ("decisions", "operations", "auth", "system"):
        assert verify_stream(log_dir, stream).ok


RECORDING = Path(__file__).parent / "peers" / "recording_server.py"
#: Allowed only for the client named CLIENT: the attribute that differs below.
FOR_THE_SDK_CLIENT = {
    "version": "1",
    "rules": [
        {
            "id": "sdk-client",
            "effect": "allow",
            "conditions": {"tool_name": ["git_status", "echo"], "mcp_client_name": CLIENT.name},
        }
    ],
}


def envelope(name: str) -> dict[str, Any]:
    """A 2026-07-28 request's ``_meta``: the client names itself ``name``."""
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN_PROTOCOL_VERSIONS[0],
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": name, "version": "1"},
    }


def test_a_modern_request_is_decided_as_the_client_its_own_envelope_names(
    isolated_home: Path, git_repo: Path
) -> None:
    """2026-07-28: the backend serves each request as the client its envelope names. A
    ``clientInfo`` beside it in the params, which no backend reads there, names nothing; and
    no request is decided as the client another one named."""
    configure(isolated_home, str(GIT_SERVER), ["--repository", str(git_repo)], FOR_THE_SDK_CLIENT)
    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    try:
        assert "result" in proxy.call("server/discover", {"_meta": envelope("other-agent")})
        status = {"name": "git_status", "arguments": {"repo_path": str(git_repo)}}
        sdk_hint = {"clientInfo": {"name": CLIENT.name, "version": "1"}}
        posing = proxy.call("tools/call", {**status, **sdk_hint, "_meta": envelope("other")})
        assert "denied by default" in posing["error"]["message"]  # the backend serves "other"
        honest = proxy.call("tools/call", {**status, "_meta": envelope(CLIENT.name)})
        assert honest["result"]["content"][0]["text"].startswith("Repository status:")
        other = proxy.call("tools/call", {**status, "_meta": envelope("other-agent")})
        assert "denied by default" in other["error"]["message"]  # nothing carried over
    finally:
        proxy.close()


WHO = E2E / "peers" / "who_server.mjs"


@pytest.mark.parametrize("answered", ["not yet", "never (cancelled)"])
def test_a_call_right_behind_an_initialize_is_decided_as_the_client_it_named(
    isolated_home: Path, answered: str
) -> None:
    """The TypeScript SDK's server takes an ``initialize`` before it answers it, and
    answers none that was cancelled; from then on it serves every call as that client.
    A call sent right behind ``initialize`` (or after one cancelled with it) and carrying
    an envelope that names another client was decided as the envelope's — allowed, where
    the policy denies the client the backend served it as. Now such a call is decided as
    the handshake's client, or, with an envelope naming another while the handshake is
    unanswered, not decided at all: denied either way, and never served."""
    policy = {
        "version": "1",
        "rules": [
            {
                "id": "no-evil",
                "effect": "deny",
                "conditions": {"mcp_client_name": "evil-client", "tool_name": "echo"},
            },
            {"id": "echo", "effect": "allow", "conditions": {"tool_name": "echo"}},
        ],
    }
    configure(isolated_home, "node", [str(WHO)], policy)
    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    hello = {"protocolVersion": "2025-06-18", "capabilities": {}}
    try:
        evil = {**hello, "clientInfo": {"name": "evil-client", "version": "1"}}
        initialize = {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": evil}
        cancel = {"reason": "never mind", "requestId": "init"}
        cancelled = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel}
        lines = [initialize, {"jsonrpc": "2.0", "method": "notifications/initialized"}]
        if answered.startswith("never"):
            lines.insert(1, cancelled)
        proxy.send_raw(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
        echo = {"name": "echo", "arguments": {}}
        calls = [proxy.request("tools/call", {**echo, "_meta": envelope("good")})]
        calls.append(proxy.request("tools/call", echo))
        answers = [proxy.answer(call) for call in calls]
    finally:
        proxy.close()
    for answer in answers:
        assert "error" in answer, answer
        assert "served-as" not in json.dumps(answer)
    assert answers[1]["error"]["data"] == {"rule": "no-evil"}


def test_a_handshake_era_request_is_decided_as_the_client_the_handshake_named(
    isolated_home: Path, tmp_path: Path
) -> None:
    """After ``initialize`` a backend serves every request as the client the handshake
    named; a handshake-era server ignores an envelope (the recording peer does, as the
    TypeScript SDK's servers do). Neither an envelope nor a ``clientInfo`` in a request's
    params changes who the policy decides for; a second handshake the backend answers
    does."""
    received = tmp_path / "received.jsonl"
    configure(isolated_home, sys.executable, [str(RECORDING), str(received)], FOR_THE_SDK_CLIENT)
    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    try:
        hello = {"protocolVersion": "2025-06-18", "capabilities": {}}
        other = {**hello, "clientInfo": {"name": "other-agent", "version": "1"}}
        assert "result" in proxy.call("initialize", other)
        echo = {"name": "echo", "arguments": {"text": "hi"}}
        sdk_hint = {"clientInfo": {"name": CLIENT.name, "version": "1"}}
        for posing in ({**echo, "_meta": envelope(CLIENT.name)}, {**echo, **sdk_hint}):
            denied = proxy.call("tools/call", posing)
            assert "denied by default" in denied["error"]["message"]
        assert "result" in proxy.call("initialize", {**hello, **sdk_hint})
        assert proxy.call("tools/call", echo)["result"]["content"][0]["text"] == "hi"
    finally:
        proxy.close()
    calls = [json.loads(line) for line in received.read_text().splitlines()]
    assert [m["params"] for m in calls if m.get("method") == "tools/call"] == [echo]
