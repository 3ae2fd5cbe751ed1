"""Globs with several ``**``: the same answers as the regexes compiled before the gaps were
committed (kept here as the reference), and in polynomial time on hostile paths.

``**/a/**/a/**/a/**/b`` used to try every placement of every ``a`` against a path of
repeated ``a/`` segments: 14 s for 806 bytes, hours at 4 KiB, on the proxy's event loop."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_acp.policy.glob import compile_glob


def reference_glob(
    pattern: str,
    *,
    paths: bool = True,
    ignore_case: bool = False,
    ascii_case: bool = False,
    separator: str = "/",
) -> re.Pattern[str]:
    """``compile_glob`` as it was before ``**`` pieces were committed (commit 77e57da)."""
    flags = (re.IGNORECASE | (re.ASCII if ascii_case else 0)) if ignore_case else 0
    if not paths:
        pieces = pattern.split("*")
        if len(pieces) == 1:
            return re.compile("(?s:" + _ref_piece(pattern) + r")\Z", flags)
        middle = "".join(f"(?>.*?{_ref_piece(p)})" for p in pieces[1:-1] if p)
        name = _ref_piece(pieces[0]) + middle + ".*" + _ref_piece(pieces[-1])
        return re.compile("(?s:" + name + r")\Z", flags)
    sep = re.escape(separator)
    out: list[str] = []
    kinds: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**", i):
            at_start = i == 0 or pattern[i - 1] == separator
            end = i + 2
            if at_start and end < n and pattern[end] == separator:
                out.append(f"(?:.*{sep})?")
                kinds.append("other")
                i = end + 1
                continue
            if at_start and end == n and out and out[-1] == sep:
                out[-1] = f"(?:{sep}.*)?"
                i = end
                continue
            out.append(".*")
            kinds.append("other")
            i = end
            continue
        char = pattern[i]
        if char == "*":
            out.append(f"[^{sep}]*")
            kinds.append("star")
        else:
            out.append(f"[^{sep}]" if char == "?" else re.escape(char))
            kinds.append("other" if char == separator else "char")
        i += 1
    for start, kind in enumerate(kinds):
        if kind != "star":
            continue
        end = start + 1
        while end < len(kinds) and kinds[end] == "char":
            end += 1
        if end > start + 1 and end < len(kinds) and kinds[end] == "star":
            out[start] = f"(?>[^{sep}]*?"
            out[end - 1] += ")"
    return re.compile("(?s:" + "".join(out) + r")\Z", flags)


def _ref_piece(text: str) -> str:
    return "".join("." if char == "?" else re.escape(char) for char in text)


#: letters with case twins inside and outside ASCII: the Kelvin sign folds to k, the
#: dotless i and the dotted capital I to i, under Unicode folding only
LETTERS = "aAkK\u212aiI\u0131\u0130"


@st.composite
def globs(draw: st.DrawFn, separator: str) -> str:
    """Whole-segment ``**`` (as policies write them) or ``*`` runs anywhere (``a**b``)."""
    if draw(st.booleans()):
        return draw(st.text(alphabet="ak?*" + separator, max_size=12))
    segment = st.one_of(
        st.just("**"), st.text(alphabet="akK?*", max_size=4), st.sampled_from(["*", "?", "a*k"])
    )
    segments = draw(st.lists(segment, min_size=1, max_size=7))
    lead = draw(st.sampled_from(["", separator]))
    return lead + separator.join(segments)


@st.composite
def subjects(draw: st.DrawFn, pattern: str, separator: str) -> str:
    """Often an instance of ``pattern`` (so that both answers occur), else any text."""
    chars = st.text(alphabet=LETTERS + "b\n" + separator, max_size=14)
    if draw(st.booleans()):
        return draw(chars)
    word = st.text(alphabet=LETTERS + "b", max_size=3)
    out = []
    for part in re.split(r"(\*\*|\*|\?)", pattern):
        if part == "**":
            out.append(draw(st.text(alphabet="aKb" + separator, max_size=6)))
        elif part == "*":
            out.append(draw(word))
        elif part == "?":
            out.append(draw(st.sampled_from(["a", "K", separator])))
        else:
            out.append(part)
    return "".join(out)


def agree(pattern: str, text: str, **options: Any) -> None:
    new = compile_glob(pattern, **options).fullmatch(text) is not None
    old = reference_glob(pattern, **options).fullmatch(text) is not None
    assert new == old, (pattern, text, options)


@settings(max_examples=5000, deadline=None)
@given(data=st.data(), separator=st.sampled_from("/."), case=st.sampled_from(range(3)))
def test_path_globs_answer_as_before(data: st.DataObject, separator: str, case: int) -> None:
    pattern = data.draw(globs(separator))
    text = data.draw(subjects(pattern, separator))
    options = {"separator": separator, "ignore_case": case > 0, "ascii_case": case == 2}
    agree(pattern, text, **options)
    agree(pattern, pattern, **options)  # a subject full of glob characters


@settings(max_examples=2000, deadline=None)
@given(data=st.data(), case=st.sampled_from(range(3)))
def test_name_globs_answer_as_before(data: st.DataObject, case: int) -> None:
    pattern = data.draw(globs("/"))
    text = data.draw(subjects(pattern, "/"))
    agree(pattern, text, paths=False, ignore_case=case > 0, ascii_case=case == 2)


def test_the_committed_pieces_examples() -> None:
    """Hand-picked corners: a gap at either end, gaps in a row, stars beside gaps."""
    for pattern, yes, no in [
        ("/p/**", ["/p", "/p/", "/p/x/y"], ["/p_secret", "/", "/q/p"]),
        ("**/secrets/**", ["secrets", "/x/secrets", "/secrets/a/b"], ["/xsecrets", "/x/secretsx"]),
        ("**/a/**/a/**/b", ["a/a/b", "/a/x/a/b", "/a/a/a/b"], ["/a/b", "/a/a/ab", "/aa/a/b"]),
        (
            "**/node_modules/**/dist/**",
            ["/node_modules/dist", "/n/node_modules/x/dist/y"],
            ["/node_modules/distx", "/node_modules/x/dist_"],
        ),
        ("/a/*b*c/**/x*y*/**", ["/a/bc/xy", "/a/zbzc/q/r/xzyz/t"], ["/a/bc/x/y", "/a/cb/xy"]),
        ("**/**", ["", "/", "a/b"], []),
        ("/**", ["", "/x"], ["x"]),
        ("a**b", ["ab", "a/x/b"], ["a/", "b"]),
        ("*a***b", ["ab", "xa/y/b"], ["x/ab"]),
    ]:
        for text in yes:
            assert compile_glob(pattern).fullmatch(text), (pattern, text)
        for text in no:
            assert not compile_glob(pattern).fullmatch(text), (pattern, text)
        for text in yes + no:
            agree(pattern, text)


#: Each pattern against a 4 KiB path that it does not match took hours when the gaps
#: backtracked into each other; the child's timeout only guards against that hang.
HOSTILE = r"""
from mcp_acp.policy.glob import compile_glob, deny_skeleton
many = "/tmp/" + "a/" * 2045 + "c"  # 4096 bytes of a/ segments
stars = "/tmp/" + "a" * 4000 + "/" + "a/" * 40 + "c"
assert len(many) == 4096
for gaps in range(4, 7):
    pattern = "/".join(["**", "a"] * (gaps - 1)) + "/**/b"  # **/a/**/a/**/a/**/b and longer
    for fold in (False, True):
        assert compile_glob(pattern, ignore_case=fold).fullmatch(many) is None, pattern
        assert compile_glob(pattern, ignore_case=fold).fullmatch(many[:-1] + "b"), pattern
    starry = pattern.replace("/a/", "/a*/")
    assert compile_glob(starry).fullmatch(stars) is None, starry
    assert compile_glob(starry).fullmatch(stars[:-1] + "b"), starry
for pattern in [
    "**/node_modules/**/dist/**/x", "/tmp/**/a/**/a/**/a/**/a/**", "**/a/**/a/**/a/**/a"
]:
    path = "/tmp/" + "node_modules/dist/a/" * 200 + "y"
    expect = pattern.endswith("/**")
    assert (compile_glob(pattern).fullmatch(path) is not None) == expect, pattern
    assert (compile_glob(deny_skeleton(pattern), ignore_case=True).fullmatch(
        deny_skeleton(path.upper())) is not None) == expect, pattern
print("done")
"""


def test_several_double_stars_against_a_long_path_do_not_backtrack() -> None:
    result = subprocess.run(
        [sys.executable, "-c", HOSTILE], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "done", result.stderr
