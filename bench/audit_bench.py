"""Throughput and latency of the ``jsonl`` audit sink, against bare ``write``/``fsync``.

Run from the repository root::

    python bench/audit_bench.py            # full run (~30 s on 2 cores), writes
                                           # bench/results/audit.md
    python bench/audit_bench.py --quick    # a few seconds; prints only (unless --out)

What is measured, on a real directory on the local disk (``bench/.tmp/`` next to this
file by default, deleted afterwards; the file system type is printed and a warning is
given if it is tmpfs/ramfs):

* the sink (``JsonlAuditSink.write_sync`` of realistic ``DecisionEvent`` records) with
  durability ``fsync`` and ``flush``, from 1 writer thread and from 16 concurrent writer
  threads: events/s (all events ÷ wall time) and the per-event latency (``write_sync``
  call to return, ``perf_counter_ns``) p50 / p99;
* baselines in the same process, 1 thread, a plain file opened ``O_APPEND``, the same
  number of bytes per write as one sealed record line: ``os.write`` + ``os.fsync``, and
  ``os.write`` alone;
* a diagnostic baseline (not a target): ``os.write`` + ``os.fsync`` + a chain-head replace
  (open/write/close/rename) after every write — what the first sink design did.

Each configuration runs ``--rounds`` times (interleaved, so drift hits all alike);
events/s is the median over rounds, p50/p99 are over all latencies of all rounds.

Target (b) compares 1 writer with bare ``write`` + ``fsync`` **interleaved** in blocks of
:data:`INTERLEAVE_BLOCK` — sink writes, then bare writes, from the same thread — so that
both see the disk at the same moments: this disk's fsync latency drifts by a third
between runs seconds apart, which moved the ratio of separate runs (the 1-writer and bare
rows) by ±0.15. The ratio of the separate runs is still reported, as a diagnostic.

After every sink run the stream is checked: ``verify_stream`` must pass and the file must
hold exactly the events written + 1 ``stream_opened`` line. These are correctness checks,
not timing assertions; a failure raises ``AssertionError``.

Targets (from the design): with fsync, 16 writers reach >= 5x the events/s of 1 writer
(group commit works), and 1 writer's per-event p50 is <= 1.2x a bare write+fsync p50.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from bench_scratch import bench_parser, cpu_model, load_text, percentile, publish, scratch_dir
from bench_scratch import check as _check

from mcp_acp.audit.chain import GENESIS, canonical, chain_files, seal, verify_stream
from mcp_acp.audit.events import DecisionEvent, MatchedRuleRecord
from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "audit.md"
STREAM: Final = "decisions"
Durability = Literal["fsync", "flush"]
WARMUP = 20  # events written (and counted) before the clock starts, per sink run
INTERLEAVE_BLOCK = 20  # target (b): sink writes, then as many bare ones, taking turns

TARGET_SCALING = 5.0  # fsync: 16-writer events/s / 1-writer events/s >= this
TARGET_OVERHEAD = 1.2  # fsync: 1-writer p50 / bare write+fsync p50 <= this


# ------------------------------------------------------------------ records


def make_event(writer: int, number: int) -> DecisionEvent:
    """A realistic decision record: a read_file call allowed by one rule."""
    return DecisionEvent(
        session_id=f"s-{writer:04x}7f3a",
        request_id=f"r-{writer:02d}-{number:06d}",
        subject_id="alice",
        subject_provenance="oidc",
        mcp_method="tools/call",
        tool_name="read_file",
        paths=(f"/srv/app/src/mod{number % 100:02d}.py",),
        effect="allow",
        rule_id="read-src",
        matched=(MatchedRuleRecord(rule="read-src", effect="allow"),),
        reason="allowed by read-src",
        policy_id="sha256:9f2c1a0b",
        eval_us=12.345,
    )


def sample_line() -> bytes:
    """One sealed line exactly as the sink writes it (same length as the benchmark's)."""
    record = make_event(0, 0).model_dump(mode="json", exclude_none=True)
    line, _ = seal(canonical(record), 1000, GENESIS)
    return line


# ------------------------------------------------------------------ results


@dataclass
class Run:
    """One configuration, pooled over rounds."""

    label: str
    mode: Durability
    writers: int
    rates: list[float] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)
    events: int = 0
    commits: int = 0  # fsyncs done by the sink (fsync mode); events / commits = batch size

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def percentile_us(self, p: float) -> float:
        return percentile(sorted(self.latencies_ns), p) / 1000


