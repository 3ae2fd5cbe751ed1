"""What the HTTP channel takes from a streamable-HTTP backend: an ``httpx2`` transport
between the ``mcp`` SDK's client and the connection pool.

Left to itself, the SDK reads a JSON answer whole into memory, however large, and ends the
whole session when one request's exchange fails (an answer that stalls or is cut short, a
connection that cannot be made). Every request of the channel passes this transport, which:

* refuses an answer larger than :data:`~mcp_acp.proxy.messages.MAX_MESSAGE_BYTES`, as the
  stdio path refuses such a line: a body other than an event stream is read here, counted,
  and given up as soon as it passes the limit (or at once when its ``Content-Length`` says
  it will); the SDK bounds each server-sent event itself (``max_sse_event_size``);
* refuses a compressed answer (the channel asks for none): it would grow past the count
  only after it, when the HTTP library inflates it;
* refuses an event stream or a JSON answer that declares a charset other than UTF-8: the
  SDK would decode it in that charset, while the checks here (below) read UTF-8 bytes;
* fails a request whose answer gives a session id MCP does not allow (visible ASCII only,
  here at most :data:`MAX_SESSION_ID` bytes): the SDK would send it back on every request
  and, unable to, end the session; ``initialize`` fails instead;
* fails a request answered with a redirect, naming where to: the request was decided for
  the configured URL, and the configured credentials go with it (the channel's client
  follows none either: ``max_redirects`` 0, which the SDK's own following obeys);
* ends a request's exchange at its deadline — connecting, headers, body or event stream as
  a whole (``request_timeout_seconds``), however busy the backend keeps the connection,
  the SDK's resumptions of its event stream included — except the session's GET stream
  and ``subscriptions/listen``, which stay open by design;
* paces and bounds the reconnections of an event stream (:class:`_Exchange`): the SDK
  reconnects one that ends, as soon as its ``retry:`` says (0: at once), for as long as
  each reconnection ends normally — a backend that ends every stream at once had the
  session's GET stream reconnected a thousand times a second for ever, and a request's
  stream resumed until the SDK's recursion broke the whole session. A reconnection waits
  until :data:`RECONNECT_SECONDS` after the previous connection of its stream opened, and
  a request's stream is resumed at most :data:`MAX_RESUMPTIONS` times;
* turns a failure of one exchange into an answer to that request alone: an HTTP 502 whose
  body is the JSON-RPC error, which the SDK hands on as the request's error (and drops for
  a notification). A connection that could not be made at all is reported to the channel
  first, which decides whether the backend is gone (:class:`GuardedTransport`);
* passes on, from any event stream, only events of kind ``message`` (the only kind the
  SDK reads; it would print another's name, escapes and all, to stderr), and from the
  event stream that answers a request only answers to that request (:class:`_OwnAnswers`).
  The SDK gives any answer it finds there the request's id, so an answer the backend sent
  for another id — a stray, one meant for another client — would reach the client as the
  answer to its request;
* passes on, from any event stream, only ``retry:`` fields of up to 9 digits: the SDK
  could not convert a longer one's milliseconds to seconds, and the error ended the whole
  session.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2

from mcp_acp.errors import exception_text

__all__ = [
    "BACKEND_FAILED",
    "UNGUARDED",
    "GuardedTransport",
    "IdentityRefused",
    "describe",
    "redirect_target",
]

log = logging.getLogger(__name__)

#: JSON-RPC error code of an answer the backend failed to give (as the relay's).
BACKEND_FAILED = -32000
#: A request extension: pass the request on as it is (the channel's probe reports its own
#: errors).
UNGUARDED = "mcp_acp.unguarded"
#: Requests whose answer is an event stream meant to stay open (2026-07-28): no deadline.
OPEN_ENDED = frozenset({"subscriptions/listen"})
#: The header the channel names a 2026-07-28 request's method in.
_METHOD_HEADER = "mcp-method"
#: The least time between the openings of one event stream: a reconnection waits for the
#: rest (the SDK's own default wait, which a backend's ``retry:`` may shorten to 0).
RECONNECT_SECONDS = 1.0
#: How often the SDK may resume the event stream of one request (a GET with
#: ``Last-Event-ID`` after the stream ended without the answer). The SDK resumes by
#: recursion, a level for each: far below Python's recursion limit, which a backend that
#: ends every stream at once reached in under a second, breaking the whole session.
MAX_RESUMPTIONS = 100
#: A ``retry:`` field the SDK is given: digits only, as the SSE standard reads one (the
#: SDK's ``int()`` also takes a sign, spaces and ``_``), and few enough that the
#: milliseconds convert to seconds — 400 digits raised OverflowError in the SDK's task,
#: which ended the whole session. Nine digits wait up to 11 days.
_RETRY = re.compile(rb"[0-9]{1,9}")
#: The line ends of server-sent events.
_LINE_END = re.compile(rb"\r\n|\r|\n")
#: A session id as MCP allows it (visible ASCII, 0x21-0x7E), and at most this long: each
#: request carries it back.
MAX_SESSION_ID = 4096
_SESSION_ID = re.compile(rb"[\x21-\x7e]+")
#: The only charset an answer may declare (as the SDK reads it: decoded in that charset),
#: by its names: what this transport checks in an event stream is its UTF-8 bytes.
UTF_8 = frozenset({"utf-8", "utf8"})
#: The answers the SDK reads (any other is an error to it).
_READ_AS_TEXT = frozenset({"text/event-stream", "application/json"})
#: What the session's own event stream (a GET) expects: whatever comes, as the SDK leaves
#: the ids there as they are; only events of another kind than ``message`` are left out.
_ANY = object()


@dataclass
class _Exchange:
    """What one task of the SDK does with the backend: a request's POST and the
    resumptions of its event stream (``request`` its id), or the session's GET stream,
    opened again and again (``request`` None). The SDK runs each in a task of its own, so
    a context variable holds it: a GET in a task that has one is a reconnection."""

    request: Any
    deadline: float
    opened: float  # when its latest connection was asked for
    resumptions: int = 0


#: The exchange of the current task, set by its first request through the transport.
_EXCHANGE: ContextVar[_Exchange | None] = ContextVar("mcp_acp_http_exchange", default=None)


class IdentityRefused(Exception):
    """A handshake did not prove the backend's identity: its certificate could not be read,
    or it names another server than the one the session started with."""


class _TooLarge(Exception):
    pass


def describe(exc: BaseException, timeout: float) -> str:
    """One short phrase for an error from the transport (exception groups unwrapped)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, IdentityRefused):
        return str(exc)
    if isinstance(exc, httpx2.TimeoutException):
        return f"no answer within {timeout:g} s ({type(exc).__name__})"
    return exception_text(exc)


