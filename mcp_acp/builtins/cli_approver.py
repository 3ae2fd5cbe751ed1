"""Built-in ``cli`` approver: pending approvals answered from another terminal.

The proxy serves its pending approvals on a Unix socket, ``approvals-<pid>.sock`` in the
runtime directory (``$XDG_RUNTIME_DIR/mcp-acp`` on Linux; directory 0700, socket 0600).
``mcp-acp approvals list | approve ID | deny ID`` talks to every proxy of the
same user. Only a peer with the proxy's own user id (or root) is answered, checked with the
kernel's peer credentials, not with anything the peer says.

The wire format is one JSON object per line each way:
``{"op": "list"}``, ``{"op": "approve", "id": …, "remember": false}``, ``{"op": "deny", "id": …}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import socket
import struct
import time
from pathlib import Path
from typing import Any

import attrs
import platformdirs
from pydantic import BaseModel, ConfigDict, Field

from mcp_acp._fs import ensure_private_dir
from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import ApprovalOutcome, ApprovalRequest, ApprovalResult
from mcp_acp.registry import PluginContext, Register

__all__ = ["CliApprover", "CliApproverConfig", "runtime_dir", "sockets"]

MAX_LINE = 64 * 1024


def runtime_dir() -> Path:
    return platformdirs.user_runtime_path("mcp-acp", appauthor=False)


def sockets(directory: Path | None = None) -> list[Path]:
    """Every proxy's approval socket of this user."""
    return sorted((directory or runtime_dir()).glob("approvals-*.sock"))


class CliApproverConfig(BaseModel):
    """Options of the ``cli`` approver."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_seconds: float = Field(
        default=60, ge=5, le=300, description="Deny when nobody answers in this time."
    )
    socket_dir: Path | None = Field(
        default=None, description="Where the socket lives (default: runtime dir)."
    )


@attrs.define
class _Pending:
    request: ApprovalRequest
    answer: asyncio.Future[tuple[ApprovalResult, str]]
    created: float


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


class CliApprover:
    """Queues approvals and serves them on a local socket until answered or timed out."""

    name = "cli"

    def __init__(self, options: CliApproverConfig) -> None:
        self.options = options
        self.directory = options.socket_dir or runtime_dir()
        self.path = self.directory / f"approvals-{os.getpid()}.sock"
        self._pending: dict[str, _Pending] = {}
        self._server: asyncio.AbstractServer | None = None

    @classmethod
    def from_config(cls, options: CliApproverConfig, context: PluginContext) -> CliApprover:
        return cls(options)

    async def start(self) -> None:
        """Open the socket (0600 in a 0700 directory). Called at proxy start."""
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
        for pending in self._pending.values():
            if not pending.answer.done():
                pending.answer.cancel()

    async def request_approval(self, request: ApprovalRequest) -> ApprovalOutcome:
        await self.start()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[ApprovalResult, str]] = loop.create_future()
        started = time.monotonic()
        self._pending[request.approval_id] = _Pending(request, answer, started)
        try:
            result, who = await asyncio.wait_for(
                asyncio.shield(answer),
                timeout=min(request.timeout_seconds, self.options.timeout_seconds),
            )
        except TimeoutError:
            result, who = ApprovalResult.TIMEOUT, ""
        finally:
            self._pending.pop(request.approval_id, None)
        if result is ApprovalResult.ALLOW_AND_CACHE and not request.cacheable:
            result = ApprovalResult.ALLOW_ONCE  # code-executing tools are never remembered
        return ApprovalOutcome(
            result=result,
            approver=self.name,
            answered_by=who or None,
            elapsed_seconds=time.monotonic() - started,
            detail=None if who else "nobody answered in time",
        )

    # ---------------------------------------------------------------- the socket

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
            await self._reply(writer, self._handle(command, _user(uid)))
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _handle(self, command: Any, who: str) -> dict[str, Any]:
        if not isinstance(command, dict):
            return {"error": "expected a JSON object"}
        op = command.get("op")
        if op == "list":
            now = time.monotonic()
            return {
                "pid": os.getpid(),
                "pending": [
                    {
                        "id": key,
                        "summary": p.request.summary,
                        "rule": p.request.decision.rule_id,
                        "subject": p.request.request.subject.subject_id,
                        "tool": p.request.request.action.tool_name,
                        "paths": [a.path for a in p.request.request.resource.paths],
                        "cacheable": p.request.cacheable,
                        "expires_in": round(p.request.timeout_seconds - (now - p.created), 1),
                    }
                    for key, p in self._pending.items()
                ],
            }
        if op in ("approve", "deny"):
            pending = self._pending.get(str(command.get("id")))
            if pending is None or pending.answer.done():
                return {"error": f"no pending approval {command.get('id')!r}"}
            if op == "deny":
                result = ApprovalResult.DENY
            elif command.get("remember") is True:
                result = ApprovalResult.ALLOW_AND_CACHE
            else:
                result = ApprovalResult.ALLOW_ONCE
            pending.answer.set_result((result, who))
            return {"ok": True, "result": result.value}
        return {"error": f"unknown op {op!r}"}

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        writer.write(json.dumps(body).encode() + b"\n")
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


@hookimpl
def register_approvers(register: Register) -> None:
    register(
        "cli",
        CliApprover.from_config,
        CliApproverConfig,
        summary="pending approvals answered with 'mcp-acp approvals' (local socket)",
    )
