"""``mcp-acp audit verify`` and ``mcp-acp logs show|tail``."""

from __future__ import annotations

import heapq
import json
import math
import re
import time
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from mcp_acp.audit.chain import (
    TOO_LONG,
    chain_files,
    load_record,
    log_in_use,
    open_regular,
    record_lines,
    verify_stream,
)
from mcp_acp.audit.events import STREAMS
from mcp_acp.audit.follow import StreamFollower
from mcp_acp.config import load_config, resolve_config_path
from mcp_acp.errors import AuditError, ConfigError, printable
from mcp_acp.errors import one_line as _one_line

__all__ = ["audit_group", "logs_group"]

_stream_option = click.option(
    "--stream",
    "streams",
    multiple=True,
    type=click.Choice(STREAMS),
    help="Only this stream (repeat); default: all.",
)
_log_dir_option = click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Audit directory to read instead of the configured one.",
)


def _log_dir(ctx: click.Context, given: Path | None) -> Path:
    if given is not None:
        return given
    path = resolve_config_path(ctx.find_root().params.get("config"))
    if not path.exists():
        raise ConfigError(
            f"no config file at {path}, so no configured audit directory",
            fix="pass --log-dir DIR, or run 'mcp-acp init'",
        )
    return load_config(path).audit.log_dir


def _audit_dir(ctx: click.Context, given: Path | None) -> Path:
    """The audit directory to read; ``AuditError`` (exit 13) if there is none there — a
    typo in ``--log-dir`` is not an empty log."""
    directory = _log_dir(ctx, given)
    if not directory.is_dir():
        raise AuditError(
            f"no audit directory at {printable(str(directory))}",
            fix="pass --log-dir, or check audit.log_dir in the config",
        )
    return directory


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """Refuse ``nan`` (which passes every range check)."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds")
    return value


@click.group("audit")
def audit_group() -> None:
    """Check the audit trail."""


@audit_group.command("verify")
@_stream_option
@_log_dir_option
@click.pass_context
def verify(ctx: click.Context, streams: Sequence[str], log_dir: Path | None) -> None:
    """Verify the hash chain of every stream; report the first bad line; exit 13 if any."""
    directory = _audit_dir(ctx, log_dir)
    shown = printable(str(directory))
    if not log_in_use(directory):
        raise AuditError(
            f"no audit log at {shown}: no stream has records and there is no chain head",
            fix="pass the audit directory with --log-dir, or check audit.log_dir in the config",
        )
    failed = []
    for stream in streams or STREAMS:
        result = verify_stream(directory, stream)
        click.echo(result.describe())
        if not result.ok:
            failed.append(stream)
    if failed:
        raise AuditError(
            f"audit chain broken in {', '.join(failed)} ({shown})",
            fix="keep the files as evidence; the lines above name the first bad line",
        )


# ---------------------------------------------------------------- logs

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: ``--since`` reaches back at most this far (further would leave the calendar)
MAX_SINCE_DAYS = 36_500
#: ``logs show`` names at most this many unreadable lines, then counts the rest
_MAX_NOTES = 10


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    match = _RELATIVE.match(value)
    if match:
        digits, unit = match.group(1), match.group(2)
        seconds = int(digits) * _UNIT_SECONDS[unit] if len(digits) <= 12 else None
        if seconds is None or seconds > MAX_SINCE_DAYS * 86400:
            raise click.BadParameter(
                f"{value!r} reaches back too far: at most {MAX_SINCE_DAYS}d "
                f"({MAX_SINCE_DAYS // 365} years); or give an ISO time"
            )
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: use 10m, 2h, 1d or an ISO time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _time(record: dict[str, Any]) -> datetime | None:
    """The record's ``ts`` in UTC; ``None`` unless it is an ISO time with a time zone (the
    writer always writes UTC, ``…Z``): naive and aware times cannot be compared or sorted.
    ``None`` too for one that is no time in UTC (``9999-12-31T23:59:59-23:59`` is in the
    year 10000 there): showing it raised ``OverflowError`` and ended the listing."""
    ts = record.get("ts")
    if not isinstance(ts, str):
        return None
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        return moment.astimezone(UTC) if moment.utcoffset() is not None else None
    except (ValueError, OverflowError):
        return None


class _Notes:
    """What ``logs show`` could not read: the first ``_MAX_NOTES`` named, the rest counted."""

    def __init__(self) -> None:
        self.named: list[str] = []
        self.more = 0

    def add(self, note: str) -> None:
        if len(self.named) < _MAX_NOTES:
            self.named.append(note)
        else:
            self.more += 1


#: A record to show, with what orders it: time, stream, ``seq`` (0 if it has none)
_Item = tuple[datetime, str, int, dict[str, Any]]


def _records(directory: Path, stream: str, notes: _Notes) -> Iterator[_Item]:
    """The records of ``stream``, read one at a time in the order of its files; what cannot
    be read is named in ``notes`` (file and line, and why) instead of ending the listing."""
    for path in chain_files(directory, stream):
        try:
            with open_regular(path) as handle:
                for number, raw in enumerate(record_lines(handle), start=1):
                    if raw is None:
                        notes.add(f"{path}:{number}: {TOO_LONG}")
                        continue
                    try:
                        record = load_record(raw)
                    except (ValueError, RecursionError):
                        notes.add(f"{path}:{number}: not a JSON record")
                        continue
                    if not isinstance(record, dict):
                        notes.add(f"{path}:{number}: not a JSON object")
                        continue
                    moment = _time(record)
                    if moment is None:
                        notes.add(f"{path}:{number}: no ts with a time zone, in years 1-9999 UTC")
                        continue
                    seq = record.get("seq")
                    yield moment, stream, seq if type(seq) is int else 0, record
        except OSError as exc:
            notes.add(f"{path}: cannot be read: {exc.strerror or exc}")


def _in_time_order(
    directory: Path, streams: Sequence[str], notes: _Notes, cutoff: datetime | None
) -> Iterator[dict[str, Any]]:
    """The records of ``streams`` newer than ``cutoff``, by time, then stream, then ``seq``,
    as they are read: a stream's files are in ``seq`` order and its times only grow, so
    merging the streams orders them all, holding one record of each — never the whole
    trail (sorting it held a million records in 3.4 GB). A stream whose time went back (a
    clock set back) is shown in its own order."""
    readers = [
        (item for item in _records(directory, stream, notes) if cutoff is None or item[0] >= cutoff)
        for stream in streams
    ]
    for _, _, _, record in heapq.merge(*readers, key=lambda item: item[:3]):
        yield record


#: Characters Python calls printable that print as nothing: read as gaps between columns.
_BLANKS = frozenset("\u115f\u1160\u2800\u3164\uffa0")
#: Column widths of ``logs show|tail``: time, stream, event, request, subject, tool or
#: method, outcome; the reason is last, cut at ``_REASON``.
_WIDTHS = (23, 10, 24, 12, 12, 25, 9)
_REASON = 100


def _text(value: Any) -> str:
    """Any JSON value as text: a string as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _escaped(ch: str) -> str:
    if ch in '"\\':
        return "\\" + ch
    if ch == " " or (ch.isprintable() and ch not in _BLANKS):
        return ch
    return ch.encode("unicode_escape", "backslashreplace").decode()


