"""A stdio backend: the MCP server as a child process, newline-delimited JSON on its pipes.

Messages go to the child as the exact bytes the client sent; nothing is re-encoded.

The child inherits mcp-acp's environment except the variables in ``withhold_env`` (secrets
given to mcp-acp itself, such as the token-storage passphrase), plus ``backend.env``;
``PYDANTIC_DISABLE_PLUGINS`` as it was before mcp-acp set it for itself. A
name in ``backend.env`` is passed with the configured value even if it is withheld: the
operator asked for it by name.

The child leads a session and process group of its own, so that everything it starts
(``sh -c`` and ``npx`` wrappers start the real server as a grandchild) ends with it:
:meth:`StdioChannel.close` closes the child's input, gives it :data:`CLOSE_GRACE_SECONDS`
to exit, then sends SIGTERM to the whole group and SIGKILL :data:`KILL_GRACE_SECONDS`
later to whatever is left. After :meth:`StdioChannel.terminate` (mcp-acp got a stop
signal) it does not wait for the child first; :meth:`StdioChannel.abandon` ends the group
at once, synchronously, for the shutdown coordinator's exit. A process that moved itself
into a session of its own (a daemon) is out of reach, by its own choice; and if mcp-acp
itself is killed with SIGKILL, the backend only sees the end of its input.

The backend is gone when the child exits, not only when its stdout reaches end of file: a
grandchild that inherited the pipe may hold it open long after. What the child wrote before
it exited is still relayed (the pipe is read until it is empty, at most
:data:`~mcp_acp.proxy.messages.MAX_MESSAGE_BYTES`), then :meth:`StdioChannel.receive` ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from asyncio.subprocess import Process, SubprocessStreamProtocol
from collections.abc import AsyncIterator
from typing import Any

from mcp_acp._pydantic_plugins import restore_for_child
from mcp_acp.config import StdioBackend
from mcp_acp.errors import BackendError
from mcp_acp.proxy.messages import (
    MAX_MESSAGE_BYTES,
    PIPE_READ_BYTES,
    TOO_LARGE,
    Message,
    parse,
    pipe_sized_reads,
    read_line,
)

__all__ = ["CLOSE_GRACE_SECONDS", "KILL_GRACE_SECONDS", "StdioChannel"]

log = logging.getLogger(__name__)

#: How long a backend has to exit by itself once its input is closed.
CLOSE_GRACE_SECONDS = 5.0
#: How long the backend's process group has between SIGTERM and SIGKILL: less than the 2 s
#: an MCP client gives mcp-acp itself (the SDK's), so that the backend is gone first.
KILL_GRACE_SECONDS = 1.0


class _Protocol(SubprocessStreamProtocol):
    """asyncio's own protocol for a child process, which also says when the child exited:
    ``Process.wait()`` waits for the child's pipes to close as well, and a grandchild that
    inherited one keeps it open."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit, loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


