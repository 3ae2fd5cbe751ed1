"""The one place that starts a process: absolute path, no shell, bounded, always reaped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

import attrs

__all__ = ["Completed", "run_command"]

# The tools are looked up by absolute path, never through PATH; the child gets this fixed
# environment so a caller's PATH, DYLD_* or locale cannot change what runs or what it prints.
_ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C"}


@attrs.frozen(slots=True)
class Completed:
    """A process that ran to its end (any exit code)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """stdout then stderr: some tools (``spctl``) answer on either."""
        return f"{self.stdout}\n{self.stderr}".strip()


async def run_command(argv: Sequence[str], timeout: float) -> Completed | str:
    """Run ``argv`` without a shell; return what it printed, or a string saying why not."""
    program = argv[0]
    if not os.path.isabs(program):
        return f"refusing to run {program!r}: not an absolute path"
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_ENV,
            start_new_session=True,  # a group of its own: whatever it starts ends with it
        )
    except FileNotFoundError:
        return f"{program} does not exist on this host"
    except OSError as exc:
        return f"cannot run {program}: {exc.strerror or exc}"
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        return f"{program} gave no answer within {timeout:g} s"
    finally:
        # A timeout, or the monitor cancelling us: never leave the child running, nor
        # anything it started (which may hold its output open after the child exited).
        # The group's id stays taken while any process is in it, so it names no other.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()
    return Completed(
        returncode=process.returncode if process.returncode is not None else -1,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
    )