def _value(value: Any) -> str:
    """A value, readable as one value: anything that would not print as itself escaped;
    and in double quotes, JSON-style (``\\"``, ``\\\\``, ``\\u2800``), if it could be
    mistaken for gaps between columns or for the listing's own marks — it holds a space or
    another character that prints blank, a ``…``, begins with ``"``, is empty or ``-``. A
    client or backend picks request ids, tool and method names, subjects and detail values:
    ``9      alice      list_notes      allow`` as a request id forged a whole row."""
    text = _text(value)
    if (
        text in ("", "-")
        or text[0] == '"'
        or any(c == " " or c == "…" or c in _BLANKS for c in text)
    ):
        return '"' + "".join(_escaped(ch) for ch in text) + '"'
    return printable(text)


def _word(value: Any) -> str:
    """A value, or ``-`` if there is none."""
    return "-" if value is None else _value(value)


def _cells(ch: str) -> int:
    """How many terminal columns ``ch`` takes: none for a combining mark, two for a wide
    or full-width character (CJK, full-width forms), one for the rest."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _fit(text: str, width: int) -> str:
    """``text`` padded to ``width`` terminal columns, or cut to them with a ``…`` where it
    was cut: counted in columns, not characters, so that a wide character (``名``) does not
    push the columns after it to the right."""
    if text.isascii():
        return f"{text[: width - 1]}…" if len(text) > width else f"{text:<{width}}"
    total = sum(map(_cells, text))
    if total <= width:
        return text + " " * (width - total)
    used = 0
    for end, ch in enumerate(text):
        if used + _cells(ch) > width - 1:
            return text[:end] + "…" + " " * (width - 1 - used)
        used += _cells(ch)
    raise AssertionError("unreachable: the text is wider than the column")  # pragma: no cover


def _when(record: dict[str, Any]) -> str:
    """The record's time, UTC, to the millisecond; its ``ts`` as a value if it has none."""
    moment = _time(record)
    if moment is None:
        return _value(record.get("ts"))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:23]


