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
    sep = re.escape(separator)
    star = f"[^{sep}]*" if paths else ".*"
    one = f"[^{sep}]" if paths else "."
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if paths and pattern.startswith("**", i):
            at_start = i == 0 or pattern[i - 1] == separator
            end = i + 2
            if at_start and end < n and pattern[end] == separator:
                out.append(f"(?:.*{sep})?")  # "**/" : zero or more whole segments
                i = end + 1
                continue
            if at_start and end == n and out and out[-1] == sep:
                out[-1] = f"(?:{sep}.*)?"  # trailing "/**" also matches the directory itself
                i = end
                continue
            out.append(".*")
            i = end
            continue
        char = pattern[i]
        out.append(star if char == "*" else one if char == "?" else re.escape(char))
        i += 1
    flags = (re.IGNORECASE | (re.ASCII if ascii_case else 0)) if ignore_case else 0
    return re.compile("(?s:" + "".join(out) + r")\Z", flags)


def literal_prefix(pattern: str) -> str:
    """The part of ``pattern`` before its first wildcard (for indexing)."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=len(pattern))
    return pattern[:cut]


def deny_skeleton(text: str) -> str:
    """Fold case and compatibility forms, so a deny rule is not dodged by ``SECRETS``."""
    if text.isascii():
        return text.lower()  # NFKC leaves ASCII alone, and casefold equals lower there
    return unicodedata.normalize("NFKC", text).casefold()