def _shown(value: str, limit: int = 40) -> str:
    """A header value from the backend, as an error message may quote it."""
    return re.sub(r"[^\x20-\x7e]", "?", value[:limit])


def redirect_target(request: httpx2.Request, response: httpx2.Response) -> str | None:
    """Where ``response`` redirects ``request`` to, as a message may name it (resolved
    against the request's URL, without userinfo, query or fragment, which may carry a
    secret), or None if it is no redirect: a 3xx status with a ``Location``."""
    location = response.headers.get("location")
    if not 300 <= response.status_code < 400 or location is None:
        return None
    try:
        target = request.url.join(location)
        shown = str(target.copy_with(userinfo=b"", query=None, fragment=None))
    except (httpx2.InvalidURL, ValueError, TypeError):
        shown = location
    return _shown(shown, 200)


def _bad_session_id(response: httpx2.Response) -> str | None:
    """What is wrong with the ``Mcp-Session-Id`` of ``response``, or None (none is fine)."""
    given = [value for name, value in response.headers.raw if name.lower() == b"mcp-session-id"]
    if not given:
        return None
    if len(given) > 1:
        return f"{len(given)} times in one answer"
    value = given[0]
    if len(value) > MAX_SESSION_ID:
        return f"of {len(value)} bytes, more than {MAX_SESSION_ID}"
    if not _SESSION_ID.fullmatch(value):
        shown = _shown(value.decode("latin-1"))
        return f"{shown!r} that is not visible ASCII (0x21-0x7E only, as MCP requires)"
    return None


