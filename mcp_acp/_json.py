"""Strict JSON for files a human writes (the config, the policy): a key given twice is an
error, not "the last one wins" — two readers of the same file must not see two meanings.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["DuplicateKeyError", "json_path", "loads_strict", "value_lines"]

_WS = re.compile(r"[ \t\n\r]*")


class DuplicateKeyError(ValueError):
    """An object in the document has the same key twice.

    ``path`` is the JSON path of the second copy (``rules`` or ``backend.env.HOME``) and
    ``line`` its line number, or ``0`` if it could not be located.
    """

    def __init__(self, key: str, path: str, line: int) -> None:
        super().__init__(f"key {key!r} appears twice")
        self.key = key
        self.path = path
        self.line = line


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return obj


_decode = json.JSONDecoder(object_pairs_hook=_unique).decode


def json_path(loc: tuple[int | str, ...]) -> str:
    """``("rules", 0, "id")`` as ``rules[0].id``; the empty path as ``(top level)``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def value_lines(text: str) -> dict[tuple[int | str, ...], int]:
    """The line of every value in the JSON document ``text``, keyed by its path (for error
    messages). A key that repeats one before it in its object raises :class:`_Found` with
    that key's path and line."""
    decoder = json.JSONDecoder()
    lines: dict[tuple[int | str, ...], int] = {}

    def skip(index: int) -> int:
        return _WS.match(text, index).end()  # type: ignore[union-attr]

    def line_of(index: int) -> int:
        return text.count("\n", 0, index) + 1

    def value(index: int, path: tuple[int | str, ...]) -> int:
        index = skip(index)
        lines[path] = line_of(index)
        char = text[index : index + 1]
        if char == "{":
            index = skip(index + 1)
            if text[index] == "}":
                return index + 1
            keys: set[str] = set()
            while True:
                start = index
                key, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
                if key in keys:
                    raise _Found((*path, key), line_of(start))
                keys.add(key)
                index = skip(index) + 1  # the ':'
                index = skip(value(index, (*path, key)))
                if text[index] == "}":
                    return index + 1
                index = skip(index + 1)
        if char == "[":
            index = skip(index + 1)
            if text[index] == "]":
                return index + 1
            position = 0
            while True:
                index = skip(value(index, (*path, position)))
                if text[index] == "]":
                    return index + 1
                index += 1
                position += 1
        _, end = decoder.raw_decode(text, index)
        return end

    value(0, ())
    return lines


class _Found(Exception):
    def __init__(self, path: tuple[int | str, ...], line: int) -> None:
        self.path = path
        self.line = line


def _locate_duplicate(text: str) -> tuple[tuple[int | str, ...], int] | None:
    """The path and line of the first key that repeats one before it in its object."""
    try:
        value_lines(text)
    except _Found as found:
        return found.path, found.line
    except (RecursionError, ValueError, IndexError):
        return None
    return None


def loads_strict(text: str) -> Any:
    """``json.loads(text)``, except that a key given twice in one object raises
    :class:`DuplicateKeyError`. ``json.JSONDecodeError`` and ``RecursionError`` (nesting
    too deep) pass through."""
    try:
        return _decode(text)
    except _Duplicate as dup:
        where = _locate_duplicate(text)
        if where is None:
            raise DuplicateKeyError(dup.key, dup.key, 0) from None
        raise DuplicateKeyError(dup.key, json_path(where[0]), where[1]) from None
