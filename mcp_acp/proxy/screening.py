"""List-entry screening: what an entry of a backend's ``tools/list``, ``resources/list``,
``resources/templates/list`` or ``prompts/list`` must not carry.

Each entry reaches the model, or the user, in full: a tool's description, its input schema
(property names, their descriptions, enum values) and its annotations; a resource's or a
template's name, title, description, URI and MIME type; a prompt's description and its
arguments' descriptions; icons and ``_meta`` of any. A poisoned entry is an injection that
runs when the list is read, before any request could be decided ("tool poisoning", "line
jumping"). :func:`screen_entry` reads every string of an entry, keys included, and names
what no honest entry needs:

* a hidden-instruction tag — ``<IMPORTANT>``, ``<SYSTEM>``, ``<instructions>``, … (any
  case, opening or closing);
* a control character (ANSI escape sequences among them; tab, newline and carriage return
  are allowed);
* an invisible or bidirectional-control character (zero-width characters, bidi overrides
  and isolates, word joiners, the BOM, soft hyphen, Hangul fillers, Unicode tags — the
  characters that let text say one thing to the model and show another to the user);
* a string longer than :data:`MAX_STRING_BYTES` (8 KiB in UTF-8) — except an icon's
  ``src`` that is a base64 ``data:`` URI of an image (``data:image/png;base64,…``), which
  only an image viewer reads, and whose alphabet holds no tag, control or invisible
  character.

The relay quarantines an entry with any finding: it is left out of the list the client
gets, and requests that use it are denied — a tool's calls (``builtin-tool-quarantined``),
a resource's reads (``builtin-resource-quarantined``), a prompt's gets
(``builtin-prompt-quarantined``); see ``mcp_acp.proxy.relay``. This is a screen for known
markers, not a proof of innocence: instructions in plain words pass it, and the policy on
arguments (paths, tools, URIs) is what holds whatever a description says.

:func:`screen_result` reads what the backend has the client's model read — the result (or
the error) answering a ``tools/call``, ``resources/read``, ``prompts/get`` or
``tasks/result``, the ``params``
of a ``sampling/createMessage`` request — with the same detectors: tags, control and
invisible characters, not length (a result may well be long). Each string is read alone, and
the texts of adjacent text items of a list (content blocks ``{"type": "text", …}``, a
resource's text contents) are read once more joined, for a tag split across them
(``"<IMPORT"``, ``"ANT>"``). It changes nothing in what is relayed; a finding marks the
session as having seen untrusted content (see :mod:`mcp_acp.proxy.pep`). Its reading is
bounded (:data:`MAX_RESULT_STRINGS`, :data:`MAX_RESULT_CHARS`; the joined texts are among
the characters read within them): what lies beyond is not read, and is a finding itself
(fail closed).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from typing import Any

__all__ = [
    "MAX_FINDINGS",
    "MAX_RESULT_CHARS",
    "MAX_RESULT_STRINGS",
    "MAX_RESULT_VALUES",
    "MAX_STRING_BYTES",
    "screen_entry",
    "screen_result",
]

MAX_STRING_BYTES = 8 * 1024
#: Findings reported per entry (the first ones, in document order); one is enough to
#: quarantine it.
MAX_FINDINGS = 5
#: Strings (keys included) and characters of one tool result that are read; past either,
#: the rest is not read, and that is a finding.
MAX_RESULT_STRINGS = 10_000
MAX_RESULT_CHARS = 1024 * 1024
#: Values (of every kind: numbers too) in the result's objects and arrays that are walked.
MAX_RESULT_VALUES = 100_000

_MAX_LABEL = 40
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.$@-]{1,40}")
#: ``<`` then spaces, an optional ``/`` (with its own spaces) and a word. One way only to
#: read the spaces: ``<\s*/?\s*`` read N spaces in N ways, quadratic time — a backend's
#: ``<`` and 100,000 spaces held the event loop for minutes.
_TAG = re.compile(
    r"<\s*(?:/\s*)?(important|system|instructions?|secret|hidden|admin)\b[^<>]{0,64}>",
    re.IGNORECASE,
)
_ICON_SRC = re.compile(r"icons\[\d+\]\.src")
_BASE64_IMAGE = re.compile(r"data:image/[a-z0-9.+-]{1,40};base64,[A-Za-z0-9+/]*={0,2}")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: Shows as nothing but changes what the text says, or how it is ordered on screen.
#: (Variation selectors, which emoji use, and ordinary spaces such as U+00A0 are allowed.)
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u2069\u3164\ufeff\uffa0\U000e0000-\U000e007f]"
)

#: A control or an invisible character, in one pass over a result's string (one class).
_CHARS = re.compile(_CONTROL.pattern[:-1] + _INVISIBLE.pattern[1:])


#: Where a value is in what :func:`screen_result` reads: the name of the whole
#: (``"result"``), or the place of the object or list holding it and its key or index
#: there — a chain spelt out (:func:`_spell`) only when a finding names it.
_Place = str | tuple["_Place", str | int]


def screen_entry(entry: dict[str, Any]) -> list[str]:
    """What in ``entry`` (one tool, resource, resource template or prompt of a list result)
    calls for quarantine, as ``"<where>: <what>"`` lines (at most :data:`MAX_FINDINGS`);
    empty if nothing does."""
    findings: list[str] = []
    for where, text in _strings(entry, ""):
        if _ICON_SRC.fullmatch(where) and _BASE64_IMAGE.fullmatch(text):
            continue  # an embedded image: no text to hide anything in
        finding = _finding(text)
        if finding is not None:
            findings.append(f"{where or 'a key'}: {finding}")
            if len(findings) == MAX_FINDINGS:
                break
    return findings


def screen_result(value: Any, where: str = "result") -> list[str]:
    """What in ``value`` (a result, a JSON-RPC error, a request's params) carries a
    hidden-instruction tag, a control character or an invisible character, as ``"<where>:
    <what>"`` lines (at most :data:`MAX_FINDINGS`); length is no finding. A tag split across
    adjacent text items of a list is found in their texts joined, once every string is read
    (reported after the others). Reads at most :data:`MAX_RESULT_STRINGS` strings and
    :data:`MAX_RESULT_CHARS` characters, and walks at most :data:`MAX_RESULT_VALUES` values:
    if there is more, the last line says it was not all scanned (and no joined texts are
    read). Where a value is (a :data:`_Place`) is spelt out only for a finding: results are
    on the hot path, and findings are rare."""
    findings: list[str] = []
    strings = chars = values = 0
    # (where the item is, the item, whether it is the key of the member at that place)
    stack: list[tuple[_Place, Any, bool]] = [(where, value, False)]
    runs: list[tuple[_Place, int, list[str]]] = []  # adjacent text items: read again, joined
    while stack:
        at, item, is_key = stack.pop()
        if isinstance(item, str):  # the most common item: tested first
            strings += 1
            chars += len(item)
            if strings > MAX_RESULT_STRINGS or chars > MAX_RESULT_CHARS:
                findings.append(
                    f"{_spell(at, is_key)}: not all scanned (more than {MAX_RESULT_STRINGS:,} "
                    f"strings or {MAX_RESULT_CHARS:,} characters)"
                )
                break
            finding = _marker(item)
            if finding is not None:
                findings.append(f"{_spell(at, is_key)}: {finding}")
                if len(findings) == MAX_FINDINGS:
                    break
            continue
        is_dict = isinstance(item, dict)
        if not is_dict and not isinstance(item, list):
            continue  # a number, true, false or null
        values += len(item)
        if values > MAX_RESULT_VALUES:  # checked before its items are taken up
            findings.append(
                f"{_spell(at)}: not all scanned (more than {MAX_RESULT_VALUES:,} values)"
            )
            break
        if is_dict:
            for key, inner in reversed(list(item.items())):
                member = (at, key)
                stack.append((member, inner, False))
                stack.append((member, key, True))
        else:
            if len(item) > 1:
                _text_runs(at, item, runs)
            stack.extend(((at, n), inner, False) for n, inner in reversed(list(enumerate(item))))
    else:  # all read, within the budgets: so are the runs' texts, once more joined
        for at, first, texts in runs:
            split = _split_tag(texts)
            if split is not None:
                start, end, tag = split
                spelt = _spell(at)
                items = f"{spelt}[{first + start}].text + {'… + ' if end - start > 1 else ''}"
                findings.append(
                    f"{items}{spelt}[{first + end}].text: a hidden-instruction tag {tag!r} "
                    "split across text items"
                )
                if len(findings) == MAX_FINDINGS:
                    break
    return findings


def _spell(place: _Place, is_key: bool = False) -> str:
    """``place`` as a finding names it: ``result.content[0].text``, and for a key itself
    ``result.content[0].text (the key)``."""
    steps: list[str] = []
    while isinstance(place, tuple):
        place, step = place
        steps.append(f"[{step}]" if isinstance(step, int) else f".{_label(step)}")
    spelt = place + "".join(reversed(steps))
    return f"{spelt} (the key)" if is_key else spelt


def _text_runs(at: _Place, items: list[Any], runs: list[tuple[_Place, int, list[str]]]) -> None:
    """Add to ``runs`` each run of two or more adjacent text items of the list ``items``
    (at ``at``), as where the list is, the index of its first item, and their texts. A text
    item is what a model reads as one piece of text among others: a content block
    ``{"type": "text", "text": …}``, or a resource's text contents (``uri`` and ``text``,
    no ``type``)."""
    first = 0
    texts: list[str] = []
    for n, inner in enumerate(items):
        text = inner.get("text") if type(inner) is dict else None
        if type(text) is str and (
            inner.get("type") == "text" or ("type" not in inner and "uri" in inner)
        ):
            if not texts:
                first = n
            texts.append(text)
            continue
        if len(texts) > 1:
            runs.append((at, first, texts))
        texts = []
    if len(texts) > 1:
        runs.append((at, first, texts))


def _split_tag(texts: list[str]) -> tuple[int, int, str] | None:
    """The first hidden-instruction tag that ``texts`` joined hold across a seam — not
    within one text, which is read alone — as the indexes of the texts it begins and ends
    in, and the tag; None if there is none. (A tag holds no ``<`` but its first character:
    it begins in a text, not the last, that has one.)"""
    if not any("<" in text for text in texts[:-1]):
        return None
    joined = "".join(texts)
    seams: list[int] = []  # where each text ends in ``joined``
    at = 0
    for text in texts:
        at += len(text)
        seams.append(at)
    for tag in _TAG.finditer(joined):
        start = bisect.bisect_right(seams, tag.start())
        end = bisect.bisect_left(seams, tag.end())
        if start != end:
            return start, end, tag.group()
    return None


def _marker(text: str) -> str | None:
    """The first marker in ``text`` — a hidden-instruction tag, else the first control or
    invisible character — in as few passes as may be (results are on the hot path and can
    be long): a tag needs a ``<``; ASCII text has no invisible character, and printable
    ASCII text (no tab or line break either) no control character."""
    if "<" in text and (tag := _TAG.search(text)) is not None:
        return f"a hidden-instruction tag {tag.group()!r}"
    ascii_only = text.isascii()
    if ascii_only and text.isprintable():
        return None
    found = (_CONTROL if ascii_only else _CHARS).search(text)
    if found is None:
        return None
    char = found.group()
    if _CONTROL.match(char) is not None:
        return f"control character U+{ord(char):04X}"
    return f"invisible or bidirectional-control character U+{ord(char):04X}"


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string in ``value`` — keys as well as values — with where it is."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{_label(key)}" if where else _label(key)
            yield f"{inner} (the key)", key
            yield from _strings(item, inner)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")


def _label(key: str) -> str:
    """A key as it may appear in a log line: itself if plain, else escaped and cut short —
    a key is the backend's text, and may hold the very characters screened for."""
    return key if _PLAIN_KEY.fullmatch(key) else ascii(key[:_MAX_LABEL])


def _finding(text: str) -> str | None:
    # a string of up to MAX_STRING_BYTES / 4 characters fits (4 bytes a character at most)
    if len(text) > MAX_STRING_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > (
        MAX_STRING_BYTES
    ):
        return f"longer than {MAX_STRING_BYTES // 1024} KiB"
    return _marker(text)