@dataclass
class SinkResult:
    """One sink run; ``lines`` and ``verified`` are checked before it is returned."""

    events: int  # measured events (excluding warm-up)
    written: int  # all events written, warm-up included
    lines: int  # lines in the stream's files after close
    verified: bool
    fsyncs: int
    seconds: float
    latencies_ns: list[int]

    @property
    def rate(self) -> float:
        return self.events / self.seconds


# ------------------------------------------------------------------ measurements


def measure_sink(
    base: Path, durability: Durability, writers: int, events_per_writer: int
) -> SinkResult:
    """Write ``writers * events_per_writer`` decisions from ``writers`` threads at once into a
    fresh sink under ``base``; time each ``write_sync``; check the stream afterwards."""
    log_dir = base / f"sink-{durability}-{writers}w-{time.perf_counter_ns()}"
    sink = JsonlAuditSink(log_dir, JsonlConfig(durability=durability))
    sink.start_sync()
    stream_writer = sink.writers[STREAM]
    per_thread: list[list[int]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    try:
        for i in range(WARMUP):
            sink.write_sync(make_event(99, i))
        fsyncs_before = stream_writer.fsyncs
        events = [[make_event(w, n) for n in range(events_per_writer)] for w in range(writers)]
        barrier = threading.Barrier(writers + 1)

        def work(index: int) -> None:
            out = per_thread[index]
            clock = time.perf_counter_ns
            write = sink.write_sync
            try:
                barrier.wait()
                for event in events[index]:
                    start = clock()
                    write(event)
                    out.append(clock() - start)
            except BaseException as exc:  # reported after join
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter_ns()
        for thread in threads:
            thread.join()
        seconds = (time.perf_counter_ns() - start) / 1e9
        fsyncs = stream_writer.fsyncs - fsyncs_before
    finally:
        sink.close_sync()
    if errors:
        raise errors[0]

    measured = writers * events_per_writer
    written = measured + WARMUP
    lines = 0
    for path in chain_files(log_dir, STREAM):
        with path.open("rb") as handle:
            lines += sum(1 for _ in handle)
    result = verify_stream(log_dir, STREAM)
    _check(result.ok, f"verify_stream failed after the run: {result.describe()}")
    _check(
        lines == written + 1,
        f"{lines} lines in the {STREAM} stream, expected {written} events + 1 stream_opened",
    )
    _check(result.lines == lines, f"verify counted {result.lines} lines, the files hold {lines}")
    latencies = [ns for out in per_thread for ns in out]
    _check(len(latencies) == measured, "a writer thread did not finish its events")
    shutil.rmtree(log_dir)
    return SinkResult(measured, written, lines, result.ok, fsyncs, seconds, latencies)


def measure_sink_tasks(
    base: Path, durability: Durability, writers: int, events_per_writer: int
) -> SinkResult:
    """The proxy's way: ``writers`` asyncio tasks on one event loop, each awaiting
    ``JsonlAuditSink.write`` (the stream's committer thread batches what is waiting)."""
    log_dir = base / f"tasks-{durability}-{writers}w-{time.perf_counter_ns()}"
    sink = JsonlAuditSink(log_dir, JsonlConfig(durability=durability))
    stream_writer = sink.writers[STREAM]
    per_task: list[list[int]] = [[] for _ in range(writers)]
    timing: list[float] = []

    async def main() -> None:
        await sink.start()
        try:
            for i in range(WARMUP):
                await sink.write(make_event(99, i))
            fsyncs_before = stream_writer.fsyncs
            events = [[make_event(w, n) for n in range(events_per_writer)] for w in range(writers)]

            async def work(index: int) -> None:
                out = per_task[index]
                clock = time.perf_counter_ns
                for event in events[index]:
                    start = clock()
                    await sink.write(event)
                    out.append(clock() - start)

            start = time.perf_counter_ns()
            await asyncio.gather(*(work(i) for i in range(writers)))
            timing.append((time.perf_counter_ns() - start) / 1e9)
            timing.append(stream_writer.fsyncs - fsyncs_before)
        finally:
            await sink.close()

    asyncio.run(main())
    seconds, fsyncs = timing[0], int(timing[1])
    measured = writers * events_per_writer
    written = measured + WARMUP
    result = verify_stream(log_dir, STREAM)
    _check(result.ok, f"verify_stream failed after the run: {result.describe()}")
    _check(
        result.lines == written + 1,
        f"{result.lines} lines in the {STREAM} stream, expected {written} events + 1 stream_opened",
    )
    latencies = [ns for out in per_task for ns in out]
    _check(len(latencies) == measured, "a writer task did not finish its events")
    shutil.rmtree(log_dir)
    return SinkResult(measured, written, result.lines, result.ok, fsyncs, seconds, latencies)


def measure_interleaved(base: Path, line: bytes, count: int) -> tuple[list[int], list[int]]:
    """1 writer thread, durability fsync, taking turns by :data:`INTERLEAVE_BLOCK`:
    ``write_sync`` of that many decisions into a fresh sink, then as many bare ``os.write``
    + ``os.fsync`` of ``line`` on a plain O_APPEND file — ``count`` of each in all. Returns
    (sink latencies, bare latencies) in ns; checks the stream and the bare file after."""
    log_dir = base / f"sink-interleaved-{time.perf_counter_ns()}"
    path = base / f"bare-interleaved-{time.perf_counter_ns()}.jsonl"
    sink = JsonlAuditSink(log_dir, JsonlConfig(durability="fsync"))
    sink.start_sync()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    sink_ns: list[int] = []
    bare_ns: list[int] = []
    errors: list[BaseException] = []
    events = [make_event(1, n) for n in range(count)]

    def work() -> None:  # on a thread of its own, as measure_sink's writers
        clock = time.perf_counter_ns
        try:
            for i in range(WARMUP):
                sink.write_sync(make_event(99, i))
                os.write(fd, line)
                os.fsync(fd)
            for first in range(0, count, INTERLEAVE_BLOCK):
                for event in events[first : first + INTERLEAVE_BLOCK]:
                    start = clock()
                    sink.write_sync(event)
                    sink_ns.append(clock() - start)
                for _ in range(min(INTERLEAVE_BLOCK, count - first)):
                    start = clock()
                    os.write(fd, line)
                    os.fsync(fd)
                    bare_ns.append(clock() - start)
        except BaseException as exc:  # reported after join
            errors.append(exc)

    try:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    finally:
        sink.close_sync()
        os.close(fd)
    if errors:
        raise errors[0]
    result = verify_stream(log_dir, STREAM)
    _check(result.ok, f"verify_stream failed after the run: {result.describe()}")
    _check(result.lines == count + WARMUP + 1, f"{result.lines} lines in the {STREAM} stream")
    _check(path.stat().st_size == (count + WARMUP) * len(line), "bare file has the wrong size")
    _check(len(sink_ns) == len(bare_ns) == count, "a block was cut short")
    shutil.rmtree(log_dir)
    path.unlink()
    return sink_ns, bare_ns


def measure_bare(
    base: Path, line: bytes, count: int, *, fsync: bool, head: bool = False
) -> tuple[float, list[int]]:
    """1 thread: ``count`` x ``os.write(line)`` (+ ``os.fsync``) on a plain O_APPEND file;
    with ``head``, also a chain-head replace by rename after each write (the first sink
    design's cost, kept for comparison).
    Returns (writes/s, per-write latencies in ns)."""
    path = base / f"bare-{time.perf_counter_ns()}.jsonl"
    head_path = base / "bare.head"
    head_tmp = base / "bare.head.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    latencies: list[int] = []
    clock = time.perf_counter_ns
    try:
        for _ in range(WARMUP):
            os.write(fd, line)
            if fsync:
                os.fsync(fd)
        begin = clock()
        for _ in range(count):
            start = clock()
            os.write(fd, line)
            if fsync:
                os.fsync(fd)
            if head:
                hfd = os.open(head_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.write(hfd, b"1000 " + b"0" * 64 + b"\n")
                os.close(hfd)
                os.replace(head_tmp, head_path)
            latencies.append(clock() - start)
        seconds = (clock() - begin) / 1e9
    finally:
        os.close(fd)
    _check(path.stat().st_size == (count + WARMUP) * len(line), "bare file has the wrong size")
    path.unlink()
    head_path.unlink(missing_ok=True)
    return count / seconds, latencies


# ------------------------------------------------------------------ machine


def filesystem(path: Path) -> tuple[str, str, str]:
    """(type, mount point, device) of the mount holding ``path``, from /proc/mounts."""
    real = os.path.realpath(path)
    best = ("unknown", "?", "?")
    best_len = -1
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for entry in mounts:
        parts = entry.split()
        if len(parts) < 3:
            continue
        device, point, kind = parts[0], parts[1].replace("\\040", " "), parts[2]
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best_len:
            best, best_len = (kind, point, device), len(point)
    return best


def machine_line(base: Path) -> str:
    kind, point, device = filesystem(base)
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return (
        f"{cpu_model()}, {cores} cores ({usable} usable), "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}, "
        f"directory on {kind} ({device} at {point})"
    )


# ------------------------------------------------------------------ the suite


@dataclass
class Plan:
    rounds: int
    one_fsync: int  # events, 1 writer, fsync
    one_flush: int  # events, 1 writer, flush
    many: int  # writers for the concurrent runs
    per_writer_fsync: int
    per_writer_flush: int


FULL = Plan(
    rounds=5, one_fsync=2000, one_flush=2000, many=16, per_writer_fsync=1000, per_writer_flush=1000
)
QUICK = Plan(
    rounds=1, one_fsync=300, one_flush=300, many=16, per_writer_fsync=100, per_writer_flush=100
)


@dataclass
class Report:
    runs: dict[str, Run]
    line_bytes: int
    machine: str
    date: str
    plan: Plan
    seconds: float
    fs_kind: str
    load: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())  # load average at start, end

    @property
    def scaling(self) -> float:
        return self.runs["sink-fsync-many"].rate / self.runs["sink-fsync-1"].rate

    @property
    def task_scaling(self) -> float:
        return self.runs["tasks-fsync-many"].rate / self.runs["tasks-fsync-1"].rate

    @property
    def task_overhead(self) -> float:
        sink = self.runs["tasks-fsync-1"].percentile_us(50)
        return sink / self.runs["bare-fsync"].percentile_us(50)

    @property
    def overhead(self) -> float:
        """Target (b): 1 writer against bare write+fsync, interleaved."""
        sink = self.runs["sink-fsync-1-interleaved"].percentile_us(50)
        return sink / self.runs["bare-fsync-interleaved"].percentile_us(50)

    @property
    def overhead_separate(self) -> float:
        """The same ratio from the separate runs (a diagnostic: drift moves it)."""
        sink = self.runs["sink-fsync-1"].percentile_us(50)
        return sink / self.runs["bare-fsync"].percentile_us(50)


