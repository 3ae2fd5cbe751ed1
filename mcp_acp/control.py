"""The proxy's control socket: a local Unix socket that answers ``mcp-acp status`` and
``mcp-acp approvals``.

Each running proxy serves ``proxy-<pid>.sock`` in the runtime directory
(``$XDG_RUNTIME_DIR/mcp-acp`` on Linux; directory 0700, socket 0600). Only a peer with the
proxy's own user id (or root) is answered — checked with the kernel's peer credentials,
never with anything the peer says.

The wire format is one JSON object per line each way: ``{"op": "<name>", …}`` in, one
answer out, then the connection closes. Operations are plain functions registered by name:
the proxy registers ``status``; a component that wants commands of its own (the ``cli``
approver's ``list``, ``approve``, ``deny``) offers them with a ``control_ops()`` method.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import socket
import struct
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import platformdirs

from mcp_acp._fs import ensure_private_dir

__all__ = ["ControlServer", "Operation", "ask", "runtime_dir", "sockets"]

MAX_LINE = 64 * 1024

#: One operation: the command (a JSON object) and the caller's user name -> the answer.
Operation = Callable[[Mapping[str, Any], str], dict[str, Any]]


def runtime_dir() -> Path:
    with warnings.catch_warnings():  # no XDG_RUNTIME_DIR: platformdirs' /tmp fallback is fine
        warnings.simplefilter("ignore")
        return platformdirs.user_runtime_path("mcp-acp", appauthor=False)


def sockets(directory: Path | None = None) -> list[Path]:
    """Every running proxy's control socket of this user."""
    return sorted((directory or runtime_dir()).glob("proxy-*.sock"))


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class ControlServer:
    """Serves registered operations on this process's control socket."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or runtime_dir()
        self.path = self.directory / f"proxy-{os.getpid()}.sock"
        self.operations: dict[str, Operation] = {}
        self._server: asyncio.AbstractServer | None = None

    def register(self, name: str, operation: Operation) -> None:
        if name in self.operations:
            raise ValueError(f"control operation {name!r} is registered twice")
        self.operations[name] = operation

    async def start(self) -> None:
        """Open the socket (0600 in a 0700 directory)."""
        if self._server is not None:
            return
        ensure_private_dir(self.directory)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer)
            if uid is None or uid not in (os.geteuid(), 0):
                await self._reply(writer, {"error": "not allowed: only the proxy's own user"})
                return
            line = await reader.readline()
            try:
                command = json.loads(line)
            except ValueError:
                await self._reply(writer, {"error": "not JSON"})
                return
            await self._reply(writer, self.handle(command, _user(uid)))
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def handle(self, command: Any, who: str) -> dict[str, Any]:
        if not isinstance(command, dict):
            return {"error": "expected a JSON object"}
        operation = self.operations.get(str(command.get("op")))
        if operation is None:
            return {"error": f"unknown op {command.get('op')!r}", "ops": sorted(self.operations)}
        try:
            return operation(command, who)
        except Exception as exc:  # one bad command must not take the socket down
            return {"error": f"{type(exc).__name__}: {exc}"}

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        writer.write(json.dumps(body, default=str).encode() + b"\n")
        await writer.drain()


def ask(path: Path, command: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to one proxy's socket and return its answer (for the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        client.sendall(json.dumps(command).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    return answer if isinstance(answer, dict) else {"error": "bad answer"}
