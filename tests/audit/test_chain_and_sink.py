"""The jsonl sink and the hash chain on real files: tampering, concurrency, rotation,
injection, ENOSPC, and the write-ahead order."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from audit_helpers import decision, killed_writer

from mcp_acp.audit.chain import (
    GENESIS,
    ChainHead,
    canonical,
    head_path,
    read_head,
    seal,
    verify_stream,
)
from mcp_acp.audit.events import AuthEvent, OperationEvent, SystemEvent
from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.audit.writer import StreamWriter
from mcp_acp.errors import AuditError
from mcp_acp.shutdown import ShutdownCoordinator


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def sink(log_dir: Path) -> Any:
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    yield sink
    sink.close_sync()


def lines(log_dir: Path, stream: str) -> list[bytes]:
    return (log_dir / f"{stream}.jsonl").read_bytes().splitlines(keepends=True)


def rewrite(log_dir: Path, stream: str, new_lines: list[bytes]) -> None:
    (log_dir / f"{stream}.jsonl").write_bytes(b"".join(new_lines))


@pytest.mark.parametrize(
    ("body", "seq", "prev"),
    [
        (b'{"event":"x","stream":"system"}', 1, GENESIS),
        (b'{"a":"\\u2028 \\"q\\""}', 123456789, "ab" * 32),
        (b"{}", 7, "0f" * 32),
    ],
)
def test_seal_appends_the_chain_fields_and_hashes_up_to_prev_hash(
    body: bytes, seq: int, prev: str
) -> None:
    head = body[:-1] + (b"," if len(body) > 2 else b"")
    chained = head + b'"seq":%d,"prev_hash":"%s"' % (seq, prev.encode())
    digest = hashlib.sha256(chained + b"}").hexdigest()
    assert seal(body, seq, prev) == (chained + b',"hash":"%s"}\n' % digest.encode(), digest)
    assert json.loads(seal(body, seq, prev)[0])["hash"] == digest


def test_files_are_private_and_records_are_chained(sink: JsonlAuditSink, log_dir: Path) -> None:
    for i in range(5):
        sink.write_sync(decision(f"r{i}"))
    assert oct(log_dir.stat().st_mode & 0o777) == "0o700"
    for stream in ("decisions", "operations", "auth", "system"):
        assert oct((log_dir / f"{stream}.jsonl").stat().st_mode & 0o777) == "0o600"
    records = [json.loads(line) for line in lines(log_dir, "decisions")]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["event"] == "stream_opened"
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(records))
    assert records[1]["ts"].endswith("Z")
    assert len(records[1]["ts"]) == len("2026-11-26T12:00:00.000Z")
    assert verify_stream(log_dir, "decisions").ok


@pytest.mark.parametrize("kind", ["edit", "delete", "insert", "reorder", "truncate", "partial"])
def test_verify_finds_the_first_bad_line(sink: JsonlAuditSink, log_dir: Path, kind: str) -> None:
    for i in range(6):
        sink.write_sync(decision(f"r{i}"))
    sink.close_sync()
    original = lines(log_dir, "decisions")
    tampered = list(original)
    if kind == "edit":
        tampered[3] = tampered[3].replace(b'"effect":"allow"', b'"effect":"deny"')
    elif kind == "delete":
        del tampered[3]
    elif kind == "insert":
        tampered.insert(3, tampered[2])
    elif kind == "reorder":
        tampered[3], tampered[4] = tampered[4], tampered[3]
    elif kind == "truncate":
        tampered = tampered[:-2]
    elif kind == "partial":
        tampered[-1] = tampered[-1][:40]
    rewrite(log_dir, "decisions", tampered)
    result = verify_stream(log_dir, "decisions")
    assert not result.ok
    expected = {
        "edit": (4, "edited"),
        "delete": (4, "deleted, inserted or moved"),
        "insert": (4, "deleted, inserted or moved"),
        "reorder": (4, "deleted, inserted or moved"),
        "truncate": (None, "cut off the end"),
        "partial": (7, "partial last line"),
    }
    line, words = expected[kind]
    assert result.line == line
    assert words in (result.problem or "")
    # and a restart refuses to continue a chain whose tail was cut off
    if kind == "truncate":
        with pytest.raises(AuditError, match="records were removed"):
            JsonlAuditSink(log_dir).start_sync()


@pytest.mark.parametrize("also_cut", [False, True])
def test_a_removed_chain_head_is_reported_and_refused(
    sink: JsonlAuditSink, log_dir: Path, also_cut: bool
) -> None:
    """Removing the head file would let a cut-off tail pass unnoticed: verify fails and a
    restart refuses, whether or not lines were cut too."""
    for i in range(4):
        sink.write_sync(decision(f"r{i}"))
    sink.close_sync()
    if also_cut:
        rewrite(log_dir, "decisions", lines(log_dir, "decisions")[:-2])
    head_path(log_dir, "decisions").unlink()
    result = verify_stream(log_dir, "decisions")
    assert not result.ok
    assert "chain head file" in (result.problem or "")
    assert "is missing" in (result.problem or "")
    with pytest.raises(AuditError, match=r"head file .* is missing"):
        JsonlAuditSink(log_dir).start_sync()
    assert verify_stream(log_dir, "operations").ok  # the other streams still have theirs


def test_the_chain_head_is_on_disk_before_the_first_record(log_dir: Path) -> None:
    """A head written only after the first record left an empty head file after a crash in
    between, which had to be taken for "no head" — and so was a head emptied on purpose.
    Now opening a stream writes its head (seq 0) first, so no crash leaves records behind
    an empty head file."""
    log_dir.mkdir(mode=0o700)
    (log_dir / ".heads").mkdir(mode=0o700)
    writer = StreamWriter(log_dir, "decisions")
    writer.open()
    try:
        assert (log_dir / "decisions.jsonl").read_bytes() == b""
        assert read_head(log_dir, "decisions") == ChainHead(0, GENESIS)
    finally:
        writer.close()


def test_a_new_stream_file_has_its_name_synced_before_any_record(
    log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync of a file does not make its directory entry durable: a stream's file made
    at its first start, or after a rotation renamed the old one, has its directory synced
    before a record in it is acknowledged — else a power loss could take the file away."""
    log_dir.mkdir(mode=0o700)
    (log_dir / ".heads").mkdir(mode=0o700)
    calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    writer = StreamWriter(log_dir, "decisions", max_file_bytes=4096)
    writer.open()
    assert calls[0] == log_dir.name  # the new file's name, first of all
    calls.clear()
    body = canonical({"stream": "decisions", "event": "x", "pad": "p" * 1500})
    writer.write(body)
    writer.write(body)
    assert calls == ["decisions.jsonl", "decisions.jsonl"]
    calls.clear()
    writer.write(body)  # past 4 KiB: the file is rotated first
    writer.close()
    monkeypatch.undo()
    assert (log_dir / "decisions.1.jsonl").exists()
    # the full file synced (then renamed), the new one made: the directory synced, then the
    # record in the new file
    assert calls[:3] == ["decisions.jsonl", log_dir.name, "decisions.jsonl"]


