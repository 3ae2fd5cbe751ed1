"""The control socket's directory, on real directories and sockets: a directory another
user owns or can reach is refused by the server and by the CLI side, so nobody else can
put a socket of their own where ``mcp-acp approvals`` looks."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from mcp_acp.control import ControlError, ControlServer, ask, sockets

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
