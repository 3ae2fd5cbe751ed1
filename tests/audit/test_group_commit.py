"""The jsonl writer's commit protocol on real files: a lone caller commits on its own thread;
records that arrive during a commit wait and are committed together, with one write and one
fsync, by the stream's committer thread; every waiting caller is told, success or failure.

A commit is held open by making its ``fsync`` wait for the test (the real ``os.fsync`` still
runs and is counted), so which records wait together is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_acp.audit.chain import canonical, verify_stream
from mcp_acp.audit.events import AuditEvent, DecisionEvent, SystemEvent
from mcp_acp.audit.jsonl import JsonlAuditSink
from mcp_acp.audit.writer import StreamWriter
from mcp_acp.errors import AuditError

STREAM = "decisions"


class HeldFsync:
    """``os.fsync`` that counts real calls, and blocks the ones numbered in ``hold`` until
    :meth:`release` (the real fsync runs after that)."""

    def __init__(self, hold: set[int]) -> None:
        self.calls = 0
        self.hold = hold
        self.entered = threading.Event()
        self._gates = {number: threading.Event() for number in hold}
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        self.calls += 1
        gate = self._gates.get(self.calls)
        if gate is not None:
            self.entered.set()
            gate.wait(timeout=30)
        self._real(fd)

    def release(self, number: int) -> None:
        self._gates[number].set()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[StreamWriter]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir(mode=0o700)
    (log_dir / ".heads").mkdir(mode=0o700)
    writer = StreamWriter(log_dir, STREAM)
    writer.open()
    yield writer
    writer.close()


def body(name: str) -> bytes:
    return canonical({"stream": STREAM, "event": "decision", "request_id": name})


def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a state the test set up (a guard against hanging, not a timing check)."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.001)


def queued(writer: StreamWriter) -> int:
    return len(writer._bodies)


def records(writer: StreamWriter) -> list[dict[str, Any]]:
    return [json.loads(line) for line in writer.path.read_bytes().splitlines()]


def committer(writer: StreamWriter) -> threading.Thread | None:
    """The stream's committer thread, if it was ever needed."""
    return writer._thread


class Writers:
    """Threads each writing one record; results (seq or exception) by record name."""

    def __init__(self, writer: StreamWriter, names: list[str]) -> None:
        self.results: dict[str, int | BaseException] = {}
        self.threads = [threading.Thread(target=self._one, args=(writer, n)) for n in names]
        for thread in self.threads:
            thread.start()

    def _one(self, writer: StreamWriter, name: str) -> None:
        try:
            self.results[name] = writer.write(body(name))
        except BaseException as exc:
            self.results[name] = exc

    def join(self) -> dict[str, int | BaseException]:
        for thread in self.threads:
            thread.join(timeout=30)
        return self.results


def test_a_lone_caller_commits_on_its_own_thread(writer: StreamWriter) -> None:
    assert [writer.write(body(f"r{i}")) for i in range(5)] == [1, 2, 3, 4, 5]
    assert writer.fsyncs == 5
    assert committer(writer) is None  # no hand-off: the committer thread was never needed


