"""``_fs.ensure_private_dir``: the directories mcp-acp makes for its logs, sockets, tokens
and pins — 0700 when it makes them, and never made or chmodded through a name another
user swaps in meanwhile (a real race, held open in the kernel with strace)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from strace_helpers import needs_strace, needs_syscall_numbers, race

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
@needs_syscall_numbers
def test_a_symlink_swapped_in_during_mkdir_is_neither_chmodded_nor_created_through(
    tmp_path: Path,
) -> None:
    """In a world-writable parent (as in /tmp), another user replaces the directory being
    made with a symlink to a directory of theirs choosing, while the ``mkdir`` is in the
    kernel. Before, the ``mkdir`` failed with EEXIST, then ``chmod`` by path followed the
    symlink (as root: any directory on the system made 0700) and the next level was
    created inside it. Now the name is opened without following it: refused."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.mkdir()
    victim.chmod(0o755)
    made = shared / "made"
    # both by path (mkdir("…/shared/made")) and by the parent's descriptor (mkdirat(fd, "made"))
    said = race(
        MAKER, str(made / "inner"), [shared, made], "mkdir,mkdirat", lambda: made.symlink_to(victim)
    )
    assert said.startswith("error:"), said
    assert "symlink was put in its place" in said
    assert str(made) in said
    assert mode(victim) == 0o755
    assert list(victim.iterdir()) == []
