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

Matching cannot backtrack catastrophically, whatever the number of stars: a path glob whose
``**`` are whole segments (all that policies accept) costs about len(path) * len(pattern)
steps, any other glob at most len(text)^2 * len(pattern).
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
    return re.compile("(?s:" + _path_regex(pattern, separator) + r")\Z", flags)


# The atoms of a path glob. A "char" atom matches one character other than the separator
# (a literal or ``?``), "sep" the separator itself, "star" a run of characters other than
# the separator; "ahead" matches no character, before a separator or at the end. Between
# them the gaps: "any" (any string) and "dirs" (``**/``: nothing, or whole segments —
# anything that ends with the separator). _path_regex writes the gaps.
_Atom = tuple[str, str]


def _path_atoms(pattern: str, separator: str) -> list[_Atom]:
    sep = re.escape(separator)
    atoms: list[_Atom] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**", i):
            at_start = i == 0 or pattern[i - 1] == separator
            end = i + 2
            if at_start and end < n and pattern[end] == separator:
                atoms.append(("dirs", "**/"))
                i = end + 1
                continue
            if at_start and end == n and atoms and atoms[-1][0] == "sep":
                # trailing "/**" also matches the directory itself: (?:/.*)? at the end,
                # which is nothing or a separator and anything
                atoms[-1] = ("ahead", f"(?![^{sep}])")
                atoms.append(("any", "**"))
                i = end
                continue
            atoms.append(("any", "**"))
            i = end
            continue
        char = pattern[i]
        if char == "*":
            atoms.append(("star", f"[^{sep}]*"))
        elif char == "?":
            atoms.append(("char", f"[^{sep}]"))
        else:
            atoms.append(("sep" if char == separator else "char", re.escape(char)))
        i += 1
    return atoms


def _path_regex(pattern: str, separator: str) -> str:
    """A path glob as a regex whose backtracking is bounded by a polynomial.

    Without ``**`` only single stars can backtrack, within one segment
    (:func:`_commit_middle_pieces`). Each ``**`` is a gap that can swallow any string (or
    any whole segments), and gaps in a row backtrack into each other:
    ``**/a/**/a/**/a/**/b`` against ``a/`` repeated 400 times tried every placement of
    every ``a`` (seconds; hours at 4 KiB). So every piece between gaps but the last is
    committed: found at its leftmost place by a lazy gap in an atomic group,
    ``(?>(?:[^/]*+/)*?piece)`` or ``(?>.*?piece)``, which the engine never re-enters. (The
    lazy ``(?:[^/]*+/)*?`` tries the places ``(?:.*/)?`` can end at, nearest first.) The
    last piece keeps the gap as it was, ``(?:.*/)?`` or ``.*``; two gaps in a row are one.

    That is sound because such a group finds, from where it starts, the match of its piece
    with the smallest end, and what follows it is a gap that also covers the characters
    between that end and any later one (a ``**/`` gap is entered after a separator the
    pattern names, so it does from any end). Smallest end: a piece is segments joined by
    separators; each of them but the last ends where the path's segment ends (no other
    atom matches the separator), so the start of the last one never moves left as the
    piece's start moves right; in that last segment the committed ``*piece*`` groups and
    lazy stars put every part at its leftmost place, which no placement from a start in the
    same segment beats, and a start in a later segment ends later anyway.

    Each group is entered once, at one place, and scans ahead of it: the whole match costs
    about len(path) * len(pattern) steps when each gap before a piece is ``**/`` (the piece
    then starts only after a separator), at most len(path)^2 * len(pattern) with a gap
    inside a segment (``a**b``, which policies refuse).
    """
    lazy_star = f"[^{re.escape(separator)}]*?"
    pieces: list[tuple[str, list[_Atom]]] = [("", [])]  # (the gap before it, its atoms)
    for kind, text in _path_atoms(pattern, separator):
        if kind not in ("any", "dirs"):
            pieces[-1][1].append((kind, text))
        elif len(pieces) > 1 and not pieces[-1][1]:  # two gaps in a row are one
            pieces[-1] = ("dirs" if kind == pieces[-1][0] == "dirs" else "any", [])
        else:
            pieces.append((kind, []))
    if len(pieces) == 1:
        return _piece_regex(pieces[0][1], lazy_star, commit=False)
    sep = re.escape(separator)
    first = pieces[0][1]
    out = ["(?>" + _piece_regex(first, lazy_star, commit=True) + ")"] if first else []
    for gap, atoms in pieces[1:-1]:
        lazy_gap = f"(?:[^{sep}]*+{sep})*?" if gap == "dirs" else ".*?"
        out.append("(?>" + lazy_gap + _piece_regex(atoms, lazy_star, commit=True) + ")")
    gap, atoms = pieces[-1]
    out.append(
        (f"(?:.*{sep})?" if gap == "dirs" else ".*") + _piece_regex(atoms, lazy_star, commit=False)
    )
    return "".join(out)


def _piece_regex(atoms: list[_Atom], lazy_star: str, *, commit: bool) -> str:
    """Atoms without a gap; ``commit``: lazy stars, so that the first match has the
    smallest end (for an atomic group followed by a gap)."""
    out = [text for _, text in atoms]
    kinds = [kind for kind, _ in atoms]
    if commit:  # a star left out of the atomic groups below is lazy too
        out = [lazy_star if kind == "star" else text for kind, text in atoms]
    _commit_middle_pieces(out, kinds, lazy_star)
    return "".join(out)


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
