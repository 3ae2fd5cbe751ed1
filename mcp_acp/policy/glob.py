"""Glob patterns compiled to anchored regular expressions.

Path-style globs (paths, URIs, MCP methods):

* ``*`` matches within one segment — it never crosses ``/``;
* ``?`` matches one character other than ``/``;
* ``**`` as a whole segment crosses segments: ``/p/**`` matches ``/p`` and everything
  below it, ``**/x`` matches ``x`` at any depth;
* everything else is literal — ``[``, ``]``, ``{`` and ``}`` included, so a request path
  containing glob characters is only ever matched literally.

Name-style globs (tool names, client names) are the same except that ``*`` matches any run
of characters: names have no segments.

``ignore_case`` folds case as Python's ``re`` does, which is Unicode case: ``i`` also
matches the dotless i (U+0131) and ``k`` the Kelvin sign. ``ascii_case`` limits it to ASCII
letters, so a look-alike name is not the name it imitates (allow rules, the tool registry).

DNS names are segment-style globs whose segments are labels (``separator="."``): ``*`` stays
within one label, ``**.example.org`` matches ``example.org`` and every name below it.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["compile_glob", "deny_skeleton", "literal_prefix"]


@lru_cache(maxsize=4096)
def compile_glob(
    pattern: str,
    *,
    paths: bool = True,
    ignore_case: bool = False,
    ascii_case: bool = False,
    separator: str = "/",
) -> re.Pattern[str]:
    """Compile ``pattern``; match with ``.fullmatch`` semantics (the regex is anchored).

    ``paths`` makes it segment-style, with segments divided by ``separator``;
    ``ascii_case`` makes ``ignore_case`` fold ASCII letters only."""
    flags = (re.IGNORECASE | (re.ASCII if ascii_case else 0)) if ignore_case else 0
    if not paths:
        return re.compile("(?s:" + _name_regex(pattern) + r")\Z", flags)
    sep = re.escape(separator)
    star = f"[^{sep}]*"
    one = f"[^{sep}]"
    out: list[str] = []
    kinds: list[str] = []  # per item of out: "char" (one character, never the separator),
    # "star" (a single *), or "other" (the separator, ** in its forms)
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**", i):
            at_start = i == 0 or pattern[i - 1] == separator
            end = i + 2
            if at_start and end < n and pattern[end] == separator:
                out.append(f"(?:.*{sep})?")  # "**/" : zero or more whole segments
                kinds.append("other")
                i = end + 1
                continue
            if at_start and end == n and out and out[-1] == sep:
                out[-1] = f"(?:{sep}.*)?"  # trailing "/**" also matches the directory itself
                i = end
                continue
            out.append(".*")
            kinds.append("other")
            i = end
            continue
        char = pattern[i]
        if char == "*":
            out.append(star)
            kinds.append("star")
        else:
            out.append(one if char == "?" else re.escape(char))
            kinds.append("other" if char == separator else "char")
        i += 1
    _commit_middle_pieces(out, kinds, f"[^{sep}]*?")
    return re.compile("(?s:" + "".join(out) + r")\Z", flags)


def _commit_middle_pieces(out: list[str], kinds: list[str], lazy_star: str) -> None:
    """Rewrite ``*piece*`` within one segment so that it cannot backtrack catastrophically.

    ``[^/]*a[^/]*a[^/]*c`` tries every placement of every ``a`` before giving up: time grows
    with the segment's length to the power of the number of stars. A piece between two
    single stars of one segment matches a fixed number of characters, none of them the
    separator; so the leftmost place where it fits is as good as any later one (the next
    star, which cannot cross the separator either, absorbs the difference). Such a piece
    is found by a lazy scan inside an atomic group, ``(?>[^/]*?piece)``, which the engine
    never re-enters.
    """
    for start, kind in enumerate(kinds):
        if kind != "star":
            continue
        end = start + 1
        while end < len(kinds) and kinds[end] == "char":
            end += 1
        if end > start + 1 and end < len(kinds) and kinds[end] == "star":
            out[start] = "(?>" + lazy_star
            out[end - 1] += ")"


def _piece(text: str) -> str:
    return "".join("." if char == "?" else re.escape(char) for char in text)


def _name_regex(pattern: str) -> str:
    """A name-style glob as a regex that cannot backtrack catastrophically.

    ``a*b*c`` as ``a.*b.*c`` tries every way of placing ``b`` before giving up: time grows
    with the name's length to the power of the number of stars (``*a*a*a*c`` against 500
    ``a`` took minutes). Every piece between stars matches a fixed number of characters,
    so the leftmost place where a middle piece fits is as good as any later one — whatever
    the rest needs, the following star can absorb the difference. So each middle piece is
    found by a lazy scan inside an atomic group ``(?>.*?piece)``, which the engine never
    re-enters: linear in the name's length for each piece.
    """
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return _piece(pattern)
    middle = "".join(f"(?>.*?{_piece(p)})" for p in pieces[1:-1] if p)
    return _piece(pieces[0]) + middle + ".*" + _piece(pieces[-1])


def literal_prefix(pattern: str) -> str:
    """The part of ``pattern`` before its first wildcard (for indexing)."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=len(pattern))
    return pattern[:cut]


def deny_skeleton(text: str) -> str:
    """Fold case and compatibility forms, so a deny rule is not dodged by ``SECRETS``."""
    if text.isascii():
        return text.lower()  # NFKC leaves ASCII alone, and casefold equals lower there
    return unicodedata.normalize("NFKC", text).casefold()
