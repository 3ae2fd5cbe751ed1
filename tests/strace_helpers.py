"""strace(1) for tests that hold a real system call in the kernel: a disk that stopped
answering, or the moment another user changes a file system name under a process.

Without strace the tests that need it are skipped, unless ``REQUIRE_STRACE=1`` (CI sets it):
then they fail, so that a missing install step cannot pass as green."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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
    "name")``, is matched by that directory; strace matches a ``rename`` by its first path
    only). ``path`` None: every such call; ``when``: only the call of that number (1 is the
    first). :meth:`release` detaches it — the process was held at exit meanwhile."""

    def __init__(
        self,
        pid: int,
        path: Path | None,
        syscall: str,
        also: Sequence[Path] = (),
        when: int | None = None,
    ) -> None:
        paths = [arg for p in ([path] if path else []) + list(also) for arg in ("-P", str(p))]
        nth = f":when={when}" if when is not None else ""
        self.strace = subprocess.Popen(
            [
                str(STRACE),
                "-f",
                "-p",
                str(pid),
                "-o",
                "/dev/null",
                *paths,
                "-e",
                f"trace={syscall}",
                "-e",
                f"inject={syscall}:delay_enter=600000000{nth}",
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


#: Syscall numbers by architecture: what ``/proc/PID/syscall`` shows while one is held.
_NUMBERS = {
    "x86_64": {
        "mkdir": "83",
        "mkdirat": "258",
        "chmod": "90",
        "fchmod": "91",
        "fchmodat": "268",
        "rename": "82",
        "renameat": "264",
        "renameat2": "316",
        "link": "86",
        "linkat": "265",
    },
    "aarch64": {
        "mkdirat": "34",
        "fchmod": "52",
        "fchmodat": "53",
        "renameat": "38",
        "renameat2": "276",
        "linkat": "37",
    },
}.get(os.uname().machine)
needs_syscall_numbers = pytest.mark.skipif(
    _NUMBERS is None, reason="syscall numbers not known on this architecture"
)


def race(
    script: str,
    argument: str,
    held: Sequence[Path],
    syscalls: str,
    meanwhile: Callable[[], None],
    when: int | None = None,
) -> str:
    """Run ``script`` (Python; it waits for a line on stdin, then does its work and prints
    one line) with ``argument``, hold its first of ``syscalls`` on any of ``held`` (on any
    path if ``held`` is empty; the ``when``-th, if given) in the kernel, call ``meanwhile``
    — another user's move, at exactly that moment — then let the call go on. The script's
    line."""
    assert _NUMBERS is not None
    numbers = {_NUMBERS[name] for name in syscalls.split(",") if name in _NUMBERS}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, argument],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    hang = Hang(proc.pid, held[0] if held else None, syscalls, also=held[1:], when=when)
    try:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        syscall = Path(f"/proc/{proc.pid}/syscall")
        while syscall.read_text().split(" ", 1)[0] not in numbers:
            assert time.monotonic() < deadline, f"the process never reached {syscalls}"
            time.sleep(0.01)
        meanwhile()
    finally:
        hang.release()
    said = proc.stdout.readline().strip()
    proc.wait(timeout=30)
    return said