def _row(record: dict[str, Any]) -> str:
    """Readable columns: time, stream, event, request, who, what, outcome, why. Each column
    is cut to its width (``…``), and every value but the reason is one word or quoted
    (``_value``), so no value can reach into another column or pass for one."""
    what = record.get("tool_name") or record.get("mcp_method")
    outcome = record.get("final_effect") or record.get("effect") or record.get("outcome")
    why = record.get("reason") or record.get("rule_id")
    detail = record.get("detail")
    if not why and isinstance(detail, dict):
        why_text = " ".join(f"{_value(k)}={_value(v)}" for k, v in detail.items())
    else:
        why_text = printable(_one_line(_text(why)))
    values = [
        _when(record),
        _word(record.get("stream")),
        _word(record.get("event")),
        _word(record.get("request_id")),
        _word(record.get("subject_id")),
        _value(what) if what else "",
        _value(outcome) if outcome else "",
    ]
    cells = [_fit(text, width) for text, width in zip(values, _WIDTHS, strict=True)]
    cells.append(_fit(why_text, _REASON))  # its padding goes with the row's rstrip
    return printable("  ".join(cells).rstrip())


def _render(record: dict[str, Any], as_json: bool) -> str:
    try:
        return json.dumps(record, sort_keys=True) if as_json else _row(record)
    except (ValueError, TypeError, RecursionError):  # nested too deeply to write back
        return printable(f"(unreadable record: seq {_text(record.get('seq'))})")


@click.group("logs")
def logs_group() -> None:
    """Read the audit logs."""


@logs_group.command("show")
@_stream_option
@click.option("--since", help="Only records newer than this: 10m, 2h, 1d or an ISO time.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON lines.")
@_log_dir_option
@click.pass_context
def show(
    ctx: click.Context,
    streams: Sequence[str],
    since: str | None,
    as_json: bool,
    log_dir: Path | None,
) -> None:
    """Print audit records in time order, as they are read."""
    directory = _audit_dir(ctx, log_dir)
    cutoff = _since(since)
    notes = _Notes()
    for record in _in_time_order(directory, streams or STREAMS, notes, cutoff):
        click.echo(_render(record, as_json))
    for note in notes.named:
        click.echo(printable(f"skipped unreadable line {note}"), err=True)
    if notes.more:
        click.echo(f"skipped {notes.more} more unreadable lines", err=True)


@logs_group.command("tail")
@_stream_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON lines.")
@click.option(
    "--interval",
    type=click.FloatRange(0.01, 3600),
    callback=_finite,
    default=0.5,
    show_default=True,
    help="Polling interval, seconds (0.01 to 3600).",
)
@click.option(
    "--count",
    "limit",
    type=click.IntRange(min=1),
    help="Stop after this many records, 1 or more (for scripts).",
)
@_log_dir_option
@click.pass_context
def tail(
    ctx: click.Context,
    streams: Sequence[str],
    as_json: bool,
    interval: float,
    limit: int | None,
    log_dir: Path | None,
) -> None:
    """Follow new audit records as they are written (Ctrl-C to stop)."""
    directory = _audit_dir(ctx, log_dir)
    followers = [StreamFollower(directory, stream) for stream in streams or STREAMS]
    shown = 0
    try:
        while True:
            for follower in followers:
                records = follower.poll()
                for note in follower.unreadable:  # first: --count may end the records
                    click.echo(printable(f"skipped {note}"), err=True)
                follower.unreadable.clear()
                for record in records:
                    click.echo(_render(record, as_json))
                    shown += 1
                    if limit is not None and shown >= limit:
                        return
            time.sleep(interval)
    finally:
        for follower in followers:
            follower.close()