def test_records_waiting_during_a_commit_share_one_write_and_one_fsync(
    writer: StreamWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = HeldFsync(hold={1})
    monkeypatch.setattr(os, "fsync", fsync)
    first = Writers(writer, ["lead"])
    assert fsync.entered.wait(timeout=30)  # the lone caller's commit is at its fsync
    names = [f"w{i}" for i in range(12)]
    waiting = Writers(writer, names)
    until(lambda: queued(writer) == len(names), "12 records queued behind the commit")
    size_before = writer.path.stat().st_size
    fsync.release(1)
    results = {**first.join(), **waiting.join()}

    assert results["lead"] == 1
    seqs = sorted(results[n] for n in names)  # type: ignore[type-var]
    assert seqs == list(range(2, 14))
    assert fsync.calls == 2  # the lead's, then one for all twelve
    assert writer.fsyncs == 2
    assert writer.path.stat().st_size > size_before
    written = records(writer)
    assert [r["seq"] for r in written] == list(range(1, 14))
    for name in names:  # each caller got the seq its own record has in the file
        assert written[results[name] - 1]["request_id"] == name  # type: ignore[operator]
    assert verify_stream(writer.log_dir, STREAM).ok
    thread = committer(writer)
    assert thread is not None
    assert thread.name == f"audit-{STREAM}"


def test_every_waiting_caller_fails_when_their_commit_fails(
    writer: StreamWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = HeldFsync(hold={1})
    monkeypatch.setattr(os, "fsync", fsync)
    first = Writers(writer, ["lead"])
    assert fsync.entered.wait(timeout=30)
    names = [f"w{i}" for i in range(6)]
    waiting = Writers(writer, names)
    until(lambda: queued(writer) == len(names), "6 records queued behind the commit")
    writer.path.unlink()  # before their commit checks the file
    fsync.release(1)
    results = {**first.join(), **waiting.join()}

    assert results["lead"] == 1  # written and fsynced before the file went: durable
    for name in names:
        error = results[name]
        assert isinstance(error, AuditError)
        assert "deleted or moved" in str(error)
    with pytest.raises(AuditError, match="deleted or moved"):  # failed state
        writer.write(body("later"))


def test_a_durable_batch_is_acknowledged_even_if_the_next_one_fails(
    writer: StreamWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsync 1: the lead's commit; fsync 2: the committer's first batch, held while a
    # second batch queues; then the file is deleted, so the second batch fails.
    fsync = HeldFsync(hold={1, 2})
    monkeypatch.setattr(os, "fsync", fsync)
    lead = Writers(writer, ["lead"])
    until(lambda: fsync.calls == 1, "the lead at its fsync")
    batch_one = Writers(writer, ["a0", "a1", "a2"])
    until(lambda: queued(writer) == 3, "batch one queued")
    fsync.release(1)
    until(lambda: fsync.calls == 2, "batch one at its fsync")
    batch_two = Writers(writer, ["b0", "b1"])
    until(lambda: queued(writer) == 2, "batch two queued")
    os.rename(writer.path, writer.path.with_name("moved.jsonl"))
    fsync.release(2)
    results = {**lead.join(), **batch_one.join(), **batch_two.join()}

    assert results["lead"] == 1
    assert sorted(results[n] for n in ("a0", "a1", "a2")) == [2, 3, 4]  # type: ignore[type-var]
    for name in ("b0", "b1"):
        assert isinstance(results[name], AuditError)
    moved = writer.path.with_name("moved.jsonl").read_bytes().splitlines()
    assert len(moved) == 4  # batch two never reached the (moved) file


async def test_loop_records_and_thread_records_commit_together(
    writer: StreamWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = HeldFsync(hold={1})
    monkeypatch.setattr(os, "fsync", fsync)
    lead = Writers(writer, ["lead"])
    assert await asyncio.to_thread(fsync.entered.wait, 30)
    futures = [writer.submit(body(f"t{i}")) for i in range(3)]
    threads = Writers(writer, ["x0", "x1", "x2"])
    await asyncio.to_thread(until, lambda: queued(writer) == 6, "six records queued")
    fsync.release(1)
    seqs = await asyncio.gather(*futures)
    results = {**await asyncio.to_thread(lead.join), **await asyncio.to_thread(threads.join)}

    assert results["lead"] == 1
    assert sorted([*seqs, *(results[n] for n in ("x0", "x1", "x2"))]) == list(range(2, 8))  # type: ignore[type-var]
    assert fsync.calls == 2
    written = records(writer)
    for i, seq in enumerate(seqs):
        assert written[seq - 1]["request_id"] == f"t{i}"


async def test_the_event_loop_commits_its_own_records_and_a_cancelled_caller_is_skipped(
    writer: StreamWriter,
) -> None:
    cancelled = writer.submit(body("gone"))
    cancelled.cancel()
    assert await writer.submit(body("kept")) == 2
    assert committer(writer) is None  # committed on the loop: no thread was needed
    assert [r["request_id"] for r in records(writer)] == ["gone", "kept"]


async def test_records_submitted_in_one_loop_iteration_share_one_fsync(
    writer: StreamWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = HeldFsync(hold=set())
    monkeypatch.setattr(os, "fsync", fsync)
    futures = [writer.submit(body(f"r{i}")) for i in range(5)]
    assert await asyncio.gather(*futures) == [1, 2, 3, 4, 5]
    assert fsync.calls == 1
    assert committer(writer) is None
    assert [r["request_id"] for r in records(writer)] == [f"r{i}" for i in range(5)]


async def test_a_failed_stream_fails_the_loops_records(writer: StreamWriter) -> None:
    os.close(writer._fd)  # the next write fails with EBADF
    first = writer.submit(body("lost"))
    with pytest.raises(AuditError):
        await first
    assert writer.failed is not None
    with pytest.raises(AuditError):
        writer.submit(body("after"))
    writer._fd = -1  # already closed


def test_close_commits_what_was_handed_over_and_stops_the_committer(tmp_path: Path) -> None:
    sink = JsonlAuditSink(tmp_path / "logs")
    sink.start_sync()
    writer = sink.writers[STREAM]

    async def burst() -> list[asyncio.Future[int]]:
        return [writer.submit(body(f"r{i}")) for i in range(50)]

    loop = asyncio.new_event_loop()
    try:
        futures = loop.run_until_complete(burst())  # the loop has not committed them yet
        sink.close_sync()  # the committer takes them, and is stopped
        seqs = loop.run_until_complete(asyncio.gather(*futures))
    finally:
        loop.close()
    assert seqs == list(range(2, 52))
    assert committer(writer) is None
    assert verify_stream(tmp_path / "logs", STREAM).lines == 51


class Interrupted(Exception):
    pass


def test_an_interrupted_caller_does_not_strand_the_callers_after_it(
    writer: StreamWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waiting callers wake one another; the main thread, waiting first in its batch, is
    # interrupted by a signal: the two callers queued after it must still be woken.
    fsync = HeldFsync(hold={1})
    monkeypatch.setattr(os, "fsync", fsync)

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    lead = Writers(writer, ["lead"])
    later: list[Writers] = []

    def queue_two_then_interrupt() -> None:
        until(lambda: queued(writer) == 1, "the main thread queued")
        later.append(Writers(writer, ["after0", "after1"]))
        until(lambda: queued(writer) == 3, "two more queued behind it")
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    helper = threading.Thread(target=queue_two_then_interrupt)
    try:
        assert fsync.entered.wait(timeout=30)
        helper.start()
        with pytest.raises(Interrupted):
            writer.write(body("main"))
    finally:
        signal.signal(signal.SIGUSR1, previous)
    helper.join(timeout=30)
    fsync.release(1)
    results = {**lead.join(), **later[0].join()}
    assert results["lead"] == 1
    assert sorted(results[n] for n in ("after0", "after1")) == [3, 4]  # type: ignore[type-var]
    written = records(writer)
    assert written[1]["request_id"] == "main"  # queued before the signal: committed


async def test_the_loops_records_of_two_streams_are_written_then_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = JsonlAuditSink(tmp_path / "logs")
    sink.start_sync()
    decisions, operations = sink.writers["decisions"], sink.writers["operations"]
    files = {decisions._fd: "decisions", operations._fd: "operations"}
    calls: list[tuple[str, str]] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, data: bytes) -> int:
        if fd in files:
            calls.append(("write", files[fd]))
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        if fd in files:
            calls.append(("fsync", files[fd]))
        real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    first = decisions.submit(canonical({"stream": "decisions", "event": "decision"}))
    second = operations.submit(canonical({"stream": "operations", "event": "operation"}))
    assert await asyncio.gather(first, second) == [2, 2]  # after each stream_opened
    assert calls == [
        ("write", "decisions"),
        ("write", "operations"),
        ("fsync", "decisions"),
        ("fsync", "operations"),
    ]
    monkeypatch.undo()
    await sink.close()
    for stream in ("decisions", "operations"):
        assert verify_stream(tmp_path / "logs", stream).ok


async def test_a_deferred_record_is_written_at_once_and_synced_by_the_next_commit(
    writer: StreamWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = HeldFsync(hold=set())
    monkeypatch.setattr(os, "fsync", fsync)
    response = writer.submit(body("response"), defer_sync=True)
    await asyncio.sleep(0)  # one loop iteration: the commit has run
    assert [r["request_id"] for r in records(writer)] == ["response"]  # written …
    assert fsync.calls == 0  # … not yet durable,
    assert not response.done()  # … and nobody told
    decision = writer.submit(body("decision"))
    assert await decision == 2
    assert response.done()  # durable by the decision's fsync
    assert response.result() == 1
    assert fsync.calls == 1


async def test_a_deferred_record_alone_is_synced_by_its_timer(
    writer: StreamWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = HeldFsync(hold=set())
    monkeypatch.setattr(os, "fsync", fsync)
    assert await writer.submit(body("response"), defer_sync=True) == 1
    assert fsync.calls == 1
    assert committer(writer) is None


async def test_close_syncs_the_deferred_records_and_tells_their_callers(
    writer: StreamWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = HeldFsync(hold=set())
    monkeypatch.setattr(os, "fsync", fsync)
    response = writer.submit(body("response"), defer_sync=True)
    await asyncio.sleep(0)
    assert fsync.calls == 0
    await asyncio.to_thread(writer.close)
    assert await response == 1
    assert fsync.calls == 2  # the log's, then the chain head's, marked closed


async def test_deferred_records_fail_with_the_commit_that_was_to_sync_them(
    writer: StreamWriter,
) -> None:
    response = writer.submit(body("response"), defer_sync=True)
    await asyncio.sleep(0)
    assert not response.done()
    os.close(writer._fd)  # the next write fails with EBADF
    with pytest.raises(AuditError):
        await writer.submit(body("decision"))
    with pytest.raises(AuditError):  # written, but never made durable: not acknowledged
        await response
    writer._fd = -1  # already closed


def event(name: str, stream: str = "decisions") -> AuditEvent:
    if stream == "system":
        return SystemEvent(event="tick", request_id=name)
    return DecisionEvent(
        request_id=name,
        subject_id="alice",
        subject_provenance="config",
        mcp_method="tools/call",
        effect="allow",
        reason="r",
        policy_id="p",
    )


async def test_the_sinks_write_returns_after_one_loop_iteration(tmp_path: Path) -> None:
    """The commit submit() schedules runs before the writing task resumes: the task yields
    once and finds its records durable (no second wake-up)."""
    sink = JsonlAuditSink(tmp_path / "logs")
    await sink.start()
    iterations = 0
    done = asyncio.Event()

    async def count() -> None:
        nonlocal iterations
        while not done.is_set():
            iterations += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count())
    await asyncio.sleep(0)
    before = iterations
    await sink.write(event("one"))
    await sink.write(event("two"))
    await sink.write(event("three", "system"))
    after = iterations
    done.set()
    await counter
    assert after - before == 3  # one iteration per call
    await sink.close()
    lines = [json.loads(x) for x in (tmp_path / "logs" / "decisions.jsonl").read_bytes().split()]
    assert [r.get("request_id") for r in lines] == [None, "one", "two"]
    assert verify_stream(tmp_path / "logs", "system").ok


async def test_a_cancelled_sink_write_is_still_committed(tmp_path: Path) -> None:
    sink = JsonlAuditSink(tmp_path / "logs")
    await sink.start()
    task = asyncio.create_task(sink.write(event("cancelled")))
    await asyncio.sleep(0)  # the task submits its record and yields
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sink.write(event("next"))
    await sink.close()
    lines = [json.loads(x) for x in (tmp_path / "logs" / "decisions.jsonl").read_bytes().split()]
    assert [r.get("request_id") for r in lines] == [None, "cancelled", "next"]
