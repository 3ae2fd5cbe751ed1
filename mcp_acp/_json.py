"""Strict JSON for files a human writes (the config, the policy): a key given twice is an
error, not "the last one wins" — two readers of the same file must not see two meanings.

Every reader here (and the relay's, :mod:`mcp_acp.proxy.messages`) also refuses an integer
of more than :data:`MAX_INT_DIGITS` digits with a line that says so: Python's own refusal
is a plain ``ValueError`` that names neither the file nor the number.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

__all__ = [
    "MAX_INT_DIGITS",
    "DuplicateKeyError",
    "NumberTooLongError",
    "TooManyDigitsError",
    "byte_order_mark",
    "checked_int",
    "deeper_than",
    "int_digit_limit",
    "json_path",
    "loads",
    "loads_strict",
    "value_lines",
]


def byte_order_mark(raw: bytes) -> str | None:
    """What a file's byte order mark says it is — as the words after the file's name in an
    error (Notepad and PowerShell write one) — or ``None`` if it starts with none."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return "starts with a byte order mark (BOM)"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "is UTF-16 text (it starts with a byte order mark)"
    return None


#: The most digits an integer in JSON may have: Python's default limit for converting text
#: to an int (``sys.int_max_str_digits``), kept even where that limit is lifted
#: (``PYTHONINTMAXSTRDIGITS=0``) — the conversion takes time quadratic in the length.
MAX_INT_DIGITS = 4300

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


class TooManyDigitsError(ValueError):
    """Raised by :func:`checked_int` (which knows no position); :func:`loads` and
    :func:`loads_strict` turn it into :class:`NumberTooLongError`."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a number has more than {limit} digits")
        self.limit = limit


class NumberTooLongError(json.JSONDecodeError):
    """An integer in the document has more than :data:`MAX_INT_DIGITS` digits (or the
    interpreter's lower limit). A ``JSONDecodeError`` — ``pos``, ``lineno`` and ``colno``
    are the number's — so that a reader that reports bad JSON reports this as well."""

    def __init__(self, doc: str, pos: int, limit: int) -> None:
        super().__init__(f"a number has more than {limit} digits", doc, pos)
        self.limit = limit


def int_digit_limit() -> int:
    """:data:`MAX_INT_DIGITS`, or the interpreter's limit if that is lower."""
    return min(MAX_INT_DIGITS, sys.get_int_max_str_digits() or MAX_INT_DIGITS)


def checked_int(text: str) -> int:
    """A JSON decoder's ``parse_int``: ``int(text)``, or :class:`TooManyDigitsError`."""
    if len(text) - text.startswith("-") <= MAX_INT_DIGITS:
        try:
            return int(text)
        except ValueError:  # the interpreter's own limit is lower
            pass
    raise TooManyDigitsError(int_digit_limit())


#: A JSON string (skipped whole: digits in it are no number) or an integer — not the
#: integer part of a fraction or exponent, nor an exponent's digits.
_STRING_OR_INT = re.compile(r'"(?:[^"\\]|\\.)*"|(?<![\d.eE+-])-?(\d+)(?![\d.eE])', re.S)


def _too_long(text: str, limit: int) -> NumberTooLongError:
    """The error for the first integer of ``text`` with more than ``limit`` digits (the one
    the decoder stopped at: everything before it was read)."""
    for match in _STRING_OR_INT.finditer(text):
        if match.group(1) is not None and len(match.group(1)) > limit:
            return NumberTooLongError(text, match.start(), limit)
    return NumberTooLongError(text, 0, limit)  # not reached: the decoder found one


def deeper_than(value: Any, limit: int) -> bool:
    """Whether the parsed document ``value`` nests arrays or objects more than ``limit``
    deep (a top-level object is 1). Walked without recursion: a document that parsed may
    still be deeper than what reads it next takes — pydantic writes out 255 levels, a
    recursive walk of ours the interpreter's stack."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


_plain_decode = json.JSONDecoder(parse_int=checked_int).decode


def loads(text: str) -> Any:
    """``json.loads(text)``, except that an integer of too many digits raises
    :class:`NumberTooLongError` (a ``JSONDecodeError``). ``RecursionError`` passes."""
    try:
        return _plain_decode(text)
    except TooManyDigitsError as exc:
        raise _too_long(text, exc.limit) from None


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


_decode = json.JSONDecoder(object_pairs_hook=_unique, parse_int=checked_int).decode


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
    :class:`DuplicateKeyError`, and an integer of too many digits
    :class:`NumberTooLongError` (a ``JSONDecodeError``). ``json.JSONDecodeError`` and
    ``RecursionError`` (nesting too deep) pass through."""
    try:
        return _decode(text)
    except TooManyDigitsError as exc:
        raise _too_long(text, exc.limit) from None
    except _Duplicate as dup:
        where = _locate_duplicate(text)
        if where is None:
            raise DuplicateKeyError(dup.key, dup.key, 0) from None
        raise DuplicateKeyError(dup.key, json_path(where[0]), where[1]) from None
