"""The checks and their runner against real processes, and through the plugin loader."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from mcp_acp_macos_posture import CommandCheck, FirewallConfig
from mcp_acp_macos_posture.parse import parse_fdesetup
from mcp_acp_macos_posture.run import Completed, run_command
from pydantic import ValidationError

from mcp_acp.models import PostureStatus
from mcp_acp.plugins import load_plugins
from mcp_acp.posture import run_check
from mcp_acp.registry import Kind, PluginContext

NAMES = ["macos-filevault", "macos-sip", "macos-gatekeeper", "macos-firewall"]


@pytest.fixture
def context(tmp_path: Path) -> PluginContext:
    return PluginContext(tmp_path / "config.json", tmp_path)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie awaiting its reaper counts as exited)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tool"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


async def test_runner_runs_an_absolute_path_without_a_shell() -> None:
    # a shell would expand $HOME and split on ';'; exec passes both through untouched
    done = await run_command(["/bin/echo", "$HOME; FileVault"], 5)
    assert done == Completed(returncode=0, stdout="$HOME; FileVault\n", stderr="")


async def test_runner_uses_a_fixed_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("DYLD_INSERT_LIBRARIES", str(tmp_path / "evil.dylib"))
    done = await run_command(["/usr/bin/env"], 5)
    assert isinstance(done, Completed)
    assert sorted(done.stdout.split()) == ["LC_ALL=C", "PATH=/usr/bin:/bin:/usr/sbin:/sbin"]


async def test_runner_refuses_a_relative_path() -> None:
    assert "not an absolute path" in str(await run_command(["echo", "hi"], 5))


async def test_runner_reports_a_missing_binary(tmp_path: Path) -> None:
    assert await run_command([str(tmp_path / "fdesetup"), "status"], 5) == (
        f"{tmp_path / 'fdesetup'} does not exist on this host"
    )


async def test_runner_kills_a_hanging_tool(tmp_path: Path) -> None:
    tool = _script(tmp_path, f"echo $$ > {tmp_path}/pid\nexec sleep 30")
    outcome = await run_command([str(tool)], 0.5)
    assert outcome == f"{tool} gave no answer within 0.5 s"
    pid = int((tmp_path / "pid").read_text())
    assert _gone(pid)


def _wait_gone(pid: int) -> bool:
    """The process exits within 10 s (a SIGKILL is delivered when it is next scheduled)."""
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return _gone(pid)


@pytest.mark.parametrize(
    "body",
    [
        "sleep 30 >/dev/null 2>&1 &\necho $! > {dir}/grandchild\nwait",  # the tool hangs
        "sleep 30 &\necho $! > {dir}/grandchild\nexit 0",  # its child holds the output
    ],
    ids=["tool-waits", "tool-exits"],
)
async def test_runner_kills_what_a_hanging_tool_started(tmp_path: Path, body: str) -> None:
    """Only the tool itself was killed at the timeout: a process it started ran on, and,
    when the tool had exited leaving it holding the output open, nothing was killed at
    all. The tool runs in a process group of its own now, and the whole group is killed."""
    tool = _script(tmp_path, body.format(dir=tmp_path))
    outcome = await run_command([str(tool)], 0.5)
    assert outcome == f"{tool} gave no answer within 0.5 s"
    grandchild = int((tmp_path / "grandchild").read_text())
    try:
        assert _wait_gone(grandchild)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(grandchild, signal.SIGKILL)


async def test_runner_reads_stderr_and_any_exit_code(tmp_path: Path) -> None:
    tool = _script(tmp_path, "echo 'assessments disabled' >&2; exit 1")
    done = await run_command([str(tool)], 5)
    assert isinstance(done, Completed)
    assert (done.returncode, done.text) == (1, "assessments disabled")


@pytest.mark.parametrize("name", NAMES)
async def test_every_check_is_unknown_off_macos(name: str, context: PluginContext) -> None:
    registration = load_plugins({"macos-posture"}).registry.get(Kind.POSTURE_CHECK, name)
    assert registration is not None
    assert registration.plugin == "macos-posture"
    check = registration.factory(registration.config_model.model_validate({}), context)
    assert isinstance(check, CommandCheck)
    check.platform = "linux"  # what this host is, whatever runs the tests
    result = await check.check()
    assert result.check == name
    assert result.status is PostureStatus.UNKNOWN
    assert result.detail == f"{name} is a macOS check and this host is 'linux'"


@pytest.mark.skipif(sys.platform == "darwin", reason="the real host is macOS")
async def test_real_checks_on_this_host_are_unknown(context: PluginContext) -> None:
    registry = load_plugins({"macos-posture"}).registry
    for name in NAMES:
        registration = registry.get(Kind.POSTURE_CHECK, name)
        assert registration is not None
        check = registration.factory(registration.config_model.model_validate({}), context)
        assert (await run_check(check, 10)).status is PostureStatus.UNKNOWN


async def test_on_macos_a_missing_tool_is_unknown(tmp_path: Path) -> None:
    check = CommandCheck(
        "macos-filevault", [str(tmp_path / "fdesetup"), "status"], parse_fdesetup, platform="darwin"
    )
    result = await check.check()
    assert result.status is PostureStatus.UNKNOWN
    assert "does not exist on this host" in result.detail


@pytest.mark.parametrize(
    ("output", "expected"),
    [("FileVault is On.", PostureStatus.PASS), ("FileVault is Off.", PostureStatus.FAIL)],
)
async def test_on_macos_the_tool_output_decides(
    tmp_path: Path, output: str, expected: PostureStatus
) -> None:
    tool = _script(tmp_path, f"echo '{output}'")
    check = CommandCheck("macos-filevault", [str(tool)], parse_fdesetup, platform="darwin")
    assert (await check.check()).status is expected


async def test_on_macos_a_hanging_tool_is_unknown(tmp_path: Path) -> None:
    tool = _script(tmp_path, "exec sleep 30")
    check = CommandCheck(
        "macos-filevault", [str(tool)], parse_fdesetup, timeout=0.3, platform="darwin"
    )
    result = await run_check(check, 10)
    assert (result.status, result.detail) == (
        PostureStatus.UNKNOWN,
        f"{tool} gave no answer within 0.3 s",
    )


async def test_the_check_passes_argv_and_timeout_to_the_runner(context: PluginContext) -> None:
    calls: list[tuple[Sequence[str], float]] = []

    async def runner(argv: Sequence[str], timeout: float) -> Completed | str:
        calls.append((argv, timeout))
        return Completed(0, "Firewall is enabled. (State = 1)\n", "")

    registration = load_plugins({"macos-posture"}).registry.get(
        Kind.POSTURE_CHECK, "macos-firewall"
    )
    assert registration is not None
    check = registration.factory(FirewallConfig(timeout_seconds=2), context)
    check.platform, check.run = "darwin", runner
    assert (await check.check()).status is PostureStatus.PASS
    assert calls == [(("/usr/libexec/ApplicationFirewall/socketfilterfw", "--getglobalstate"), 2.0)]


@pytest.mark.parametrize("name", NAMES)
def test_options_forbid_unknown_keys(name: str) -> None:
    registration = load_plugins({"macos-posture"}).registry.get(Kind.POSTURE_CHECK, name)
    assert registration is not None
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        registration.config_model.model_validate({"timeout": 5})
    with pytest.raises(ValidationError):
        registration.config_model.model_validate({"timeout_seconds": 0})


def test_every_check_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in NAMES:
        assert f"`{name}`" in readme


async def test_the_monitor_timeout_also_ends_the_tool(tmp_path: Path) -> None:
    # the check allows 30 s, the monitor 0.3 s: cancelling the check kills the child
    tool = _script(tmp_path, f"echo $$ > {tmp_path}/pid\nexec sleep 30")
    check = CommandCheck(
        "macos-filevault", [str(tool)], parse_fdesetup, timeout=30, platform="darwin"
    )
    result = await run_check(check, 0.3)
    assert (result.status, result.detail) == (PostureStatus.UNKNOWN, "no answer within 0.3 s")
    pid = int((tmp_path / "pid").read_text())
    assert _gone(pid)
