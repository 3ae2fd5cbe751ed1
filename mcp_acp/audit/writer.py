"""Appending sealed records to one audit stream's file: group commit, fail closed.

Callers serialise their record, then hand it to the stream's :class:`StreamWriter`. A
caller that finds the stream idle commits its own record on its own thread: seal it into
the chain, check that the file on disk is still the one opened (device and inode), one
``write``, one ``fsync`` — no hand-off at all. Records that arrive while a commit is in
progress wait; when it ends, the stream's committer thread takes *every* record waiting and
commits them the same way, with one ``write`` and one ``fsync`` (group commit), then wakes
exactly their callers, and goes on while records keep arriving. The event loop commits its
own records, on the loop: everything it submitted during one loop iteration, at the start of
the next, with one ``write`` per stream and then one ``fsync`` per stream
(:class:`LoopCommits`) — no thread to wake, no wake-up of the loop to come back (a thread
hand-off cost the proxy about a third of its CPU per relayed call); only if a thread is
committing at that moment do they go to the committer. So concurrent writers never
interleave, and sixteen of them cost a few fsyncs, not sixteen.

Any failure — ENOSPC, EFBIG, EIO, the file deleted, replaced or moved — fails every record
in the batch with :class:`~mcp_acp.errors.AuditError` and puts the writer in a failed state:
from then on every write fails at once. Nothing is ever acknowledged that is not on disk.

The ``jsonl`` sink (:mod:`mcp_acp.audit.jsonl`) runs one writer per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shlex
import stat
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from mcp_acp._fs import fsync_dir, not_private_dir
from mcp_acp.audit.chain import (
    GENESIS,
    TOO_LONG,
    ChainHead,
    DamagedHead,
    chain_files,
    head_path,
    last_newline,
    open_head,
    read_head,
    seal,
    write_head,
)
from mcp_acp.errors import AuditError, printable

__all__ = [
    "DEFERRED_SYNC_SECONDS",
    "LoopCommits",
    "StreamWriter",
    "committed",
    "errno_text",
]

#: A record submitted with ``defer_sync`` (one nothing waits on: a relayed response) is
#: written at once but made durable by the next fsync of its stream — usually the next
#: request's, which syncs anyway — and never later than this.
DEFERRED_SYNC_SECONDS = 0.02

log = logging.getLogger(__name__)


def _as_audit_error(exc: Exception) -> AuditError:
    """A failure while committing, as the :class:`AuditError` every caller of the batch gets
    (the writer's own checks raise ``AuditError`` already)."""
    if isinstance(exc, AuditError):
        return exc
    return AuditError(f"audit write failed: {exc}", fix="see the log")


def _start_anew(log_dir: Path) -> str:
    """The fix for a chain that cannot go on: start-up refuses a stream whose records were
    cut or removed, so keep the old directory as evidence and begin a new chain."""
    old, new = (shlex.quote(printable(str(log_dir) + end)) for end in ("", ".old"))
    return (
        f"run 'mcp-acp audit verify', keep the evidence, then move the log directory aside "
        f"(mv {old} {new}) and restart: a new chain begins"
    )


def errno_text(exc: OSError) -> str:
    return f"{exc.strerror or exc} (errno {exc.errno})" if exc.errno else str(exc)


class _Wait:
    """One caller's records in the queue for the next commit, and how to tell the caller:
    a thread blocks on ``latch`` (released once the records are durable or have failed);
    the event loop awaits ``future``."""

    __slots__ = ("count", "defer", "error", "first", "future", "latch", "then")

    def __init__(
        self,
        count: int,
        latch: threading.Lock | None,
        future: asyncio.Future[int] | None,
        defer: bool = False,
    ) -> None:
        self.count = count
        self.latch = latch
        self.future = future
        self.defer = defer  # its fsync may wait for the stream's next one (see submit)
        self.first = 0
        self.error: AuditError | None = None
        self.then: threading.Lock | None = None  # the next waiting thread's latch, if any


class _LoopBatch:
    """Records the event loop submitted to one stream, committed on the loop together."""

    __slots__ = ("bodies", "error", "first", "sync", "synced", "waits")

    def __init__(self, bodies: list[bytes], waits: list[_Wait]) -> None:
        self.bodies = bodies
        self.waits = waits
        self.first = 0
        self.error: AuditError | None = None
        self.sync = any(not wait.defer for wait in waits)  # someone waits for durability
        self.synced = False


class LoopCommits:
    """The event loop's records, across the streams of one sink, committed once per loop
    iteration: every stream's ``write`` first, then the ``fsync`` of every stream with a
    record that is not deferred (see :meth:`StreamWriter.submit`).

    Streams marked ``commit_first`` (``decisions``) are written before the others, and a
    failed write stops the commit: the streams after it are not written, their records
    fail with the same error. So a request's operation record ("forwarded") is never on
    disk when its decision record could not be written."""

    def __init__(self) -> None:
        self._writers: list[StreamWriter] = []  # streams with loop records (loop only)

    def add(self, writer: StreamWriter, loop: asyncio.AbstractEventLoop) -> None:
        """``writer`` has records from ``loop``: commit them at the next iteration."""
        if not self._writers:
            loop.call_soon(self._commit)
        self._writers.append(writer)

    def _commit(self) -> None:
        writers, self._writers = self._writers, []
        writers.sort(key=lambda writer: not writer.commit_first)  # stable
        batches = [(w, batch) for w in writers if (batch := w._loop_take()) is not None]
        try:
            failed: AuditError | None = None
            for writer, batch in batches:
                if failed is None:
                    writer._loop_write(batch)
                    failed = batch.error
                else:
                    batch.error = failed  # not written: the commit failed before it
            for writer, batch in batches:
                writer._loop_sync(batch)
        finally:
            for writer, batch in batches:
                writer._loop_done(batch)


class StreamWriter:
    """Appends sealed records to one stream's file, with group commit.

    A caller that finds the stream idle commits its own records on its own thread: one
    caller pays exactly one write and one fsync and no thread hand-off. Records that arrive
    while a commit is in progress queue up; when it ends they are handed to the stream's
    committer thread (started on first need), which commits everything waiting with one
    write and one fsync, wakes those callers (each blocks on its own latch), and repeats
    until nothing is waiting. Under load the committer never sleeps: it writes the next
    batch, wakes the callers of the last one, and fsyncs while they prepare their next
    records.
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
        loop_commits: LoopCommits | None = None,
        commit_first: bool = False,
    ) -> None:
        self.log_dir = log_dir
        self.stream = stream
        self.path = path or log_dir / f"{stream}.jsonl"
        self._path_bytes = os.fsencode(self.path)  # stat()ed before every write
        self.durability = durability
        self._fsync = durability == "fsync"
        self.max_file_bytes = max_file_bytes
        self._on_failure = on_failure
        self._lock = threading.Lock()
        # _busy: a commit is in progress, or the committer thread has records to commit.
        # Records (and their callers) waiting for the next commit, in arrival order:
        self._busy = False
        self._bodies: list[bytes] = []
        self._waits: list[_Wait] = []
        # Records submitted by the event loop, to be committed on the loop (_commit_on_loop):
        self._loop_bodies: list[bytes] = []
        self._loop_waits: list[_Wait] = []
        self._loop_scheduled = False
        self._loop_commits = loop_commits or LoopCommits()
        #: written before the other streams of a loop commit (see LoopCommits)
        self.commit_first = commit_first
        # Loop records written with their fsync deferred (submit(defer_sync=True)), and the
        # timer that syncs them if no other commit of this stream does first:
        self._unsynced: list[_Wait] = []
        self._sync_timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None  # the committer, started on first need
        self._doorbell = threading.Lock()  # held while the committer may sleep on it
        self._doorbell.acquire()
        self._asleep = False  # the committer waits on the doorbell
        self._stopping = False
        self._idle = threading.Condition(self._lock)  # notified when _busy ends, if closing
        self._closing = False
        self._open = False
        self._fd = -1
        self._head_fd = -1
        self._identity: tuple[int, int] = (0, 0)
        self._size = 0
        self._seq = 0
        self._prev = GENESIS
        self._failed: AuditError | None = None
        self.quarantined: list[Path] = []
        #: the first and last ``seq`` found past the chain head at start (the head of a
        #: stream not closed cleanly, after a crash), recorded in ``stream_opened``
        self.past_head: tuple[int, int] | None = None
        self.fsyncs = 0
        self._head_identity: tuple[int, int] = (0, 0)

    # ---------------------------------------------------------------- opening

    def open(self) -> None:
        """Recover after a crash, pick up the chain, check it against its head, open the
        file — and write the head, synced, before any record (see :meth:`_open_head`)."""
        try:
            if self.path.is_symlink():  # never followed: it could point anywhere
                raise OSError(errno.ELOOP, "it is a symbolic link")
            self._recover_partial_line()
            self._seq, self._prev = self._chain_end()
            self._check_chain_head()
            self._open_file()
            if self.path == self.log_dir / f"{self.stream}.jsonl":
                self._open_head()
        except OSError as exc:
            raise AuditError(
                f"cannot open audit stream {self.path}: {errno_text(exc)}",
                fix="check that the log directory exists, is yours and is writable",
            ) from exc
        self._open = True

    def _check_chain_head(self) -> None:
        """Refuse to go on from a chain end its head does not vouch for: records cut off
        the end, a head file removed, emptied or garbled while the stream has records, or
        records after the head of a stream closed cleanly. Lines after the head of a stream
        not closed cleanly are what a crash leaves (written before the head was updated);
        so would be lines appended after a crash, which cannot be told apart: they are
        taken, and named in ``past_head``."""
        where = head_path(self.log_dir, self.stream)
        try:
            head = read_head(self.log_dir, self.stream)
        except DamagedHead as damaged:
            if self._seq == 0 and damaged.empty:
                return  # a crash between creating the head file and its first write
            if damaged.empty:
                problem = (
                    f"has {self._seq} records but its chain head file {where} is empty: it was "
                    "emptied, so records cut off the end could not be detected (an mcp-acp that "
                    "wrote the head only after a stream's first record could also leave it so, "
                    "after a crash at that stream's very first start)"
                )
            else:
                problem = (
                    f"has its chain head file {where} corrupt (neither slot holds a valid "
                    "head), so records cut off the end could not be detected"
                )
            raise AuditError(
                f"audit stream {self.stream!r} in {self.log_dir} {problem}",
                fix=_start_anew(self.log_dir),
            ) from None
        if head is None and self._seq > 0:
            raise AuditError(
                f"audit stream {self.stream!r} in {self.log_dir} has records but its chain "
                f"head file {where} is missing: records may have been cut off the end",
                fix=_start_anew(self.log_dir),
            )
        if head is not None and head.seq > self._seq:
            raise AuditError(
                f"audit stream {self.stream!r} in {self.log_dir} ends at seq {self._seq} but "
                f"its chain head says {head.seq}: records were removed",
                fix=_start_anew(self.log_dir),
            )
        if head is not None and head.seq < self._seq:
            if head.closed:  # nothing this writer wrote follows a clean close
                raise AuditError(
                    f"audit stream {self.stream!r} in {self.log_dir} goes on to seq {self._seq} "
                    f"past its chain head (seq {head.seq}), though it was closed cleanly: "
                    "lines appended by someone else",
                    fix=_start_anew(self.log_dir),
                )
            # a crash after writing them, before the head was updated: taken, but recorded
            self.past_head = (head.seq + 1, self._seq)

    def _open_head(self) -> None:
        """Open the chain head file and write the head the chain goes on from — without
        the closed mark — synced before any record is written: so a stream with records
        always has a head on disk (an empty head file is damage, not the trace of a crash),
        and a closed mark never stands before records written since."""
        self._head_fd = open_head(self.log_dir, self.stream)
        info = os.fstat(self._head_fd)
        self._head_identity = (info.st_dev, info.st_ino)
        write_head(self._head_fd, ChainHead(self._seq, self._prev))
        os.fsync(self._head_fd)
        if info.st_size == 0:  # just created
            fsync_dir(self.log_dir / ".heads")

    def _open_file(self) -> None:
        """Open (create) the stream's file. A new one — at a stream's first start, or after
        a rotation renamed the old one — has its directory entry synced too, before any
        record is acknowledged: an fsync of the file alone does not make its name durable,
        and a power loss could take the file, records and all, with it."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        self._fd = os.open(self.path, flags, 0o600)
        info = os.fstat(self._fd)
        self._identity = (info.st_dev, info.st_ino)
        self._size = info.st_size
        if info.st_size == 0:
            fsync_dir(self.path.parent)

    def _recover_partial_line(self) -> None:
        """A crash mid-write leaves bytes after the last newline: set them aside. Only in
        a regular file: a link is never followed — it could point anywhere, and opening
        the stream refuses it next."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError):
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symbolic link: _open_file refuses it
                return
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:  # a device: nothing to cut
            os.close(fd)
            return
        size = info.st_size
        with os.fdopen(fd, "rb+") as handle:
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            cut = last_newline(handle, size)
            if cut is None:  # not read, let alone set aside: a crash cuts one record short
                raise AuditError(
                    f"the unfinished last line of {self.path} is {TOO_LONG}, nor what a "
                    "crash leaves",
                    fix=_start_anew(self.log_dir),
                )
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

    def _chain_end(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last record of the stream, across rotated files."""
        for path in reversed(chain_files(self.log_dir, self.stream)):
            size = path.stat().st_size
            if size == 0:
                continue
            with path.open("rb") as handle:
                start = last_newline(handle, size - 1)
                if start is None:
                    raise AuditError(
                        f"the last line of {path} is {TOO_LONG}",
                        fix=_start_anew(self.log_dir),
                    )
                handle.seek(start)
                line = handle.read()
            try:
                record: dict[str, Any] = json.loads(line)
                return int(record["seq"]), str(record["hash"])
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditError(
                    f"the last line of {path} is not a chained audit record",
                    fix=_start_anew(self.log_dir),
                ) from exc
        return 0, GENESIS

    # ---------------------------------------------------------------- writing

    def write(self, body: bytes) -> int:
        """Append the record whose canonical JSON is ``body``; return its ``seq`` once it is
        durable. Raise ``AuditError`` if it is not — it then never will be.

        A caller that finds the stream idle commits here, straight through — seal, check
        the file's identity and write (:meth:`_put`), fsync (:meth:`_sync`) — with one lock
        round trip to claim the stream and one to release it: the thread resumes from each
        fsync with cold caches, where every step costs two to three times what it costs
        warm. A caller that finds it busy queues its record under the same lock
        (:meth:`_queue`) and waits for the committer thread (:func:`_await`)."""
        with self._lock:
            if self._busy or self._failed is not None or not self._open:
                queued = self._queue((body,))  # raises if the stream failed or is not open
            else:
                self._busy = True
                queued = None
        if queued is not None:
            return _await(*queued)
        try:
            seq = self._seq + 1
            line, digest = seal(body, seq, self._prev)
            self._put(line)
            self._seq, self._prev = seq, digest
            self._sync()
            return seq
        finally:
            self._finish()

    def _queue(self, bodies: Sequence[bytes]) -> tuple[_Wait, threading.Lock]:
        """(Under the lock, for a caller that cannot commit itself.) Raise ``AuditError`` if
        the stream failed or is not open; otherwise (it is busy) queue ``bodies`` for the
        committer thread, which takes them with the others waiting, and return the caller's
        place and latch, to :func:`_await`."""
        if self._failed is not None:
            raise self._failed
        if not self._open:
            raise AuditError(
                f"audit stream {self.stream!r} is not open", fix="call start() before writing"
            )
        latch = threading.Lock()
        latch.acquire()
        wait = _Wait(len(bodies), latch, None)
        self._bodies.extend(bodies)
        self._waits.append(wait)
        return wait, latch

    def submit(self, body: bytes, *, defer_sync: bool = False) -> asyncio.Future[int]:
        """For the event loop: queue ``body`` and return a future for its ``seq``, set (or
        failed with ``AuditError``) once it is durable.

        Records the loop submits during one iteration are committed together, on the loop,
        at the start of the next (see :class:`LoopCommits`): one ``write`` and one ``fsync``
        for all of them, and no thread to wake. Only if a thread is committing at that
        moment do they go to the committer thread instead.

        ``defer_sync``, for a record nothing waits on: it is written like the others, but
        if no record in its batch needs durability now, the fsync waits for the stream's
        next one (the next request's records, usually) or :data:`DEFERRED_SYNC_SECONDS`,
        whichever comes first; the future is set only then. A relayed response thus costs a
        ``write``, and its fsync no longer sits between one request and the next."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if not self._open:
                raise AuditError(
                    f"audit stream {self.stream!r} is not open", fix="call start() before writing"
                )
            self._loop_bodies.append(body)
            self._loop_waits.append(_Wait(1, None, future, defer_sync))
            schedule = not self._loop_scheduled
            self._loop_scheduled = True
        if schedule:
            self._loop_commits.add(self, loop)
        return future

    def _loop_take(self) -> _LoopBatch | None:
        """(On the loop.) The records the loop submitted, to commit on the loop now — or
        None: there are none (close() adopted them), the stream has failed (they are told),
        or a thread is committing (whoever ends that commit hands them to the committer)."""
        with self._lock:
            self._loop_scheduled = False
            bodies, waits = self._loop_bodies, self._loop_waits
            if not bodies:
                return None
            self._loop_bodies, self._loop_waits = [], []
            failed = self._failed
            if failed is None and self._busy:
                self._bodies.extend(bodies)
                self._waits.extend(waits)
                return None
            if failed is None:
                self._busy = True
        if failed is not None:
            for wait in waits:
                wait.error = failed
            _settle(waits)
            return None
        return _LoopBatch(bodies, waits)

    def _loop_write(self, batch: _LoopBatch) -> None:
        """Seal and write ``batch`` (not yet durable)."""
        try:
            batch.first = self._append(batch.bodies)
        except Exception as exc:
            self._loop_failed(batch, exc)

    def _loop_sync(self, batch: _LoopBatch) -> None:
        """Make ``batch`` durable, if it was written — unless all of it may wait."""
        if batch.error is None and (batch.sync or not self._fsync):
            try:
                self._sync()
                batch.synced = True
            except Exception as exc:
                self._loop_failed(batch, exc)

    def _loop_failed(self, batch: _LoopBatch, exc: Exception) -> None:
        error = _as_audit_error(exc)
        self._fail(error)
        batch.error = error

    def _loop_done(self, batch: _LoopBatch) -> None:
        """Tell the batch's callers (on the loop, directly) and end the commit. Records
        written earlier with their fsync deferred are durable now too (or have failed)."""
        first = batch.first
        for wait in batch.waits:
            if batch.error is not None:
                wait.error = batch.error
            else:
                wait.first = first
                first += 1
        deferred = batch.error is None and not batch.synced  # written; the fsync comes later
        with self._lock:
            if deferred:
                self._unsynced.extend(batch.waits)
                settle: list[_Wait] = []
            else:
                settle, self._unsynced = [*self._unsynced, *batch.waits], []
        if deferred and self._sync_timer is None:
            loop = asyncio.get_running_loop()
            self._sync_timer = loop.call_later(DEFERRED_SYNC_SECONDS, self._sync_deferred)
        if batch.error is not None:
            for wait in settle:
                wait.error = batch.error
        self._finish()
        _settle(settle)

    def _sync_deferred(self) -> None:
        """(On the loop, by timer.) Make the records written with their fsync deferred
        durable, unless a commit has since."""
        self._sync_timer = None
        with self._lock:
            waits, self._unsynced = self._unsynced, []
            failed = self._failed
            busy = self._busy
            if waits and failed is None:
                if busy:  # a thread is committing: its fsync is not ours to count on
                    self._unsynced = waits + self._unsynced
                else:
                    self._busy = True
        if not waits:
            return
        if failed is None and busy:
            loop = asyncio.get_running_loop()
            self._sync_timer = loop.call_later(DEFERRED_SYNC_SECONDS, self._sync_deferred)
            return
        if failed is None:
            try:
                self._sync()
            except Exception as exc:
                failed = _as_audit_error(exc)
                self._fail(failed)
            finally:
                self._finish()
        for wait in waits:
            wait.error = failed
        _settle(waits)

    def _finish(self) -> None:
        """After a caller's own commit: hand what arrived meanwhile to the committer."""
        with self._lock:
            wake = bool(self._bodies) and self._hand_over()
            if not self._bodies:
                self._busy = False
                if self._closing:
                    self._idle.notify_all()
        if wake:
            self._wake()

    def _hand_over(self) -> bool:
        """(Under the lock, with the stream about to be busy.) Whether the committer must be
        woken — or started — once the lock is released."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"audit-{self.stream}", daemon=True
            )
            return True
        if self._asleep:
            self._asleep = False
            return True
        return False

    def _wake(self) -> None:
        thread = self._thread
        if thread is not None and thread.ident is None:
            thread.start()
        else:
            self._doorbell.release()

    def _run(self) -> None:
        """The committer: commit whatever is waiting, until nothing is; then sleep."""
        synced: list[_Wait] = []  # callers of the batch last made durable, not yet woken
        while True:
            with self._lock:
                bodies, waits = self._bodies, self._waits
                if bodies:
                    self._bodies, self._waits = [], []
                elif not synced:
                    self._busy = False
                    if self._closing:
                        self._idle.notify_all()
                    if self._stopping:
                        return
                    self._asleep = True
            if bodies:
                synced = self._serve(bodies, waits, synced)
            elif synced:
                _wake(synced)
                synced = []
            else:
                self._doorbell.acquire()  # until a record is handed over, or close()

    def _serve(self, bodies: list[bytes], waits: list[_Wait], synced: list[_Wait]) -> list[_Wait]:
        """Commit ``bodies``; return their callers, to be woken next.

        The callers of the batch before (``synced``, already durable) are woken only once
        this batch is written, just before its fsync: woken earlier, they would take the
        GIL whenever the ``stat`` or ``write`` here releases it, and the fsync would wait
        for their next records to be serialised.
        """
        woken = False
        try:
            if self._failed is not None:
                raise self._failed
            first = self._append(bodies)
            _wake(synced)
            woken = True
            self._sync()
        except Exception as exc:
            error = _as_audit_error(exc)
            self._fail(error)
            for wait in waits:
                wait.error = error
            if not woken:
                _wake(synced)  # durable before this batch failed
            _wake(waits)
            return []
        for wait in waits:
            wait.first = first
            first += wait.count
        return waits

    def _append(self, bodies: Sequence[bytes]) -> int:
        """Seal ``bodies`` into the chain, check that the file is still ours, write them
        (not yet durable); the first one's seq."""
        seq = self._seq
        prev = self._prev
        if len(bodies) == 1:
            seq += 1
            data, prev = seal(bodies[0], seq, prev)
        else:
            lines: list[bytes] = []
            for body in bodies:
                seq += 1
                line, prev = seal(body, seq, prev)
                lines.append(line)
            data = b"".join(lines)
        self._put(data)
        self._seq, self._prev = seq, prev
        return seq - len(bodies) + 1

    def _put(self, data: bytes) -> None:
        """Check that the file is still ours (device and inode of the path), rotate it if
        ``data`` would take it past the limit, write ``data`` (not yet durable)."""
        try:
            info = os.lstat(self._path_bytes)
            if info.st_ino != self._identity[1] or info.st_dev != self._identity[0]:
                raise self._replaced()
            if self._size > 0 and self._size + len(data) > self.max_file_bytes:
                self._rotate()
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except FileNotFoundError:
            raise self._failing(self._vanished()) from None
        except AuditError as error:
            self._fail(error)
            raise
        except OSError as exc:
            raise self._write_failed(exc) from exc
        self._size += len(data)

    def _sync(self) -> None:
        """Make everything written durable (durability ``fsync``), then record the chain
        head: after every commit, so that a process killed at any moment leaves a head
        that names its last durable record (one ``pwrite`` into the page cache, no fsync of
        its own — measured: no difference to the commit's latency)."""
        try:
            if self._fsync:
                os.fsync(self._fd)
                self.fsyncs += 1
            if self._head_fd >= 0:
                write_head(self._head_fd, ChainHead(self._seq, self._prev))
        except OSError as exc:
            raise self._write_failed(exc) from exc

    def _write_failed(self, exc: OSError) -> AuditError:
        error = AuditError(
            f"audit stream {self.stream!r} ({self.path}) cannot be written: {errno_text(exc)}",
            fix="free space or fix permissions, then restart; nothing passed meanwhile",
        )
        self._fail(error)
        return error

    def _check_identity(self) -> None:
        """The path must still name the file we opened: not deleted, replaced or moved."""
        try:
            info = os.lstat(self._path_bytes)
        except FileNotFoundError:
            raise self._vanished() from None
        if info.st_ino != self._identity[1] or info.st_dev != self._identity[0]:
            raise self._replaced()

    def _check_head(self) -> None:
        """The chain head file must still be the one we write (not deleted or replaced):
        without it, records cut off the end could not be told from records never written."""
        if self._head_fd < 0:
            return
        where = head_path(self.log_dir, self.stream)
        try:
            info = os.lstat(where)
        except FileNotFoundError:
            info = None
        if info is None or (info.st_dev, info.st_ino) != self._head_identity:
            raise AuditError(
                f"audit chain head {where} was deleted or replaced while in use",
                fix="find out who changed it; put the file back and restart, or "
                + _start_anew(self.log_dir),
            )

    def _vanished(self) -> AuditError:
        return AuditError(
            f"audit file {self.path} was deleted or moved while in use",
            fix="find out who removed it; put the file back and restart, or "
            + _start_anew(self.log_dir),
        )

    def _replaced(self) -> AuditError:
        return AuditError(
            f"audit file {self.path} was replaced while in use (device/inode changed)",
            fix="find out who replaced it; put the original back and restart, or "
            + _start_anew(self.log_dir),
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

    def _failing(self, error: AuditError) -> AuditError:
        """Enter the failed state with ``error``; return it, to be raised."""
        self._fail(error)
        return error

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
            self._check_head()
            if not os.access(self.path, os.W_OK) or not os.access(self.log_dir, os.W_OK):
                raise AuditError(
                    f"audit file {self.path} is no longer writable",
                    fix="restore write permission, then restart",
                )
            problem = not_private_dir(self.log_dir)
            if problem:
                raise AuditError(
                    f"audit directory is no longer private: {problem}",
                    fix=f"chmod 700 {self.log_dir}, then restart",
                )
        except AuditError as error:
            self._fail(error)
            raise

    def close(self) -> None:
        """Wait for every record handed over to be committed, stop the committer, close."""
        with self._lock:
            # records the event loop has not committed yet: the committer takes them
            self._bodies.extend(self._loop_bodies)
            self._waits.extend(self._loop_waits)
            self._loop_bodies, self._loop_waits = [], []
            wake = bool(self._bodies) and not self._busy and self._hand_over()
            if self._bodies:
                self._busy = True
        if wake:
            self._wake()
        with self._lock:
            self._closing = True
            while self._busy:
                self._idle.wait()
            self._open = False
            unsynced, self._unsynced = self._unsynced, []  # synced below
            thread = self._thread
            self._stopping = True
            wake = self._asleep
            self._asleep = False
        if thread is not None and thread.ident is not None:
            if wake:
                self._doorbell.release()
            thread.join()
        with self._lock:
            self._thread, self._stopping = None, False
        error = self._failed
        if self._fd >= 0:
            try:
                if error is None:  # with durability flush too: the head is marked closed
                    os.fsync(self._fd)
            except OSError as exc:
                error = AuditError(
                    f"audit stream {self.stream!r} ({self.path}) could not be synced at close: "
                    f"{errno_text(exc)}",
                    fix="check the disk; the last records may be missing",
                )
            os.close(self._fd)
            self._fd = -1
        for wait in unsynced:  # written with their fsync deferred: the one above, or none
            wait.error = error
        _wake(unsynced)
        if self._head_fd >= 0:
            if error is None:
                self._mark_closed()
            os.close(self._head_fd)
            self._head_fd = -1

    def _mark_closed(self) -> None:
        """Record the head with the closed mark, synced: every record is durable and
        nothing follows it, so a line found after it later was appended by someone else.
        (If this fails, the mark may not be on disk: lines after the head are then taken
        for what a crash leaves — recorded, not refused.)"""
        with contextlib.suppress(OSError):
            write_head(self._head_fd, ChainHead(self._seq, self._prev, closed=True))
            os.fsync(self._head_fd)


def _wake(waits: list[_Wait]) -> None:
    """Tell the callers of one commit that it is over (their ``first`` or ``error`` is set).

    Waiting threads wake one another — each releases the next one's latch as it wakes — so
    the committer pays for one wake-up, not one per caller; futures are settled with one call
    into their event loop.
    """
    settle: dict[asyncio.AbstractEventLoop, list[_Wait]] = {}
    head: _Wait | None = None
    last: _Wait | None = None
    for wait in waits:
        if wait.latch is not None:
            if last is None:
                head = wait
            else:
                last.then = wait.latch
            last = wait
        elif wait.future is not None:
            settle.setdefault(wait.future.get_loop(), []).append(wait)
    if head is not None and head.latch is not None:
        head.latch.release()
    for loop, group in settle.items():
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(_settle, group)


def _await(wait: _Wait, latch: threading.Lock) -> int:
    """Block on ``latch`` until the commit holding ``wait``'s records is over; their first
    ``seq``, or the commit's ``AuditError``."""
    try:
        latch.acquire()  # released once they are durable, or failed
    except BaseException:  # interrupted (a signal in the main thread)
        _pass_on_later(wait)  # the callers after this one must still be woken
        raise
    if wait.then is not None:  # wake the next caller of the same commit
        wait.then.release()
    if wait.error is not None:
        raise wait.error
    return wait.first


async def committed(future: asyncio.Future[int]) -> None:
    """Yield to the event loop once, so that the commit :meth:`StreamWriter.submit`
    scheduled (before this, and so run before this task resumes) writes and fsyncs the
    record: its future is then settled and awaiting it does not suspend the task again —
    one loop iteration per write instead of two. (If a thread was committing, the record
    went to the committer thread instead and the future is awaited as usual.) If the task
    is cancelled meanwhile, the record is still committed but nobody waits for it: its
    future is cancelled, as it would be if it were awaiting it (if it is already settled,
    ``cancel()`` only marks a failure as seen: the sink's failure handler has it)."""
    try:
        await asyncio.sleep(0)
    except BaseException:
        future.cancel()
        raise


def _pass_on_later(wait: _Wait) -> None:
    """For a waiting caller that was interrupted: wait in its place, then wake the next."""

    def pass_on() -> None:
        if wait.latch is not None:
            wait.latch.acquire()
        if wait.then is not None:
            wait.then.release()

    threading.Thread(target=pass_on, name="audit-wake", daemon=True).start()


def _settle(waits: list[_Wait]) -> None:
    """On the event loop: resolve the futures of one commit's records."""
    for wait in waits:
        future = wait.future
        if future is None or future.done():  # its caller was cancelled
            continue
        if wait.error is not None:
            future.set_exception(wait.error)
        else:
            future.set_result(wait.first)