def _remaining(deadline: float) -> float | None:
    return None if deadline == math.inf else max(0.0, deadline - anyio.current_time())


def _failed(request: httpx2.Request, text: str) -> httpx2.Response:
    """What the SDK makes the request's JSON-RPC error of (its id filled in by the SDK)."""
    log.warning("an HTTP %s to the backend failed: %s", request.method, text)
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": BACKEND_FAILED, "message": text}}
    return httpx2.Response(
        502,
        headers={"content-type": "application/json"},
        content=json.dumps(error).encode(),
        request=request,
    )


class _UntilDeadline(httpx2.AsyncByteStream):
    """An event stream that ends, as a read timeout would end it, at the deadline."""

    def __init__(self, inner: httpx2.AsyncByteStream, deadline: float, late: str) -> None:
        self._inner = inner
        self._deadline = deadline
        self._late = late

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self._inner)
        while True:
            try:
                with anyio.fail_after(_remaining(self._deadline)):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise httpx2.ReadTimeout(self._late) from None
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _same_id(found: Any, expected: Any) -> bool:
    """JSON-RPC ids as the wire has them: 7 is not "7", nor 7.0, nor true."""
    return type(found) is type(expected) and found == expected


def _stranger(data: bytes, expected: Any) -> str | None:
    """Why the data of a ``message`` event must not reach the SDK on the stream of request
    ``expected``, or None. Requests and notifications pass; an answer passes if it has
    that id, or is an error with none (the SDK gives both that id anyway)."""
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "an event that is not JSON"  # refused rather than read two ways
    if not isinstance(message, dict):
        return "an event that is not a JSON-RPC message"
    if "method" in message and "result" not in message and "error" not in message:
        return None
    found = message.get("id")
    if _same_id(found, expected) or (found is None and "error" in message):
        return None
    return f"an answer to request {json.dumps(found)[:40]}"


class _OwnAnswers(httpx2.AsyncByteStream):
    """The event stream that answers one request, less the answers to any other; or the
    session's own stream (``expected`` :data:`_ANY`), as it is. Either way, less the
    events of another kind than ``message``.

    Events are cut at their blank line (lines end in CR, LF or CRLF; comments dropped) and
    passed on whole, or left out; an event larger than ``max_bytes`` (counted as the SDK
    counts) ends the stream with the SDK's own error, since it is held here until whole.
    Nothing of an event is kept once it is passed: which request a resumed stream (a
    ``GET`` with ``Last-Event-ID``) answers is known from the task it is asked for in
    (:class:`_Exchange`), not from its event ids — remembered, ids of up to 10 MiB each
    held the memory of a thousand of them."""

    def __init__(self, inner: httpx2.AsyncByteStream, expected: Any, *, max_bytes: int) -> None:
        self._inner = inner
        self._expected = expected
        self._max_bytes = max_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        lines: list[bytes] = []  # the event so far
        size = 0  # its bytes as the SDK counts them: its lines', comments and ends left out
        partial: list[bytes] = []  # a line not yet ended
        partial_size = 0  # its bytes: counted as they come, not summed again per chunk
        after_cr = False
        async for chunk in self._inner:
            if after_cr and chunk.startswith(b"\n"):
                chunk = chunk[1:]  # the rest of a CRLF cut in two
            if not chunk:
                continue
            after_cr = chunk.endswith(b"\r")
            start = 0
            for end in _LINE_END.finditer(chunk):
                line = b"".join([*partial, chunk[start : end.start()]])
                partial, partial_size, start = [], 0, end.end()
                if line.startswith(b":"):
                    continue  # a comment: nothing the SDK reads
                if line:
                    lines.append(line)
                    size += len(line)
                    self._bound(size)
                elif lines:
                    if event := self._pass(lines):
                        yield event
                    lines, size = [], 0
            if start < len(chunk):
                partial.append(chunk[start:])
                partial_size += len(chunk) - start
                self._bound(size + partial_size)

    def _bound(self, size: int) -> None:
        if size > self._max_bytes:  # the SDK's own limit and words
            raise httpx2.SSEError(f"Server-sent event exceeded the {self._max_bytes} byte limit.")

    def _pass(self, lines: list[bytes]) -> bytes | None:
        """The event as it is passed on, or None when it is left out."""
        kind, data, kept = b"message", [], []
        for line in lines:
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"retry" and not _RETRY.fullmatch(value):
                log.warning(
                    "left out a 'retry' field from the backend that is not a number of "
                    "milliseconds (up to 9 digits): %r",
                    _shown(value.decode("utf-8", "replace")),
                )
                continue
            kept.append(line)
            if name == b"event":
                kind = value or b"message"
            elif name == b"data":
                data.append(value)
        if kind != b"message":  # the SDK reads no other; it would print the name raw
            log.warning(
                "left out an event named %r from the backend (only 'message' events are read)",
                _shown(kind.decode("utf-8", "replace")),
            )
            return None
        joined = b"\n".join(data)
        if joined and self._expected is not _ANY:  # as the SDK: no data, nothing to read
            why = _stranger(joined, self._expected)
            if why is not None:
                log.warning(
                    "left out %s on the stream that answers request %s (the SDK would give "
                    "it that id)",
                    why,
                    json.dumps(self._expected),
                )
                return None
        return b"".join(line + b"\n" for line in kept) + b"\n"

    async def aclose(self) -> None:
        await self._inner.aclose()


