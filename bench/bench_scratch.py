"""What every benchmark script shares: nearest-rank percentiles, correctness checks that
raise, a scratch directory removed afterwards, and the report printed and (for a full run)
written to its file."""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def cpu_model() -> str:
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_text(values: Sequence[float]) -> str:
    """A load average triple as the results files print it: ``1.23 / 1.32 / 1.72``."""
    return " / ".join(f"{value:.2f}" for value in values)


def check(condition: bool, message: str) -> None:
    """A correctness check of a benchmark run (never a timing assertion)."""
    if not condition:
        raise AssertionError(message)


@contextmanager
def scratch_dir(parent: Path | None, name: str) -> Iterator[Path]:
    """A fresh ``<parent>/<name>-<pid>`` (parent default: ``bench/.tmp``), deleted after,
    with the parent too if this made it."""
    parent = (parent or HERE / ".tmp").resolve()
    made_parent = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    base = parent / f"{name}-{os.getpid()}"
    base.mkdir()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if made_parent:
            shutil.rmtree(parent, ignore_errors=True)


def publish(text: str, out: Path | None, default: Path, *, quick: bool) -> None:
    """Print the report; write it to ``out``, or to ``default`` for a full run."""
    print(text)
    target = out or (None if quick else default)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"written to {target}", file=sys.stderr)


def bench_parser(
    doc: str, default_out: Path, *, quick: str, scratch: str
) -> argparse.ArgumentParser:
    """The options of a benchmark that writes scratch files: ``--quick`` (``quick`` says what
    it runs), ``--dir`` (where ``scratch`` goes) and ``--out`` (the results file)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"parent directory for {scratch} (default: bench/.tmp next to this script); a "
        "fresh subdirectory is made and deleted",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"markdown results file (default: {default_out.relative_to(HERE.parent)} for a "
        "full run; a --quick run writes nothing unless --out is given)",
    )
    return parser
