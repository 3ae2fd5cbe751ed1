"""``_fs.ensure_private_dir``: the directories mcp-acp makes for its logs, sockets, tokens
and pins — 0700 when it makes them, and never made or chmodded through a name another
user swaps in meanwhile (a real race, held open in the kernel with strace)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from strace_helpers import Hang, needs_strace

from mcp_acp._fs import ensure_private_dir

# The process under test makes ``argv[1]`` (and parents) once told to on stdin, then says
# "ok" or the error it got.
MAKER = """
import sys
from pathlib import Path
from mcp_acp._fs import ensure_private_dir
sys.stdin.readline()
try:
    ensure_private_dir(Path(sys.argv[1]))
except OSError as exc:
    print("error:", exc, flush=True)
else:
    print("ok", flush=True)
"""

#: mkdir and mkdirat, by architecture: what /proc/PID/syscall shows while one is held.
MKDIR_CALLS = {"x86_64": {"83", "258"}, "aarch64": {"34"}}.get(os.uname().machine)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_missing_parents_are_made_0700_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    old = os.umask(0o277)  # would leave mkdir's 0700 at 0500
    try:
        ensure_private_dir(target)
    finally:
        os.umask(old)
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", target)] == [0o700] * 3


def test_an_existing_directory_is_left_as_it_is(tmp_path: Path) -> None:
    """Not made here, so not chmodded here: callers check what they use."""
    existing = tmp_path / "shared"
    existing.mkdir()
    existing.chmod(0o755)
    ensure_private_dir(existing / "mine")
    assert mode(existing) == 0o755
    assert mode(existing / "mine") == 0o700


def test_a_symlink_in_the_place_of_a_missing_directory_is_refused(tmp_path: Path) -> None:
    """A dangling symlink does not "exist", so the name is missing: it is not followed."""
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(OSError, match="symlink was put in its place"):
        ensure_private_dir(tmp_path / "link" / "inner")
    assert not elsewhere.exists()


@needs_strace
@pytest.mark.skipif(MKDIR_CALLS is None, reason="mkdir's syscall numbers not known here")
def test_a_symlink_swapped_in_during_mkdir_is_neither_chmodded_nor_created_through(
    tmp_path: Path,
) -> None:
    """In a world-writable parent (as in /tmp), another user replaces the directory being
    made with a symlink to a directory of theirs choosing, while the ``mkdir`` is in the
    kernel. Before, the ``mkdir`` failed with EEXIST, then ``chmod`` by path followed the
    symlink (as root: any directory on the system made 0700) and the next level was
    created inside it. Now the name is opened without following it: refused."""
    assert MKDIR_CALLS is not None
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.mkdir()
    victim.chmod(0o755)
    made = shared / "made"
    maker = subprocess.Popen(
        [sys.executable, "-c", MAKER, str(made / "inner")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert maker.stdin is not None
    assert maker.stdout is not None
    # both by path (mkdir("…/shared/made")) and by the parent's descriptor (mkdirat(fd, "made"))
    hang = Hang(maker.pid, shared, "mkdir,mkdirat", also=[made])
    try:
        maker.stdin.write("go\n")
        maker.stdin.flush()
        deadline = time.monotonic() + 30
        syscall = Path(f"/proc/{maker.pid}/syscall")
        while syscall.read_text().split(" ", 1)[0] not in MKDIR_CALLS:
            assert time.monotonic() < deadline, "the maker never reached mkdir"
            time.sleep(0.01)
        made.symlink_to(victim)  # the swap, while the mkdir is held
    finally:
        hang.release()
    said = maker.stdout.readline().strip()
    maker.wait(timeout=30)
    assert said.startswith("error:"), said
    assert "symlink was put in its place" in said
    assert str(made) in said
    assert mode(victim) == 0o755
    assert list(victim.iterdir()) == []
