"""Build a wheel for every distribution in the repository into one directory.

Distributions: the core (``.``), every folder under ``plugins/`` and ``examples/`` that has
a ``pyproject.toml``. Used by ``nox -s build`` and by the clean-venv install test, so both
prove the same thing. Standard library only; needs the ``build`` package in the running
interpreter.

    python scripts/build_wheels.py [OUTDIR]        # default: dist/
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def distributions(root: Path = ROOT) -> list[Path]:
    """The project folders to build, core first."""
    found = [root]
    for parent in ("plugins", "examples"):
        found += sorted(p.parent for p in (root / parent).glob("*/pyproject.toml"))
    return found


def build_all(outdir: Path, root: Path = ROOT) -> list[Path]:
    """Build every distribution's wheel into ``outdir``; return the wheel paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    before = set(outdir.glob("*.whl"))
    for project in distributions(root):
        print(f"building {project.relative_to(root) if project != root else '.'}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(project)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return sorted(set(outdir.glob("*.whl")) - before) or sorted(outdir.glob("*.whl"))


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist"
    for wheel in build_all(out.absolute()):
        print(wheel)