def run_suite(base: Path, plan: Plan, *, progress: bool = False) -> Report:
    line = sample_line()
    runs = {
        "bare-fsync": Run("bare os.write + os.fsync", "fsync", 1),
        "sink-fsync-1": Run("sink", "fsync", 1),
        "sink-fsync-many": Run("sink", "fsync", plan.many),
        "bare-flush": Run("bare os.write", "flush", 1),
        "sink-flush-1": Run("sink", "flush", 1),
        "sink-flush-many": Run("sink", "flush", plan.many),
        "tasks-fsync-1": Run("sink, asyncio tasks", "fsync", 1),
        "tasks-fsync-many": Run("sink, asyncio tasks", "fsync", plan.many),
        "bare-fsync-head": Run("bare os.write + os.fsync + head replace", "fsync", 1),
        "sink-fsync-1-interleaved": Run("sink, taking turns with bare", "fsync", 1),
        "bare-fsync-interleaved": Run("bare os.write + os.fsync, taking turns", "fsync", 1),
    }
    began = time.perf_counter()
    load_before = os.getloadavg()
    for round_number in range(plan.rounds):
        for key, run in runs.items():
            if key == "bare-fsync-interleaved":
                continue  # measured with its sink, below
            if progress:
                print(f"  round {round_number + 1}/{plan.rounds}: {key} ...", file=sys.stderr)
            if key == "sink-fsync-1-interleaved":
                sink_ns, bare_ns = measure_interleaved(base, line, plan.one_fsync)
                for each, latencies in ((run, sink_ns), (runs["bare-fsync-interleaved"], bare_ns)):
                    each.events += len(latencies)
                    each.latencies_ns.extend(latencies)
                    each.rates.append(1e9 * len(latencies) / sum(latencies))
                continue
            if key.startswith("bare"):
                count = plan.one_fsync if run.mode == "fsync" else plan.one_flush
                rate, latencies = measure_bare(
                    base, line, count, fsync=run.mode == "fsync", head=key.endswith("head")
                )
                run.events += count
            else:
                writers = run.writers
                if writers == 1:
                    per = plan.one_fsync if run.mode == "fsync" else plan.one_flush
                else:
                    per = plan.per_writer_fsync if run.mode == "fsync" else plan.per_writer_flush
                measure = measure_sink_tasks if key.startswith("tasks") else measure_sink
                result = measure(base, run.mode, writers, per)
                rate, latencies = result.rate, result.latencies_ns
                run.events += result.events
                run.commits += result.fsyncs
            run.rates.append(rate)
            run.latencies_ns.extend(latencies)
    return Report(
        runs=runs,
        line_bytes=len(line),
        machine=machine_line(base),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        plan=plan,
        seconds=time.perf_counter() - began,
        fs_kind=filesystem(base)[0],
        load=(load_before, os.getloadavg()),
    )


