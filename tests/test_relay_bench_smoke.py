"""Smoke test of the relay benchmark: a ``--quick`` run through all three paths.

Checks what was answered and the report's shape — rm_rf denied by both proxies, every
figure present and positive — never the timings against their targets."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from types import ModuleType

import pytest

ROWS = ("backend direct", "`mcp-acp run`", "FastMCP")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script as a module (``bench/`` is on pytest's pythonpath)."""
    return importlib.import_module("relay_bench")


def _number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%"))


def test_quick_run_denies_rm_rf_in_both_proxies_and_reports_every_figure(
    bench: ModuleType, quick_report: Callable[[ModuleType], str]
) -> None:
    pytest.importorskip("fastmcp")
    text = quick_report(bench)

    header = "| path | p50 ms | p99 ms | added p50 ms | added p99 ms | 8-way calls/s "
    assert header in text
    table = text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]  # after the rule
    assert len(table) == 3
    rows = {}
    for line, name in zip(table, ROWS, strict=True):
        assert line.startswith(f"| {name}")
        rows[name] = [cell.strip() for cell in line.strip("|").split("|")]
    for name, cells in rows.items():
        p50, p99, rate, ready, rss = (_number(cells[i]) for i in (1, 2, 5, 7, 8))
        assert 0 < p50 <= p99, name
        assert rate > 0, name
        assert ready > 0, name
        assert rss > 0, name
    for name in ROWS[1:]:
        _number(rows[name][3])  # added p50 and p99 are numbers (of either sign)
        _number(rows[name][4])
        assert _number(rows[name][6]) > 0  # 8-way calls/s as a share of direct

    # the answers to rm_rf, per path: the backend runs it, both proxies refuse it
    assert re.search(
        r"- backend direct: .*`tools/list` → \['echo', 'rm_rf'\]; `rm_rf` → ran\.", text
    )
    assert re.search(r"- `mcp-acp run`: .*\['echo'\]; `rm_rf` → denied: error -32003\.", text)
    assert re.search(r"- FastMCP [\d.]+ proxy: .*\['echo'\]; `rm_rf` → denied: isError\.", text)
    assert "1 rm_rf deny" in text  # and the denial is on mcp-acp's audit record

    targets = re.findall(r"^\| .+ \| .+ \| [≤≥] .+ \| (yes|NO) \|$", text, re.MULTILINE)
    assert len(targets) == 5
    assert text.count("Target ") == 5


def test_a_proxy_that_lets_rm_rf_run_fails_the_check(bench: ModuleType) -> None:
    routes = bench.make_routes()
    sample = bench.Sample(
        ready_s=1.0,
        first_call_s=1.0,
        listed=["echo"],
        rm_rf="ran",
        sequential_ns=[1_000_000],
        rate=100.0,
        concurrent_ns=[1_000_000],
        rss_kb=1000,
        hwm_kb=1000,
        backend_rss_kb=1000,
        echo_calls=3,
        exit_code=0,
    )
    for key in ("acp", "fastmcp"):
        with pytest.raises(AssertionError, match="rm_rf answered 'ran'"):
            bench.check_sample(routes[key], sample)
    sample.rm_rf = "denied: isError"  # FastMCP's shape is not mcp-acp's
    bench.check_sample(routes["fastmcp"], sample)
    with pytest.raises(AssertionError, match="rm_rf answered"):
        bench.check_sample(routes["acp"], sample)
    sample.listed = ["echo", "rm_rf"]  # a proxy must hide the denied tool
    with pytest.raises(AssertionError, match="tools/list"):
        bench.check_sample(routes["fastmcp"], sample)


def test_rm_rf_answers_are_classified(bench: ModuleType) -> None:
    ran = {"id": 1, "result": {"content": [{"type": "text", "text": bench.RAN}]}}
    refused = {"id": 1, "error": {"code": -32003, "message": "denied by rule deny-rm-rf"}}
    is_error = {"id": 1, "result": {"isError": True, "content": [{"type": "text", "text": "no"}]}}
    assert bench.classify_rm_rf(ran) == "ran"
    assert bench.classify_rm_rf(refused) == "denied: error -32003"
    assert bench.classify_rm_rf(is_error) == "denied: isError"
    assert bench.classify_rm_rf({"id": 1, "result": {"content": []}}) == "other"


def test_percentile_is_nearest_rank(bench: ModuleType) -> None:
    values = list(range(1, 101))
    assert bench.percentile(values, 50) == 50
    assert bench.percentile(values, 99) == 99
    assert bench.percentile([7], 99) == 7
