"""Garbage collection is paused while the executable starts, and resumed after."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_helpers import configure, proxy_env

from mcp_acp.startup import pause_collection, resume_collection


@pytest.fixture
def collector() -> Iterator[None]:
    """Whatever a test does to the collector, the next test finds it on."""
    yield
    resume_collection()
    gc.enable()


def test_resume_undoes_only_our_own_pause(collector: None) -> None:
    pause_collection()
    assert not gc.isenabled()
    resume_collection()
    assert gc.isenabled()

    gc.disable()  # a program embedding mcp-acp turned it off itself
    pause_collection()
    resume_collection()
    assert not gc.isenabled()


def _run_main(args: list[str], home: Path, probe: str = "") -> dict[str, object]:
    """``mcp_acp.__main__.main`` as the executable runs it, in a fresh interpreter."""
    code = (
        "import gc, json, sys\n"
        "seen = {}\n"
        f"{probe}"
        "from mcp_acp.__main__ import main\n"
        f"sys.argv = ['mcp-acp', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    seen['exit'] = exc.code\n"
        "seen['enabled_at_exit'] = gc.isenabled()\n"
        "open('seen.json', 'w').write(json.dumps(seen))\n"  # `run` closes our stdout
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=proxy_env(home),
        cwd=home,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads((home / "seen.json").read_text())
    return result


def test_other_commands_resume_collection_before_they_run(isolated_home: Path) -> None:
    probe = (
        "import mcp_acp.control_cli as control_cli\n"
        "status = control_cli.status_command.callback\n"
        "def probed(*args, **kwargs):\n"
        "    seen['enabled_in_command'] = gc.isenabled()\n"
        "    return status(*args, **kwargs)\n"
        "control_cli.status_command.callback = probed\n"
    )
    seen = _run_main(["status"], isolated_home, probe)
    assert seen == {"exit": 0, "enabled_in_command": True, "enabled_at_exit": True}


def test_run_resumes_collection_once_its_backend_has_started(isolated_home: Path) -> None:
    configure(
        isolated_home,
        sys.executable,
        ["-c", "import sys; sys.stdin.read()"],
        {"version": "1", "rules": []},
    )
    probe = (
        "from mcp_acp.proxy.stdio_backend import StdioChannel\n"
        "spawn = StdioChannel._spawn\n"
        "async def probed(self):\n"
        "    seen['enabled_at_spawn'] = gc.isenabled()\n"
        "    return await spawn(self)\n"
        "StdioChannel._spawn = probed\n"
        # `run` ends with os._exit once the session is recorded (no SystemExit to catch)
        "import os\n"
        "exit_now = os._exit\n"
        "def leaving(code):\n"
        "    seen['exit'] = code\n"
        "    seen['enabled_at_exit'] = gc.isenabled()\n"
        "    open('seen.json', 'w').write(json.dumps(seen))\n"
        "    exit_now(code)\n"
        "os._exit = leaving\n"
    )
    seen = _run_main(["run"], isolated_home, probe)
    assert seen == {"exit": 0, "enabled_at_spawn": False, "enabled_at_exit": True}
