"""Fixtures for end-to-end tests: the reference servers (installed from the lockfile on first
use) and a configured home with a project directory and a policy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import CLI, E2E, FILESYSTEM, Proxy


@pytest.fixture(scope="session")
def node_peers() -> Path:
    """The reference servers, installed from the committed lockfile on first use."""
    if not (FILESYSTEM / "index.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to install the test peers (tests/e2e/package.json)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=E2E, check=True, timeout=600)
    return FILESYSTEM / "index.js"


POLICY = {
    "version": "1",
    "rules": [
        {"id": "deny-secrets", "effect": "deny", "conditions": {"path_pattern": "**/.env"}},
        {"id": "no-writes", "effect": "deny", "conditions": {"tool_name": "write_file"}},
        {
            "id": "read-project",
            "effect": "allow",
            "conditions": {"operations": "read", "path_pattern": "PROJECT/**"},
        },
    ],
}


@pytest.fixture
def setup(isolated_home: Path, tmp_path: Path, node_peers: Path) -> Iterator[Any]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.md").write_text("hello from the project\n")
    (project / ".env").write_text("API_KEY=not-for-agents\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(isolated_home)
    subprocess.run(
        [
            str(CLI),
            "init",
            "--non-interactive",
            "--backend-command",
            "node",
            "--backend-arg",
            str(node_peers),
            "--backend-arg",
            str(project),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    policy = isolated_home / ".config" / "mcp-acp" / "policy.json"
    policy.write_text(json.dumps(POLICY).replace("PROJECT", str(project)))
    started: list[Proxy] = []

    def start() -> Proxy:
        proxy = Proxy(isolated_home, env)
        started.append(proxy)
        return proxy

    log_dir = isolated_home / ".local" / "state" / "mcp-acp" / "log"
    yield start, project, log_dir, policy
    for proxy in started:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.proc.wait()
