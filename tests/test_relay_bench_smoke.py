"""Smoke test of the relay benchmark: a ``--quick`` run through all six paths.

Checks what was answered and the report's shape — rm_rf denied by both proxies (mcp-acp
with and without fsync) and both floors, every figure present and positive — never the
timings against their targets."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROWS = (
    "backend direct",
    "`mcp-acp run`",
    "`mcp-acp run`, no fsync",
    "FastMCP",
    "floor: line relay + fsync",
    "floor, no fsync",
)


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
    assert len(table) == len(ROWS)
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
    for name in (ROWS[2], *ROWS[4:]):
        assert re.search(
            rf"- {re.escape(name)}: .*\['echo'\]; `rm_rf` → denied: error -32003\.", text
        )

    # the targets applied to the yardsticks too: three rows, each with five figures
    floor_header = "| target | mcp-acp | mcp-acp, no fsync | floor | floor, no fsync | target |"
    assert floor_header in text
    floor = text.split(floor_header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    assert [line.split("|")[1].strip() for line in floor] == [
        "added p50",
        "FastMCP added p50 ÷ the path's",
        "8-way calls/s ÷ direct",
    ]
    assert all(len(line.strip("|").split("|")) == 6 for line in floor)
    assert _number(floor[0].split("|")[2].strip().removesuffix(" ms")) == _number(
        rows["`mcp-acp run`"][3]
    )

    targets = re.findall(r"^\| .+ \| .+ \| [≤≥] .+ \| (yes|NO) \|$", text, re.MULTILINE)
    assert len(targets) == 5
    assert text.count("Target ") == 5

    # the load table: per N in flight (1 = the sequential phase), every path; no target
    assert "reported, no target" in text
    load_header = "| in flight | path | p50 ms | p99 ms | added p50 ms | added p99 ms | calls/s |"
    assert load_header in text
    load = text.split(load_header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    widths = (1, *bench.LOAD_WIDTHS)
    assert widths == (1, 10, 100)
    assert len(load) == len(widths) * len(ROWS)
    for line, (width, name) in zip(load, [(w, n) for w in widths for n in ROWS], strict=True):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 7, line
        assert cells[0] == str(width), line
        assert cells[1].startswith(name), line
        p50, p99, rate = (_number(cells[i]) for i in (2, 3, 6))
        assert 0 < p50 <= p99, line
        assert rate > 0, line
        if name == ROWS[0]:
            assert cells[4:6] == ["—", "—"], line  # direct is what the others are against
        else:
            _number(cells[4])  # added p50 and p99 are numbers (of either sign)
            _number(cells[5])
        if width == 1:  # the sequential phase: the same figures as the first table
            assert cells[2:6] == rows[name][1:5], line


def a_sample(bench: ModuleType, *, rm_rf: str) -> Any:
    """A session's figures as the checks see them: one of each, 3 echo calls."""
    return bench.Sample(
        ready_s=1.0,
        first_call_s=1.0,
        listed=["echo"],
        rm_rf=rm_rf,
        sequential_ns=[1_000_000],
        rate=100.0,
        concurrent_ns=[1_000_000],
        rss_kb=1000,
        hwm_kb=1000,
        backend_rss_kb=1000,
        echo_calls=3,
        exit_code=0,
        load_ns={width: [1_000_000] for width in bench.LOAD_WIDTHS},
        load_rate=dict.fromkeys(bench.LOAD_WIDTHS, 100.0),
    )


def test_a_proxy_that_lets_rm_rf_run_fails_the_check(bench: ModuleType) -> None:
    routes = bench.make_routes()
    sample = a_sample(bench, rm_rf="ran")
    for key in ("acp", "fastmcp"):
        with pytest.raises(AssertionError, match="rm_rf answered 'ran'"):
            bench.check_sample(routes[key], sample)
    sample.rm_rf = "denied: isError"  # FastMCP's shape is not mcp-acp's
    bench.check_sample(routes["fastmcp"], sample)
    sample.load_ns = {10: [1_000_000]}  # nothing timed with 100 in flight
    with pytest.raises(AssertionError, match="no calls timed with 100 in flight"):
        bench.check_sample(routes["fastmcp"], sample)
    sample.load_ns = {width: [1_000_000] for width in bench.LOAD_WIDTHS}
    with pytest.raises(AssertionError, match="rm_rf answered"):
        bench.check_sample(routes["acp"], sample)
    sample.listed = ["echo", "rm_rf"]  # a proxy must hide the denied tool
    with pytest.raises(AssertionError, match="tools/list"):
        bench.check_sample(routes["fastmcp"], sample)


def test_a_floor_that_skips_a_record_fails_the_check(bench: ModuleType, tmp_path: Path) -> None:
    """The floor's one rule, a record per request, is checked after each session."""
    echo = '{"method": "tools/call", "name": "echo"}\n'
    sample = a_sample(bench, rm_rf="denied: error -32003")
    records = tmp_path / "floor-records.jsonl"
    records.write_text(echo * 3 + '{"deny":98}\n')
    bench.check_floor_records(tmp_path, sample)
    records.write_text(echo * 2 + '{"deny":98}\n')
    with pytest.raises(AssertionError, match="2 echo records, 3 calls"):
        bench.check_floor_records(tmp_path, sample)
    records.write_text(echo * 3)
    with pytest.raises(AssertionError, match="0 rm_rf denials"):
        bench.check_floor_records(tmp_path, sample)


# A stdio peer answering each tools/call with the echo of its id, except for the call with
# id `odd`: "wrong" answers it with another text, "twice" answers it twice, "drop" never
# answers it (and exits once it has answered the call with id `last`).
PEER = """
import json, sys
mode, odd, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for line in sys.stdin:
    request_id = json.loads(line)["id"]
    if mode == "drop" and request_id == odd:
        continue
    text = "wrong" if mode == "wrong" and request_id == odd else f"call-{request_id}"
    answer = {"jsonrpc": "2.0", "id": request_id,
              "result": {"content": [{"type": "text", "text": text}]}}
    for _ in range(2 if mode == "twice" and request_id == odd else 1):
        sys.stdout.write(json.dumps(answer) + "\\n")
    sys.stdout.flush()
    if mode == "drop" and request_id == last:
        break
"""


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("wrong", "bad echo"),
        ("twice", "unexpected answer with 10 in flight"),
        ("drop", "the peer closed its output"),
    ],
)
def test_the_load_phase_checks_every_answer(
    bench: ModuleType, tmp_path: Path, mode: str, message: str
) -> None:
    """A call answered with the wrong text, answered twice, or never answered fails the
    load phase (with 10 in flight, 30 calls: ids 2..31, the odd one 20)."""
    argv = [sys.executable, "-c", PEER, mode, "20", "31"]
    session = bench.Session(argv, {}, tmp_path / "stderr.txt", bench.QUICK)
    try:
        with pytest.raises(AssertionError, match=message):
            session.load(30, 10)
    finally:
        session.kill()


def test_the_load_phase_times_only_the_calls_sent_with_the_window_full(
    bench: ModuleType, tmp_path: Path
) -> None:
    argv = [sys.executable, "-c", PEER, "none", "0", "0"]
    session = bench.Session(argv, {}, tmp_path / "stderr.txt", bench.QUICK)
    try:
        session.load(30, 10)
        session.load(30, 10)
    finally:
        session.kill()
    assert len(session.load_ns[10]) == 40  # 2 x 30 calls, the first 10 of each untimed
    assert all(latency > 0 for latency in session.load_ns[10])
    assert session.load_calls[10] == 60
    assert session.echo_calls == 60


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
