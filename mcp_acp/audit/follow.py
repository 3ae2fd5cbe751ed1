"""Following a stream as it is written (``mcp-acp logs tail``), across rotation.

The writer rotates by closing ``<stream>.jsonl``, renaming it to ``<stream>.<n>.jsonl`` and
creating a new ``<stream>.jsonl``. A follower keeps the file it reads open, so a rename
does not take the rest of it away: each poll first looks at which file the path names now,
then reads its open file to the end, and only if the path names another file (the old one
was closed before it was renamed, so it is complete) moves on to the new one, from its
start. If the writer rotated more than once between two polls, the ``seq`` of the next
record shows the gap, and the records in between are read from the rotated files. A
writer restarted after a crash cuts an unfinished last line off the same file: the bytes
held back are checked on every poll, and reading resumes after the last whole line. A line
longer than any record (:data:`~mcp_acp.audit.chain.MAX_RECORD_BYTES`) is skipped
(:func:`~mcp_acp.audit.chain.skip_line`) and named in ``unreadable``: it is never held
whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from mcp_acp.audit.chain import (
    MAX_RECORD_BYTES,
    TOO_LONG,
    chain_files,
    last_newline,
    load_record,
    open_regular,
    record_lines,
    skip_line,
)

__all__ = ["StreamFollower"]


def _seq(record: Any) -> int | None:
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if type(seq) is int else None


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = load_record(raw)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _last_line(handle: BinaryIO) -> tuple[int | None, bytes]:
    """Offset just after the last newline of ``handle``'s file, and the line it ends (empty
    if it is longer than any record); the offset is ``None`` if what follows that newline
    is longer than any record. Neither is read whole."""
    end = last_newline(handle, handle.seek(0, os.SEEK_END))
    if not end:
        return end, b""
    begin = last_newline(handle, end - 1)
    if begin is None:
        return end, b""
    handle.seek(begin)
    return end, handle.read(end - begin)


class StreamFollower:
    """Yields the records written to one stream after it was created, in ``seq`` order,
    across any number of rotations (see the module docstring)."""

    def __init__(self, log_dir: Path, stream: str) -> None:
        self.log_dir, self.stream = log_dir, stream
        self.path = log_dir / f"{stream}.jsonl"
        self.handle: BinaryIO | None = None
        self.identity = (0, 0)
        self.pending = b""
        self.skipping = False  # in a line longer than any record, until its newline
        #: lines that were not JSON objects, as "PATH: why", for the caller to report
        self.unreadable: list[str] = []
        self.last_seq: int | None = None
        self.refused: str | None = None  # why the current file could not be opened, if so
        handle = self._open()
        if handle is not None:
            end, line = _last_line(handle)
            if end is None:  # it ends in an unfinished line longer than any record
                handle.seek(0, os.SEEK_END)
                self.skipping = True
                self.unreadable.append(f"{self.path}: a line {TOO_LONG}")
            else:
                handle.seek(end)
            record = _parse(line)
            self.last_seq = _seq(record) if record is not None else None
        if self.last_seq is None:
            self.last_seq = self._chain_end()

    def _open(self) -> BinaryIO | None:
        try:
            handle = open_regular(self.path)
        except FileNotFoundError:  # between a rename and the new file
            return None
        except OSError as exc:  # a symlink, FIFO or directory put there: said once
            why = f"{self.path}: cannot be followed: {exc.strerror or exc}"
            if why != self.refused:
                self.unreadable.append(why)
                self.refused = why
            return None
        self.refused = None
        info = os.fstat(handle.fileno())
        self.handle, self.identity, self.pending = handle, (info.st_dev, info.st_ino), b""
        self.skipping = False
        return handle

    def _chain_end(self) -> int | None:
        """The last ``seq`` of the stream when its current file has no line: that of the
        newest rotated file with one; 0 if there is no file yet; ``None`` if unknown."""
        files = [p for p in chain_files(self.log_dir, self.stream) if p != self.path]
        for path in reversed(files):
            try:
                with open_regular(path) as handle:
                    _, line = _last_line(handle)
            except OSError:
                return None
            if line:
                record = _parse(line)
                return _seq(record) if record is not None else None
        return 0 if not files else None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def poll(self) -> list[dict[str, Any]]:
        """The records written since the last poll."""
        try:
            info = os.lstat(self.path)  # a symlink put in the file's place is not the file
        except OSError:
            now, size = None, 0
        else:
            now, size = (info.st_dev, info.st_ino), info.st_size
        records: list[dict[str, Any]] = []
        if self.handle is not None:
            if now == self.identity:
                self._recheck(self.handle, size)
            records += self._drain(self.handle)
            if now != self.identity:  # renamed (rotated) or removed, after its last write
                if self.pending:
                    self.unreadable.append(f"{self.path}: an unfinished last line")
                self.close()
        if self.handle is None and now is not None:
            handle = self._open()
            if handle is not None:
                records += self._drain(handle)
        return records

    def _recheck(self, handle: BinaryIO, size: int) -> None:
        """Whether the file still holds what was read from it. A restarted writer sets an
        unfinished last line aside and cuts it off the file, then goes on writing — so the
        held-back bytes must still be there, or reading resumes after the last whole line.
        A file cut before that was rewritten: start over."""
        whole = handle.tell() - len(self.pending)
        if size < whole:
            handle.seek(0)
            self.pending = b""
            self.skipping = False
        elif self.pending and os.pread(handle.fileno(), len(self.pending), whole) != self.pending:
            self.unreadable.append(f"{self.path}: an unfinished last line, set aside")
            handle.seek(whole)
            self.pending = b""

    def _drain(self, handle: BinaryIO) -> list[dict[str, Any]]:
        """The records of the whole lines written since the last poll; an unfinished last
        line is held back in ``pending`` (never more than a record's length of it)."""
        records: list[dict[str, Any]] = []
        while True:
            if self.skipping:  # the rest of a line longer than any record
                self.skipping = not skip_line(handle)
                if self.skipping:
                    return records
            more = handle.readline(MAX_RECORD_BYTES + 1 - len(self.pending))
            if not more:
                return records
            raw, self.pending = self.pending + more, b""
            if len(raw) > MAX_RECORD_BYTES:
                self.unreadable.append(f"{self.path}: a line {TOO_LONG}")
                self.skipping = not raw.endswith(b"\n")
                continue
            if not raw.endswith(b"\n"):  # unfinished: the rest comes with a later poll
                self.pending = raw
                return records
            records += self._take(raw)

    def _take(self, raw: bytes) -> list[dict[str, Any]]:
        """The record of one whole line — after the ones the writer rotated past, if its
        ``seq`` shows a gap."""
        record = _parse(raw)
        if record is None:
            self.unreadable.append(f"{self.path}: a line that is not a JSON object")
            return []
        records: list[dict[str, Any]] = []
        seq = _seq(record)
        if seq is not None:
            if self.last_seq is not None and seq > self.last_seq + 1:
                records += self._missed(self.last_seq, seq)
            self.last_seq = seq
        records.append(record)
        return records

    def _missed(self, after: int, before: int) -> list[dict[str, Any]]:
        """Records ``after`` < seq < ``before`` from the rotated files: the writer rotated
        more than once since the last poll."""
        rotated = [p for p in chain_files(self.log_dir, self.stream) if p != self.path]
        needed: list[Path] = []
        for path in reversed(rotated):
            try:
                with open_regular(path) as handle:
                    first = _seq(_parse(handle.readline(MAX_RECORD_BYTES + 1)))
            except OSError:
                continue
            if first is None or first >= before:
                continue
            needed.append(path)
            if first <= after + 1:
                break
        records: list[dict[str, Any]] = []
        for path in reversed(needed):
            try:
                with open_regular(path) as handle:
                    for raw in record_lines(handle):
                        if raw is None:
                            self.unreadable.append(f"{path}: a line {TOO_LONG}")
                            continue
                        record = _parse(raw)
                        seq = _seq(record)
                        if record is not None and seq is not None and after < seq < before:
                            records.append(record)
            except OSError as exc:
                self.unreadable.append(f"{path}: cannot be read: {exc.strerror or exc}")
        return records
