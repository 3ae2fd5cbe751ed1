"""mcp-acp's own directories stay out of reach whatever policy engine decides.

A third-party engine that allows everything is chosen through a real plugin, in front of
the real filesystem server serving the user's whole home — which holds mcp-acp's config
file and audit log. The proxy's enforcement point still denies every path inside them, in
any letter case, and the audit fallback file (``builtin-protected-path``), and every
ambiguous path (``builtin-ambiguous-path``) before the engine is asked; the backend never
sees those calls, and the files are unchanged."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from proxy_helpers import Proxy, configure, engine_plugin, records, use_plugin

from mcp_acp.audit.chain import verify_stream

DENIED = -32003

YES_ENGINE = engine_plugin(
    "yes",
    'return Decision(effect=Effect.ALLOW, policy_id="yes", rule_id="yes", reason="yes")',
    "test: allows everything",
)


def _allow_everything(home: Path, tmp_path: Path) -> dict[str, str]:
    """The environment for a proxy whose policy engine is the plugin that allows all."""
    return use_plugin(
        home,
        tmp_path / "site",
        module="yes_engine",
        source=YES_ENGINE,
        name="yes",
        use_for="policy",
    )


def _write(path: Path | str, text: str) -> dict[str, Any]:
    return {"name": "write_file", "arguments": {"path": str(path), "content": text}}


def test_a_plugin_engine_cannot_open_mcp_acps_own_files(
    isolated_home: Path, tmp_path: Path, node_peers: Path
) -> None:
    home = isolated_home
    log_dir = configure(home, "node", [str(node_peers), str(home)], {"version": "1", "rules": []})
    env = _allow_everything(home, tmp_path)
    config_file = home / ".config" / "mcp-acp" / "config.json"
    config_before = config_file.read_bytes()
    fallback = home / ".local" / "state" / "mcp-acp" / "audit-fallback.jsonl"  # the default
    (home / "notes").mkdir()
    proxy = Proxy(home, env)
    try:
        proxy.initialize()
        allowed = proxy.call("tools/call", _write(home / "notes" / "a.md", "mine\n"))
        assert not allowed["result"].get("isError"), allowed
        assert (home / "notes" / "a.md").read_text() == "mine\n"  # the engine's allow holds

        decisions = log_dir / "decisions.jsonl"
        attempts = [
            _write(decisions, "{}\n"),  # the audit trail
            _write(config_file, "{}"),  # the config (the policy's place)
            {"name": "read_file", "arguments": {"path": str(config_file)}},
            # another case: the config itself on a case-insensitive file system (macOS)
            {"name": "read_file", "arguments": {"path": f"{home}/.config/MCP-ACP/config.json"}},
            _write(fallback, "{}\n"),  # where events go when the trail cannot take them
            _write(f"{home}/notes/../.config/mcp-acp/config.json", "{}"),  # ambiguous
        ]
        answers = [proxy.call("tools/call", params) for params in attempts]
        rules = [answer["error"]["data"]["rule"] for answer in answers]
        assert rules == ["builtin-protected-path"] * 5 + ["builtin-ambiguous-path"]
        assert all(answer["error"]["code"] == DENIED for answer in answers)
        assert "inside mcp-acp's protected audit log directory" in answers[0]["error"]["message"]
        assert "is mcp-acp's protected audit fallback file" in answers[4]["error"]["message"]
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.close()
    assert config_file.read_bytes() == config_before
    assert not fallback.exists()
    assert verify_stream(log_dir, "decisions").ok  # nothing was written into the trail
    decided = [r for r in records(log_dir, "decisions") if r.get("tool_name") == "write_file"]
    assert [(r["effect"], r["rule_id"], r["policy_id"]) for r in decided] == [
        ("allow", "yes", "yes"),
        ("deny", "builtin-protected-path", "yes"),
        ("deny", "builtin-protected-path", "yes"),
        ("deny", "builtin-protected-path", "yes"),
        ("deny", "builtin-ambiguous-path", "yes"),
    ]
    calls = [
        r["outcome"]
        for r in records(log_dir, "operations")
        if r.get("tool_name") in ("write_file", "read_file")
        and r["direction"] == "client_to_server"
    ]
    assert calls == ["forwarded"] + ["denied"] * 6  # only the first reached the backend


def test_prompt_and_completion_paths_cannot_reach_mcp_acps_own_files(
    isolated_home: Path, tmp_path: Path
) -> None:
    """A prompt that reads the file an argument names, or a completion that lists the
    names under a ``file:`` template or a value being completed, would reach mcp-acp's own
    directories through a backend like any tool: with a plugin engine that allows
    everything, they are denied before the engine, and the backend (which writes down
    every line it receives) never sees them; a prompt naming another file reaches it."""
    home = isolated_home
    received = tmp_path / "received.jsonl"
    peer = Path(__file__).parent / "peers" / "recording_server.py"
    configure(home, sys.executable, [str(peer), str(received)], {"version": "1", "rules": []})
    env = _allow_everything(home, tmp_path)
    config_dir = home / ".config" / "mcp-acp"
    prompt_ref = {"type": "ref/prompt", "name": "summarise"}
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("prompts/get", {"name": "summarise", "arguments": {"file": f"{config_dir}/policy.json"}}),
        (
            "completion/complete",
            {
                "ref": {"type": "ref/resource", "uri": f"file://{config_dir}/{{name}}"},
                "argument": {"name": "name", "value": "po"},
            },
        ),
        (
            "completion/complete",
            {"ref": prompt_ref, "argument": {"name": "file", "value": f"{config_dir}/po"}},
        ),
    ]
    proxy = Proxy(home, env)
    try:
        proxy.initialize()
        answers = [proxy.call(method, params) for method, params in attempts]
        assert [a["error"]["data"]["rule"] for a in answers] == ["builtin-protected-path"] * 3
        assert all(a["error"]["code"] == DENIED for a in answers)
        elsewhere = {"name": "summarise", "arguments": {"file": str(tmp_path / "notes.md")}}
        assert proxy.call("prompts/get", elsewhere)["result"]["messages"]
        miscased = {"ref": prompt_ref, "Argument": {"name": "file", "value": str(config_dir)}}
        answer = proxy.call("completion/complete", miscased)
        assert answer["error"]["data"]["rule"] == "builtin-miscased-key"
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.close()
    reached = [json.loads(line) for line in received.read_text().splitlines()]
    methods = [m.get("method") for m in reached]
    assert "completion/complete" not in methods
    assert [m["params"] for m in reached if m.get("method") == "prompts/get"] == [elsewhere]
