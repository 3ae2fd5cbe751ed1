"""Fixtures for end-to-end tests: the reference servers (installed from the lockfile on first
use) and a configured home with a project directory and a policy."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import E2E, EVERYTHING, FILESYSTEM, Proxy, configure, git, proxy_env


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
    policy_text = json.dumps(POLICY).replace("PROJECT", str(project))
    log_dir = configure(
        isolated_home, "node", [str(node_peers), str(project)], json.loads(policy_text)
    )
    policy = isolated_home / ".config" / "mcp-acp" / "policy.json"
    started: list[Proxy] = []

    def start() -> Proxy:
        proxy = Proxy(isolated_home, proxy_env(isolated_home))
        started.append(proxy)
        return proxy

    yield start, project, log_dir, policy
    for proxy in started:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.proc.wait()


@pytest.fixture
def everything(node_peers: Path) -> Path:
    """The reference "everything" server (sampling, progress, elicitation, …) from npm."""
    return EVERYTHING


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real repository: one commit, and a staged change that a commit or a reset would
    consume (so either leaves evidence)."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("first\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "first commit")
    (repo / "README.md").write_text("first\nsecond\n")
    git(repo, "add", "README.md")
    return repo
