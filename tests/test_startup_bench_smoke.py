"""Smoke test of the start-up benchmark: a ``--quick`` run reaches the backend spawn and
reports every program; the libraries program leaves mcp-acp's modules out and keeps the
run's order; callgrind counts a real program (skipped locally without valgrind; CI installs it and
sets ``REQUIRE_VALGRIND=1``). Never the timings themselves."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

NO_VALGRIND = shutil.which("valgrind") is None
if NO_VALGRIND and os.environ.get("REQUIRE_VALGRIND") == "1":
    raise RuntimeError("REQUIRE_VALGRIND=1 but valgrind is not installed")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script as a module (``bench/`` is on pytest's pythonpath)."""
    return importlib.import_module("startup_bench")


def test_quick_run_stops_the_proxy_at_the_backend_spawn_and_reports_each_program(
    bench: ModuleType, quick_report: Callable[[ModuleType], str]
) -> None:
    text = quick_report(bench)

    header = (
        "| program | instructions (M) | share of the run | wall ms (median) | wall ms (range) |"
    )
    rows = text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]  # after the rule
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:6]] for row in rows}
    assert list(cells) == [
        "interpreter (`python -c pass`)",
        "libraries: the run's non-mcp-acp modules, imported in its order",
        "`mcp-acp run` up to the backend spawn",
        "mcp-acp's own (run - libraries)",
    ]
    for name, (count, share, median, _) in cells.items():
        assert (count, share) == ("—", "—")  # --quick counts no instructions
        if not name.startswith("mcp-acp's own"):
            assert float(median) > 0
    assert "pydantic (" in text  # the module list came from the stopped run


def test_the_libraries_program_imports_the_run_s_other_modules_in_order(
    bench: ModuleType,
) -> None:
    program = bench.libraries_program(
        ["json", "mcp_acp", "mcp_acp.config", "mcp_acp_oidc.provider", "__main__", "colorsys"]
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            program + "print([m for m in sys.modules if m in "
            "('json', 'colorsys') or m.startswith('mcp_acp')])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "['json', 'colorsys']"  # nothing of mcp-acp's imported
    assert done.stderr.startswith(bench.MARK)


@pytest.mark.skipif(
    NO_VALGRIND, reason="needs valgrind (apt-get install -y valgrind; CI installs it)"
)
def test_callgrind_counts_the_instructions_of_a_real_program(
    bench: ModuleType, tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    idle = bench.instructions(bench._program("pass"), env)
    busy = bench.instructions(bench._program("sum(range(1_000_000))"), env)
    assert 1_000_000 < idle < busy
    assert busy - idle > 1_000_000  # at least one instruction per number added