def test_close_marks_the_head_closed_and_open_clears_the_mark_before_any_record(
    log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    sink.write_sync(decision("r0"))
    sink.close_sync()
    head = read_head(log_dir, "decisions")
    assert head == ChainHead(2, json.loads(lines(log_dir, "decisions")[-1])["hash"], closed=True)
    calls: list[str] = []
    real_write, real_pwrite, real_fsync = os.write, os.pwrite, os.fsync

    def name(fd: int) -> str:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))

    def write(fd: int, data: Any) -> int:
        calls.append(f"write {name(fd)}")
        return real_write(fd, data)

    def pwrite(fd: int, data: Any, offset: int) -> int:
        calls.append(f"pwrite {name(fd)}{' closed' if b' closed ' in bytes(data) else ''}")
        return real_pwrite(fd, data, offset)

    def fsync(fd: int) -> None:
        calls.append(f"fsync {name(fd)}")
        real_fsync(fd)

    writer = StreamWriter(log_dir, "decisions")
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "fsync", fsync)
    writer.open()
    writer.write(canonical({"stream": "decisions", "event": "after"}))
    writer.close()
    monkeypatch.undo()
    assert calls == [
        "pwrite decisions.head",  # the mark cleared …
        "fsync decisions.head",  # … on disk before the record
        "write decisions.jsonl",
        "fsync decisions.jsonl",
        "pwrite decisions.head",  # the head after the commit: one pwrite, as before
        "fsync decisions.jsonl",  # close
        "pwrite decisions.head closed",
        "fsync decisions.head",
    ]
    assert read_head(log_dir, "decisions") == ChainHead(
        3, json.loads(lines(log_dir, "decisions")[-1])["hash"], closed=True
    )


