"""The proxy's control socket: a local Unix socket that answers ``mcp-acp status`` and
``mcp-acp approvals``.

Each running proxy serves ``proxy-<pid>.sock`` in the runtime directory
(``$XDG_RUNTIME_DIR/mcp-acp`` on Linux; directory 0700, socket 0600). Only a peer with the
proxy's own user id (or root) is answered — checked with the kernel's peer credentials,
never with anything the peer says. On Linux, a peer in the stdio backend's session (the
backend, or a program it started, such as a shell tool's: they run as the proxy's user)
is refused too, so that a backend cannot approve its own requests by running
``mcp-acp approvals approve``; one that leaves the session (``setsid``) is not told apart.

The wire format is one JSON object per line each way: ``{"op": "<name>", …}`` in, one
answer out, then the connection closes. A peer that takes longer than :data:`IO_SECONDS`
to send its line, or to take the answer, is disconnected. Operations are functions
registered by name — plain, or coroutines for an answer that must wait for something (the
``cli`` approver's ``approve`` waits for the proxy to say what became of the request): the
proxy registers ``status``; a component that wants commands of its own (the ``cli``
approver's ``list``, ``show``, ``approve``, ``deny``) offers them with a ``control_ops()`` method.

A proxy whose session has ended cannot answer any more — after a fail-closed shutdown its
event loop does not even run again — so on the way out it leaves a note beside its socket,
``proxy-<pid>.ended`` (0600): the approvals it held or ended and what became of each
(:meth:`ControlServer.record_ended`). An answer that comes too late, while the process
exits or after, is told that instead of "no such approval" (:func:`ended_approval`). A
note is kept :data:`ENDED_KEEP_SECONDS`, then removed by whoever reads it or by the next
proxy to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import json
import os
import pwd
import socket
import stat
import struct
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import platformdirs

from mcp_acp._fs import ensure_private_dir
from mcp_acp.errors import ConfigError, exception_text

__all__ = [
    "ControlError",
    "ControlServer",
    "NoAnswer",
    "Operation",
    "ask",
    "ended_approval",
    "private_dir_problem",
    "runtime_dir",
    "sockets",
]

MAX_LINE = 64 * 1024
#: How long a connection may take to send its command, and to take the answer: one that
#: idles longer is closed, so that idle connections cannot hold the proxy's descriptors.
IO_SECONDS = 5.0
#: How long the note of a proxy that has ended answers for its approvals; an older
#: one is removed by whoever reads it (no approval waits longer than 300 s anyway).
ENDED_KEEP_SECONDS = 600.0
#: A note larger than this is not read (it holds a few approvals, a line each).
MAX_NOTE = 1 << 20


class NoAnswer(OSError):
    """A proxy took the command but closed the connection without a whole answer: it ended
    meanwhile (a fail-closed exit), or did not answer within the timeout."""


class ControlError(ConfigError):
    """The control socket's directory cannot be trusted (exit 10, as a config problem)."""

    def __init__(
        self,
        message: str,
        fix: str = "use a directory only you can reach (chmod 700), e.g. leave proxy.socket_dir "
        "unset",
    ) -> None:
        super().__init__(message, fix=fix)


#: One operation: the command (a JSON object) and the caller's user name -> the answer (or
#: an awaitable of it).
Operation = Callable[[Mapping[str, Any], str], dict[str, Any] | Awaitable[dict[str, Any]]]


def runtime_dir() -> Path:
    """Where control sockets live: ``$XDG_RUNTIME_DIR/mcp-acp``, else platformdirs' fallback
    (``/run/user/<uid>``, then ``/tmp/runtime-<uid>``). ``ControlError`` if the fallback is
    not this user's (another user made ``/tmp/runtime-<uid>`` first)."""
    with warnings.catch_warnings():  # no XDG_RUNTIME_DIR: platformdirs' /tmp fallback is fine
        warnings.simplefilter("ignore")
        try:
            return platformdirs.user_runtime_path("mcp-acp", appauthor=False)
        except PermissionError as exc:  # platformdirs refuses a fallback it cannot trust
            raise ControlError(
                f"refusing the runtime directory: {exc}",
                fix="set XDG_RUNTIME_DIR to a directory of yours with mode 0700, or set "
                "proxy.socket_dir in the config",
            ) from None


