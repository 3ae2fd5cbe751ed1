"""The session's memory between requests, alone (:mod:`mcp_acp.proxy.limits`): the
per-tool rate limit and the key a remembered approval is kept under. Only time is
injected."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_acp.models import Provenance, Subject
from mcp_acp.proxy.limits import ToolRateLimit, approval_key
from mcp_acp.request import build_decision_request
from mcp_acp.tools import ToolRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_counts_a_tool_whatever_the_case_of_its_name() -> None:
    """``Echo``, ``ECHO`` and ``echo`` are one tool to the policy and the registry (tool
    globs ignore ASCII case): they spend one budget, not one each."""
    limit = ToolRateLimit(3, Clock())
    for name in ("echo", "Echo", "ECHO"):
        assert limit.exceeded(name) is None
        limit.count(name)
    for name in ("echo", "eCHo", "ECHO", "echO"):
        assert limit.exceeded(name) == 3
    assert limit.exceeded("echo2") is None


def test_the_rate_limit_forgets_tools_whose_window_has_emptied() -> None:
    """One call each of 100,000 made-up names at 50 a second (the flood guard's default
    rate): the limiter tracks no more names than a window and a sweep's slack hold, not
    every name ever seen; a name still in its window is still counted."""
    clock = Clock()
    limit = ToolRateLimit(30, clock)
    most = 0
    for n in range(100_000):
        name = f"read_{n:08d}"
        assert limit.exceeded(name) is None
        limit.count(name)
        most = max(most, len(limit))
        clock.now += 0.02
    in_window = int(ToolRateLimit.WINDOW / 0.02) + 1  # names called in the last 60 s
    assert most <= 2 * in_window
    clock.now += ToolRateLimit.WINDOW + 1
    assert limit.exceeded("read_00099999") is None
    limit.count("fresh")  # a sweep may come only as the limiter grows; the window decides
    for _ in range(29):
        limit.count("fresh")
    assert limit.exceeded("FRESH") == 30


def _call_key(tool: str, arguments: dict[str, object], path_arguments: list[str]) -> object:
    """The approval key of alice's call of ``tool`` with ``arguments``, whose paths must be
    read from ``path_arguments`` (sorted)."""
    params = {"name": tool, "arguments": arguments}
    request = build_decision_request(
        method="tools/call",
        params=params,
        subject=Subject(subject_id="alice", provenance=Provenance.TOKEN, issuer="https://idp"),
        registry=ToolRegistry.default(),
        backend_id="b",
        session_id="s",
        request_id="1",
    )
    assert sorted(p.argument for p in request.resource.paths) == path_arguments
    return approval_key(request, params)


@pytest.mark.parametrize(
    ("approved", "again", "same"),
    [
        ("dir/", "dir/", True),
        ("dir/", "dir//", True),
        ("dir/", "dir/./", True),
        ("dir/", "dir", False),
        ("dir/", "dir/.", True),
        ("dir", "dir/", False),
        ("dir", "dir/.", False),
        ("dir", "./dir", True),
        ("dir", "dir", True),
    ],
)
def test_a_remembered_approval_keeps_a_trailing_separator(
    tmp_path: Path, approved: str, again: str, same: bool
) -> None:
    """``sync(src="/data/dir/")`` copies what is in the directory, ``src="/data/dir"`` the
    directory itself: an approval of one is not of the other. ``dir/`` and ``dir/.`` both
    name what is in it; the separators and ``.`` segments in between still normalise away."""
    (tmp_path / "dir").mkdir()

    def key(src: str) -> object:
        arguments = {"src": f"{tmp_path}/{src}", "dst": f"{tmp_path}/backup"}
        return _call_key("sync", arguments, ["dst", "src"])

    assert (key(approved) == key(again)) is same


def test_a_remembered_approval_keeps_the_order_of_a_list_of_paths(tmp_path: Path) -> None:
    """A tool may read its list of paths in order (``concat(files=[header, body])``,
    ``cp``-style ``paths=[from, to]``): an approval of one order is not of the other. The
    paths were sorted into the key, so both orders had one key."""

    def key(*files: str) -> object:
        arguments = {"files": [f"{tmp_path}/{f}" for f in files]}
        return _call_key("concat", arguments, ["files"] * len(files))

    assert key("a", "b") == key("a", "b")
    assert key("a", "b") != key("b", "a")
    assert key("a", "b") != key("a", "b", "a")
