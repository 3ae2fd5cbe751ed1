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
* ends a request's exchange at its deadline — connecting, headers, body or event stream as
  a whole (``request_timeout_seconds``), however busy the backend keeps the connection —
  except the session's GET stream and ``subscriptions/listen``, which stay open by design;
* turns a failure of one exchange into an answer to that request alone: an HTTP 502 whose
  body is the JSON-RPC error, which the SDK hands on as the request's error (and drops for
  a notification). A connection that could not be made at all is reported to the channel
  first, which decides whether the backend is gone (:class:`GuardedTransport`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx2

__all__ = ["BACKEND_FAILED", "UNGUARDED", "GuardedTransport", "IdentityRefused", "describe"]

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
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _shown(value: str) -> str:
    """A header value from the backend, as an error message may quote it."""
    return re.sub(r"[^\x20-\x7e]", "?", value[:40])


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
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            await response.aclose()
            return _failed(
                request,
                f"the backend sent a compressed answer (content-encoding: {_shown(encoding)}); "
                "mcp-acp asks for none",
            )
        kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind == "text/event-stream":
            if deadline != math.inf:
                assert isinstance(response.stream, httpx2.AsyncByteStream)  # noqa: S101 - async pool
                response.stream = _UntilDeadline(response.stream, deadline, self._late)
            return response
        if deadline == math.inf:  # a body that is not a stream has no reason to take longer
            deadline = anyio.current_time() + self._deadline
        return await self._read(request, response, deadline)

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