def private_dir_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot hold control sockets, or ``None``: it must be a real
    directory (not a link), owned by this user, with no access for group or others —
    otherwise another user could replace a socket in it with one of their own, and
    ``mcp-acp approvals`` would talk to theirs."""
    try:
        info = directory.lstat()
    except FileNotFoundError:
        return f"{directory} does not exist"
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory (a link is never followed)"
    if info.st_uid != os.geteuid():
        return f"{directory} is owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
    if info.st_mode & 0o077:
        return f"{directory} is open to group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def sockets(directory: Path | None = None) -> list[Path]:
    """Every running proxy's control socket of this user: sockets owned by this user, in a
    private directory (:func:`private_dir_problem`); ``ControlError`` if it is not one."""
    directory = directory or runtime_dir()
    if not directory.exists():
        return []
    problem = private_dir_problem(directory)
    if problem is not None:
        raise ControlError(f"refusing the control socket directory: {problem}")
    found = []
    for path in sorted(directory.glob("proxy-*.sock")):
        with contextlib.suppress(OSError):
            info = path.lstat()
            if stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid():
                found.append(path)
    return found


# Linux: getsockopt(SOL_SOCKET, SO_PEERCRED) fills a struct ucred: pid, uid, gid.
_UCRED = struct.Struct("=iII")
# BSD and macOS: getsockopt(SOL_LOCAL, LOCAL_PEERCRED) fills a struct xucred, which begins
# with ``u_int cr_version; uid_t cr_uid`` (then the groups; FreeBSD appends the pid).
_SOL_LOCAL = 0
_LOCAL_PEERCRED = 1
_XUCRED_VERSION = 0
_XUCRED_HEAD = struct.Struct("=II")
_XUCRED_MAX = 128  # 76 bytes on macOS, 84 on FreeBSD: room for either


def xucred_uid(creds: bytes) -> int | None:
    """The uid in a ``struct xucred`` as LOCAL_PEERCRED returns it, or None if the bytes
    are not one this code knows (another version, too short): then nobody is answered."""
    if len(creds) < _XUCRED_HEAD.size:
        return None
    version, uid = _XUCRED_HEAD.unpack_from(creds)
    return uid if version == _XUCRED_VERSION else None


def peer_uid(sock: socket.socket, platform: str = sys.platform) -> int | None:
    """The effective uid of the process at the other end of a connected Unix socket, as the
    kernel recorded it when the peer connected; None where this code cannot tell (another
    system, an error), and then nobody is answered."""
    try:
        if platform == "linux":
            option = getattr(socket, "SO_PEERCRED")  # noqa: B009 (Linux only; 17 on x86 and arm)
            creds = sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size)
            return int(_UCRED.unpack(creds)[1])
        if platform == "darwin" or platform.startswith("freebsd"):
            return xucred_uid(sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED_MAX))
    except (OSError, struct.error):
        pass
    return None


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    return None if sock is None else peer_uid(sock)


def peer_session(sock: socket.socket, platform: str = sys.platform) -> int | None:
    """The session id of the process at the other end of a connected Unix socket (its pid
    from the kernel's peer credentials, then ``getsid``); None where this code cannot tell
    (not Linux, the peer gone already)."""
    if platform != "linux":
        return None
    try:
        option = getattr(socket, "SO_PEERCRED")  # noqa: B009 (Linux only)
        pid = int(_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size))[0])
        return os.getsid(pid) if pid > 0 else None
    except (OSError, struct.error):
        return None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _none() -> None:
    return None


def _cannot_open(path: Path, exc: OSError) -> ControlError:
    """Why the control socket ``path`` could not be opened, as the config error it is."""
    too_long = exc.errno == errno.ENAMETOOLONG or (exc.errno is None and "too long" in str(exc))
    if too_long:  # AF_UNIX: about 104-108 bytes for the whole path
        return ControlError(
            f"cannot open the control socket {path}: the path ({len(os.fsencode(path))} "
            "bytes) is too long for a Unix socket",
            fix="choose a shorter proxy.socket_dir (or leave it unset: the runtime directory)",
        )
    return ControlError(
        f"cannot open the control socket {path}: {exc}",
        fix="check proxy.socket_dir (its permissions, free space), or leave it unset",
    )


def _close_if_ours(directory: Path) -> None:
    """A directory of ours left open by someone: close it (0700). By descriptor, opened
    without following a symlink — not by path, which another user with write access to
    the parent could point at a directory of their choosing between a check and a chmod.
    Anything else is left for :func:`private_dir_problem` to refuse."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return  # a symlink or not a directory: refused next
        raise
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


class ControlServer:
    """Serves registered operations on this process's control socket."""

    def __init__(
        self, directory: Path | None = None, refused_session: Callable[[], int | None] = _none
    ) -> None:
        self.directory = directory or runtime_dir()
        #: the session whose processes are not answered: the backend's (its processes run
        #: as our user, so the uid check lets them in; see docs/security.md)
        self.refused_session = refused_session
        self.path = self.directory / f"proxy-{os.getpid()}.sock"
        self.operations: dict[str, Operation] = {}
        self._server: asyncio.AbstractServer | None = None
        self._made = False  # the socket file at ``path`` is ours

    def register(self, name: str, operation: Operation) -> None:
        if name in self.operations:
            raise ValueError(f"control operation {name!r} is registered twice")
        self.operations[name] = operation

    async def start(self) -> None:
        """Open the socket (0600 in a 0700 directory). ``ControlError`` (exit 10) if the
        directory cannot be trusted, or made, or the socket cannot be opened in it (a path
        too long for a Unix socket); nothing is left at ``path`` then."""
        if self._server is not None:
            return
        try:
            ensure_private_dir(self.directory)
            _close_if_ours(self.directory)
        except OSError as exc:
            raise ControlError(f"cannot make the control socket directory: {exc}") from None
        problem = private_dir_problem(self.directory)
        if problem is not None:
            raise ControlError(f"refusing the control socket directory: {problem}")
        _remove_old_notes(self.directory)
        old_umask = os.umask(0o177)
        try:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE
            )
            os.chmod(self.path, 0o600)
        except BaseException as exc:  # cancelled as it bound, too: no socket left behind
            if self._server is not None:
                self._server.close()
                self._server = None
            with contextlib.suppress(OSError):
                self.path.unlink()
            if isinstance(exc, OSError):
                raise _cannot_open(self.path, exc) from None
            raise
        finally:
            os.umask(old_umask)
        self._made = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.remove_socket()

    @property
    def ended_path(self) -> Path:
        return self.directory / f"proxy-{os.getpid()}.ended"

    def record_ended(self, ended: Mapping[str, Mapping[str, Any]]) -> None:
        """At the end of the session: note ``ended`` — approval id -> what became of it —
        beside the socket (``proxy-<pid>.ended``, 0600, replaced whole), for answers that
        come too late (:func:`ended_approval`). Synchronous, for the shutdown coordinator's
        callbacks at a fail-closed exit (before the socket is removed); nothing if there is
        nothing to note. Never raises: it may run while something is failing."""
        if not ended or not self._made:
            return
        try:
            body = json.dumps({"pid": os.getpid(), "ended": ended}, default=str).encode()
            partial = self.ended_path.with_name(self.ended_path.name + ".partial")
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(partial, flags, 0o600)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            os.replace(partial, self.ended_path)  # whole, or not at all
        except (OSError, TypeError, ValueError) as exc:
            with contextlib.suppress(Exception):
                sys.stderr.write(f"mcp-acp: ended approvals not noted: {exc}\n")

    def remove_socket(self) -> None:
        """Remove the socket file, if this server made it. Synchronous and safe from any
        thread: the shutdown coordinator's exit (``os._exit``, no ``close()``) calls it, so
        that no ``proxy-<pid>.sock`` of a dead proxy is left for ``mcp-acp status`` to find."""
        if self._made:
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # the line first, even from a peer refused: a socket closed with it unread
            # resets the connection, and the peer would never read the refusal
            line = await asyncio.wait_for(reader.readline(), IO_SECONDS)
            uid = _peer_uid(writer)
            if uid is None or uid not in (os.geteuid(), 0):
                await self._reply(writer, {"error": "not allowed: only the proxy's own user"})
                return
            if self._from_backend(writer):
                await self._reply(
                    writer,
                    {
                        "error": "not allowed: a process of the backend's own session (the "
                        "backend may not answer or list approvals); answer from your terminal"
                    },
                )
                return
            try:
                command = json.loads(line)
            except (ValueError, RecursionError):  # nested too deep for the parser: not ours
                await self._reply(writer, {"error": "not JSON"})
                return
            await self._reply(writer, await self.handle(command, _user(uid)))
        except (ConnectionError, asyncio.LimitOverrunError, ValueError, TimeoutError):
            pass  # a peer that breaks the protocol, or idles past IO_SECONDS: closed
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _from_backend(self, writer: asyncio.StreamWriter) -> bool:
        """Whether the peer runs in the backend's session. A peer whose session cannot be
        told (gone already) is not answered either, on Linux, while there is a backend."""
        refused = self.refused_session()
        if refused is None:
            return False
        sock = writer.get_extra_info("socket")
        session = None if sock is None else peer_session(sock)
        if session is None:  # on Linux, gone already; elsewhere this code cannot tell
            return sys.platform == "linux"
        return session == refused

    async def handle(self, command: Any, who: str) -> dict[str, Any]:
        if not isinstance(command, dict):
            return {"error": "expected a JSON object"}
        operation = self.operations.get(str(command.get("op")))
        if operation is None:
            return {"error": f"unknown op {command.get('op')!r}", "ops": sorted(self.operations)}
        try:
            answer = operation(command, who)
            return await answer if inspect.isawaitable(answer) else answer
        except (asyncio.CancelledError, GeneratorExit):
            raise  # the connection or the server closing
        except BaseException as exc:  # one bad command must not take the socket down — nor
            # a plugin's sys.exit() in it the proxy, mid-session, with exit 0
            return {"error": exception_text(exc)}

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        writer.write(json.dumps(body, default=str).encode() + b"\n")
        await asyncio.wait_for(writer.drain(), IO_SECONDS)  # a peer that does not read