class StdioChannel:
    """The backend's stdin and stdout, one JSON-RPC message per line."""

    def __init__(
        self, backend: StdioBackend, *, withhold_env: frozenset[str] = frozenset()
    ) -> None:
        self.backend = backend
        self.withhold_env = withhold_env
        self.backend_id = backend.command
        self.backend_identity: tuple[str, ...] = ()  # a child process proves nothing
        self._process: Process | None = None
        self._exited: asyncio.Future[None] | None = None  # the child has exited
        self._gone = asyncio.Event()  # exited, or closed its input: its output ends
        self._input_closed = False
        self._stdin: asyncio.StreamWriter | None = None
        self._stdout: asyncio.StreamReader | None = None
        self._stdout_pipe: asyncio.ReadTransport | None = None
        self._watching: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._starting: asyncio.Future[dict[str, Any]] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._closed = False  # the group has been ended: never signal its id again
        self._kill_at: float | None = None  # when close() sends SIGKILL, once terminated

    def backend_session(self) -> int | None:
        """The child's pid, which is its session id (``start_new_session``): every process
        it starts is in that session unless it leaves it (``setsid``)."""
        return None if self._process is None else self._process.pid

    async def start(self) -> dict[str, Any]:
        if self._starting is None:  # spawn once; every call gets the same outcome
            self._starting = asyncio.ensure_future(self._spawn())
        return await self._starting

    async def _spawn(self) -> dict[str, Any]:
        env = {name: value for name, value in os.environ.items() if name not in self.withhold_env}
        restore_for_child(env)  # PYDANTIC_DISABLE_PLUGINS is mcp-acp's, not the backend's
        env.update(self.backend.env)
        withheld = sorted(self.withhold_env - self.backend.env.keys())
        for name in sorted(self.withhold_env & self.backend.env.keys()):
            log.warning("backend.env sets %s, a secret withheld from backends: passed as set", name)
        # The child's stdout is our own pipe, read through our own transport: asyncio's
        # subprocess pipes hand every chunk read to the protocol one loop iteration later
        # (call_soon), a loop iteration per relayed answer for nothing.
        output, child_output = os.pipe()
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(2**16, loop),  # asyncio's default limit: no pipe uses it
                self.backend.command,
                *self.backend.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=child_output,
                stderr=None,
                env=env,
                cwd=str(self.backend.cwd) if self.backend.cwd else None,
                start_new_session=True,  # its own process group: see the module docstring
            )
        except OSError as exc:
            os.close(output)
            raise BackendError(
                f"cannot start backend {self.backend.command!r}: {exc.strerror}",
                fix="check backend.command and backend.args in the config",
            ) from exc
        finally:
            os.close(child_output)  # the child has its copy: EOF comes when it is gone
        self._process = Process(transport, protocol, loop)
        self._exited = protocol.exited
        self._exited.add_done_callback(lambda _: self._gone.set())
        if self._process.stdin is None:  # pragma: no cover
            raise BackendError("backend pipes missing", fix="report this")
        self._stdin = self._process.stdin
        reader = self._stdout = asyncio.StreamReader(limit=MAX_MESSAGE_BYTES + 1)
        pipe = os.fdopen(output, "rb", buffering=0)  # the transport owns and closes it
        self._stdout_pipe, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        pipe_sized_reads(self._stdout_pipe)
        self._watching = asyncio.ensure_future(self._end_output_at_exit())
        started: dict[str, Any] = {"command": self.backend.command, "pid": self._process.pid}
        if withheld:
            started["withheld_env"] = withheld  # names only
        return started

    async def _end_output_at_exit(self) -> None:
        """Once the child has exited (or closed its input), its output ends: what is in the
        pipe now is what it wrote (and at most a little of a grandchild's); that is read,
        then end of file — whether or not a grandchild holds the pipe open."""
        await self._gone.wait()
        pipe, reader = self._stdout_pipe, self._stdout
        assert reader is not None  # noqa: S101 - set by _spawn
        if pipe is None or pipe.is_closing():
            return  # the pipe reached end of file by itself: the usual way
        pipe.pause_reading()
        fd = pipe.get_extra_info("pipe").fileno()  # non-blocking: the loop set it so
        taken = 0
        while taken <= MAX_MESSAGE_BYTES:
            try:
                chunk = os.read(fd, PIPE_READ_BYTES)
            except OSError:  # EAGAIN: empty (a grandchild still holds it open)
                break
            if not chunk:
                break
            reader.feed_data(chunk)
            taken += len(chunk)
        reader.feed_eof()
        pipe.close()

    async def send(self, message: Message) -> None:
        if self._stdin is None:
            raise RuntimeError("StdioChannel.send() before start()")
        async with self._lock:
            if self._gone.is_set():
                log.warning("the backend is gone: %s not delivered", message.kind)
                return  # receive() ends, and the relay answers what is in flight
            try:
                self._stdin.write(message.raw)
                await self._stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                # the child closed its input: it can take nothing more, whether it has
                # exited yet or not. Its output ends now, so the relay answers what is in
                # flight and the session ends, rather than waiting for answers that
                # cannot come.
                log.warning("the backend closed its input: %s not delivered", message.kind)
                self._input_closed = True
                self._gone.set()

    async def receive(self) -> AsyncIterator[Message]:
        if self._stdout is None:
            raise RuntimeError("StdioChannel.receive() before start()")
        while True:
            line = await read_line(self._stdout)
            if line is None:
                return
            if line == TOO_LARGE or not line.strip():
                log.warning("backend sent an oversized or empty line; dropped")
                continue
            yield parse(line + b"\n")

    async def exit_detail(self) -> tuple[dict[str, Any], str]:
        if self._process is None:
            raise RuntimeError("StdioChannel.exit_detail() before start()")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._child_exit(), timeout=2)
        code = self._process.returncode
        if code is not None:
            return {"returncode": code}, f"the backend exited (code {code})"
        closed = "input" if self._input_closed else "output"  # and it is still running
        return {"returncode": None, "closed": closed}, f"the backend closed its {closed}"

    async def _child_exit(self) -> None:
        """The child's own exit (not a closed input, which also ends :meth:`receive`)."""
        assert self._exited is not None  # noqa: S101 - by the callers, after start
        await asyncio.shield(self._exited)

    async def close(self) -> None:
        if self._process is None or self._closed:
            return
        if self._closing is None:  # one close; a caller cancelled meanwhile does not stop it
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if self._stdin is not None:
            with contextlib.suppress(ProcessLookupError):
                self._stdin.close()  # end of input: the polite way to ask it to stop
        if self._kill_at is None:
            if not self._input_closed:  # it can see the end of its input: time to exit
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._child_exit(), CLOSE_GRACE_SECONDS)
            self.terminate()  # the child if it is still there, and what it started
        assert self._kill_at is not None  # noqa: S101 - set by terminate()
        while self._group_alive() and time.monotonic() < self._kill_at:
            await asyncio.sleep(0.05)
        self._signal_group(signal.SIGKILL)
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._child_exit(), KILL_GRACE_SECONDS)
        if self._watching is not None:
            self._watching.cancel()
        if self._stdin is not None and self._stdin.transport.get_write_buffer_size():
            self._stdin.transport.abort()  # input nobody will read: dropped, the pipe closed
        if self._stdout_pipe is not None:
            self._stdout_pipe.close()

    def terminate(self) -> None:
        """SIGTERM to the backend's process group now; :meth:`close` then sends SIGKILL
        :data:`KILL_GRACE_SECONDS` later, without first waiting for the backend to exit by
        itself. For a stop signal: a client that stops mcp-acp gives it little time before
        SIGKILL (the MCP SDK's client, 2 s), and the backend must not outlive it."""
        if self._kill_at is None:
            self._kill_at = time.monotonic() + KILL_GRACE_SECONDS
        self._signal_group(signal.SIGTERM)

    def abandon(self) -> None:
        """End the backend's process group now: SIGTERM, SIGKILL after
        :data:`KILL_GRACE_SECONDS` if anything is left. For the shutdown coordinator's exit
        (any thread, the loop perhaps blocked); bounded, never raises."""
        if self._process is None or self._closed:
            return
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._signal_group(signal.SIGKILL)
        self._closed = True

    def _signal_group(self, signum: int) -> None:
        if self._process is None or self._closed:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)  # the child leads its group: same id

    def _group_alive(self) -> bool:
        if self._process is None or self._closed:
            return False
        try:
            os.killpg(self._process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a member we may not signal (setuid): it is there
            return True
        return True
