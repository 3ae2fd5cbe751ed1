"""The hash chain: canonical JSON lines, each committing to the one before.

A line is the compact JSON of a record — one line, every non-ASCII character escaped (so
U+2028, ANSI escapes or a raw newline inside a value can never end a line or forge a
record) — with three fields appended, in this order:

* ``seq`` — 1, 2, 3, … per stream, continuing across rotated files;
* ``prev_hash`` — the ``hash`` of the previous line (``GENESIS`` for the first);
* ``hash`` — SHA-256 (hex) of the line's own bytes up to and including ``prev_hash``,
  closed with ``}``.

The hash covers the bytes as written, so verifying never re-serialises anything. The
record part is serialised by the caller; the writer only appends the chain fields and
hashes, so the commit leader does little work per line.

Editing, deleting, inserting or reordering a line breaks the chain at that line; cutting
off the tail is caught by comparing with the *head* (last ``seq`` and ``hash``) that the
writer keeps outside the log file. The head also says whether the stream was *closed*
cleanly: then no line may follow the one it names — anyone who can append to the file can
append correctly chained records (the chain has no key), and only a crash leaves lines past
the head legitimately.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from mcp_acp.audit.events import STREAMS, AuditEvent
from mcp_acp.errors import printable

__all__ = [
    "GENESIS",
    "MAX_RECORD_BYTES",
    "TOO_LONG",
    "ChainHead",
    "DamagedHead",
    "VerifyResult",
    "canonical",
    "chain_files",
    "head_path",
    "last_newline",
    "line_schema",
    "load_record",
    "log_in_use",
    "open_head",
    "open_regular",
    "read_head",
    "record_lines",
    "seal",
    "skip_line",
    "stray_files",
    "verify_stream",
    "write_head",
]

GENESIS = "0" * 64

#: The longest line (with its newline) that is read as a record: far more than any record
#: mcp-acp writes. A record holds at most one message's worth of the message's content
#: (the relay refuses messages over 10 MiB, ``MAX_MESSAGE_BYTES``) — its arguments with
#: ``audit.record_payloads``, or its paths and tool name — and escaping to ASCII makes a
#: byte of it at most about four (``é`` is ``\u00e9``, ``1E15`` is
#: ``1000000000000000.0``): under 40 MiB. A longer line is not a record and is never read
#: whole (one line of gigabytes, ``truncate -s +3G``, ended ``audit verify`` with a
#: MemoryError).
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: What a line longer than that is, in the messages that name one.
TOO_LONG = f"longer than {MAX_RECORD_BYTES >> 20} MiB: not a record mcp-acp writes"
#: How much of a line longer than that is read at a time, to skip it.
_SKIP_BYTES = 1024 * 1024


def canonical(record: dict[str, Any]) -> bytes:
    """The one byte form of ``record`` that is hashed and written."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


CHAIN_FIELDS = ("seq", "prev_hash", "hash")


_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

#: The chain fields in JSON Schema, as every line ends with them.
CHAIN_SCHEMA: dict[str, dict[str, Any]] = {
    "seq": {"type": "integer", "minimum": 1, "description": "1, 2, 3, … per stream."},
    "prev_hash": {**_HEX64, "description": "The previous line's hash (GENESIS first)."},
    "hash": {**_HEX64, "description": "SHA-256 of the line up to prev_hash, closed with }."},
}


def line_schema(model: type[AuditEvent]) -> dict[str, Any]:
    """JSON Schema of a whole line of ``model``'s records as the writer writes them: the
    record's fields (``None`` left out, so every field with another default is always
    there) and the chain fields."""
    schema = model.model_json_schema()
    written = [
        name
        for name, field in model.model_fields.items()
        if field.is_required() or field.default_factory is not None or field.default is not None
    ]
    schema["properties"] = {**schema["properties"], **CHAIN_SCHEMA}
    schema["required"] = [*written, *CHAIN_FIELDS]
    return schema


