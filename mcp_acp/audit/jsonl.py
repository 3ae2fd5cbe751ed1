"""The built-in ``jsonl`` audit sink: one hash-chained, fsynced JSONL file per stream.

Callers serialise their record, then hand it to the stream's writer. The first caller to
find no commit in progress leads one: it takes *every* record waiting, seals them into the
chain, checks that the file on disk is still the one it opened (device and inode), writes
them with one ``write`` and makes them durable with one ``fsync`` (group commit), then
wakes every caller it served. So concurrent writers never interleave, and sixteen of them
cost a few fsyncs, not sixteen.

Any failure — ENOSPC, EFBIG, EIO, the file deleted, replaced or moved — fails every record
in the batch with :class:`~mcp_acp.errors.AuditError` and puts the writer in a failed state:
from then on every write fails at once. Nothing is ever acknowledged that is not on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcp_acp._fs import ensure_private_dir, unsafe_permissions
from mcp_acp.audit.chain import (
    GENESIS,
    ChainHead,
    canonical,
    chain_files,
    open_head,
    read_head,
    seal,
    write_head,
)
from mcp_acp.audit.events import STREAMS, AuditEvent, ChainEvent
from mcp_acp.errors import AuditError
from mcp_acp.registry import PluginContext

__all__ = ["HEAD_INTERVAL_SECONDS", "JsonlAuditSink", "JsonlConfig", "StreamWriter", "serialise"]

#: The chain head (kept outside the log, for truncation detection) is rewritten after a
#: commit at most this often, and always at rotation and close: rewriting it on every
#: commit would add a second inode to every fsync's journal transaction.
HEAD_INTERVAL_SECONDS = 0.05

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


def _errno_text(exc: OSError) -> str:
    return f"{exc.strerror or exc} (errno {exc.errno})" if exc.errno else str(exc)


class _Batch:
    """Records that will be committed together, and the callers waiting for them."""

    __slots__ = ("bodies", "done", "first_seq", "lock", "waiting")

    def __init__(self, lock: threading.Lock) -> None:
        self.bodies: list[bytes] = []
        self.lock = lock
        self.waiting: threading.Condition | None = None  # made by the first caller to wait
        self.done = False
        self.first_seq = 0

    def wait(self) -> None:
        if self.waiting is None:
            self.waiting = threading.Condition(self.lock)
        self.waiting.wait()

    def notify(self, every: bool = True) -> None:
        if self.waiting is not None:
            if every:
                self.waiting.notify_all()
            else:
                self.waiting.notify()


class StreamWriter:
    """Appends sealed records to one stream's file, with group commit.

    There is no writer thread: the first caller to find no commit in progress becomes the
    *leader*, takes every record waiting (its own included), writes them with one
    ``write`` and one ``fsync``, and wakes the callers whose records that made durable; a
    caller that arrives meanwhile queues behind it and may lead the next commit. One caller
    pays exactly one write and one fsync; sixteen share a few.
    """

    def __init__(
        self,
        log_dir: Path,
        stream: str,
        *,
        durability: Literal["fsync", "flush"] = "fsync",
        max_file_bytes: int = 64 * 1024 * 1024,
        on_failure: Callable[[AuditError], None] | None = None,
        path: Path | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.stream = stream
        self.path = path or log_dir / f"{stream}.jsonl"
        self.durability = durability
        self.max_file_bytes = max_file_bytes
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a commit ends
        self._closing = False  # close() waits on _idle only then
        self._next = _Batch(self._lock)  # the batch new records join
        self._leading = False
        self._open = False
        self._fd = -1
        self._head_fd = -1
        self._identity: tuple[int, int] = (0, 0)
        self._size = 0
        self._seq = 0
        self._prev = GENESIS
        self._failed: AuditError | None = None
        self.quarantined: list[Path] = []
        self.fsyncs = 0
        self._head_written = float("-inf")

    # ---------------------------------------------------------------- opening

    def open(self) -> None:
        """Recover after a crash, pick up the chain, open the file."""
        try:
            self._recover_partial_line()
            self._seq, self._prev = self._chain_end()
            head = read_head(self.log_dir, self.stream)
            if head is not None and (head.seq < 0 or head.seq > self._seq):
                raise AuditError(
                    f"audit stream {self.stream!r} in {self.log_dir} ends at seq {self._seq} but "
                    f"its chain head says {head.seq}: records were removed",
                    fix="run 'mcp-acp audit verify', keep the evidence, then move the log "
                    "directory aside to start a new chain",
                )
            self._open_file()
            if self.path == self.log_dir / f"{self.stream}.jsonl":
                self._head_fd = open_head(self.log_dir, self.stream)
        except OSError as exc:
            raise AuditError(
                f"cannot open audit stream {self.path}: {_errno_text(exc)}",
                fix="check that the log directory exists, is yours and is writable",
            ) from exc
        self._open = True

    def _open_file(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        self._fd = os.open(self.path, flags, 0o600)
        info = os.fstat(self._fd)
        self._identity = (info.st_dev, info.st_ino)
        self._size = info.st_size

    def _recover_partial_line(self) -> None:
        """A crash mid-write leaves bytes after the last newline: set them aside."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0:
            return
        with self.path.open("rb+") as handle:
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            cut = self._last_newline(handle, size)
            handle.seek(cut)
            partial = handle.read()
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            aside = self.log_dir / f"{self.stream}.partial-{stamp}"
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, partial)
                os.fsync(fd)
            finally:
                os.close(fd)
            handle.truncate(cut)
            handle.flush()
            os.fsync(handle.fileno())
        self.quarantined.append(aside)
        log.warning(
            "audit %s: partial last line (%d bytes) set aside in %s",
            self.stream,
            len(partial),
            aside,
        )

    @staticmethod
    def _last_newline(handle: BinaryIO, size: int) -> int:
        """Offset just after the last newline before ``size`` (0 if there is none)."""
        window = 4096
        while True:
            start = max(0, size - window)
            handle.seek(start)
            chunk = handle.read(size - start)
            index = chunk.rfind(b"\n")
            if index >= 0:
                return start + index + 1
            if start == 0:
                return 0
            window *= 4

    def _chain_end(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last record of the stream, across rotated files."""
        for path in reversed(chain_files(self.log_dir, self.stream)):
            size = path.stat().st_size
            if size == 0:
                continue
            with path.open("rb") as handle:
                start = self._last_newline(handle, size - 1)
                handle.seek(start)
                line = handle.read()
            try:
                record: dict[str, Any] = json.loads(line)
                return int(record["seq"]), str(record["hash"])
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditError(
                    f"the last line of {path} is not a chained audit record",
                    fix="run 'mcp-acp audit verify'; move the damaged log aside to start anew",
                ) from exc
        return 0, GENESIS

    # ---------------------------------------------------------------- writing

    def write(self, body: bytes) -> int:
        """Append the record whose canonical JSON is ``body``; return its ``seq`` once it is
        durable. Raise ``AuditError`` if it is not — it then never will be."""
        return self.write_many((body,))

    def write_many(self, bodies: Sequence[bytes]) -> int:
        """Append several records, in order, in one commit (or with others waiting); return
        the first one's ``seq`` once all are durable, or raise ``AuditError``."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if not self._open:
                raise AuditError(
                    f"audit stream {self.stream!r} is not open", fix="call start() before writing"
                )
            batch = self._next
            position = len(batch.bodies)
            batch.bodies.extend(bodies)
            while True:
                if batch.done:
                    return batch.first_seq + position
                if self._failed is not None:
                    raise self._failed
                if not self._leading and batch is self._next:
                    self._leading = True  # lead: take the open batch, open the next one
                    self._next = _Batch(self._lock)
                    break
                batch.wait()  # only this batch's callers wake, not every waiter
        first = self._commit(batch.bodies)  # outside the lock: others queue the next batch
        with self._lock:
            self._leading = False
            if first is not None:
                batch.first_seq, batch.done = first, True
            batch.notify()
            if self._failed is not None:
                self._next.notify()
            elif self._next.bodies:
                self._next.notify(every=False)  # hand the lead to one caller of the next batch
            if self._closing:
                self._idle.notify_all()
            failed = self._failed
        if first is None:
            raise failed or AuditError("audit write failed", fix="see the log")
        return first + position

    def _commit(self, batch: list[bytes]) -> int | None:
        """Seal, write and make durable; the first record's seq, or None on failure."""
        seq, prev = self._seq, self._prev
        lines: list[bytes] = []
        for body in batch:
            seq += 1
            line, prev = seal(body, seq, prev)
            lines.append(line)
        data = b"".join(lines)
        try:
            self._check_identity()
            if self._size > 0 and self._size + len(data) > self.max_file_bytes:
                self._rotate()
            self._write_all(data)
            if self.durability == "fsync":
                os.fsync(self._fd)
                self.fsyncs += 1
            self._size += len(data)
            self._seq, self._prev = seq, prev
            now = time.monotonic()
            if self._head_fd >= 0 and now - self._head_written >= HEAD_INTERVAL_SECONDS:
                write_head(self._head_fd, ChainHead(seq, prev))
                self._head_written = now
            return seq - len(batch) + 1
        except (OSError, AuditError) as exc:
            error = (
                exc
                if isinstance(exc, AuditError)
                else AuditError(
                    f"audit stream {self.stream!r} ({self.path}) cannot be written: "
                    f"{_errno_text(exc)}",
                    fix="free space or fix permissions, then restart; nothing passed meanwhile",
                )
            )
            self._fail(error)
            return None

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _check_identity(self) -> None:
        """The path must still name the file we opened: not deleted, replaced or moved."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            raise AuditError(
                f"audit file {self.path} was deleted or moved while in use",
                fix="find out who removed it; restart mcp-acp to open a new chain file",
            ) from None
        if (info.st_dev, info.st_ino) != self._identity:
            raise AuditError(
                f"audit file {self.path} was replaced while in use (device/inode changed)",
                fix="find out who replaced it; 'mcp-acp audit verify' checks what is there",
            )

    def _rotate(self) -> None:
        existing = [p.name for p in chain_files(self.log_dir, self.stream)]
        number = len(existing)  # current file plus rotated ones: the next free index
        target = self.log_dir / f"{self.stream}.{number}.jsonl"
        while target.exists():
            number += 1
            target = self.log_dir / f"{self.stream}.{number}.jsonl"
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.rename(self.path, target)
        self._open_file()
        if self._head_fd >= 0:
            write_head(self._head_fd, ChainHead(self._seq, self._prev))

    def _fail(self, error: AuditError) -> None:
        with self._lock:
            first = self._failed is None
            self._failed = error
        if first:
            log.error("audit: %s", error)
            if self._on_failure is not None:
                self._on_failure(error)

    # ---------------------------------------------------------------- health, closing

    @property
    def failed(self) -> AuditError | None:
        return self._failed

    def check_health(self) -> None:
        """Raise ``AuditError`` (and enter the failed state) unless the file is still
        ours, in place, and writable."""
        if self._failed is not None:
            raise self._failed
        try:
            self._check_identity()
            if not os.access(self.path, os.W_OK) or not os.access(self.log_dir, os.W_OK):
                raise AuditError(
                    f"audit file {self.path} is no longer writable",
                    fix="restore write permission, then restart",
                )
            problem = unsafe_permissions(self.log_dir)
            if problem:
                raise AuditError(
                    f"audit directory is no longer private: {problem}",
                    fix=f"chmod 700 {self.log_dir}, then restart",
                )
        except AuditError as error:
            self._fail(error)
            raise

    def close(self) -> None:
        with self._lock:
            self._closing = True
            while self._leading:
                self._idle.wait()
            self._open = False
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                if self.durability == "fsync" and self._failed is None:
                    os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._head_fd >= 0:
            if self._failed is None and self._seq:
                with contextlib.suppress(OSError):
                    write_head(self._head_fd, ChainHead(self._seq, self._prev))
            os.close(self._head_fd)
            self._head_fd = -1


def serialise(event: AuditEvent) -> bytes:
    """One line of ASCII JSON for ``event`` (pydantic's fast path; ``json`` for the rare
    value it cannot encode, such as a lone surrogate from undecodable input)."""
    try:
        return event.model_dump_json(exclude_none=True, ensure_ascii=True).encode("ascii")
    except (ValueError, UnicodeError):
        return canonical(event.model_dump(mode="json", exclude_none=True))


def _chain_record(stream: str, event: str, detail: dict[str, Any]) -> bytes:
    record = ChainEvent.model_validate({"stream": stream, "event": event, "detail": detail})
    return canonical(record.model_dump(mode="json", exclude_none=True))


_Item = tuple[bytes, "asyncio.Future[int]"]


class _Committer:
    """Commits records for the event loop on one thread per stream.

    The loop hands a record over with one queue put and awaits a future; the thread takes
    every record waiting, commits them as one group (:meth:`StreamWriter.write_many`) and
    settles their futures with one call back into the loop — cheaper than a thread-pool
    round trip per record, and it batches by itself under load.
    """

    def __init__(self, writer: StreamWriter) -> None:
        self.writer = writer
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"audit-{self.writer.stream}", daemon=True
            )
            self._thread.start()

    def submit(self, body: bytes) -> asyncio.Future[int]:
        if self._thread is None:
            raise self.writer.failed or AuditError(
                f"audit stream {self.writer.stream!r} is not open",
                fix="call start() before writing",
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put((body, future))
        return future

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            stopping = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                items.append(more)
            self._commit(items)
            if stopping:
                return

    def _commit(self, items: list[_Item]) -> None:
        first: int | None = None
        error: BaseException | None = None
        try:
            first = self.writer.write_many([body for body, _ in items])
        except AuditError as exc:
            error = exc
        except Exception as exc:  # never leave a caller waiting
            error = AuditError(f"audit write failed: {exc}", fix="see the log")
        futures = [future for _, future in items]
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            futures[0].get_loop().call_soon_threadsafe(_settle, futures, first, error)


def _settle(
    futures: list[asyncio.Future[int]], first: int | None, error: BaseException | None
) -> None:
    for index, future in enumerate(futures):
        if future.done():  # its caller was cancelled
            continue
        if error is not None or first is None:
            future.set_exception(error or AuditError("audit write failed", fix="see the log"))
        else:
            future.set_result(first + index)


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
        self.writers: dict[str, StreamWriter] = {
            stream: StreamWriter(
                log_dir,
                stream,
                durability=self.options.durability,
                max_file_bytes=self.options.max_file_bytes,
                on_failure=self._failed,
            )
            for stream in STREAMS
        }
        self._committers = {stream: _Committer(w) for stream, w in self.writers.items()}

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
                f"cannot create audit directory {self.log_dir}: {_errno_text(exc)}",
                fix="choose a writable audit.log_dir",
            ) from exc
        problem = unsafe_permissions(self.log_dir)
        if problem:
            raise AuditError(
                f"refusing to log into {self.log_dir}: {problem}",
                fix=f"chmod 700 {self.log_dir} (and make sure you own it)",
            )
        if self.options.durability == "flush":
            log.warning(
                "audit durability 'flush': records are not fsynced; a power loss can "
                "lose acknowledged records"
            )
        opened: list[StreamWriter] = []
        try:
            for writer in self.writers.values():
                writer.open()
                opened.append(writer)
                for aside in writer.quarantined:
                    writer.write(
                        _chain_record(
                            writer.stream, "partial_line_quarantined", {"file": aside.name}
                        )
                    )
                detail = {"durability": self.options.durability, "pid": os.getpid()}
                writer.write(_chain_record(writer.stream, "stream_opened", detail))
        except AuditError:
            for writer in opened:
                writer.close()
            raise
        for committer in self._committers.values():
            committer.start()

    async def write(self, event: AuditEvent) -> None:
        await self._committers[event.stream].submit(serialise(event))

    def write_sync(self, event: AuditEvent) -> int:
        """Write ``event`` to its stream; return its ``seq`` once it is durable."""
        return self.writers[event.stream].write(serialise(event))

    def check_health(self) -> None:
        for writer in self.writers.values():
            writer.check_health()

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        for committer in self._committers.values():
            committer.stop()  # everything submitted is committed first
        for writer in self.writers.values():
            writer.close()
