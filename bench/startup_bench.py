"""What ``mcp-acp run`` does before it starts the backend, and how much of it is ours.

Run from the repository root::

    python bench/startup_bench.py          # full run (~2 min), writes bench/results/startup.md
    python bench/startup_bench.py --quick  # a few seconds, no instruction counts; prints only

The relay benchmark's *ready* figure (spawn → answer to ``initialize``) through the proxy is
the proxy's start-up up to the moment it starts the backend, then the backend's own boot,
then the relaying; its target allows mcp-acp 0.3 s over the backend run directly. The
start order is fixed (config → policy → plugins → audit write test → identity → posture
gate → backend), so everything the gates need runs, and is imported, first. This benchmark
splits that first part.

Three programs run, each from a fresh interpreter, on the configuration the relay benchmark
uses (``mcp-acp init --non-interactive``, the echo backend):

* **interpreter** — ``python -c pass``;
* **libraries** — the interpreter, then an import of every module that is not mcp-acp's
  (standard library and third party: pydantic, asyncio, click, attrs, pluggy, …) that
  ``mcp-acp run`` had loaded when it started the backend, in the order it loaded them:
  what any program that starts the same way on the same libraries pays;
* **run** — ``mcp-acp run`` itself, stopped at the moment it starts the backend (the hook
  replaces ``subprocess.Popen._execute_child`` and checks that the command is the
  configured backend's).

For each: wall time from spawn to the end (median, minimum and maximum over the runs,
which take turns), and — full run only — the number of instructions executed, counted by
valgrind's ``callgrind`` tool: exact and repeatable, whatever else the machine is doing.
*mcp-acp's own* is *run* minus *libraries*: its modules, its pydantic models being built,
configuration, plugin discovery, the audit write test, identity and the posture gate.
pydantic's work at the first model build (its plugin lookup, its schema machinery warming
up) falls on that side, so *libraries* is, if anything, a little low.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bench_scratch import bench_parser, check, load_text, publish, scratch_dir
from relay_bench import ECHO_SERVER, clean_env, compile_mcp_acp, machine_line, make_acp_home

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "startup.md"
FULL_RUNS: Final = 15
QUICK_RUNS: Final = 2
MARK = "startup-bench:"

#: ``mcp-acp run`` until it starts the backend; then the modules loaded so far, and exit.
RUN_TO_SPAWN = f"""
import json, os, subprocess, sys
start = subprocess.Popen._execute_child
def spawned(self, args, *rest, **options):
    if {str(ECHO_SERVER)!r} not in [str(a) for a in args]:
        return start(self, args, *rest, **options)  # not the backend: a posture probe, say
    sys.stderr.write({MARK!r} + json.dumps(list(sys.modules)) + "\\n")
    sys.stderr.flush()
    os._exit(0)
