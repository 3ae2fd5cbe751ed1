"""strace(1) for tests that hold a real system call in the kernel: a disk that stopped
answering, or the moment another user changes a file system name under a process.

Without strace the tests that need it are skipped, unless ``REQUIRE_STRACE=1`` (CI sets it):
then they fail, so that a missing install step cannot pass as green."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

STRACE = shutil.which("strace")
if STRACE is None and os.environ.get("REQUIRE_STRACE") == "1":
    raise RuntimeError("REQUIRE_STRACE=1 but strace is not installed")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace(1) is not installed")


class Hang:
    """strace(1) attached to a running process, holding every ``syscall`` on ``path`` in
    the kernel for ten minutes: a disk or network mount that stopped answering, for that
    file only (and ``also`` those: a call naming a directory's descriptor, ``mkdirat(fd,
    "name")``, is matched by that directory). :meth:`release` detaches it — the process was
    held at exit meanwhile."""

    def __init__(self, pid: int, path: Path, syscall: str, also: Sequence[Path] = ()) -> None:
        paths = [arg for extra in also for arg in ("-P", str(extra))]
        self.strace = subprocess.Popen(
            [
                str(STRACE),
                "-f",
                "-p",
                str(pid),
                "-o",
                "/dev/null",
                "-P",
                str(path),
                *paths,
                "-e",
                f"trace={syscall}",
                "-e",
                f"inject={syscall}:delay_enter=600000000",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.strace.stderr is not None
        said = self.strace.stderr.readline()  # "strace: Process N attached with 3 threads"
        if "attached" not in said:
            self.strace.wait()
            if os.environ.get("REQUIRE_STRACE") == "1":
                raise RuntimeError(f"strace cannot attach here: {said.strip()}")
            pytest.skip(f"strace cannot attach here: {said.strip()}")

    def release(self) -> None:
        """Kill strace (holding a call, it does not stop on SIGTERM): the kernel detaches
        the process, and the call held goes on."""
        self.strace.kill()
        self.strace.wait(timeout=30)