def seal(body: bytes, seq: int, prev_hash: str) -> tuple[bytes, str]:
    """Append the chain fields to a record's canonical JSON ``body``; return the line (with
    newline) and its hash. (Two concatenations and one f-string each way: this runs for
    every record, under the writer's lock or on its committer.)"""
    comma = "," if len(body) > 2 else ""
    chained = body[:-1] + f'{comma}"seq":{seq},"prev_hash":"{prev_hash}"'.encode()
    digest = sha256(chained + b"}").hexdigest()
    return chained + f',"hash":"{digest}"}}\n'.encode(), digest


@attrs.frozen(slots=True)
class ChainHead:
    """The last record written to a stream: kept outside the log to detect truncation.

    ``closed``: the writer closed the stream cleanly after this record, so nothing it wrote
    follows it. Set by ``close()`` (synced), cleared when the stream is opened again
    (synced, before any record); a head file written before the mark existed reads as not
    closed."""

    seq: int
    hash: str
    closed: bool = False


def head_path(log_dir: Path, stream: str) -> Path:
    return log_dir / ".heads" / f"{stream}.head"


_SLOT = 128  # the head file holds two fixed-size slots, written alternately in place


_CLOSED = "closed"


def _slot(head: ChainHead) -> bytes:
    """``seq hash [closed] check``, padded: the mark costs nothing per commit (same slot,
    same one ``pwrite``)."""
    text = f"{head.seq} {head.hash} {_CLOSED + ' ' if head.closed else ''}"
    check = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text}{check}".encode().ljust(_SLOT - 1) + b"\n"


