"""The control socket's directory, on real directories and sockets: a directory another
user owns or can reach is refused by the server and by the CLI side, so nobody else can
put a socket of their own where ``mcp-acp approvals`` looks."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import pytest
from strace_helpers import needs_strace, needs_syscall_numbers, race

from mcp_acp.control import (
    ENDED_KEEP_SECONDS,
    ControlError,
    ControlServer,
    ask,
    ended_approval,
    peer_uid,
    sockets,
    xucred_uid,
)

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")


def status(command: object, who: str) -> dict[str, str]:
    return {"ok": who}


async def test_a_socket_directory_left_open_by_us_is_closed(tmp_path: Path) -> None:
    shared = tmp_path / "run"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    server = ControlServer(shared)
    server.register("status", status)
    await server.start()
    try:
        assert shared.stat().st_mode & 0o777 == 0o700
        assert sockets(shared) == [server.path]
    finally:
        await server.close()


# Starts a control server on ``argv[1]`` once told to on stdin; says "ok" or its error.
STARTER = """
import asyncio, sys
from pathlib import Path
from mcp_acp.control import ControlError, ControlServer
sys.stdin.readline()
try:
    asyncio.run(ControlServer(Path(sys.argv[1])).start())
except ControlError as exc:
    print("error:", exc, flush=True)
else:
    print("ok", flush=True)
"""


@needs_strace
@needs_syscall_numbers
def test_a_socket_directory_swapped_for_a_symlink_while_it_is_closed_is_refused(
    tmp_path: Path,
) -> None:
    """Our socket directory, left open (0777) in a parent others can write to: while the
    server's chmod to 0700 is in the kernel, another user moves it away and puts a symlink
    to a directory of their choosing in its place. Before, the chmod was by path and
    followed the symlink (as root: any directory made 0700) and the server went on. Now it
    is by descriptor: the directory chmodded is the one checked, and the symlink is refused."""
    parent = tmp_path / "parent"
    parent.mkdir()
    parent.chmod(0o777)
    run = parent / "run"
    run.mkdir()
    run.chmod(0o777)
    victim = tmp_path / "victim"
    victim.mkdir()
    victim.chmod(0o755)

    def swap() -> None:
        run.rename(parent / "moved")
        run.symlink_to(victim)

    said = race(STARTER, str(run), [run], "chmod,fchmod,fchmodat", swap)
    assert victim.stat().st_mode & 0o777 == 0o755
    assert said.startswith("error: refusing the control socket directory"), said
    assert (parent / "moved").stat().st_mode & 0o777 == 0o700  # the one checked was closed


@as_root
async def test_a_socket_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "shared"
    theirs.mkdir(mode=0o777)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(ControlError, match=r"owned by uid 65534, not by you"):
        await ControlServer(theirs).start()
    assert not list(theirs.iterdir())  # no socket made there
    with pytest.raises(ControlError, match="refusing the control socket directory"):
        sockets(theirs)  # and the CLI side will not look in it


def test_a_linked_socket_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ControlError, match="not a directory"):
        sockets(tmp_path / "link")


@as_root
async def test_a_socket_another_user_put_in_our_directory_is_not_asked(tmp_path: Path) -> None:
    ours = tmp_path / "run"
    server = ControlServer(ours)
    server.register("status", status)
    await server.start()
    planted = ours / "proxy-1.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(planted))
    os.chown(planted, NOBODY, NOBODY)
    try:
        assert sockets(ours) == [server.path]  # the planted one is left out
        assert (await asyncio.to_thread(ask, server.path, {"op": "status"}))["ok"]
    finally:
        listener.close()
        await server.close()


def test_the_peer_is_known_by_the_kernel_s_credentials() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_uid(left) == os.geteuid()
        # a system whose peer credentials this code does not know answers nobody
        assert peer_uid(left, platform="sunos5") is None
    closed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    closed.close()
    assert peer_uid(closed) is None  # an error is no uid, not an exception


def xucred(version: int, uid: int, groups: tuple[int, ...], *, pid: int | None = None) -> bytes:
    """A ``struct xucred`` laid out as <sys/ucred.h> declares it on macOS (76 bytes) and,
    with the trailing pid, on FreeBSD 13+ (84 bytes)."""
    padded = (*groups, *([0] * (16 - len(groups))))
    head = struct.pack("=IIh2x16I", version, uid, len(groups), *padded)
    return head if pid is None else head + struct.pack("=i4x", pid)


def test_bsd_and_macos_peer_credentials_are_read_from_xucred() -> None:
    assert xucred_uid(xucred(0, 501, (20, 12, 61))) == 501
    assert xucred_uid(xucred(0, 0, (0,), pid=4242)) == 0
    # another layout version, or bytes cut short, name nobody (and so nobody is answered)
    assert xucred_uid(xucred(1, 501, (20,))) is None
    assert xucred_uid(b"\x00\x00\x00\x00\xf5\x01") is None


@as_root
async def test_a_peer_of_another_user_is_not_answered() -> None:
    # The socket is made reachable on purpose (a 0755 directory, a 0777 socket), so that
    # only the kernel's peer credentials stand between another user and the operations.
    shared = Path(tempfile.mkdtemp(prefix="mcp-acp-control-"))
    server = ControlServer(shared / "run")
    server.register("status", status)
    await server.start()
    try:
        shared.chmod(0o755)
        server.directory.chmod(0o755)
        server.path.chmod(0o777)
        client = (  # drops to the given uid itself: the interpreter may sit where nobody can reach
            "import os, socket, sys\n"
            "os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[2]))\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "s.connect(sys.argv[1])\n"
            "try:\n"
            '    s.sendall(b\'{"op": "status"}\\n\')\n'
            "except BrokenPipeError:\n"
            "    pass  # refused before the command was read: the answer is still there\n"
            "print(s.makefile().readline(), end='')\n"
        )

        async def ask_as(uid: int) -> str:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", client, str(server.path), str(uid), cwd="/",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await child.communicate()
            assert child.returncode == 0, err.decode()
            return out.decode()

        assert json.loads(await ask_as(NOBODY)) == {
            "error": "not allowed: only the proxy's own user"
        }
        assert json.loads(await ask_as(os.geteuid())) == {"ok": "root"}
    finally:
        await server.close()
        shutil.rmtree(shared)


async def test_a_long_answer_is_read_whole(tmp_path: Path) -> None:
    """``approvals list`` of approvals with long paths can be tens of megabytes: read whole,
    in many chunks. (How fast is not asserted here — no timings in tests: it is read in
    chunks joined once, where copying what was read so far for each chunk took 6 s for
    40 MB.)"""
    summary = "/tmp/" + "d" * (40 * 1024 * 1024)
    server = ControlServer(tmp_path / "run")
    server.register("list", lambda command, who: {"pending": [{"summary": summary}]})
    await server.start()
    try:
        answer = await asyncio.to_thread(ask, server.path, {"op": "list"}, 60)
    finally:
        await server.close()
    assert answer["pending"][0]["summary"] == summary


async def test_a_proxy_ending_notes_its_approvals_for_late_answers(tmp_path: Path) -> None:
    """``record_ended`` (at a fail-closed exit) leaves ``proxy-<pid>.ended``, 0600, beside
    the socket; ``ended_approval`` (the CLI) finds an approval in it. It reads no link and no
    note of another's, and removes a note older than ``ENDED_KEEP_SECONDS`` unread."""
    directory = tmp_path / "run"
    server = ControlServer(directory)
    server.record_ended({"a1": {"answer": None, "outcome": "x"}})  # not started: no note
    assert not server.ended_path.exists()
    await server.start()
    server.record_ended({})  # nothing ended: no note
    assert not server.ended_path.exists()
    entry = {"answer": None, "by": None, "outcome": "the proxy shut down (x); denied"}
    server.record_ended({"a1": entry})
    await server.close()
    assert server.ended_path.stat().st_mode & 0o777 == 0o600
    assert ended_approval(directory, "a1") == (os.getpid(), entry)
    assert ended_approval(directory, "a2") is None
    assert ended_approval(tmp_path / "none", "a1") is None

    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"pid": 9, "ended": {"a9": entry}}))
    (directory / "proxy-9.ended").symlink_to(elsewhere)
    assert ended_approval(directory, "a9") is None  # never followed

    old = time.time() - ENDED_KEEP_SECONDS - 1
    os.utime(server.ended_path, (old, old))
    assert ended_approval(directory, "a1") is None
    assert not server.ended_path.exists()
    stale = directory / "proxy-8.ended"
    stale.write_text("{}")
    os.utime(stale, (old, old))
    starting = ControlServer(directory)
    await starting.start()  # a proxy starting removes old notes too
    await starting.close()
    assert not stale.exists()
    assert (directory / "proxy-9.ended").is_symlink()  # not its to remove