def ask(path: Path, command: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to one proxy's socket and return its answer (for the CLI):
    ``OSError`` if no proxy takes it, :class:`NoAnswer` if one takes it and closes without
    a whole answer, ``ValueError`` if the answer is not JSON. The answer is read in chunks
    kept apart and joined once: a list of long approvals runs to megabytes, and adding each
    chunk to what came before copies it all again."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        chunks: list[bytes] = []
        try:
            client.sendall(json.dumps(command).encode() + b"\n")
            while True:
                chunk = client.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                if chunk.endswith(b"\n"):
                    break
        except OSError as exc:
            raise NoAnswer(f"{path}: no answer: {exc}") from exc
    if not chunks or not chunks[-1].endswith(b"\n"):
        raise NoAnswer(f"{path}: the connection closed without an answer")
    answer = json.loads(b"".join(chunks))
    return answer if isinstance(answer, dict) else {"error": "bad answer"}


def _remove_old_notes(directory: Path) -> None:
    """Remove the notes of ended approvals (this user's, regular files) older than
    :data:`ENDED_KEEP_SECONDS`: a proxy starting does, so that none is left for ever."""
    for path in directory.glob("proxy-*.ended"):
        with contextlib.suppress(OSError):
            info = path.lstat()
            old = time.time() - info.st_mtime > ENDED_KEEP_SECONDS
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and old:
                path.unlink()


def ended_approval(directory: Path, approval_id: str) -> tuple[int, dict[str, Any]] | None:
    """What became of ``approval_id``, if a proxy that has ended noted it
    (:meth:`ControlServer.record_ended`): that proxy's pid and its entry (``answer``: what
    was answered, None if nothing was; ``by``; ``outcome``), else None. Read like
    :func:`sockets` reads: in a private directory (``ControlError`` if not), regular files
    of this user's only, never through a link; a note older than
    :data:`ENDED_KEEP_SECONDS` is removed instead."""
    if not directory.exists():
        return None
    problem = private_dir_problem(directory)
    if problem is not None:
        raise ControlError(f"refusing the control socket directory: {problem}")
    for path in sorted(directory.glob("proxy-*.ended")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as note:
                info = os.fstat(note.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                    continue
                if time.time() - info.st_mtime > ENDED_KEEP_SECONDS:
                    path.unlink()
                    continue
                body = json.loads(note.read(MAX_NOTE + 1)[:MAX_NOTE])
        except (OSError, ValueError, RecursionError):
            continue  # gone meanwhile, a link, or not a note: nothing to answer from
        if not isinstance(body, dict) or not isinstance(body.get("ended"), dict):
            continue
        entry = body["ended"].get(approval_id)
        pid = body.get("pid")
        if isinstance(entry, dict) and isinstance(pid, int) and not isinstance(pid, bool):
            return pid, entry
    return None