def render(report: Report, *, quick: bool) -> str:
    runs = report.runs
    plan = report.plan

    def row(key: str) -> str:
        run = runs[key]
        return (
            f"| {run.mode} | {run.label} | {run.writers} | {run.rate:,.0f} | "
            f"{run.percentile_us(50):,.1f} | {run.percentile_us(99):,.1f} |"
        )

    scaling_ok = report.scaling >= TARGET_SCALING
    overhead_ok = report.overhead <= TARGET_OVERHEAD
    task_scaling_ok = report.task_scaling >= TARGET_SCALING
    task_overhead_ok = report.task_overhead <= TARGET_OVERHEAD
    fsync_many = runs["sink-fsync-many"]
    fsync_one = runs["sink-fsync-1"]
    head = runs["bare-fsync-head"]
    lines = [
        "# Audit sink benchmark (`jsonl`)",
        "",
        f"- Machine: {report.machine}",
        f"- Date: {report.date}",
        f"- Command: `python bench/audit_bench.py{' --quick' if quick else ''}` "
        f"({plan.rounds} round(s), {report.seconds:.0f} s)",
        f"- Record: realistic `DecisionEvent`, sealed line = {report.line_bytes} bytes "
        "(bare baselines write the same number of bytes per write; the chain fields seq, "
        "prev_hash and hash alone take ~165 bytes)",
        f"- Counts per round: 1 writer {plan.one_fsync:,} (fsync) / {plan.one_flush:,} (flush) "
        f"events; {plan.many} writers x {plan.per_writer_fsync:,} (fsync) / "
        f"{plan.many} x {plan.per_writer_flush:,} (flush); bare baselines "
        f"{plan.one_fsync:,} / {plan.one_flush:,} writes; 1 writer taking turns with bare "
        f"write+fsync (target (b)): {plan.one_fsync:,} of each, in blocks of "
        f"{INTERLEAVE_BLOCK}",
        "- events/s: median over rounds (all events / wall time); p50/p99: per-event latency "
        "(`write_sync` call to return), pooled over rounds",
        f"- Load average (1, 5, 15 min) at the start: {load_text(report.load[0])}; at the end: "
        f"{load_text(report.load[1])} (the benchmark's own threads count in it)",
    ]
    if report.fs_kind in {"tmpfs", "ramfs"}:
        lines.append(
            f"- **Warning: the directory is on {report.fs_kind}; fsync costs nothing here "
            "and the numbers say nothing about a disk.**"
        )
    lines += [
        "",
        "| mode | what | writers | events/s | p50 µs | p99 µs |",
        "|---|---|---:|---:|---:|---:|",
        row("bare-fsync"),
        row("sink-fsync-1"),
        row("sink-fsync-many"),
        row("bare-flush"),
        row("sink-flush-1"),
        row("sink-flush-many"),
        row("tasks-fsync-1"),
        row("tasks-fsync-many"),
        row("sink-fsync-1-interleaved"),
        row("bare-fsync-interleaved"),
        "",
        "Writers are threads calling `write_sync` (the sink's synchronous API), or — rows "
        "'asyncio tasks', the way `mcp-acp run` writes — tasks on one event loop awaiting "
        "`write`, whose records the event loop commits itself: what the tasks submitted in "
        "one loop iteration, with one write and one fsync, at the start of the next. "
        f"The last two rows take turns in blocks of {INTERLEAVE_BLOCK} from one thread, so "
        "that both meet the disk at the same moments (their events/s: events ÷ the time "
        "spent in their own calls); target (b) is their ratio.",
        "",
        "| target | writers | measured | target | met? |",
        "|---|---|---:|---:|---|",
        f"| (a) fsync: {plan.many}-writer events/s ÷ 1-writer events/s (group commit works) "
        f"| threads | {report.scaling:.2f}x | >= {TARGET_SCALING:g}x "
        f"| {'yes' if scaling_ok else 'NO'} |",
        f"| (a) same | asyncio tasks | {report.task_scaling:.2f}x | >= {TARGET_SCALING:g}x "
        f"| {'yes' if task_scaling_ok else 'NO'} |",
        f"| (b) fsync: 1-writer p50 ÷ bare write+fsync p50, taking turns | threads "
        f"| {report.overhead:.2f}x | <= {TARGET_OVERHEAD:g}x | {'yes' if overhead_ok else 'NO'} |",
        f"| (b) 1 task's p50 ÷ bare write+fsync p50, separate runs | asyncio tasks "
        f"| {report.task_overhead:.2f}x "
        f"| <= {TARGET_OVERHEAD:g}x | {'yes' if task_overhead_ok else 'NO'} |",
        "",
        "Diagnostics (not targets):",
        "",
        f"- (b) from the separate runs (the 1-writer and bare rows at the top; the method "
        f"until 2026-11-27 22:50 UTC): {report.overhead_separate:.2f}x — drift between the "
        "two runs moves it.",
        f"- fsync batch size with {plan.many} writers: "
        f"{fsync_many.events / max(fsync_many.commits, 1):.1f} events per fsync "
        f"({fsync_many.commits:,} fsyncs for {fsync_many.events:,} events); with 1 writer: "
        f"{fsync_one.events / max(fsync_one.commits, 1):.2f}.",
        f"- flush mode: 1-writer p50 ÷ bare write p50 = "
        f"{runs['sink-flush-1'].percentile_us(50) / runs['bare-flush'].percentile_us(50):.1f}x; "
        f"{plan.many}-writer ÷ 1-writer events/s = "
        f"{runs['sink-flush-many'].rate / runs['sink-flush-1'].rate:.2f}x.",
        f"- bare os.write + os.fsync + chain-head replace by rename after every write (what "
        f"the first sink design did; the sink now updates the head in place, one pwrite "
        f"after each commit), 1 thread: {head.rate:,.0f} writes/s, "
        f"p50 {head.percentile_us(50):,.1f} µs, p99 {head.percentile_us(99):,.1f} µs.",
        "",
        "Every sink run was checked afterwards: `verify_stream` ok and lines = events "
        "written + 1 `stream_opened`.",
    ]
    verdict = [
        f"Target (a), threads: {'MET' if scaling_ok else 'NOT MET'}: {report.scaling:.2f}x "
        f"(>= {TARGET_SCALING:g}x wanted).",
        f"Target (a), asyncio tasks: {'MET' if task_scaling_ok else 'NOT MET'}: "
        f"{report.task_scaling:.2f}x (>= {TARGET_SCALING:g}x wanted).",
        f"Target (b), threads: {'MET' if overhead_ok else 'NOT MET'}: {report.overhead:.2f}x "
        f"(<= {TARGET_OVERHEAD:g}x wanted).",
        f"Target (b), asyncio tasks: {'MET' if task_overhead_ok else 'NOT MET'}: "
        f"{report.task_overhead:.2f}x (<= {TARGET_OVERHEAD:g}x wanted).",
    ]
    lines += ["", *verdict, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(
        __doc__, DEFAULT_OUT, quick="small counts, 1 round", scratch="the scratch files"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    with scratch_dir(args.dir, "audit-bench") as base:
        kind = filesystem(base)[0]
        print(f"scratch directory {base} on {kind}", file=sys.stderr)
        if kind in {"tmpfs", "ramfs"}:
            print("WARNING: tmpfs/ramfs: fsync is free here; use --dir on a disk", file=sys.stderr)
        report = run_suite(base, plan, progress=True)
    publish(render(report, quick=args.quick), args.out, DEFAULT_OUT, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