subprocess.Popen._execute_child = spawned
sys.argv = ["mcp-acp", "run"]
from mcp_acp.__main__ import main
main()
"""


def _ours(module: str) -> bool:
    return module.split(".")[0].startswith("mcp_acp") or module == "__main__"


def libraries_program(modules: Sequence[str]) -> str:
    """Import ``modules`` (those that are not mcp-acp's) in the order given."""
    theirs = [m for m in modules if not _ours(m)]
    return (
        "import importlib, sys\n"
        f"for name in {theirs!r}:\n"
        "    if name not in sys.modules:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except ImportError:\n"
        "            pass  # private or platform-only modules another import brings\n"
        f"sys.stderr.write({MARK!r} + '\\n')\n"
    )


def _program(code: str) -> str:
    return f"{code}\nimport sys\nsys.stderr.write({MARK!r} + '\\n')\n"


def run_once(code: str, env: dict[str, str], *, prefix: Sequence[str] = ()) -> tuple[float, str]:
    """Run ``python -c code`` under ``prefix`` (valgrind, say); the seconds from spawn to
    its mark line, and its standard error."""
    began = time.perf_counter()
    process = subprocess.Popen(
        [*prefix, sys.executable, "-c", code],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if process.stderr is None:  # pragma: no cover - stderr=PIPE always gives one
        raise RuntimeError("no stderr pipe")
    lines: list[str] = []
    elapsed = 0.0
    for line in process.stderr:
        if line.startswith(MARK) and not elapsed:
            elapsed = time.perf_counter() - began
        lines.append(line)
    process.wait(timeout=600)
    err = "".join(lines)
    check(elapsed > 0, f"the program never reached its mark; it printed:\n{err[-2000:]}")
    return elapsed, err


def loaded_at_spawn(err: str) -> list[str]:
    line = next(x for x in err.splitlines() if x.startswith(MARK))
    modules = json.loads(line[len(MARK) :])
    check(isinstance(modules, list) and len(modules) > 100, "no module list from the run")
    return [str(m) for m in modules]


def instructions(code: str, env: dict[str, str]) -> int:
    """Instructions executed by ``python -c code`` (valgrind ``callgrind``, all threads)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise AssertionError("valgrind is needed for instruction counts (apt install valgrind)")
    _, err = run_once(
        code, env, prefix=[valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    )
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise AssertionError(f"callgrind printed no count:\n{err[-2000:]}")
    return int(found.group(1))


def packages(modules: Sequence[str]) -> str:
    """The biggest third-party packages among ``modules``, by modules loaded."""
    stdlib = sys.stdlib_module_names
    counts = Counter(
        m.split(".")[0] for m in modules if not _ours(m) and m.split(".")[0] not in stdlib
    )
    return ", ".join(f"{name} ({count})" for name, count in counts.most_common(8))


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(
        __doc__ or "",
        DEFAULT_OUT,
        quick=f"{QUICK_RUNS} runs of each program, no instruction counts",
        scratch="the mcp-acp home",
    )
    args = parser.parse_args(argv)
    runs = QUICK_RUNS if args.quick else FULL_RUNS
    compile_mcp_acp()
    load_before = os.getloadavg()
    began = time.perf_counter()
    with scratch_dir(args.dir, "startup") as base:
        env = clean_env(make_acp_home(base, "home"))
        _, err = run_once(RUN_TO_SPAWN, env)  # also warms the page cache for all three
        modules = loaded_at_spawn(err)
        programs = {
            "interpreter": _program("pass"),
            "libraries": libraries_program(modules),
            "run": RUN_TO_SPAWN,
        }
        walls: dict[str, list[float]] = {name: [] for name in programs}
        for number in range(runs):
            names = list(programs)
            for name in names[number % 3 :] + names[: number % 3]:  # take turns
                walls[name].append(run_once(programs[name], env)[0])
        counts = (
            {} if args.quick else {name: instructions(code, env) for name, code in programs.items()}
        )
    report = render(
        modules,
        walls,
        counts,
        runs=runs,
        seconds=time.perf_counter() - began,
        loads=(load_before, os.getloadavg()),
        quick=args.quick,
    )
    publish(report, args.out, DEFAULT_OUT, quick=args.quick)
    return 0


def render(
    modules: Sequence[str],
    walls: dict[str, list[float]],
    counts: dict[str, int],
    *,
    runs: int,
    seconds: float,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
    quick: bool,
) -> str:
    ours = sum(1 for m in modules if _ours(m))
    ms = {name: statistics.median(values) * 1000 for name, values in walls.items()}
    span = {name: (min(v) * 1000, max(v) * 1000) for name, v in walls.items()}
    total = counts.get("run", 0)

    def row(label: str, name: str) -> str:
        low, high = span[name]
        if not counts:
            return f"| {label} | — | — | {ms[name]:.0f} | {low:.0f} to {high:.0f} |"
        return (
            f"| {label} | {counts[name] / 1e6:,.0f} | {counts[name] / total:.0%} "
            f"| {ms[name]:.0f} | {low:.0f} to {high:.0f} |"
        )

    lines = [
        "# Start-up benchmark (`mcp-acp run` up to the backend spawn)",
        "",
        f"- Machine: {machine_line()}",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Command: `python bench/startup_bench.py{' --quick' if quick else ''}` "
        f"({runs} runs of each program, taking turns; {seconds:.0f} s)",
        "- Configuration: `mcp-acp init --non-interactive` with the echo backend (as the "
        "relay benchmark); modules compiled to bytecode first",
        f"- Modules loaded when the backend is started: {len(modules)}, {ours} of them "
        f"mcp-acp's; the largest third-party packages: {packages(modules)}",
        f"- Load average (1/5/15 min) before: {load_text(loads[0])}; after: {load_text(loads[1])}",
        "- Instructions: valgrind `callgrind`, one run each (the count repeats exactly); "
        "wall: spawn → the program's end, median and range over the runs",
        "",
        "| program | instructions (M) | share of the run | wall ms (median) | wall ms (range) |",
        "|---|---:|---:|---:|---:|",
        row("interpreter (`python -c pass`)", "interpreter"),
        row("libraries: the run's non-mcp-acp modules, imported in its order", "libraries"),
        row("`mcp-acp run` up to the backend spawn", "run"),
    ]
    own_ms = ms["run"] - ms["libraries"]
    if counts:
        own = counts["run"] - counts["libraries"]
        lines.append(
            f"| mcp-acp's own (run - libraries) | {own / 1e6:,.0f} | {own / total:.0%} "
            f"| {own_ms:.0f} | |"
        )
    else:
        lines.append(f"| mcp-acp's own (run - libraries) | — | — | {own_ms:.0f} | |")
    lines += [
        "",
        "The relay benchmark's ready target allows `mcp-acp run` 300 ms over the backend run "
        f"directly; here the libraries alone take {ms['libraries']:.0f} ms (median) before "
        f"mcp-acp's own start-up ({own_ms:.0f} ms) begins.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
