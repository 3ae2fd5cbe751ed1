"""A stdio backend: the MCP server as a child process, newline-delimited JSON on its pipes.

Messages go to the child as the exact bytes the client sent; nothing is re-encoded.

The child inherits mcp-acp's environment except the variables in ``withhold_env`` (secrets
given to mcp-acp itself, such as the token-storage passphrase), plus ``backend.env``. A
name in ``backend.env`` is passed with the configured value even if it is withheld: the
operator asked for it by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from mcp_acp.config import StdioBackend
from mcp_acp.errors import BackendError
from mcp_acp.proxy.messages import (
    MAX_MESSAGE_BYTES,
    TOO_LARGE,
    Message,
    parse,
    pipe_sized_reads,
    read_line,
)

__all__ = ["StdioChannel"]

log = logging.getLogger(__name__)


class StdioChannel:
    """The backend's stdin and stdout, one JSON-RPC message per line."""

    def __init__(
        self, backend: StdioBackend, *, withhold_env: frozenset[str] = frozenset()
    ) -> None:
        self.backend = backend
        self.withhold_env = withhold_env
        self.backend_id = backend.command
        self.backend_identity: tuple[str, ...] = ()  # a child process proves nothing
        self._process: asyncio.subprocess.Process | None = None
        self._stdin: asyncio.StreamWriter | None = None
        self._stdout: asyncio.StreamReader | None = None
        self._stdout_pipe: asyncio.ReadTransport | None = None
        self._lock = asyncio.Lock()
        self._starting: asyncio.Future[dict[str, Any]] | None = None

    async def start(self) -> dict[str, Any]:
        if self._starting is None:  # spawn once; every call gets the same outcome
            self._starting = asyncio.ensure_future(self._spawn())
        return await self._starting

    async def _spawn(self) -> dict[str, Any]:
        env = {name: value for name, value in os.environ.items() if name not in self.withhold_env}
        env.update(self.backend.env)
        withheld = sorted(self.withhold_env - self.backend.env.keys())
        for name in sorted(self.withhold_env & self.backend.env.keys()):
            log.warning("backend.env sets %s, a secret withheld from backends: passed as set", name)
        # The child's stdout is our own pipe, read through our own transport: asyncio's
        # subprocess pipes hand every chunk read to the protocol one loop iteration later
        # (call_soon), a loop iteration per relayed answer for nothing.
        output, child_output = os.pipe()
        try:
            self._process = await asyncio.create_subprocess_exec(
                self.backend.command,
                *self.backend.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=child_output,
                env=env,
                cwd=str(self.backend.cwd) if self.backend.cwd else None,
            )
        except OSError as exc:
            os.close(output)
            raise BackendError(
                f"cannot start backend {self.backend.command!r}: {exc.strerror}",
                fix="check backend.command and backend.args in the config",
            ) from exc
        finally:
            os.close(child_output)  # the child has its copy: EOF comes when it is gone
        if self._process.stdin is None:  # pragma: no cover
            raise BackendError("backend pipes missing", fix="report this")
        self._stdin = self._process.stdin
        reader = self._stdout = asyncio.StreamReader(limit=MAX_MESSAGE_BYTES + 1)
        pipe = os.fdopen(output, "rb", buffering=0)  # the transport owns and closes it
        self._stdout_pipe, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        pipe_sized_reads(self._stdout_pipe)
        started: dict[str, Any] = {"command": self.backend.command, "pid": self._process.pid}
        if withheld:
            started["withheld_env"] = withheld  # names only
        return started

    async def send(self, message: Message) -> None:
        if self._stdin is None:
            raise RuntimeError("StdioChannel.send() before start()")
        async with self._lock:
            try:
                self._stdin.write(message.raw)
                await self._stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the child is gone: receive() ends and the relay answers what is pending

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
            await asyncio.wait_for(self._process.wait(), timeout=2)
        code = self._process.returncode
        return {"returncode": code}, f"the backend exited (code {code})"

    async def close(self) -> None:
        process = self._process
        if process is None:
            return
        if self._stdin is not None:
            with contextlib.suppress(ProcessLookupError):
                self._stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except TimeoutError:
            process.kill()
            await process.wait()
        finally:
            if self._stdout_pipe is not None:
                self._stdout_pipe.close()
