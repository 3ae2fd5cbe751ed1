"""What the same work costs right after the process has been idle, against back to back.

Run from the repository root::

    python bench/idle_bench.py            # full run (~30 s), writes bench/results/idle.md
    python bench/idle_bench.py --quick    # a few seconds; prints only (unless --out)

The relay and audit targets compare mcp-acp's work with baselines measured back to back,
in tight loops. A relayed call is not back to back: between one call and the next the
proxy waits for its client and for its backend, and while it waits the CPU it ran on may
sleep. This benchmark measures, on this machine, how much that costs. Two operations,
each timed alone (``perf_counter_ns``) after an idle gap of 0 (back to back), 0.2, 1 and
3 ms (``time.sleep``):

* **record** — the CPU work of one decision record: build a ``DecisionEvent`` (pydantic
  validation), serialise it, seal it into the chain (``seal``: SHA-256);
* **write+fsync** — append one sealed line (589 bytes) to a file on the local disk and
  ``fsync`` it (the bare baseline of the audit benchmark), in ``bench/.tmp/`` (or
  ``--dir``).

Gaps are interleaved, their order rotating by round; each figure is the p50 over all
rounds, and the ratio is to the back-to-back p50 of the same operation. The file's size
is checked after every write+fsync run (a correctness check, not a timing assertion).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from audit_bench import filesystem, machine_line, make_event
from bench_scratch import bench_parser, check, load_text, publish, scratch_dir

from mcp_acp.audit.chain import GENESIS, seal
from mcp_acp.audit.events import DecisionEvent
from mcp_acp.audit.jsonl import serialise

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "idle.md"
GAPS_MS: Final = (0.0, 0.2, 1.0, 3.0)
FULL: Final = (3, 600)  # rounds, samples per gap and operation per round
QUICK: Final = (1, 60)
WARMUP = 50


def time_record(count: int, gap: float) -> list[int]:
    """Latencies (ns) of building, serialising and sealing one decision record."""
    fields = make_event(1, 1).model_dump(exclude_none=True)
    clock = time.perf_counter_ns
    out: list[int] = []
    for _ in range(count):
        if gap:
            time.sleep(gap)
        start = clock()
        seal(serialise(DecisionEvent(**fields)), 1000, GENESIS)
        out.append(clock() - start)
    return out


def time_fsync(base: Path, line: bytes, count: int, gap: float) -> list[int]:
    """Latencies (ns) of appending ``line`` to a fresh file and fsyncing it."""
    path = base / f"idle-{time.perf_counter_ns()}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    clock = time.perf_counter_ns
    out: list[int] = []
    try:
        for _ in range(count):
            if gap:
                time.sleep(gap)
            start = clock()
            os.write(fd, line)
            os.fsync(fd)
            out.append(clock() - start)
    finally:
        os.close(fd)
    check(path.stat().st_size == count * len(line), f"{path} has the wrong size")
    path.unlink()
    return out


def run(base: Path, rounds: int, count: int) -> dict[tuple[str, float], list[int]]:
    line = seal(serialise(make_event(0, 0)), 1000, GENESIS)[0]
    time_record(WARMUP, 0)
    time_fsync(base, line, WARMUP, 0)
    samples: dict[tuple[str, float], list[int]] = {}
    for number in range(rounds):
        shift = number % len(GAPS_MS)
        for gap_ms in GAPS_MS[shift:] + GAPS_MS[:shift]:
            gap = gap_ms / 1000
            samples.setdefault(("record", gap_ms), []).extend(time_record(count, gap))
            samples.setdefault(("fsync", gap_ms), []).extend(time_fsync(base, line, count, gap))
        print(f"round {number + 1}/{rounds} done", file=sys.stderr)
    return samples


def render(
    samples: dict[tuple[str, float], list[int]],
    *,
    machine: str,
    rounds: int,
    count: int,
    seconds: float,
    loads: tuple[str, str],
) -> str:
    def p50(kind: str, gap_ms: float) -> float:
        return statistics.median(samples[(kind, gap_ms)]) / 1000

    lines = [
        "# Idle benchmark: the same work right after an idle gap",
        "",
        f"- Machine: {machine}",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Command: `python bench/idle_bench.py` ({rounds} round(s), {seconds:.0f} s)",
        f"- Samples: {count:,} per gap and operation per round; p50 over all rounds",
        f"- Load average (1, 5, 15 min) at the start: {loads[0]}; at the end: {loads[1]}",
        "",
        "| idle gap before each | record p50 µs | vs back to back | write+fsync p50 µs "
        "| vs back to back |",
        "|---|---:|---:|---:|---:|",
    ]
    for gap_ms in GAPS_MS:
        label = "none (back to back)" if gap_ms == 0 else f"{gap_ms:g} ms"
        record, fsync = p50("record", gap_ms), p50("fsync", gap_ms)
        lines.append(
            f"| {label} | {record:.1f} | {record / p50('record', 0):.2f}x "
            f"| {fsync:.1f} | {fsync / p50('fsync', 0):.2f}x |"
        )
    lines += [
        "",
        "*record*: build a `DecisionEvent` (validated), serialise it and seal it into the "
        "chain — CPU only. *write+fsync*: append one sealed line (the same bytes) to a file "
        "on the local disk and `fsync` it.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(
        __doc__, DEFAULT_OUT, quick="1 round, few samples", scratch="the fsynced file"
    )
    args = parser.parse_args(argv)
    rounds, count = QUICK if args.quick else FULL
    load_before = load_text(os.getloadavg())
    began = time.perf_counter()
    with scratch_dir(args.dir, "idle-bench") as base:
        if filesystem(base)[0] in {"tmpfs", "ramfs"}:
            print("WARNING: tmpfs/ramfs: fsync is free here", file=sys.stderr)
        machine = machine_line(base)
        samples = run(base, rounds, count)
    text = render(
        samples,
        machine=machine,
        rounds=rounds,
        count=count,
        seconds=time.perf_counter() - began,
        loads=(load_before, load_text(os.getloadavg())),
    )
    publish(text, args.out, DEFAULT_OUT, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
