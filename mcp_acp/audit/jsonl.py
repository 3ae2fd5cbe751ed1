"""The built-in ``jsonl`` audit sink: one hash-chained, fsynced JSONL file per stream.

Each stream (``decisions``, ``operations``, ``auth``, ``system``) is appended to by its own
:class:`~mcp_acp.audit.writer.StreamWriter` (group commit, identity checks, rotation, crash
recovery); this module is the sink around them: its options, serialising events, proving
every stream writable at start, and holding the log directory for one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcp_acp._fs import ensure_private_dir, not_our_file, not_private_dir
from mcp_acp.audit.chain import canonical, head_path
from mcp_acp.audit.events import STREAMS, AuditEvent, ChainEvent
from mcp_acp.audit.writer import LoopCommits, StreamWriter, committed, errno_text
from mcp_acp.errors import AuditError
from mcp_acp.registry import PluginContext

__all__ = [
    "JsonlAuditSink",
    "JsonlConfig",
    "lock_log_dir",
    "serialise",
]

log = logging.getLogger(__name__)


class JsonlConfig(BaseModel):
    """Options of the ``jsonl`` sink (``audit.sinks[i].config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    durability: Literal["fsync", "flush"] = Field(
        default="fsync",
        description="fsync: durable before a request proceeds (default). flush: written to "
        "the OS only — faster, but a power loss can lose acknowledged records.",
    )
    max_file_bytes: int = Field(
        default=64 * 1024 * 1024, ge=4096, description="Rotate a stream's file past this size."
    )


def _refuse_foreign(*paths: Path) -> None:
    """Files in the log directory that another user created, or may write, are not ours to
    continue: their owner could rewrite them at will."""
    for path in paths:
        if not path.exists() or path.is_symlink():  # a link is refused as it is opened
            continue
        problem = not_our_file(path)
        if problem:
            raise AuditError(
                f"refusing to continue the audit trail: {problem}",
                fix="find out who created it; move the log directory aside and restart",
            )


def serialise(event: AuditEvent) -> bytes:
    """One line of ASCII JSON for ``event`` (pydantic's fast path, straight to bytes;
    ``json`` for the rare value it cannot encode, such as a lone surrogate from
    undecodable input)."""
    try:
        # warnings=False: the event was validated when it was made; re-checking every value's
        # type costs ~20% of the serialisation and changes no byte
        data = type(event).__pydantic_serializer__.to_json(event, exclude_none=True, warnings=False)
        if data.isascii():  # the usual case: escaping non-ASCII would change nothing
            return data
        return event.model_dump_json(exclude_none=True, ensure_ascii=True).encode("ascii")
    except (ValueError, UnicodeError):
        return canonical(event.model_dump(mode="json", exclude_none=True))


def _chain_record(stream: str, event: str, detail: dict[str, Any]) -> bytes:
    record = ChainEvent.model_validate({"stream": stream, "event": event, "detail": detail})
    return canonical(record.model_dump(mode="json", exclude_none=True))


LOCK_FILE = ".lock"


def lock_log_dir(log_dir: Path) -> int:
    """Take the log directory for this process: an exclusive ``flock`` on
    ``<log_dir>/.lock``, held until the descriptor returned is closed (or the process ends,
    however it ends). Two processes appending to one chain would each continue it from
    their own idea of its end and break it; the second is refused instead, naming the
    first. The lock file holds the owner's pid, for that message only."""
    path = log_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise AuditError(
            f"cannot open the audit directory's lock file {path}: {errno_text(exc)}",
            fix="check that the log directory is yours and writable",
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        owner = b""
        with contextlib.suppress(OSError):
            owner = os.pread(fd, 32, 0).strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise AuditError(
                f"cannot lock the audit directory {log_dir}: {errno_text(exc)}",
                fix="choose an audit.log_dir on a local file system",
            ) from exc
        who = f" (pid {owner.decode()})" if owner.isdigit() else ""
        raise AuditError(
            f"the audit directory {log_dir} is in use by another mcp-acp process{who}; two "
            "processes writing one log would break its hash chain",
            fix="give each backend's config file its own audit.log_dir (mcp-acp init does "
            "for a config file of another name), or stop the other proxy",
        ) from exc
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class JsonlAuditSink:
    """The :class:`~mcp_acp.protocols.AuditSink` that writes ``<log_dir>/<stream>.jsonl``."""

    def __init__(
        self,
        log_dir: Path,
        options: JsonlConfig | None = None,
        *,
        on_failure: Callable[[AuditError], None] | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.options = options or JsonlConfig()
        self._on_failure = on_failure
        self._lock_fd: int | None = None  # held from start to close: see lock_log_dir
        loop_commits = LoopCommits()  # the loop's records of all streams, together
        self.writers: dict[str, StreamWriter] = {
            stream: StreamWriter(
                log_dir,
                stream,
                durability=self.options.durability,
                max_file_bytes=self.options.max_file_bytes,
                on_failure=self._failed,
                loop_commits=loop_commits,
                commit_first=stream == "decisions",  # write-ahead: before what it allows
            )
            for stream in STREAMS
        }

    @classmethod
    def from_config(cls, options: JsonlConfig, context: PluginContext) -> JsonlAuditSink:
        return cls(context.log_dir, options)

    def set_failure_handler(self, handler: Callable[[AuditError], None]) -> None:
        """Who to tell when the trail fails (the shutdown coordinator)."""
        self._on_failure = handler

    def _failed(self, error: AuditError) -> None:
        if self._on_failure is not None:
            self._on_failure(error)

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    def start_sync(self) -> None:
        """Open every stream and prove it can be written (refuse to start otherwise)."""
        try:
            ensure_private_dir(self.log_dir)
            ensure_private_dir(self.log_dir / ".heads")
        except OSError as exc:
            raise AuditError(
                f"cannot create audit directory {self.log_dir}: {errno_text(exc)}",
                fix="choose a writable audit.log_dir",
            ) from exc
        for directory in (self.log_dir, self.log_dir / ".heads"):
            problem = not_private_dir(directory)
            if problem:
                raise AuditError(
                    f"refusing to log into {self.log_dir}: {problem}",
                    fix=f"use a directory of your own, mode 0700 (chmod 700 {directory})",
                )
        if self.options.durability == "flush":
            log.warning(
                "audit durability 'flush': records are not fsynced; a power loss can "
                "lose acknowledged records"
            )
        self._lock_fd = lock_log_dir(self.log_dir)
        opened: list[StreamWriter] = []
        try:
            for writer in self.writers.values():
                _refuse_foreign(writer.path, head_path(self.log_dir, writer.stream))
                writer.open()
                opened.append(writer)
                for aside in writer.quarantined:
                    writer.write(
                        _chain_record(
                            writer.stream, "partial_line_quarantined", {"file": aside.name}
                        )
                    )
                detail: dict[str, Any] = {
                    "durability": self.options.durability,
                    "pid": os.getpid(),
                }
                if writer.past_head is not None:  # taken after a crash: no head confirms them
                    first, last = writer.past_head
                    detail["past_head"] = {"first_seq": first, "last_seq": last}
                writer.write(_chain_record(writer.stream, "stream_opened", detail))
        except AuditError:
            for writer in opened:
                writer.close()
            self._unlock()
            raise

    async def write(self, event: AuditEvent) -> None:
        """Write ``event``; return once it is durable (see :func:`committed`)."""
        future = self.writers[event.stream].submit(serialise(event))
        await committed(future)
        await future

    def write_soon(self, event: AuditEvent) -> asyncio.Future[int]:
        """For the event loop: queue ``event`` and return a future, set once it is durable
        (or failed with ``AuditError``); for records nothing waits on. It is written at the
        next loop iteration; its fsync may wait for the stream's next one, at most
        :data:`DEFERRED_SYNC_SECONDS` (see :meth:`StreamWriter.submit`)."""
        return self.writers[event.stream].submit(serialise(event), defer_sync=True)

    def write_sync(self, event: AuditEvent) -> int:
        """Write ``event`` to its stream; return its ``seq`` once it is durable."""
        return self.writers[event.stream].write(serialise(event))

    def check_health(self) -> None:
        for writer in self.writers.values():
            writer.check_health()

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        for writer in self.writers.values():
            writer.close()  # everything handed over is committed first
        self._unlock()

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the lock