def _request_id(request: httpx2.Request) -> Any:
    """The id of the JSON-RPC request a POST carries, or None (a notification, an answer)."""
    try:
        message = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError, RecursionError):
        return None
    if isinstance(message, dict) and "method" in message:
        return message.get("id")
    return None


class GuardedTransport(httpx2.AsyncBaseTransport):
    """The HTTP channel's transport (see the module docstring).

    ``on_connect_failure`` is awaited when a connection for a request (not the session's
    GET stream) could not be made — refused, unreachable, a failed TLS handshake, a
    certificate that proves another identity — before that request gets its error; it
    decides whether the backend is gone.
    """

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport,
        *,
        timeout: float,
        deadline: float,
        max_bytes: int,
        on_connect_failure: Callable[[Exception], Awaitable[None]],
    ) -> None:
        self._inner = inner
        self._timeout = timeout
        self._deadline = deadline
        self._max_bytes = max_bytes
        self._on_connect_failure = on_connect_failure
        self._late = f"no complete answer from the backend within {deadline:g} s"
        self._too_large = (
            f"the backend's answer is larger than {max_bytes} bytes (the limit for one message)"
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.extensions.get(UNGUARDED):
            return await self._inner.handle_async_request(request)
        open_ended = request.method == "GET" or request.headers.get(_METHOD_HEADER) in OPEN_ENDED
        deadline = math.inf if open_ended else anyio.current_time() + self._deadline
        exchange = _EXCHANGE.get()
        if request.method == "GET" and exchange is not None:  # a reconnection
            if (refused := await self._reconnecting(request, exchange)) is not None:
                return refused
            deadline = exchange.deadline
        elif request.method == "GET" or (
            request.method == "POST" and (request_id := _request_id(request)) is not None
        ):
            exchange = _Exchange(
                None if request.method == "GET" else request_id, deadline, anyio.current_time()
            )
            _EXCHANGE.set(exchange)  # this task's, from here on
        try:
            with anyio.fail_after(_remaining(deadline)):
                response = await self._inner.handle_async_request(request)
        except TimeoutError:
            return _failed(request, self._late)
        except (httpx2.ConnectError, httpx2.ConnectTimeout, IdentityRefused) as exc:
            if request.method != "GET":  # the event stream is retried, then given up, by the SDK
                await self._on_connect_failure(exc)
            return _failed(request, f"cannot reach the backend: {describe(exc, self._timeout)}")
        except httpx2.TransportError as exc:
            return _failed(
                request, f"the backend's answer was lost: {describe(exc, self._timeout)}"
            )
        if (why := _bad_session_id(response)) is not None:
            # The SDK would send it back on every request: a byte it cannot encode there
            # would end the whole session on the next one, a space or comma split it
            await response.aclose()
            return _failed(request, f"the backend gave a session id (Mcp-Session-Id) {why}")
        if request.method != "GET" and (target := redirect_target(request, response)):
            # Followed, the request (decided for this URL) and the configured credentials
            # would go to another one; the session's event stream is the SDK's to give up.
            await response.aclose()
            return _failed(
                request,
                f"the backend redirected the request to {target} (HTTP "
                f"{response.status_code}); mcp-acp follows no redirects",
            )
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            await response.aclose()
            return _failed(
                request,
                f"the backend sent a compressed answer (content-encoding: {_shown(encoding)}); "
                "mcp-acp asks for none",
            )
        kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        charset = response.charset_encoding  # lower case; None if not declared
        if kind in _READ_AS_TEXT and charset is not None and charset not in UTF_8:
            # The SDK would decode it in that charset, the checks here read UTF-8 bytes
            await response.aclose()
            return _failed(
                request,
                f"the backend's answer is {kind} in charset {_shown(charset)}; "
                "mcp-acp reads answers in UTF-8 only",
            )
        if kind == "text/event-stream":
            assert isinstance(response.stream, httpx2.AsyncByteStream)  # noqa: S101 - async pool
            if deadline != math.inf:
                response.stream = _UntilDeadline(response.stream, deadline, self._late)
            # The id of the request it answers, if the SDK will give every answer on it that
            # id: a POST's, or a resumption's (a GET in that request's task, whatever
            # Last-Event-ID it names); the session's own stream takes any (the SDK leaves
            # the ids of what comes there as they are)
            expected = None if exchange is None else exchange.request
            response.stream = _OwnAnswers(
                response.stream,
                _ANY if expected is None else expected,
                max_bytes=self._max_bytes,
            )
            return response
        if deadline == math.inf:  # a body that is not a stream has no reason to take longer
            deadline = anyio.current_time() + self._deadline
        return await self._read(request, response, deadline)

    async def _reconnecting(
        self, request: httpx2.Request, exchange: _Exchange
    ) -> httpx2.Response | None:
        """Wait until the stream may be opened again; the request's error if it may not
        (a request's stream resumed too often, or past its deadline), else None."""
        if exchange.request is not None:
            exchange.resumptions += 1
            if exchange.resumptions > MAX_RESUMPTIONS:
                return _failed(
                    request,
                    f"the backend ended the event stream of request "
                    f"{json.dumps(exchange.request)[:40]} {MAX_RESUMPTIONS + 1} times without "
                    "its answer; not resumed again",
                )
        wait = exchange.opened + RECONNECT_SECONDS - anyio.current_time()
        if wait > 0:
            if anyio.current_time() + wait >= exchange.deadline:
                return _failed(request, self._late)
            await anyio.sleep(wait)
        exchange.opened = anyio.current_time()
        return None

    async def _read(
        self, request: httpx2.Request, response: httpx2.Response, deadline: float
    ) -> httpx2.Response:
        """The whole body, bounded in size and time, or the request's error."""
        length = response.headers.get("content-length", "").strip()
        try:
            if length.isdigit() and int(length) > self._max_bytes:
                raise _TooLarge
            body = await self._body(response, deadline)
        except _TooLarge:
            return _failed(request, self._too_large)
        except TimeoutError:
            return _failed(request, self._late)
        except httpx2.TransportError as exc:
            return _failed(
                request, f"the backend's answer was lost: {describe(exc, self._timeout)}"
            )
        finally:
            await response.aclose()  # read whole: back to the pool; cut short: closed
        kept = {
            k: v for k, v in response.extensions.items() if k in ("http_version", "reason_phrase")
        }
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            request=request,
            extensions=kept,
        )

    async def _body(self, response: httpx2.Response, deadline: float) -> bytes:
        assert isinstance(response.stream, httpx2.AsyncByteStream)  # noqa: S101 - async pool
        chunks: list[bytes] = []
        size = 0
        pieces = aiter(response.stream)
        while True:
            try:
                with anyio.fail_after(_remaining(deadline)):
                    chunk = await anext(pieces)
            except StopAsyncIteration:
                return b"".join(chunks)
            size += len(chunk)
            if size > self._max_bytes:
                raise _TooLarge
            chunks.append(chunk)

    async def aclose(self) -> None:
        await self._inner.aclose()