def open_head(log_dir: Path, stream: str) -> int:
    """Open (create) the head file for in-place updates; returns the descriptor."""
    return os.open(head_path(log_dir, stream), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def write_head(fd: int, head: ChainHead) -> None:
    """Record the chain head, written after the lines it describes are durable.

    Two slots, used alternately by ``seq``: a write torn by a crash spoils one slot, and
    the other still holds an earlier head — which only makes truncation detection a little
    more lenient, never raises a false alarm. No rename, no fsync: one ``pwrite``.
    """
    os.pwrite(fd, _slot(head), (head.seq % 2) * _SLOT)


def last_newline(handle: BinaryIO, size: int) -> int | None:
    """Offset just after the last newline before ``size`` in ``handle``'s file (0 if there
    is none), read backwards in growing windows: the end of a log, never all of it.
    ``None`` if the :data:`MAX_RECORD_BYTES` before ``size`` hold no newline: what ends
    there is longer than any record, and is read no further."""
    floor = max(0, size - MAX_RECORD_BYTES)
    end, window = size, 4096
    while end > floor:
        start = max(floor, end - window)
        handle.seek(start)
        index = handle.read(end - start).rfind(b"\n")
        if index >= 0:
            return start + index + 1
        end, window = start, min(window * 4, _SKIP_BYTES)
    return 0 if floor == 0 else None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def load_record(raw: bytes) -> Any:
    """A line as JSON, as ``logs show`` and ``logs tail`` read it: ``ValueError`` for
    ``NaN`` and ``Infinity``, which the writer never writes and ``--json`` could not pass
    on as JSON (``RecursionError`` for nesting too deep passes through)."""
    return json.loads(raw, parse_constant=_not_json)


def record_lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """The lines of ``handle``'s file (the last one may lack its newline), each read only
    up to :data:`MAX_RECORD_BYTES`: ``None`` for a longer one, whose rest is skipped a
    megabyte at a time — and only if the caller asks for the line after it."""
    while line := handle.readline(MAX_RECORD_BYTES + 1):
        if len(line) <= MAX_RECORD_BYTES:
            yield line
            continue
        yield None
        if not line.endswith(b"\n") and not skip_line(handle):
            return


def skip_line(handle: BinaryIO) -> bool:
    """Read past the rest of the line ``handle`` is in, a megabyte at a time (a file of one
    line of gigabytes takes seconds line by line); whether a newline ended it."""
    while chunk := handle.read(_SKIP_BYTES):
        index = chunk.find(b"\n")
        if index >= 0:
            handle.seek(index + 1 - len(chunk), os.SEEK_CUR)
            return True
    return False


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file: not a symlink (``ELOOP``), a
    directory, a FIFO (opened without blocking) or a device (``OSError`` naming which)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise OSError(errno.EINVAL, kind, str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class DamagedHead(ValueError):
    """A chain head file that is there but holds no head: ``empty`` (0 bytes), or neither
    slot is valid. The writer writes and syncs a head before a stream's first record, so
    while the stream has records this is damage, never the trace of a crash."""

    def __init__(self, empty: bool) -> None:
        self.empty = empty
        super().__init__(
            "the chain head file is empty"
            if empty
            else "the chain head file is corrupt (neither slot holds a valid head)"
        )


def read_head(log_dir: Path, stream: str) -> ChainHead | None:
    """The chain head; ``None`` if there is no head file. ``DamagedHead`` if the file is
    empty or garbage; ``OSError`` if the path is there but not a readable file."""
    try:
        with open_regular(head_path(log_dir, stream)) as handle:
            data = handle.read(4 * _SLOT)
    except FileNotFoundError:
        return None
    heads = []
    for start in (0, _SLOT):
        fields = data[start : start + _SLOT].decode("ascii", "replace").split()
        closed = len(fields) == 4 and fields[2] == _CLOSED
        if len(fields) != 3 + closed or not fields[0].isdigit() or len(fields[1]) != 64:
            continue
        head = ChainHead(int(fields[0]), fields[1], closed)
        if _slot(head).split()[-1] == fields[-1].encode():
            heads.append(head)
    if not heads:
        raise DamagedHead(empty=not data)
    return max(heads, key=lambda h: h.seq)


#: The number in a rotated file's name, ``<stream>.<n>.jsonl``: ASCII only — ``"²".isdigit()``
#: is true but ``int("²")`` raises, and ``int("\u0661")`` (ARABIC-INDIC DIGIT ONE) is 1.
_ROTATED = re.compile(r"[1-9][0-9]*")


def _rotated(log_dir: Path, stream: str) -> Iterator[tuple[int | None, Path]]:
    """Every ``<stream>.*.jsonl`` in ``log_dir`` with its number: ``None`` for a name the
    writer never gives a rotated file (``decisions.².jsonl``, ``decisions.01.jsonl``)."""
    for path in log_dir.glob(f"{stream}.*.jsonl"):
        middle = path.name[len(stream) + 1 : -len(".jsonl")]
        yield (int(middle) if _ROTATED.fullmatch(middle) else None), path


def chain_files(log_dir: Path, stream: str) -> list[Path]:
    """A stream's files, oldest first: rotated ``<stream>.<n>.jsonl``, then ``<stream>.jsonl``.
    Other ``<stream>.*.jsonl`` files are not the stream's (``stray_files``)."""
    rotated = sorted((n, p) for n, p in _rotated(log_dir, stream) if n is not None)
    files = [p for _, p in rotated]
    current = log_dir / f"{stream}.jsonl"
    if current.exists():
        files.append(current)
    return files


def stray_files(log_dir: Path, stream: str) -> list[Path]:
    """The ``<stream>.*.jsonl`` files that are no rotated file of the writer's: its
    numbers are 1, 2, 3, … in ASCII digits, no leading zero."""
    return sorted(p for n, p in _rotated(log_dir, stream) if n is None)


def log_in_use(log_dir: Path) -> bool:
    """Whether a writer has ever started in ``log_dir``: a chain head file exists, or a
    stream's file is anything but an empty regular file. (The writer creates every
    stream's head and writes ``stream_opened`` to every stream when it starts.)"""
    try:
        if any(entry.name.endswith(".head") for entry in (log_dir / ".heads").iterdir()):
            return True
    except OSError:
        pass
    for stream in STREAMS:
        for path in chain_files(log_dir, stream):
            try:
                info = path.lstat()
            except OSError:
                return True
            if info.st_size > 0 or not stat.S_ISREG(info.st_mode):
                return True
    return False


@attrs.frozen(slots=True)
class VerifyResult:
    """Outcome of verifying one stream."""

    stream: str
    lines: int
    ok: bool
    problem: str | None = None
    file: Path | None = None
    line: int | None = None
    partial_lines: tuple[Path, ...] = ()
    #: the first and last ``seq`` after the head's, in a stream not closed cleanly
    past_head: tuple[int, int] | None = None

    def describe(self) -> str:
        """One line for a terminal: file names are escaped wherever they print as
        anything but themselves (an ANSI escape in a file name cannot clear the screen)."""
        return printable(self._describe())

    def _describe(self) -> str:
        if self.ok:
            extra = ""
            if self.partial_lines:
                names = ", ".join(p.name for p in self.partial_lines)
                extra = f"; partial line(s) set aside after a crash: {names}"
            if self.past_head:
                first, last = self.past_head
                span = f"seq {first}" if first == last else f"seq {first}-{last}"
                extra += (
                    f"; note: {span} past the chain head (seq {first - 1}), written after its "
                    "last update by a writer that crashed or is running: no head confirms them"
                )
            return f"{self.stream}: ok, {self.lines} lines{extra}"
        where = str(self.file) if self.file else self.stream
        if self.file and self.line is not None:
            where += f":{self.line}"
        return f"{self.stream}: FAILED at {where}: {self.problem}"


def _files_to_verify(
    log_dir: Path, stream: str
) -> tuple[list[tuple[Path, BinaryIO | OSError | None]], BinaryIO | None]:
    """A stream's files, oldest first, as ``verify`` reads them while a writer may rotate:
    the current file is opened first, then the rotated ones listed — so a rotation in
    between (the open file renamed to ``<stream>.<n>.jsonl``, a new one begun) neither
    hides the renamed one nor puts the new one in its place. The open file is found among
    the rotated ones by device and inode: it ends the list, named as it is now, and what
    was rotated after it (written after ``verify`` began) is left for the next check.

    Each file comes with its handle (the current file), the ``OSError`` opening it raised,
    or ``None`` (opened when its turn comes); and the handle, to be closed."""
    current = log_dir / f"{stream}.jsonl"
    opened: BinaryIO | OSError | None
    try:
        opened = open_regular(current)
    except FileNotFoundError:  # none yet, or between a rotation's rename and the new file
        opened = None
    except OSError as exc:
        opened = exc
    rotated = [path for path in chain_files(log_dir, stream) if path != current]
    files: list[tuple[Path, BinaryIO | OSError | None]] = [(path, None) for path in rotated]
    if opened is None:
        return files, None
    if isinstance(opened, OSError):
        return [*files, (current, opened)], None
    info = os.fstat(opened.fileno())
    identity = (info.st_dev, info.st_ino)
    for index, path in enumerate(rotated):
        try:
            now = path.lstat()
        except OSError:
            continue
        if (now.st_dev, now.st_ino) == identity:
            if _identity(current) == identity:  # both names at once: a hard link, no rotation
                return [*files[:index], (path, _HardLink(current))], opened
            return [*files[:index], (path, opened)], opened  # rotated meanwhile
    return [*files, (current, opened)], opened


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


class _HardLink(OSError):
    """A rotated file that is the current file under a second name. The writer renames the
    current file when it rotates, so the two names never stand for one file at once: a
    hard link made by someone else, which would end the chain there (what a rotation
    during ``verify`` looks like) and leave every file after it unread."""

    def __init__(self, current: Path) -> None:
        super().__init__(
            errno.EMLINK,
            f"the same file as {current.name}, under a second name (a hard link, which the "
            "writer never makes): the files after it would go unchecked",
        )


def _lines(path: Path, opened: BinaryIO | OSError | None) -> Iterator[tuple[int, bytes | None]]:
    if isinstance(opened, OSError):
        raise opened
    with opened if opened is not None else open_regular(path) as handle:
        yield from enumerate(record_lines(handle), start=1)


def _unreadable(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link (the writer never makes one)"
    return exc.strerror or type(exc).__name__


class _BadLine(Exception):
    """A line that does not continue the chain; the message says why."""


def _check_line(raw: bytes, seq: int, prev: str, head: ChainHead | None) -> str:
    """The hash of ``raw``, checked as the line after ``seq``/``prev`` (``_BadLine`` if not)."""
    if not raw.endswith(b"\n"):
        raise _BadLine("partial last line (no newline): the log was cut mid-write")
    try:
        record = json.loads(raw)
    except ValueError:
        raise _BadLine("not valid JSON") from None
    except RecursionError:
        raise _BadLine("not an audit record (JSON nested too deeply)") from None
    if not isinstance(record, dict) or not {"seq", "prev_hash", "hash"} <= record.keys():
        raise _BadLine("not a chained record (seq, prev_hash, hash missing)")
    claimed = record["hash"]
    if not isinstance(claimed, str) or not isinstance(record["seq"], int):
        raise _BadLine("chain fields of the wrong type")
    if record["seq"] != seq + 1:
        raise _BadLine(
            f"seq {record['seq']} where {seq + 1} was expected "
            "(a line was deleted, inserted or moved)"
        )
    if record["prev_hash"] != prev:
        raise _BadLine(
            "prev_hash does not match the previous line (a line was deleted, inserted or moved)"
        )
    tail = b',"hash":"%s"}\n' % claimed.encode()
    if not raw.endswith(tail) or not raw.isascii():
        raise _BadLine("the line does not end with its hash (the line was edited)")
    actual = hashlib.sha256(raw[: -len(tail)] + b"}").hexdigest()
    if actual != claimed:
        raise _BadLine("hash does not match the content (the line was edited)")
    if head is not None and seq + 1 == head.seq and claimed != head.hash:
        raise _BadLine(
            f"the hash of seq {head.seq} differs from the chain head's: the log was "
            "rewritten (re-chained) up to here"
        )
    return claimed


def _count_lines(count: int) -> str:
    """``1 line``, ``3 lines``."""
    return f"{count} line" if count == 1 else f"{count} lines"


def verify_stream(log_dir: Path, stream: str) -> VerifyResult:
    """Check every line of every file of ``stream`` and compare the chain with the head.

    The head is read first: a running writer updates it only after the lines it names are
    written, so every line up to the head's ``seq`` is already there. The line with that
    ``seq`` must carry exactly the head's hash — otherwise the history was rewritten, even
    if the log goes on past it. Lines after it are allowed: the head is updated once a
    commit is durable, so records written with their fsync deferred (at most 20 ms) can
    be ahead of it after a crash, or while the writer runs — unless the head says the
    stream was closed cleanly: then they were appended by someone else. Otherwise they are
    named in the result (``past_head``): no head confirms them.
    """
    partials = tuple(sorted(log_dir.glob(f"{stream}.partial-*")))
    strays = stray_files(log_dir, stream)
    if strays:  # a rotated file renamed out of the chain, or someone else's: not ours
        problem = (
            f"a file the writer never makes (it names rotated files {stream}.1.jsonl, "
            f"{stream}.2.jsonl, …)"
        )
        if len(strays) > 1:
            problem += "; so are " + ", ".join(p.name for p in strays[1:])
        return VerifyResult(stream, 0, False, problem, strays[0], None, partials)
    damaged: DamagedHead | None = None
    try:
        head = read_head(log_dir, stream)
    except OSError as exc:
        where = head_path(log_dir, stream)
        problem = f"the chain head file cannot be read: {_unreadable(exc)}"
        return VerifyResult(stream, 0, False, problem, where, None, partials)
    except DamagedHead as exc:
        head, damaged = None, exc
    files, opened = _files_to_verify(log_dir, stream)
    try:
        return _verify_files(log_dir, stream, files, head, damaged, partials)
    finally:
        if opened is not None:
            opened.close()


def _verify_files(
    log_dir: Path,
    stream: str,
    files: list[tuple[Path, BinaryIO | OSError | None]],
    head: ChainHead | None,
    damaged: DamagedHead | None,
    partials: tuple[Path, ...],
) -> VerifyResult:
    seq, prev = 0, GENESIS
    count = 0
    past: tuple[Path, int] | None = None  # where the line after the head's is
    for path, opened in files:
        try:
            for number, raw in _lines(path, opened):
                try:
                    if raw is None:
                        raise _BadLine(f"line {number} is {TOO_LONG}")
                    seq, prev = seq + 1, _check_line(raw, seq, prev, head)
                except _BadLine as bad:
                    return VerifyResult(stream, count, False, str(bad), path, number, partials)
                count += 1
                if head is not None and seq == head.seq + 1:
                    past = (path, number)
        except _HardLink as exc:
            return VerifyResult(stream, count, False, exc.strerror, path, None, partials)
        except OSError as exc:
            problem = f"cannot read the file: {_unreadable(exc)}"
            return VerifyResult(stream, count, False, problem, path, None, partials)
    if damaged is not None and (count or not damaged.empty):
        problem = str(damaged)
        if count and damaged.empty:  # a head is synced before the first record: emptied
            problem += (
                f", though the stream has {count} records: it was emptied, so lines cut off "
                "the end could not be detected"
            )
        where = head_path(log_dir, stream)
        return VerifyResult(stream, count, False, problem, where, None, partials)
    if count == 0 and head is None:
        if not log_in_use(log_dir):
            return VerifyResult(stream, 0, False, f"no audit log at {log_dir}")
        # the writer records stream_opened in every stream at start: this one was emptied
        return VerifyResult(
            stream,
            0,
            False,
            "the stream has no records, though the log directory is in use (every stream "
            "gets a stream_opened record when the proxy starts): its file was emptied or "
            "deleted",
            log_dir / f"{stream}.jsonl",
            None,
            partials,
        )
    if head is None and count and not head_path(log_dir, stream).exists():
        # the writer creates the head file before its first line: someone removed it
        return VerifyResult(
            stream,
            count,
            False,
            f"the chain head file {head_path(log_dir, stream)} is missing, so lines cut off "
            "the end could not be detected",
            partial_lines=partials,
        )
    if head is not None and seq < head.seq:
        last = files[-1][0] if files else None
        return VerifyResult(
            stream,
            count,
            False,
            f"the log ends at seq {seq} but the chain head says {head.seq} "
            "(lines were cut off the end)",
            last,
            None,
            partials,
        )
    if head is not None and past is not None:
        if head.closed and _still(log_dir, stream, head):
            return VerifyResult(
                stream,
                count,
                False,
                f"{_count_lines(seq - head.seq)} after the chain head (seq {head.seq}) of a stream "
                "closed cleanly: appended by someone else",
                *past,
                partials,
            )
        return VerifyResult(
            stream, count, True, partial_lines=partials, past_head=(head.seq + 1, seq)
        )
    return VerifyResult(stream, count, True, partial_lines=partials)


def _still(log_dir: Path, stream: str, head: ChainHead) -> bool:
    """Whether the chain head still says what it said before the lines were read. A writer
    that started meanwhile clears the closed mark before it writes past it: its lines are
    no alarm. (A head that cannot be read now is no excuse.)"""
    try:
        return read_head(log_dir, stream) == head
    except (OSError, DamagedHead):
        return True
