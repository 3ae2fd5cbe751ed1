"""The docs never tell a reader to install ``mcp-acp`` by name from a package index.

The name ``mcp-acp`` on PyPI belongs to an unrelated project, which installs a package
named ``mcp_acp`` too and publishes higher versions: ``pip install 'mcp-acp[oidc]'``, with
or without ``--find-links``, would install it. The docs install from a clone, by path
(``pip install . ./plugins/…``), or from wheel files by path; that both work is proven by
tests/test_packaging.py (which installs from a wheelhouse with ``--no-index``)."""

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
#: a pip command that names the distribution (optionally quoted, with extras or a version)
BY_NAME = re.compile(
    r"pip install\b[^`\n#(;]*?"  # the command's own words: not a comment or an aside
    r"(?<![\w./-])[\"']?mcp-acp(?:\[[\w,-]*\])?(?:[<>=!~][^\s\"'`]*)?[\"']?(?=[\s`]|$)"
)


def by_name(path: Path) -> list[str]:
    """The lines of ``path`` with a pip command that installs ``mcp-acp`` by name (but
    not the README's warning, a block quote, which names them)."""
    return [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BY_NAME.search(line) and not line.startswith(">")  # the warning quotes them
    ]


def test_no_doc_installs_mcp_acp_by_name() -> None:
    assert [line for path in DOCS for line in by_name(path)] == []


def test_the_check_finds_what_it_forbids(tmp_path: Path) -> None:
    """The pattern catches the commands that install the other project, and leaves paths
    alone (the check must be able to fail)."""
    doc = tmp_path / "README.md"
    wrong = [
        "pip install mcp-acp",
        "pip install 'mcp-acp[oidc,mtls]'",
        "`pip install --find-links dist 'mcp-acp[oidc]'`",
        'pip install -U "mcp-acp>=0.1"',
    ]
    right = [
        "pip install . ./plugins/mcp-acp-oidc",
        "pip install dist/mcp_acp-*.whl dist/mcp_acp_oidc-*.whl",
        "pip install ./my-plugin  # needs mcp-acp installed first",
        "pip install -e .",
    ]
    doc.write_text("\n".join(wrong + right) + "\n")
    found = [BY_NAME.search(line) is not None for line in wrong + right]
    assert found == [True] * len(wrong) + [False] * len(right)


def test_the_readme_says_why() -> None:
    """Every doc that installs from a clone can point to the reason; the reason is there."""
    readme = (ROOT / "README.md").read_text()
    assert "Never install `mcp-acp` by name from a package index" in readme


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
