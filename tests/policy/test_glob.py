"""Globs with many stars: the same answers as the naive matcher, in time linear in the
name's (or the segment's) length whatever the number of stars."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from naive_policy import name_glob, path_glob

from mcp_acp.policy.glob import compile_glob


@settings(max_examples=3000, deadline=None)
@given(
    pattern=st.text(alphabet="aAb_?*", max_size=9),
    text=st.text(alphabet="aAb_\n", max_size=12),
    fold=st.booleans(),
)
def test_name_globs_agree_with_the_naive_matcher(pattern: str, text: str, fold: bool) -> None:
    regex = compile_glob(pattern, paths=False, ignore_case=fold, ascii_case=fold)
    assert (regex.fullmatch(text) is not None) == name_glob(pattern, text, fold)


@settings(max_examples=3000, deadline=None)
@given(pattern=st.text(alphabet="ab/?*", max_size=10), text=st.text(alphabet="ab/", max_size=12))
def test_path_globs_agree_with_the_naive_matcher(pattern: str, text: str) -> None:
    assume("**" not in pattern)  # the naive matcher knows ** only as a whole segment
    assert (compile_glob(pattern).fullmatch(text) is not None) == path_glob(pattern, text)


#: Each of these took from minutes to forever against a long name when every star was a
#: backtracking ``.*``; the child's timeout only guards against that hang.
PATHOLOGICAL = """
from mcp_acp.policy.glob import compile_glob
for pattern, name in [
    ("*a*a*a*c", "a" * 20_000),
    ("*_*_*_*x", "_" * 20_000),
    ("*a*a*a*a*a*a*", "a" * 5 + "b" * 20_000),
    ("a?*?a*a*?c", "a" * 20_000),
]:
    assert compile_glob(pattern, paths=False).fullmatch(name) is None, pattern
    assert compile_glob(pattern, paths=False, ignore_case=True).fullmatch(name.upper()) is None
for pattern, path in [
    ("/p/*a*a*a*c", "/p/" + "a" * 20_000),
    ("/p/**/*_*_*_*x/*", "/p/q/" + "_" * 20_000 + "/y"),
]:
    assert compile_glob(pattern).fullmatch(path) is None, pattern
print("done")
"""


def test_many_stars_against_a_long_name_do_not_backtrack() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PATHOLOGICAL], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "done", result.stderr
