"""JSON-RPC messages as the relay sees them: newline-delimited JSON, parsed once.

The relay forwards a permitted message as the exact bytes it received; it only parses to
learn what the message is (request, notification, response) and what the policy needs.
A transport that decodes messages itself (streamable HTTP) hands over dicts instead:
:func:`from_body` classifies those the same way.

The exact bytes go on only if every reader splits them into the same messages: a line
with a carriage return (JSON whitespace, but a line end to readers that accept ``\r``, as
Python's text streams do) or a raw U+2028, U+2029 or U+0085 inside a string (line ends to
``str.splitlines``) could carry a second message past the policy. In such a line the
carriage returns are dropped and those three characters written as escapes — the same
JSON value, every other byte as it came. ``NaN`` and ``Infinity``, which are not JSON,
make a line invalid.

Because the policy decides on this parse and the other side reads the bytes, a message
that JSON readers can read two ways is marked ``ambiguous``: an object with a key twice
(Python keeps the last, others the first), keys that differ only in case (some readers,
such as Go's ``encoding/json``, match field names case-insensitively), or a key with a
control or invisible character. A message decoded by its transport (:func:`from_body`)
is marked by the same rule, object by object (a key twice cannot reach it: the decoder
kept one, and it is re-encoded once). The relay refuses such a message wherever it decides
on its content (see :attr:`Message.ambiguous`). A key the proxy reads written only in another
letter case (``"Arguments"``) is no pair, but such a reader takes it for the member the
proxy found missing: the message is marked ``miscased`` (:data:`READ_MEMBERS`,
:func:`miscased`), and the relay refuses it wherever it would pass it on.

Request ids are read exactly here, but a JavaScript reader holds numbers as doubles:
2^53 and 2^53+1 are one number to it, and an answer could be matched to the wrong
request. A request whose id is an integer beyond ±(2^53-1) is invalid. So is a message
mixing a request's members and an answer's — a ``method`` with a ``result`` or an
``error``, an answer with both: the mcp Python SDK reads any message with an ``error``
object as an error answer, where the relay would read a request, or the result. And a
method with a space at an end or a control or invisible character (``"tools/call "``,
``tools/call`` and a NUL), which a reader that trims it or ends it at the NUL takes for
another.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Literal

import attrs

from mcp_acp._json import TooManyDigitsError, checked_int

__all__ = [
    "DENIED",
    "INVALID_REQUEST",
    "MAX_MESSAGE_BYTES",
    "MAX_SAFE_ID",
    "PARSE_ERROR",
    "READ_MEMBERS",
    "TOO_LARGE",
    "Message",
    "encode",
    "error_response",
    "from_body",
    "miscased",
    "parse",
    "pipe_sized_reads",
    "read_line",
]

#: JSON-RPC error code for "denied by policy". Outside the JSON-RPC reserved range used by
#: the ``mcp`` SDK (-32000, -32001, -32020..-32022, -32042) and the standard -326xx/-327xx.
DENIED = -32003
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
#: A Linux pipe holds 64 KiB: no single read can return more.
PIPE_READ_BYTES = 64 * 1024
#: What :func:`read_line` returns for a line over :data:`MAX_MESSAGE_BYTES`.
TOO_LARGE = b"\x00too-large"
#: Arrays and objects nested deeper than this are refused: no MCP message needs it, and
#: Python's recursion limit (about 1,000 frames) must never be reached by a hostile line.
MAX_DEPTH = 200
#: Bytes some line readers take for the end of a line, besides ``\n``: a carriage return,
#: and (in UTF-8) U+2028, U+2029 and U+0085.
_LINE_BREAKS = re.compile(b"\r|\xe2\x80[\xa8\xa9]|\xc2\x85")
#: The largest integer id every reader reads exactly: JavaScript's numbers are doubles,
#: whose integers are exact only up to 2^53 - 1 (``Number.MAX_SAFE_INTEGER``).
MAX_SAFE_ID = 2**53 - 1
#: The members the proxy or the policy reads, by the object they are read from: the
#: message itself, its ``params`` (the tool, its arguments, the URI, the request a
#: cancellation names, what the client says it is), the ``_meta`` and ``clientInfo`` in
#: them, and a ``result`` (the entries of a list it filters, requests for the client it
#: decides on). Python reads keys as spelt; readers that match struct fields in any letter
#: case (Go's ``encoding/json``, which mark3labs/mcp-go uses) take ``"Arguments"`` for
#: ``arguments``. A message spelling one of these only another way is refused
#: (:func:`miscased`). One place: add a member here when the proxy starts reading it.
READ_MEMBERS: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset({"jsonrpc", "id", "method", "params", "result", "error"}),
    ("params",): frozenset(
        {"name", "arguments", "uri", "requestId", "_meta", "clientInfo"}
        | {"ref", "argument", "context"}  # completion/complete
    ),
    ("params", "ref"): frozenset({"type", "uri", "name"}),
    ("params", "argument"): frozenset({"name", "value"}),
    ("params", "context"): frozenset({"arguments"}),
    ("params", "_meta"): frozenset(
        {"io.modelcontextprotocol/clientInfo", "io.modelcontextprotocol/protocolVersion"}
    ),
    ("params", "clientInfo"): frozenset({"name", "version"}),
    ("params", "_meta", "io.modelcontextprotocol/clientInfo"): frozenset({"name", "version"}),
    ("result",): frozenset({"inputRequests", "tools", "resources", "resourceTemplates", "prompts"}),
}
#: For each object of :data:`READ_MEMBERS`: each member's name casefolded -> as spelt.
_FOLDED = {
    where: {name.casefold(): name for name in names} for where, names in READ_MEMBERS.items()
}
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

Kind = Literal["request", "notification", "response", "invalid"]


def _id_of(message: Message) -> Any:
    return message.body.get("id")


def _method_of(message: Message) -> str:
    method = message.body.get("method")
    return method if isinstance(method, str) else ""


def _params_of(message: Message) -> dict[str, Any]:
    params = message.body.get("params")
    return params if isinstance(params, dict) else {}


@attrs.frozen(slots=True)
class Message:
    """One parsed line.

    ``id``, ``method`` and ``params`` are read from ``body`` once, as the message is made:
    the relay reads them a few dozen times per message, and ``body`` is never changed."""

    kind: Kind
    raw: bytes
    body: dict[str, Any]
    problem: str | None = None
    #: Why another JSON reader could read ``raw`` differently from ``body`` (see the module
    #: docstring), or None. ``body`` is then Python's reading, good only for the ``id``.
    ambiguous: str | None = None
    #: Which key the proxy reads is written only in another letter case, and how it is
    #: spelt (:func:`miscased`), or None: what the policy decides on is not what a reader
    #: that ignores case would act on.
    miscased: str | None = None
    #: ``body["id"]`` as sent, whatever it is (None without one)
    id: Any = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(_id_of, takes_self=True)
    )
    #: ``body["method"]`` if it is a string, else ""
    method: str = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(_method_of, takes_self=True)
    )
    #: ``body["params"]`` if it is an object, else an empty one
    params: dict[str, Any] = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(_params_of, takes_self=True)
    )

    @property
    def reply_id(self) -> str | int | None:
        """The id to answer with: this message's, if it is a valid JSON-RPC id (a string or
        an integer), else ``null`` — as JSON-RPC says when the id cannot be determined."""
        return _valid_id(self.body.get("id"))

    @property
    def cancels(self) -> str | int | None:
        """For ``notifications/cancelled``: the id of the request it cancels, if it names a
        valid one (``true`` is not request ``1``, a list or an object names nothing)."""
        if self.method != "notifications/cancelled":
            return None
        return _valid_id(self.params.get("requestId"))


async def read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line (without the newline), :data:`TOO_LARGE` for an oversized one (which
    is consumed), or None at end of input."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError:
        while True:  # discard the rest of the oversized line
            try:
                await reader.readuntil(b"\n")
                return TOO_LARGE
            except asyncio.LimitOverrunError as again:
                await reader.readexactly(again.consumed)
            except asyncio.IncompleteReadError:
                return None
    return line.rstrip(b"\r\n")


def pipe_sized_reads(transport: asyncio.BaseTransport | None) -> None:
    """Have an asyncio read-pipe transport ask for at most :data:`PIPE_READ_BYTES` per read.

    Its default, 256 KiB, makes every ``os.read`` allocate (and free) a buffer large enough
    to be ``mmap``ed: about 19 µs per read here against about 1 µs, twice per relayed call
    (measured; see bench/README.md). A pipe never returns more than it holds anyway."""
    if transport is not None and getattr(transport, "max_size", 0) > PIPE_READ_BYTES:
        transport.max_size = PIPE_READ_BYTES  # type: ignore[attr-defined]


class _Ambiguous(ValueError):
    """A JSON object whose keys another reader could take differently."""


#: Keys of objects already found unambiguous (in the order written): messages repeat a few
#: shapes (``jsonrpc, id, method, params``, ``name, arguments``, ``content, isError``), and
#: looking one up costs a fraction of checking it. A shape is remembered only if it is
#: short (:data:`_CLEAR_KEY_CHARS`), and only so many (:data:`_CLEAR_SHAPES`): a sender
#: inventing keys cannot make it grow past that. Whether keys are unambiguous depends on
#: the keys alone, so nothing here can go stale.
_CLEAR_KEYS: set[tuple[str, ...]] = set()
_CLEAR_SHAPES = 1024
_CLEAR_KEY_CHARS = 256


def _unambiguous(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`parse`: an object whose keys every reader reads
    alike, or :class:`_Ambiguous` saying why not. (It runs for every object of every
    message: the usual case is a C-level check that no key was repeated, and a lookup of
    the keys among those already checked — else three C-level checks.)"""
    obj = dict(pairs)
    if _alike(obj, len(pairs)):
        return obj
    raise _Ambiguous(_why_not_alike([key for key, _ in pairs]))