def test_a_crash_before_the_first_head_leaves_no_records_and_starts(log_dir: Path) -> None:
    """The one crash that leaves an empty head file — between creating it and its first
    write, at a stream's very first start — leaves no record either: start-up goes on."""
    first = JsonlAuditSink(log_dir)
    first.start_sync()  # what the other streams had by then
    first.close_sync()
    (log_dir / "decisions.jsonl").write_bytes(b"")
    head_path(log_dir, "decisions").write_bytes(b"")
    sink = JsonlAuditSink(log_dir)
    sink.start_sync()
    sink.close_sync()
    assert verify_stream(log_dir, "decisions").ok


def test_injection_cannot_forge_a_record(sink: JsonlAuditSink, log_dir: Path) -> None:
    hostile = 'x\n{"event":"decision","effect":"allow"}\r\u2028\u2029\x1b[2K\udcff'
    sink.write_sync(decision("r-hostile", reason=hostile, paths=(hostile,)))
    data = lines(log_dir, "decisions")
    assert len(data) == 2
    raw = data[-1]
    assert raw.isascii()
    assert raw.count(b"\n") == 1
    assert json.loads(raw)["reason"] == hostile
    assert verify_stream(log_dir, "decisions").ok


def test_fifty_threads_times_a_thousand(sink: JsonlAuditSink, log_dir: Path) -> None:
    def worker(n: int) -> None:
        for i in range(1000):
            sink.write_sync(
                OperationEvent(
                    request_id=f"{n}-{i}",
                    direction="client_to_server",
                    outcome="forwarded",
                    mcp_method="tools/call",
                )
            )

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [json.loads(line) for line in lines(log_dir, "operations")]
    assert len(records) == 50_001
    assert len({r["request_id"] for r in records[1:]}) == 50_000
    assert verify_stream(log_dir, "operations").ok
    # group commit: far fewer fsyncs than records
    assert sink.writers["operations"].fsyncs < 50_000


def test_rotation_under_load_loses_nothing(log_dir: Path) -> None:
    sink = JsonlAuditSink(log_dir, JsonlConfig(max_file_bytes=20_000))
    sink.start_sync()

    def worker(n: int) -> None:
        for i in range(500):
            sink.write_sync(SystemEvent(event="tick", detail={"n": n, "i": i}))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close_sync()
    files = sorted(log_dir.glob("system*.jsonl"))
    assert len(files) > 5
    total = sum(len(f.read_bytes().splitlines()) for f in files)
    assert total == 4000 + 1
    result = verify_stream(log_dir, "system")
    assert (result.ok, result.lines) == (True, 4001)
    # a restart continues the chain in the current file
    again = JsonlAuditSink(log_dir, JsonlConfig(max_file_bytes=20_000))
    again.start_sync()
    again.write_sync(SystemEvent(event="after-restart"))
    again.close_sync()
    assert verify_stream(log_dir, "system").lines == 4003


def test_enospc_on_dev_full_fails_the_write(tmp_path: Path) -> None:
    writer = StreamWriter(tmp_path, "decisions", path=Path("/dev/full"))
    writer.open()  # a character device: nothing to recover, no chain head beside it
    with pytest.raises(AuditError, match=r"No space left on device \(errno 28\)"):
        writer.write(canonical({"stream": "decisions", "event": "x"}))
    assert writer.failed is not None
    with pytest.raises(AuditError):  # failed state: every later write fails at once
        writer.write(canonical({"stream": "decisions", "event": "y"}))
    writer.close()


def test_a_symlinked_audit_file_is_refused(log_dir: Path) -> None:
    log_dir.mkdir(mode=0o700)
    (log_dir / "decisions.jsonl").symlink_to("/dev/full")
    with pytest.raises(AuditError, match=r"cannot open audit stream .*decisions.jsonl"):
        JsonlAuditSink(log_dir).start_sync()


def test_a_shared_log_directory_is_refused(log_dir: Path) -> None:
    log_dir.mkdir()
    log_dir.chmod(0o777)
    with pytest.raises(AuditError, match="writable by group or others"):
        JsonlAuditSink(log_dir).start_sync()


