"""The docs never tell a reader to install an extra from PyPI, where it is not published.

How to install from a clone (`pip install . ./plugins/…`, or `nox -s build` then
`pip install --find-links dist 'mcp-acp[…]'`) is proven by tests/test_packaging.py."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted(ROOT.glob("plugins/*/README.md")),
    *sorted(ROOT.glob("examples/*/README.md")),
]
FROM_PYPI = re.compile(r"""pip install (?!--find-links)\S*\s*["']mcp-acp\[""")


def test_no_doc_installs_an_extra_from_pypi_without_saying_it_is_not_published() -> None:
    wrong = []
    for path in DOCS:
        lines = ["", *path.read_text().splitlines()]
        for number in range(1, len(lines)):
            said = lines[number - 1] + " " + lines[number]  # it may be on the line before
            if FROM_PYPI.search(lines[number]) and "once published" not in said.lower():
                wrong.append(f"{path.relative_to(ROOT)}:{number}: {lines[number].strip()}")
    assert wrong == []


def test_every_plugin_folder_the_docs_name_exists() -> None:
    named = {
        folder
        for path in DOCS
        for folder in re.findall(r"pip install \. ((?:\./\S+/mcp-acp-[\w-]+ ?)+)", path.read_text())
    }
    assert named
    for folders in named:
        for folder in folders.split():
            assert (ROOT / folder / "pyproject.toml").is_file(), folder
