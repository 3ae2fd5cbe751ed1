"""Shared fixtures: an isolated home for every test, a runner for the real CLI, and a
quick run of a benchmark script."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

CLI = Path(sys.executable).parent / "mcp-acp"  # the console script of the installed package


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HOME and XDG dirs, and no mcp-acp variables from outside."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    for name in list(os.environ):
        if name.startswith("MCP_ACP_") or name.startswith("XDG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    # control sockets too: a proxy of the machine's user (or another test run) is not ours
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
    return home


@pytest.fixture
def quick_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[[ModuleType], str]:
    """``quick_report(bench)`` runs a benchmark script's ``main`` with ``--quick``, its
    scratch directory and its results file under ``tmp_path``; checks that it succeeded,
    printed the report it wrote and removed its scratch files; returns the report."""

    def run(bench: ModuleType) -> str:
        out = tmp_path / "report.md"
        assert bench.main(["--quick", "--dir", str(tmp_path / "scratch"), "--out", str(out)]) == 0
        text = out.read_text()
        assert text in capsys.readouterr().out
        assert not (tmp_path / "scratch").exists()
        return text

    return run


@pytest.fixture
def config_path(isolated_home: Path) -> Path:
    """Where the CLI looks for its config under the isolated HOME (Linux layout)."""
    return isolated_home / ".config" / "mcp-acp" / "config.json"


@pytest.fixture
def run_cli(isolated_home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``mcp-acp`` executable as a user would, in the isolated home."""

    def run(
        *args: str, env: dict[str, str] | None = None, input: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
        full_env["HOME"] = str(isolated_home)
        full_env["XDG_RUNTIME_DIR"] = str(isolated_home / "run")
        full_env.update(env or {})
        result = subprocess.run(
            [str(CLI), *args], capture_output=True, text=True, env=full_env, input=input, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"mcp-acp {' '.join(args)} failed: {result.stderr}")
        return result

    return run


#: Secret values tests feed into mcp-acp; none may ever be written to a file by the code
#: under test (config files, which users fill with secrets on purpose, are exempt).
CANARIES = (b"CANARY-7f3a9c-TOKEN-do-not-log",)


@pytest.fixture(scope="session", autouse=True)
def canary_grep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole suite: grep every file the tests wrote for the canary secrets."""
    yield
    base = tmp_path_factory.getbasetemp()
    leaks = []
    for path in base.rglob("*"):
        if not path.is_file() or path.is_symlink() or path.name == "config.json":
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        leaks += [f"{path}: {c.decode()}" for c in CANARIES if c in data]
    assert not leaks, "secrets reached files: " + "; ".join(leaks)
