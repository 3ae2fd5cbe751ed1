"""The built-in ``local`` identity through the real ``mcp-acp run``: its subject is the OS
user the proxy runs as, whatever the environment the MCP client started it with says."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from proxy_helpers import E2E, Proxy, configure, decisions, proxy_env

RECORDING_SERVER = E2E / "peers" / "recording_server.py"


def test_the_local_subject_is_the_os_user_not_the_environments(
    isolated_home: Path, tmp_path: Path
) -> None:
    """``getpass.getuser()`` reads ``LOGNAME``, ``USER``, ``LNAME`` and ``USERNAME`` before
    it asks the system: an MCP client (or a project's MCP config) that started the proxy
    with ``LOGNAME=alice`` made the subject ``alice`` — matching ``"subject_id": "alice"``
    rules, and on record as her — while the process ran as someone else."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    claimed = "not-" + me
    policy = {
        "version": "1",
        "rules": [
            {"id": "claimed", "effect": "allow", "conditions": {"subject_id": claimed}},
            {"id": "me", "effect": "deny", "conditions": {"subject_id": me}},
        ],
    }
    log_dir = configure(
        isolated_home, sys.executable, [str(RECORDING_SERVER), str(tmp_path / "got")], policy
    )
    env = proxy_env(isolated_home)
    env.update({name: claimed for name in ("LOGNAME", "USER", "LNAME", "USERNAME")})
    proxy = Proxy(isolated_home, env)
    try:
        proxy.initialize()
        answer = proxy.call("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    finally:
        proxy.close()
    assert answer["error"]["data"]["rule"] == "me", answer
    calls = [r for r in decisions(log_dir) if r.get("tool_name") == "echo"]
    assert [(r["subject_id"], r["subject_provenance"]) for r in calls] == [(me, "config")]


def test_the_warning_names_the_subject_the_config_gives(
    isolated_home: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """With ``subject_id`` set, the subject is that name, not the OS user: the warning
    said "the subject is the OS user" all the same."""
    run_cli("init", "--non-interactive", "--backend-command", "true", check=True)
    config = isolated_home / ".config" / "mcp-acp" / "config.json"
    document = json.loads(config.read_text())
    document["identity"] = {"use": "local", "config": {"subject_id": "alice"}}
    config.write_text(json.dumps(document))
    plain = run_cli("config", "validate")
    assert plain.returncode == 0, plain.stderr
    assert (
        "identity 'local': the subject is 'alice', as the config's subject_id says, not a "
        "verified identity"
    ) in plain.stderr
    assert "the OS user" not in plain.stderr
