"""Smoke test of the idle benchmark: a ``--quick`` run and the report's shape — every gap
has a row, every figure is positive, the back-to-back row is the 1.00x baseline — never the
timings themselves."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script as a module (``bench/`` is on pytest's pythonpath)."""
    return importlib.import_module("idle_bench")


def test_quick_run_reports_every_gap_against_back_to_back(
    bench: ModuleType, quick_report: Callable[[ModuleType], str]
) -> None:
    text = quick_report(bench)

    header = "| idle gap before each | record p50 µs | vs back to back |"
    table = text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]  # after the rule
    assert [row.split("|")[1].strip() for row in table] == [
        "none (back to back)",
        "0.2 ms",
        "1 ms",
        "3 ms",
    ]
    for row in table:
        record, record_ratio, fsync, fsync_ratio = (c.strip() for c in row.split("|")[2:6])
        assert float(record) > 0
        assert float(fsync) > 0
        assert float(record_ratio.removesuffix("x")) > 0
        assert float(fsync_ratio.removesuffix("x")) > 0
    first = [c.strip() for c in table[0].split("|")]
    assert first[3] == first[5] == "1.00x"


def test_fsync_timing_times_each_write_and_removes_its_file(
    bench: ModuleType, tmp_path: Path
) -> None:
    base = tmp_path / "scratch"
    base.mkdir()
    assert len(bench.time_fsync(base, b'{"seq":1}\n', 5, 0.0)) == 5
    assert list(base.iterdir()) == []  # its size was checked, then it was removed