def _alike(obj: dict[str, Any], written: int) -> bool:
    """Whether every reader reads the keys of ``obj`` (``written`` keys as sent) alike: no
    key twice, no two that differ only in case, no control or invisible character. Key
    shapes found alike are remembered (:data:`_CLEAR_KEYS`)."""
    if len(obj) != written:
        return False
    keys = tuple(obj)
    if keys in _CLEAR_KEYS:
        return True
    joined = "".join(keys)
    if (len(keys) < 2 or len(set(map(str.casefold, keys))) == len(keys)) and (joined.isprintable()):
        if len(joined) <= _CLEAR_KEY_CHARS and len(_CLEAR_KEYS) < _CLEAR_SHAPES:
            _CLEAR_KEYS.add(keys)
        return True
    return False


def _why_not_alike(keys: list[str]) -> str:
    """Which of ``keys`` (an object's, as written) another reader could take differently."""
    seen: dict[str, str] = {}  # casefolded key -> the key as first written
    for key in keys:
        if not key.isprintable():
            return f"the key {key!r} contains a control or invisible character"
        folded = key.casefold()
        if folded in seen:
            if seen[folded] == key:
                return f"the key {key!r} appears twice in one object"
            return f"the keys {seen[folded]!r} and {key!r} differ only in case"
        seen[folded] = key
    return "the keys of one object are ambiguous"  # not reached: one check failed