async def test_json_nested_too_deep_is_answered_not_json(tmp_path: Path) -> None:
    """A line of 5,000 ``[`` (within the 64 KiB line limit) makes the parser recurse past
    Python's limit: the caller is told, as for any other line that is not JSON, and the
    socket goes on answering."""
    server = ControlServer(tmp_path / "run")
    server.register("status", status)
    await server.start()

    def send(line: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(str(server.path))
            client.sendall(line)
            return client.makefile("rb").readline()

    try:
        answer = await asyncio.to_thread(send, b"[" * 5000 + b"\n")
        after = await asyncio.to_thread(ask, server.path, {"op": "status"})
    finally:
        await server.close()
    assert json.loads(answer) == {"error": "not JSON"}
    assert list(after) == ["ok"]  # the status op's answer: still served


async def test_a_connection_that_sends_nothing_is_closed(tmp_path: Path) -> None:
    """A peer that connects and idles (never sends its line, or sends half of one) is
    disconnected after ``control.IO_SECONDS``, so idle connections cannot hold the proxy's
    descriptors for ever; the socket still answers others."""
    server = ControlServer(tmp_path / "run")
    server.register("status", status)
    await server.start()

    def idle(sent: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
            peer.settimeout(60)  # only so that a failing test ends
            peer.connect(str(server.path))
            peer.sendall(sent)
            return peer.recv(1024)

    try:
        closed = await asyncio.gather(
            asyncio.to_thread(idle, b""), asyncio.to_thread(idle, b'{"op": "sta')
        )
        answer = await asyncio.to_thread(ask, server.path, {"op": "status"})
    finally:
        await server.close()
    assert closed == [b"", b""]
    assert answer == {"ok": pwd.getpwuid(os.geteuid()).pw_name}