def test_flush_durability_is_named_and_logged(log_dir: Path, caplog: Any) -> None:
    sink = JsonlAuditSink(log_dir, JsonlConfig(durability="flush"))
    sink.start_sync()
    sink.write_sync(AuthEvent(event="session_started", subject_id="alice"))
    sink.close_sync()
    assert "durability 'flush'" in caplog.text
    assert sink.writers["auth"].fsyncs == 0
    opened = json.loads(lines(log_dir, "auth")[0])
    assert opened["detail"]["durability"] == "flush"


def test_partial_line_is_set_aside_and_recorded(sink: JsonlAuditSink, log_dir: Path) -> None:
    sink.write_sync(decision("r1"))
    sink.close_sync()
    with (log_dir / "decisions.jsonl").open("ab") as handle:
        handle.write(b'{"event":"decision","half')
    again = JsonlAuditSink(log_dir)
    again.start_sync()
    again.close_sync()
    aside = list(log_dir.glob("decisions.partial-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == b'{"event":"decision","half'
    events = [json.loads(line)["event"] for line in lines(log_dir, "decisions")]
    assert events[-2:] == ["partial_line_quarantined", "stream_opened"]
    result = verify_stream(log_dir, "decisions")
    assert result.ok
    assert result.partial_lines == tuple(aside)


# ---------------------------------------------------------------- trail


class Stopped(Exception):
    pass


def recording_exit(codes: list[int]) -> Any:
    def exit_(code: int) -> Any:
        codes.append(code)
        raise Stopped(code)

    return exit_


def recording_trail(log_dir: Path, fallback: Path, codes: list[int]) -> AuditTrail:
    """A trail over one jsonl sink whose shutdown records its exit code in ``codes``."""
    return AuditTrail(
        [JsonlAuditSink(log_dir)],
        ShutdownCoordinator(log_dir=log_dir, fallback_path=fallback, exit=recording_exit(codes)),
    )


def shutdown_fired() -> asyncio.Future[None]:
    """Set once the shutdown coordinator has fired on the loop (its exit raises there)."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[None] = loop.create_future()
    loop.set_exception_handler(lambda _l, ctx: stopped.done() or stopped.set_result(None))
    return stopped


async def test_write_ahead_the_record_is_on_disk_before_forwarding(
    log_dir: Path, tmp_path: Path
) -> None:
    codes: list[int] = []
    trail = recording_trail(log_dir, tmp_path / "fb.jsonl", codes)
    await trail.start()
    seen: list[str] = []

    async def forward() -> str:
        last = json.loads(lines(log_dir, "decisions")[-1])
        seen.append(last["request_id"])
        return "forwarded"

    assert await trail.enforce(decision("r-42"), forward) == "forwarded"
    assert seen == ["r-42"]
    await trail.close()
    assert codes == []


async def test_failed_write_denies_keeps_the_event_and_shuts_down(
    log_dir: Path, tmp_path: Path
) -> None:
    codes: list[int] = []
    fallback = tmp_path / "state" / "fb.jsonl"
    trail = recording_trail(log_dir, fallback, codes)
    await trail.start()
    forwarded: list[str] = []

    async def forward() -> None:
        forwarded.append("called")

    (log_dir / "decisions.jsonl").unlink()
    with pytest.raises(AuditError, match="deleted or moved"):
        await trail.enforce(decision("r-1"), forward)
    with pytest.raises(AuditError):  # and nothing passes afterwards
        await trail.enforce(decision("r-2"), forward)
    assert forwarded == []
    kept = [json.loads(line) for line in fallback.read_text().splitlines()]
    assert [k["event"]["request_id"] for k in kept] == ["r-1", "r-2"]
    stopped = shutdown_fired()
    await asyncio.wait_for(stopped, timeout=5)  # the coordinator fired after the grace
    assert codes == [13]
    shutdown = json.loads((log_dir / "shutdowns.jsonl").read_text().splitlines()[0])
    assert (shutdown["failure_class"], shutdown["exit_code"]) == ("audit", 13)
    await trail.close()


@pytest.mark.parametrize("soon", [False, True], ids=["record", "record_soon"])
async def test_an_event_that_cannot_be_serialised_is_denied_kept_by_name_and_fails_the_trail(
    log_dir: Path, tmp_path: Path, soon: bool
) -> None:
    """A caller's event with a value JSON cannot hold (an object in ``detail``, as a posture
    plugin's result could carry): the sink's failure fails the trail, and keeping the event
    in the fallback file serialised it again — that raised in its turn, so ``record`` ended
    with a PydanticSerializationError, not the ``AuditError`` callers deny on, and the
    fallback file never heard of the event. It is kept by its name and stream now."""
    codes: list[int] = []
    fallback = tmp_path / "state" / "fb.jsonl"
    trail = recording_trail(log_dir, fallback, codes)
    await trail.start()
    odd = SystemEvent(event="odd_detail", detail={"value": object()})
    if soon:
        trail.record_soon(odd)
    else:
        with pytest.raises(AuditError, match="PydanticSerializationError"):
            await trail.record(odd)
    with pytest.raises(AuditError):  # and nothing passes afterwards
        await trail.record(decision("r-after"))
    kept = [json.loads(line)["event"] for line in fallback.read_text().splitlines()]
    assert [k["event"] for k in kept] == ["odd_detail", "decision"]
    assert kept[0]["stream"] == "system"
    assert kept[0]["unserialisable"] == (
        "the event cannot be serialised: PydanticSerializationError"
    )
    stopped = shutdown_fired()
    await asyncio.wait_for(stopped, timeout=5)
    assert codes == [13]
    await trail.close()


async def test_record_soon_is_durable_by_close_and_a_failure_fails_the_trail(
    log_dir: Path, tmp_path: Path
) -> None:
    codes: list[int] = []
    fallback = tmp_path / "state" / "fb.jsonl"
    trail = recording_trail(log_dir, fallback, codes)
    await trail.start()
    trail.record_soon(decision("r-soon"))
    await trail.close()  # waits for it
    assert json.loads(lines(log_dir, "decisions")[-1])["request_id"] == "r-soon"

    trail = recording_trail(log_dir, fallback, codes)
    await trail.start()
    (log_dir / "decisions.jsonl").unlink()
    stopped = shutdown_fired()
    trail.record_soon(decision("r-lost"))  # nobody waits on it: the trail fails anyway
    await asyncio.wait_for(stopped, timeout=5)
    assert codes == [13]
    kept = [json.loads(line) for line in fallback.read_text().splitlines()]
    assert [k["event"]["request_id"] for k in kept] == ["r-lost"]
    with pytest.raises(AuditError):  # and nothing passes afterwards
        await trail.record(decision("r-after"))
    await trail.close()


async def test_record_decision_returns_with_the_decision_durable_and_the_operation_written(
    log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = JsonlAuditSink(log_dir)
    trail = AuditTrail(
        [sink], ShutdownCoordinator(log_dir=log_dir, fallback_path=tmp_path / "fb.jsonl")
    )
    await trail.start()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    operation = OperationEvent(
        session_id="s", request_id="r-7", direction="client_to_server", outcome="forwarded"
    )
    await trail.record_decision(decision("r-7"), operation)
    assert json.loads(lines(log_dir, "decisions")[-1])["request_id"] == "r-7"
    assert json.loads(lines(log_dir, "operations")[-1])["request_id"] == "r-7"  # written
    assert synced == [sink.writers["decisions"]._fd]  # one fsync: the decision's
    operations = sink.writers["operations"]._fd
    for _ in range(500):  # its own fsync follows, by timer (a guard, not a timing check)
        if operations in synced:
            break
        await asyncio.sleep(0.01)
    assert synced == [sink.writers["decisions"]._fd, operations]
    await trail.close()
    assert verify_stream(log_dir, "operations").ok


async def test_record_decision_denies_when_the_operation_record_cannot_be_written(
    log_dir: Path, tmp_path: Path
) -> None:
    codes: list[int] = []
    fallback = tmp_path / "fb.jsonl"
    trail = recording_trail(log_dir, fallback, codes)
    await trail.start()
    (log_dir / "operations.jsonl").unlink()  # the decision can be written, its companion not
    stopped = shutdown_fired()
    operation = OperationEvent(
        session_id="s", request_id="r-8", direction="client_to_server", outcome="forwarded"
    )
    with pytest.raises(AuditError, match="deleted or moved"):
        await trail.record_decision(decision("r-8"), operation)
    await asyncio.wait_for(stopped, timeout=5)
    assert codes == [13]
    kept = [json.loads(line) for line in fallback.read_text().splitlines()]
    assert [(k["event"]["stream"], k["event"]["request_id"]) for k in kept] == [
        ("operations", "r-8")
    ]
    await trail.close()


@pytest.mark.parametrize("change", ["deleted", "replaced", "moved"])
def test_a_lone_writer_checks_the_files_identity_before_its_write(
    sink: JsonlAuditSink, log_dir: Path, change: str
) -> None:
    sink.write_sync(decision("r-1"))  # the stream is idle: the caller commits it itself
    path = log_dir / "decisions.jsonl"
    before = path.read_bytes()
    if change == "deleted":
        path.unlink()
    elif change == "replaced":
        path.rename(log_dir / "aside")
        path.write_bytes(before)
    else:
        path.rename(log_dir / "aside")
    expected = "replaced while in use" if change == "replaced" else "deleted or moved"
    with pytest.raises(AuditError, match=expected):
        sink.write_sync(decision("r-2"))
    with pytest.raises(AuditError, match=expected):  # the failed state: nothing more
        sink.write_sync(decision("r-3"))
    if change != "deleted":
        assert (log_dir / "aside").read_bytes() == before  # nothing written after the change
    if change == "replaced":
        assert path.read_bytes() == before


async def test_when_the_decision_cannot_be_written_its_operation_record_is_not_either(
    log_dir: Path, tmp_path: Path
) -> None:
    codes: list[int] = []
    fallback = tmp_path / "fb.jsonl"
    trail = recording_trail(log_dir, fallback, codes)
    await trail.start()
    (log_dir / "decisions.jsonl").rename(log_dir / "decisions.moved")
    stopped = shutdown_fired()
    # another record of the operations stream first in this loop iteration: its stream
    # would be committed first in submission order
    trail.record_soon(
        OperationEvent(
            session_id="s", request_id="r-0", direction="server_to_client", outcome="response"
        )
    )
    operation = OperationEvent(
        session_id="s", request_id="r-9", direction="client_to_server", outcome="forwarded"
    )
    with pytest.raises(AuditError, match="deleted or moved"):
        await trail.record_decision(decision("r-9"), operation)
    await asyncio.wait_for(stopped, timeout=5)
    assert codes == [13]
    on_disk = [json.loads(line) for line in lines(log_dir, "operations")]
    assert [r.get("request_id") for r in on_disk if r["event"] == "operation"] == []
    kept = [json.loads(line)["event"] for line in fallback.read_text().splitlines()]
    assert sorted((k["stream"], k["request_id"]) for k in kept) == [
        ("decisions", "r-9"),
        ("operations", "r-0"),
        ("operations", "r-9"),
    ]
    await trail.close()


class PluginSink:
    """A sink as a plugin may write one: in memory, ``start``/``write``/``close`` only (no
    ``write_sync``, no ``write_soon``). ``write`` raises ``CancelledError`` on its own once
    ``writer_cancelled`` is set (its writer task was cancelled), and waits on ``held``."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.writer_cancelled = False
        self.entered = asyncio.Event()
        self.held: asyncio.Event | None = None

    async def start(self) -> None:
        pass

    async def write(self, event: Any) -> None:
        self.entered.set()
        if self.held is not None:
            await self.held.wait()
        if self.writer_cancelled:
            raise asyncio.CancelledError()
        self.written.append(event.event)

    async def close(self) -> None:
        pass


class SoonSink(PluginSink):
    """With ``write_soon``: its futures are settled by a writer of its own, which stops
    (``stop_writer``) as a cancelled writer task does, cancelling what it still holds."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[asyncio.Future[int]] = []

    def write_soon(self, event: Any) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    def stop_writer(self) -> None:
        for future in self.pending:
            future.cancel()


def plugin_trail(sinks: list[Any], log_dir: Path, fallback: Path, codes: list[int]) -> AuditTrail:
    coordinator = ShutdownCoordinator(
        log_dir=log_dir, fallback_path=fallback, exit=recording_exit(codes)
    )
    return AuditTrail(sinks, coordinator)


def kept(fallback: Path, stream: str | None = None) -> list[dict[str, Any]]:
    """The fallback file's entries (of ``stream``'s events only)."""
    entries = [json.loads(line) for line in fallback.read_text().splitlines()]
    return [e for e in entries if stream is None or e["event"]["stream"] == stream]


@pytest.mark.parametrize("sinks", [1, 2])
async def test_a_sinks_own_cancelled_error_fails_the_trail(
    log_dir: Path, tmp_path: Path, sinks: int
) -> None:
    """Nobody cancelled the caller: the sink's ``CancelledError`` is its failure — the
    record refused (``AuditError`` naming the sink), kept in the fallback file, exit 13 —
    not a cancellation passed up for the relay to take as the client's."""
    codes: list[int] = []
    fallback = tmp_path / "fb.jsonl"
    sink = PluginSink()
    log_dir.mkdir()
    others = [PluginSink() for _ in range(sinks - 1)]
    trail = plugin_trail([*others, sink], log_dir, fallback, codes)
    await trail.start()
    sink.writer_cancelled = True
    stopped = shutdown_fired()
    named = f"audit sink #{sinks - 1} (PluginSink) failed: its write was cancelled, and not by"
    with pytest.raises(AuditError, match=re.escape(named)):
        await trail.record(decision("r-c"))
    await asyncio.wait_for(stopped, timeout=5)
    assert codes == [13]
    decided = kept(fallback, "decisions")
    assert [(k["event"]["request_id"], k["audit_error"][: len(named)]) for k in decided] == [
        ("r-c", named)
    ]


async def test_a_callers_cancellation_stays_a_cancellation(log_dir: Path, tmp_path: Path) -> None:
    """A record cancelled by its caller (a client's request cancelled) while the sink writes
    is not the sink's failure: the ``CancelledError`` goes up, the trail still works."""
    codes: list[int] = []
    fallback = tmp_path / "fb.jsonl"
    sink = PluginSink()
    sink.held = asyncio.Event()
    trail = plugin_trail([sink], log_dir, fallback, codes)
    await trail.start()
    recording = asyncio.create_task(trail.record(decision("r-x")))
    await sink.entered.wait()
    recording.cancel()
    with pytest.raises(asyncio.CancelledError):
        await recording
    assert trail.failed is None
    sink.held.set()
    await trail.record(decision("r-y"))
    assert sink.written == ["decision"]
    assert not fallback.exists()
    assert codes == []


async def test_a_write_soon_future_the_sink_cancels_fails_the_trail(
    log_dir: Path, tmp_path: Path
) -> None:
    """The only sink's ``write_soon`` future cancelled by the sink (its writer stopped): the
    record is lost unless kept — the trail fails, the event in the fallback file, exit 13."""
    codes: list[int] = []
    fallback = tmp_path / "fb.jsonl"
    sink = SoonSink()
    log_dir.mkdir()
    trail = plugin_trail([sink], log_dir, fallback, codes)
    await trail.start()
    stopped = shutdown_fired()
    trail.record_soon(decision("r-soon"))
    sink.stop_writer()
    await asyncio.wait_for(stopped, timeout=5)
    assert codes == [13]
    assert trail.failed is not None
    assert "audit sink #0 (SoonSink) failed: its write was cancelled" in str(trail.failed)
    assert [k["event"]["request_id"] for k in kept(fallback, "decisions")] == ["r-soon"]


def test_at_exit_what_a_sink_cannot_take_synchronously_is_kept(
    sink: JsonlAuditSink, log_dir: Path, tmp_path: Path
) -> None:
    """At a fail-closed exit (no event loop): a sink without ``write_sync`` cannot take the
    cut-short denials and ``session_ended``; they go to the fallback file, naming that sink,
    while a sink with ``write_sync`` records them."""
    fallback = tmp_path / "fb.jsonl"
    trail = plugin_trail([sink, PluginSink()], log_dir, fallback, [])
    trail.record_at_exit(decision("r-cut", effect="deny", rule_id="builtin-cut-short"))
    assert json.loads(lines(log_dir, "decisions")[-1])["request_id"] == "r-cut"
    assert [(k["event"]["request_id"], k["audit_error"]) for k in kept(fallback)] == [
        (
            "r-cut",
            "audit sink #1 (PluginSink) cannot record at exit: it has no write_sync() — fix: "
            "this record is kept here instead; a sink records what happens at a fail-closed "
            "exit only with write_sync(event) (see mcp_acp.protocols.AuditSink): ask its "
            "plugin's authors for one",
        )
    ]


class AsyncHealthSink(PluginSink):
    """Given to a trail directly (no plugin, so no build-time contract check), with an
    ``async def check_health`` that would say the sink is broken — if it were run."""

    async def check_health(self) -> None:
        raise AuditError("the sink's disk is gone", fix="-")


async def test_an_async_check_health_is_the_sinks_failure_not_a_pass(
    log_dir: Path, tmp_path: Path
) -> None:
    """A health check that returns a coroutine checked nothing: the trail fails (exit 13,
    naming the sink) — before, each round dropped the coroutine unrun and passed."""
    codes: list[int] = []
    trail = plugin_trail([AsyncHealthSink()], log_dir, tmp_path / "fb.jsonl", codes)
    trail.health_interval = 0
    await trail.start()
    with pytest.raises(Stopped):  # the coordinator's exit, raised in the monitor's task
        await asyncio.wait_for(trail.monitor(), timeout=5)
    assert codes == [13]
    assert trail.failed is not None
    assert str(trail.failed).startswith(
        "audit sink #0 (AsyncHealthSink) failed its health check: TypeError: check_health() "
        "returned an awaitable"
    )
    await trail.close()


class AsyncSyncWriteSink(PluginSink):
    async def write_sync(self, event: Any) -> None:  # a coroutine: nothing written at exit
        self.written.append(event.event)


class ExitingSyncWriteSink(PluginSink):
    def write_sync(self, event: Any) -> None:
        raise SystemExit(0)  # on the shutdown thread: it said nothing


@pytest.mark.parametrize(
    ("sink", "why"),
    [
        (AsyncSyncWriteSink, "TypeError: write_sync() returned an awaitable"),
        (ExitingSyncWriteSink, "SystemExit: 0"),
    ],
)
def test_at_exit_a_write_sync_that_wrote_nothing_is_kept(
    log_dir: Path, tmp_path: Path, sink: type[PluginSink], why: str
) -> None:
    """A ``write_sync`` that returns a coroutine, or calls ``sys.exit()`` on the shutdown
    thread, did not record the event: it goes to the fallback file naming the sink — before,
    it was taken as written and lost."""
    fallback = tmp_path / "fb.jsonl"
    log_dir.mkdir()
    trail = plugin_trail([sink()], log_dir, fallback, [])
    trail.record_at_exit(decision("r-exit", effect="deny", rule_id="builtin-cut-short"))
    [entry] = kept(fallback)
    assert entry["event"]["request_id"] == "r-exit"
    assert entry["audit_error"].startswith(f"audit sink #0 ({sink.__name__}) failed: {why}")


async def test_the_chain_head_names_the_last_durable_record_after_every_commit(
    log_dir: Path,
) -> None:
    sink = JsonlAuditSink(log_dir)
    await sink.start()
    for n in range(3):  # well within any interval: each commit moves the head
        await sink.write(decision(f"loop-{n}"))
        head = read_head(log_dir, "decisions")
        assert head is not None
        assert head.seq == 2 + n  # stream_opened, then these
        assert head.hash == json.loads(lines(log_dir, "decisions")[-1])["hash"]
    for n in range(3):
        seq = sink.write_sync(decision(f"thread-{n}"))
        head = read_head(log_dir, "decisions")
        assert head is not None
        assert head.seq == seq
    await sink.close()


def test_a_writer_killed_at_once_leaves_a_head_that_catches_a_cut(log_dir: Path) -> None:
    killed_writer(log_dir, 5)  # what a kill -9 or the shutdown coordinator's exit leaves
    assert verify_stream(log_dir, "system").ok
    head = read_head(log_dir, "system")
    assert head is not None
    assert head.seq == 6
    rewrite(log_dir, "system", lines(log_dir, "system")[:-1])  # cut the last record
    assert not verify_stream(log_dir, "system").ok


def test_recovery_never_follows_a_link_out_of_the_log_directory(
    log_dir: Path, tmp_path: Path
) -> None:
    log_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"line1\npartial")
    (log_dir / "operations.jsonl").symlink_to(victim)
    with pytest.raises(AuditError, match=r"cannot open audit stream .*operations.jsonl"):
        JsonlAuditSink(log_dir).start_sync()
    assert victim.read_bytes() == b"line1\npartial"  # untouched
    assert not list(log_dir.glob("operations.partial-*"))


def test_the_health_check_notices_a_chain_head_deleted_or_replaced(
    sink: JsonlAuditSink, log_dir: Path
) -> None:
    sink.check_health()
    head = head_path(log_dir, "auth")
    head.unlink()
    with pytest.raises(AuditError, match=r"chain head .*auth.head was deleted or replaced"):
        sink.check_health()
    with pytest.raises(AuditError):  # the stream has failed: nothing more is written
        sink.writers["auth"].write(canonical({"stream": "auth", "event": "after"}))