def _ambiguity(body: Any) -> str | None:
    """Why a decoded message is ambiguous, as :func:`parse` says it of a line: the rule of
    :func:`_unambiguous`, applied to each object of ``body`` (a key cannot be there twice:
    the decoder kept one). None if every object's keys are read alike."""
    pending = [body]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if not _alike(value, len(value)):
                return f"ambiguous JSON: {_why_not_alike(list(value))}"
            pending.extend(reversed(value.values()))
        elif isinstance(value, list):
            pending.extend(reversed(value))
    return None


class _NotJson(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity``: Python reads them, JSON has no such value;
    or a number beyond a double's range (``1e400``), which Python reads as infinity — so
    the record would show ``null`` and its digest ``Infinity`` for what the peer sent; or
    an integer of more than 4,300 digits (:data:`~mcp_acp._json.MAX_INT_DIGITS`), which
    Python refuses to read."""


def _not_json(name: str) -> Any:
    raise _NotJson(f"not valid JSON: {name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if value - value != 0:  # infinite (NaN cannot come from a JSON number)
        shown = text if len(text) <= 32 else f"{text[:32]}…"
        raise _NotJson(f"not valid JSON here: the number {shown} is beyond a double's range")
    return value


def _int(text: str) -> int:
    try:
        return checked_int(text)
    except TooManyDigitsError as exc:  # Python's own refusal names no number: say which
        raise _NotJson(f"not valid JSON here: {exc}") from None


def _int_or_none(text: str) -> int | None:
    try:
        return checked_int(text)
    except TooManyDigitsError:
        return None


_decode = json.JSONDecoder(
    object_pairs_hook=_unambiguous, parse_constant=_not_json, parse_float=_finite, parse_int=_int
).decode

#: How a line :func:`_decode` refused is read for its id (and, if it is only ambiguous,
#: classified): as Python's json module reads it, an integer too long to read as ``None``.
_decode_leniently = json.JSONDecoder(parse_int=_int_or_none).decode


def _too_deep(line: bytes) -> bool:
    """Whether ``line`` nests arrays and objects deeper than :data:`MAX_DEPTH`. Two counts
    decide for almost every message; otherwise, with C-level steps only: drop escaped
    backslashes and quotes, keep what lies outside strings, keep its brackets, and peel
    one level of innermost pairs per pass."""
    if line.count(b"[") + line.count(b"{") <= MAX_DEPTH:
        return False
    unescaped = line.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(_SQUARE, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        peeled = brackets.replace(b"[]", b"")
        if not peeled or len(peeled) == len(brackets):  # all peeled, or unbalanced
            return False
        brackets = peeled
    return True


def parse(line: bytes) -> Message:
    """Classify one line; never raises (an unusable line is ``invalid`` with a reason, one
    that JSON readers could read two ways is marked :attr:`Message.ambiguous`)."""
    if _too_deep(line):
        return Message("invalid", line, {}, f"arrays or objects nested deeper than {MAX_DEPTH}")
    try:
        body = _decode(line.decode())
    except _Ambiguous as exc:
        try:  # the rest of the line is read only now: it may not be JSON at all
            lenient = _decode_leniently(line.decode())
        except (ValueError, RecursionError) as error:
            return Message("invalid", line, {}, f"not valid JSON: {error}")
        message = _classify(lenient, line)
        return attrs.evolve(message, ambiguous=f"ambiguous JSON: {exc}")
    except _NotJson as exc:  # NaN, Infinity, 1e400, 5,000 digits: read leniently for the id
        try:
            lenient = _decode_leniently(line.decode())
        except (ValueError, RecursionError):  # and not JSON further on
            lenient = {}
        return Message("invalid", line, lenient if isinstance(lenient, dict) else {}, str(exc))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return Message("invalid", line, {}, f"not valid JSON: {exc}")
    if (b"\r" in line or not line.isascii()) and _LINE_BREAKS.search(line):
        line = _one_line(line)
    return _classify(body, line)


def _one_line(line: bytes) -> bytes:
    """``line`` (valid JSON, valid UTF-8) as every reader splits it: a carriage return can
    stand only between tokens, where it is whitespace, and goes; U+2028, U+2029 and U+0085
    can stand only inside strings, where their escapes mean the same. The bytes of every
    other token — numbers above all — stay as they were."""
    return (
        line.replace(b"\r", b"")
        .replace(b"\xe2\x80\xa8", b"\\u2028")
        .replace(b"\xe2\x80\xa9", b"\\u2029")
        .replace(b"\xc2\x85", b"\\u0085")
    )


def from_body(body: dict[str, Any]) -> Message:
    """Classify a message that arrived already decoded (from a transport that parses, such
    as streamable HTTP); its ``raw`` is the compact encoding. It is marked
    :attr:`Message.ambiguous` as :func:`parse` would mark it: keys that differ only in case,
    or a key with a control or invisible character, in any of its objects."""
    message = _classify(body, encode(body))
    why = _ambiguity(body)
    return message if why is None else attrs.evolve(message, ambiguous=why)


_NOT_JSON_RPC = "not a JSON-RPC 2.0 object (batches are not supported)"


def _classify(body: Any, line: bytes) -> Message:
    if not isinstance(body, dict):
        return Message("invalid", line, {}, _NOT_JSON_RPC)
    message = _kind(body, line)
    misspelt = miscased(body)
    if misspelt is None:
        return message
    if message.kind == "invalid":  # for want of a member spelt otherwise, most likely
        return attrs.evolve(message, problem=misspelt)
    return attrs.evolve(message, miscased=misspelt)


def _kind(body: dict[str, Any], line: bytes) -> Message:
    if body.get("jsonrpc") != "2.0":
        return Message("invalid", line, body, _NOT_JSON_RPC)
    request_id = _valid_id(body.get("id"))
    if "method" in body:
        if not isinstance(body["method"], str):
            return Message("invalid", line, body, "method is not a string")
        if "result" in body or "error" in body:
            return Message("invalid", line, body, _MIXED)
        method = body["method"]
        if not method.isprintable() or method != method.strip():
            return Message("invalid", line, body, _odd_method(method))
        if "id" in body and request_id is None:  # taken for a notification, or routed wrong
            return Message("invalid", line, body, "the id must be a string or an integer")
        if isinstance(request_id, int) and not -MAX_SAFE_ID <= request_id <= MAX_SAFE_ID:
            return Message("invalid", line, body, _unsafe_id(request_id))
        return Message("request" if request_id is not None else "notification", line, body)
    if "result" in body and "error" in body:
        return Message("invalid", line, body, _BOTH)
    if request_id is not None and ("result" in body or "error" in body):
        return Message("response", line, body)
    return Message("invalid", line, body, "neither a request, a notification nor a response")


#: Why a message with a method and a ``result`` or ``error`` is refused, and one with both:
#: readers take such a mix apart differently — the mcp Python SDK reads any message with an
#: ``error`` object as an error answer (to the request with its id), where the relay read a
#: request, or screened the result.
_MIXED = (
    "a request or notification with an error or result member: JSON-RPC keeps them apart, "
    "and some readers (the mcp Python SDK) take such a message for an answer; send the "
    "request without them"
)
_BOTH = (
    "an answer with both a result and an error: JSON-RPC allows one, and readers differ on "
    "which counts (the mcp Python SDK takes the error); send one"
)


def _odd_method(method: str) -> str:
    """Why a method with a space at an end, or a control or invisible character, is refused:
    no MCP method has one, and a reader that trims the name or ends it at a NUL would read
    another method (``tools/call``) than the policy decided on (one it may allow by a glob,
    as a call of no tool: nothing held back for calls applies)."""
    shown = ascii(method if len(method) <= 64 else f"{method[:64]}…")
    return (
        f"the method {shown} has a space at an end or a control or invisible character; "
        "MCP methods have neither: send the method's name as it is"
    )


def _unsafe_id(request_id: int) -> str:
    """Why an integer id beyond ±:data:`MAX_SAFE_ID` is refused, and what to use instead."""
    return (
        f"the id {request_id} is beyond ±{MAX_SAFE_ID} (2^53-1): a JavaScript reader rounds "
        "it, so two ids could be one and an answer go to the wrong request; use an integer "
        "within that range, or a string"
    )


def miscased(body: dict[str, Any]) -> str | None:
    """Why ``body`` (a message, or a request for the client inside a result) cannot be
    passed on as read: an object of :data:`READ_MEMBERS` has a key that is one of its
    members in another letter case (``"Arguments"``, ``"URI"``, ``"Params"``), which the
    proxy does not read and a reader that ignores case takes for the member. None if it
    has none. (A few dictionary lookups per message: the objects are small.)"""
    for where, names in READ_MEMBERS.items():
        value: Any = body
        for step in where:
            value = value.get(step) if isinstance(value, dict) else None
        if not isinstance(value, dict):
            continue
        for key in value:
            if key in names:
                continue
            spelt = _FOLDED[where].get(key.casefold()) if isinstance(key, str) else None
            if spelt is not None:
                place = ".".join(where) or "the message"
                return (
                    f"{place} has the key {key!r}, which a reader that ignores letter case "
                    f"(Go's encoding/json) takes for {spelt!r} and the proxy does not read; "
                    f"spell it {spelt!r}"
                )
    return None


def _valid_id(value: Any) -> str | int | None:
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def error_response(
    request_id: Any, code: int, message: str, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON-RPC error answering ``request_id`` (``null`` if it is not a valid id)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": _valid_id(request_id), "error": error}


def encode(body: dict[str, Any]) -> bytes:
    """One line of ASCII JSON. ``ValueError`` for a value JSON cannot hold (NaN, an
    infinite float): never ``NaN`` or ``Infinity`` on the wire."""
    return (
        json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode() + b"\n"
    )
