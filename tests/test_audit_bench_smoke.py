"""The audit benchmark's measurement functions run and check what they wrote.

Correctness only (line counts, chain verification); timings are never asserted."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script as a module (``bench/`` is on pytest's pythonpath)."""
    return importlib.import_module("audit_bench")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A scratch directory of its own (``tmp_path`` also holds the isolated home)."""
    path = tmp_path / "bench"
    path.mkdir()
    return path


@pytest.mark.parametrize("durability", ["fsync", "flush"])
@pytest.mark.parametrize("writers", [1, 2])
def test_sink_run_is_complete_and_verifies(
    bench: ModuleType, work: Path, durability: str, writers: int
) -> None:
    result = bench.measure_sink(work, durability, writers, 10)
    assert result.events == writers * 10
    assert result.written == result.events + bench.WARMUP
    assert result.lines == result.written + 1  # + stream_opened
    assert result.verified
    assert len(result.latencies_ns) == result.events
    if durability == "fsync":
        assert 1 <= result.fsyncs <= result.events
    else:
        assert result.fsyncs == 0
    assert list(work.iterdir()) == []  # the run cleans up after itself


@pytest.mark.parametrize("writers", [1, 4])
def test_task_writers_are_complete_and_batched(bench: ModuleType, work: Path, writers: int) -> None:
    result = bench.measure_sink_tasks(work, "fsync", writers, 25)
    assert result.events == writers * 25
    assert result.lines == result.written + 1
    assert result.verified
    assert len(result.latencies_ns) == result.events
    assert 1 <= result.fsyncs <= result.events
    if writers == 1:
        assert result.fsyncs == result.events  # one at a time: nothing to batch
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("fsync", [True, False])
def test_bare_baseline_writes_every_line(bench: ModuleType, work: Path, fsync: bool) -> None:
    line = bench.sample_line()
    assert line.endswith(b"\n")
    _, latencies = bench.measure_bare(work, line, 20, fsync=fsync)
    assert len(latencies) == 20
    assert list(work.iterdir()) == []


def test_interleaved_run_takes_turns_and_verifies(bench: ModuleType, work: Path) -> None:
    """Target (b)'s run: as many sink writes as bare ones, every record on the chain."""
    sink_ns, bare_ns = bench.measure_interleaved(work, bench.sample_line(), 45)
    assert len(sink_ns) == len(bare_ns) == 45  # the last block is cut to what is left
    assert all(ns > 0 for ns in sink_ns + bare_ns)
    assert list(work.iterdir()) == []


def test_suite_and_report_with_tiny_counts(bench: ModuleType, work: Path) -> None:
    plan = bench.Plan(
        rounds=1, one_fsync=20, one_flush=20, many=2, per_writer_fsync=10, per_writer_flush=10
    )
    report = bench.run_suite(work, plan)
    assert report.runs["sink-fsync-many"].events == 20
    assert report.runs["sink-fsync-1"].events == 20
    text = bench.render(report, quick=True)
    assert "| fsync | sink | 2 |" in text
    assert "Target (a)" in text
    assert "Target (b)" in text
    assert report.runs["sink-fsync-1-interleaved"].events == 20
    assert report.runs["bare-fsync-interleaved"].events == 20
    assert "| fsync | sink, taking turns with bare | 1 |" in text
    assert "| (b) fsync: 1-writer p50 ÷ bare write+fsync p50, taking turns | threads |" in text
    assert "- (b) from the separate runs" in text
    assert "Load average (1, 5, 15 min) at the start: " in text
    assert report.line_bytes == len(bench.sample_line())


def test_percentile_is_nearest_rank(bench: ModuleType) -> None:
    values = list(range(1, 101))
    assert bench.percentile(values, 50) == 50
    assert bench.percentile(values, 99) == 99
    assert bench.percentile([7], 99) == 7
