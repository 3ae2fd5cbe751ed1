"""A streamable-HTTP backend, reached through the ``mcp`` SDK's client transport.

Imported only when the config names an HTTP backend: importing ``mcp`` takes most of a
second, which a stdio proxy does not pay.

The SDK transport does the HTTP: a POST per message, JSON or SSE answers, the session id,
the GET stream for server-initiated messages, and DELETE at the end. This module converts
between the relay's decoded JSON-RPC dicts and the SDK's ``SessionMessage``, and sets the
headers a client would set itself but that a stdio client cannot send through us:
``MCP-Protocol-Version`` (from the ``initialize`` result; in the 2026-07-28 era from each
request's ``_meta`` envelope, with ``Mcp-Method``, ``Mcp-Name`` and the ``Mcp-Param-*``
headers a tool's ``x-mcp-header`` annotations ask for).

With a TLS provider's ``ssl.SSLContext`` (``backend.tls``), the channel also learns the
backend's identity: the names of the certificate the server proved in the probe's verified
handshake (:attr:`HttpChannel.backend_identity`, matched by ``backend_identity`` policy
conditions). Every later connection's handshake must prove the same names before a byte of
a request is sent on it; policy decisions were made for that server, not for whichever
other server the same CA vouches for.

The connection goes to the configured URL and nowhere else: proxy variables of the
environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) and ``.netrc``
are never used (``trust_env`` off). ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` still choose the
trust store of an HTTPS backend verified without a TLS provider.

How it fails:

* at start, a probe (``GET``, what a client's event stream does) must get an HTTP answer
  within ``timeout_seconds`` — connecting, the TLS handshake and the answer's head as a
  whole; no answer, a refused connection, a TLS failure, a certificate whose identity
  cannot be read, 401/403, 404 or a 5xx are a :class:`~mcp_acp.errors.BackendError`
  (exit 17) naming the URL and the reason, as is an ``SSL_CERT_FILE`` or
  ``SSL_CERT_DIR`` that names no usable trust store;
* a probe answered with a redirect fails start too, naming where to: no redirect is ever
  followed (a request was decided for the configured URL; the credentials are for it);
* mid-session, what goes wrong with one request fails that request alone, with a JSON-RPC
  error (:mod:`mcp_acp.proxy.http_guard`): an answer that does not start or goes quiet
  within ``timeout_seconds``, is cut short, is a redirect, is larger than 10 MiB or is
  compressed, or is not complete within ``request_timeout_seconds`` (the backend is then
  sent ``notifications/cancelled``, as MCP asks of a client that stops waiting);
* the backend is gone only when a connection cannot be made (refused, unreachable, a
  failed TLS handshake) and the probe, tried again at once, fails as it would at start —
  or at once when a new connection presents another identity. Then
  :meth:`HttpChannel.receive` ends and the relay answers every request in flight (exit 17).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpcore2
import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import PROTOCOL_VERSION_META_KEY, jsonrpc_message_adapter
from pydantic import ValidationError

from mcp_acp._tls import verifying_context
from mcp_acp.backend_identity import PeerCertificate, verified_certificate
from mcp_acp.config import HttpBackend
from mcp_acp.errors import BackendError
from mcp_acp.proxy.channel import Unsendable
from mcp_acp.proxy.http_guard import (
    BACKEND_FAILED,
    OPEN_ENDED,
    UNGUARDED,
    GuardedTransport,
    IdentityRefused,
    redirect_target,
)
from mcp_acp.proxy.http_guard import describe as _describe
from mcp_acp.proxy.messages import MAX_MESSAGE_BYTES, Message, error_response, from_body

__all__ = ["HttpChannel", "IdentityRefused"]

log = logging.getLogger(__name__)

#: How long closing may take (the SDK's DELETE that ends the session) before it is cut.
CLOSE_SECONDS = 5.0
#: A value we copy from a message into a header must survive HTTP unchanged.
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
#: The notification that opens the session's event stream (a GET held open): the SDK opens
#: another for each one it is given, each holding one of the pool's 100 connections for the
#: session's life, so it passes once.
_INITIALIZED = "notifications/initialized"
#: Responses whose results this channel learns from (see ``_learn``).
_WATCHED = ("initialize", "tools/list")
#: Ids of requests answered at their deadline, remembered to drop the backend's late answer.
MAX_EXPIRED = 10_000
#: The backend's messages the channel holds for the relay, not taken yet: at most this many,
#: and this many bytes (a larger message alone). Past that the channel stops reading, so a
#: backend that sends faster than the client reads is held back by TCP — as a stdio
#: backend is by its pipe — instead of growing the proxy's memory without end.
MAX_HELD_MESSAGES = 64
MAX_HELD_BYTES = MAX_MESSAGE_BYTES
#: The cookies the backend may set (a load balancer's stickiness cookie, say), kept for the
#: session and sent back on every request: at most this many, each of at most this many
#: bytes (name and value; a browser keeps some 180 of 4 KiB per site). Unbounded, the jar
#: grew with every answer — 25 answers of 800 cookies each had every later request carry a
#: 2 MB Cookie header.
MAX_COOKIES = 50
MAX_COOKIE_BYTES = 4096
#: The tools whose ``x-mcp-header`` mirrors are kept, as many as the relay keeps facts of
#: (``lists.MAX_ANNOTATED_TOOLS``): the tools of every listing are kept, and a backend
#: listing 20,000 new ones each time grew the proxy by some 8 MB a listing, for good. A
#: call of a tool past the bound carries no ``Mcp-Param-*`` headers (the backend may
#: refuse it).
MAX_MIRRORED_TOOLS = 10_000
#: A tool with more mirrors than this keeps none (no tool sends that many headers; one
#: listing a single tool with 150,000 of them grew the proxy by some 27 MB, for good), and
#: the mirrors of all tools together are bounded too.
MAX_MIRRORS_PER_TOOL = 64
MAX_MIRRORS = 20_000


#: The SDK's transport logs, rather than raises, an exception that ends its writer (one
#: sending a notification, say: ``post_writer``), then closes its streams as a closed
#: connection would.
_SDK_TRANSPORT_LOG = "mcp.client.streamable_http"
_SDK_WRITER = "post_writer"


class _SwallowedError(logging.Filter):
    """Keeps the exception that ended the SDK transport's writer, which it logs (the
    record goes through) instead of raising: what ended the session, not a closed
    connection."""

    def __init__(self) -> None:
        super().__init__()
        self.error: BaseException | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.funcName == _SDK_WRITER and record.exc_info and record.exc_info[1]:
            self.error = record.exc_info[1]
        return True


class _FewCookies(http.cookiejar.CookieJar):
    """The session's cookie jar, bounded (:data:`MAX_COOKIES`, :data:`MAX_COOKIE_BYTES`): a
    cookie past either bound is not kept (a warning the first time); one the jar holds
    already may be replaced."""

    warned = False

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        key = (cookie.domain, cookie.path, cookie.name)
        size = len(cookie.name) + len(cookie.value or "")
        known = any((c.domain, c.path, c.name) == key for c in self)
        if size > MAX_COOKIE_BYTES or (not known and len(self) >= MAX_COOKIES):
            if not self.warned:
                self.warned = True
                log.warning(
                    "did not keep a cookie the backend set (%d bytes; %d kept already): at "
                    "most %d cookies of %d bytes each are kept (no more warnings of this)",
                    size,
                    len(self),
                    MAX_COOKIES,
                    MAX_COOKIE_BYTES,
                )
            return
        super().set_cookie(cookie)


def _without_query(url: str) -> str:
    """The URL as it is recorded and matched: a query or fragment may carry a secret."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _trust_store() -> ssl.SSLContext:
    """What verifies an HTTPS backend without a TLS provider: the system's trust store, or
    the one ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` names (as the HTTP library's own default
    would, which ``trust_env`` off also turns off). A variable that names no usable trust
    store is a :class:`~mcp_acp.errors.BackendError`: start-up fails, saying which. The
    context writes no key log, whatever ``SSLKEYLOGFILE`` says (:func:`verifying_context`),
    as the library's default context for the system's store and a TLS provider's do not.
    The server's name is checked against the certificate's subjectAltName only, as with a
    TLS provider (RFC 9525): Python's contexts fall back to the subject's common name of a
    certificate without one (:func:`verifying_context` and :func:`_names_only` turn that off)."""
    fix = (
        "point {name} at {what}, or unset it to use the system's trust store "
        "(backend.tls sets the CA bundle in the config instead)"
    )
    if cafile := os.environ.get("SSL_CERT_FILE"):
        try:
            return verifying_context(cafile=cafile)
        except OSError as exc:  # missing, a directory, unreadable; ssl.SSLError: no PEM
            raise BackendError(
                f"SSL_CERT_FILE names {cafile}, which is not a usable CA bundle: "
                f"{exc.strerror or exc}",
                fix=fix.format(name="SSL_CERT_FILE", what="a PEM file of CA certificates"),
            ) from None
    if capath := os.environ.get("SSL_CERT_DIR"):
        if not os.path.isdir(capath):  # OpenSSL would take it, then trust nothing
            raise BackendError(
                f"SSL_CERT_DIR names {capath}, which is not a directory",
                fix=fix.format(name="SSL_CERT_DIR", what="a directory of hashed CA certificates"),
            )
        return verifying_context(capath=capath)
    # the HTTP library's own default, built as it would build it (trust_env off)
    return _names_only(httpcore2.default_ssl_context(_trust_env=False))


def _names_only(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context``, checking the server's name against the subjectAltName only."""
    context.hostname_checks_common_name = False
    return context


async def _listener_waits(request: httpx2.Request) -> None:
    """The GET stream of a session (server-initiated messages) may rightly stay quiet for
    hours: no read timeout on it, or the SDK gives up on it after two quiet periods and
    the backend's notifications are lost without a word."""
    if request.method == "GET" and "mcp-session-id" in request.headers:
        timeout = dict(request.extensions.get("timeout") or {})
        timeout["read"] = None
        request.extensions["timeout"] = timeout


class HttpChannel:
    """One streamable-HTTP session with the backend."""

    def __init__(self, backend: HttpBackend, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.backend = backend
        self.backend_id = _without_query(backend.url)
        self._ssl_context = ssl_context
        #: The names of the backend's verified certificate, learnt at start; () without a
        #: TLS provider's context (plain HTTP, or HTTPS verified by the system's store).
        self.backend_identity: tuple[str, ...] = ()
        self._certificate: PeerCertificate | None = None
        #: What receive() yields, in order: each message with the bytes it holds of the
        #: bound (None: made here — a deadline's error, the end — and never held back).
        self._incoming: asyncio.Queue[tuple[Message | None, int | None]] = asyncio.Queue()
        self._held = 0  # the backend's messages in _incoming
        self._held_bytes = 0
        self._room = asyncio.Condition()  # notified when receive() takes one of them
        self._write: Any = None  # the SDK's write stream while connected
        self._runner: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[dict[str, Any]] | None = None
        self._reading: anyio.CancelScope | None = None
        self._closing = False
        self._lost = "the connection closed"
        self._gone = False  # decided: the backend is gone (see _connect_failed)
        self._http: httpx2.AsyncClient | None = None
        self._checking: asyncio.Future[None] | None = None  # the probe after a failed connect
        self._clocks: dict[Any, asyncio.TimerHandle] = {}  # request id -> its deadline
        self._expired: dict[Any, None] = {}  # ids answered at their deadline (ordered set)
        self._tasks: set[asyncio.Task[None]] = set()
        self._negotiated: str | None = None  # handshake era: the initialize result's version
        self._watched: dict[Any, str] = {}  # request id -> method, for _WATCHED
        self._param_headers: dict[str, dict[tuple[str, ...], str]] = {}  # tool -> x-mcp-header
        self._initialized = False  # notifications/initialized sent (see send)
        self._mirrors_full = False  # warned: a tool's mirrors were not kept (the bounds)
        self._mirrors = 0  # the mirrors in _param_headers, all tools together
        self._handshaken = False  # the backend answered initialize (see send)

    def _client(self) -> httpx2.AsyncClient:
        """The one client of the session: probe, requests, event stream and the final
        DELETE. Never through a proxy of the environment (``trust_env`` off, here and on
        the pool): the backend's traffic, its credentials included, goes to its URL only."""
        hooks = [_listener_waits]
        if self._ssl_context is not None:
            hooks.append(self._watch_handshakes)
        pool = httpx2.AsyncHTTPTransport(
            verify=self._ssl_context if self._ssl_context is not None else _trust_store(),
            trust_env=False,
        )
        headers = {k: v for k, v in self.backend.headers.items() if k.lower() != "accept-encoding"}
        headers["Accept-Encoding"] = "identity"  # a compressed body would inflate past the limit
        return httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(self.backend.timeout_seconds),
            trust_env=False,
            cookies=_FewCookies(),
            # No redirect is followed: a request decided for the configured URL, with the
            # configured credentials, goes there or nowhere. The SDK follows redirects
            # within the URL's origin itself, whatever follow_redirects says, but at most
            # max_redirects times; the transport fails a redirected request with its reason.
            follow_redirects=False,
            max_redirects=0,
            transport=GuardedTransport(
                pool,
                timeout=self.backend.timeout_seconds,
                deadline=self.backend.request_timeout_seconds,
                max_bytes=MAX_MESSAGE_BYTES,
                on_connect_failure=self._connect_failed,
            ),
            event_hooks={"request": hooks},
        )

    # ---------------------------------------------------------------- identity

    async def _watch_handshakes(self, request: httpx2.Request) -> None:
        """Have the connection pool report each new connection's TLS handshake to us
        (httpcore's ``trace`` extension), before the request is written on it."""
        request.extensions["trace"] = self._traced

    async def _traced(self, event: str, info: dict[str, Any]) -> None:
        if not event.endswith(".start_tls.complete"):
            return
        stream: Any = info.get("return_value")
        tls = stream.get_extra_info("ssl_object")
        context = self._ssl_context
        if context is None or (tls is not None and tls.context is not context):
            return  # not a handshake with the backend (e.g. with an HTTPS proxy on the way)
        try:
            self._prove(verified_certificate(tls, context) if tls is not None else None)
        except IdentityRefused:
            await stream.aclose()  # the pool never sees this connection: close it here
            raise

    def _prove(self, certificate: PeerCertificate | None) -> None:
        """The first verified handshake sets the identity; later ones must match it."""
        where = self.backend_id
        if certificate is None or not certificate.names:
            raise IdentityRefused(
                f"the certificate of the backend at {where} could not be read as verified, "
                "or names no DNS, IP or URI subjectAltName"
            )
        if self._certificate is None:
            self._certificate = certificate
            self.backend_identity = certificate.names
            return
        if certificate.names != self.backend_identity:
            log.warning(
                "refused a connection to %s: its certificate names %s, not %s",
                where,
                ", ".join(certificate.names),
                ", ".join(self.backend_identity),
            )
            raise IdentityRefused(
                f"a new connection to {where} presented a certificate for "
                f"{', '.join(certificate.names)}, not for {', '.join(self.backend_identity)} "
                "as at start"
            )

    # ---------------------------------------------------------------- lifecycle

    def backend_session(self) -> None:
        """None: the server's processes are not ours to know."""
        return None

    async def start(self) -> dict[str, Any]:
        if self._starting is None:  # connect once; every call gets the same outcome
            self._starting = asyncio.ensure_future(self._connect())
        return await self._starting

    async def _connect(self) -> dict[str, Any]:
        client = self._http = self._client()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.ensure_future(self._run(client, ready))
        await ready  # raises the BackendError of a failed probe
        detail: dict[str, Any] = {"transport": "http", "url": self.backend_id}
        if self._certificate is not None:
            detail["identity"] = {
                "names": list(self._certificate.names),
                "subject": self._certificate.subject,
                "sha256": self._certificate.sha256,
                "provenance": "mtls",
            }
        return detail

    async def _probe(self, client: httpx2.AsyncClient) -> None:
        """Fail at start, with a reason, rather than on the client's first request."""
        where, seconds = self.backend_id, self.backend.timeout_seconds
        try:
            # One deadline for the whole probe: the client's timeouts are per read, and a
            # server that sends its answer a byte at a time never lets one expire.
            with anyio.fail_after(seconds):
                async with client.stream(
                    "GET",
                    self.backend.url,
                    headers={"accept": "text/event-stream"},
                    extensions={UNGUARDED: True},  # its errors are reported here
                ) as response:
                    status = response.status_code
                    target = redirect_target(response.request, response)
        except (TimeoutError, httpx2.TimeoutException) as exc:
            raise BackendError(
                f"the backend at {where} did not answer within {seconds:g} s",
                fix="check that the server is running and healthy, "
                "or raise backend.timeout_seconds",
            ) from exc
        except httpx2.HTTPError as exc:
            raise BackendError(
                f"cannot reach the backend at {where}: {_describe(exc, seconds)}",
                fix="check backend.url and that the server is running",
            ) from exc
        except IdentityRefused as exc:
            raise BackendError(
                str(exc), fix="check the server's certificate (its subjectAltName)"
            ) from exc
        if self._ssl_context is not None and self._certificate is None:
            raise BackendError(  # the handshake was never reported: no identity, no start
                f"the backend at {where} answered, but its certificate was not seen",
                fix="report this: the HTTP library no longer reports TLS handshakes",
            )
        if target is not None:
            raise BackendError(
                f"the backend at {where} redirects to {target} (HTTP {status}); "
                "mcp-acp follows no redirects",
                fix="set backend.url to the URL the server answers at, if it is the one meant",
            )
        if status in (401, 403):
            raise BackendError(
                f"the backend at {where} refused us: HTTP {status}",
                fix="check the credentials in backend.headers",
            )
        if status == 404:
            raise BackendError(
                f"no MCP endpoint at {where}: HTTP 404",
                fix="check backend.url, including its path (often '/mcp')",
            )
        if status >= 500:  # a server in trouble, or a gateway with no server behind it
            raise BackendError(
                f"the backend at {where} answered HTTP {status}",
                fix="check backend.url and that the server is running and healthy",
            )

    async def _connect_failed(self, error: Exception) -> None:
        """A request could not connect: is the backend gone? Yes if the new connection
        proved another identity, or if the probe, tried again now, fails as it would at
        start (one probe at a time, whatever the number of failed requests)."""
        if self._gone:
            return
        if isinstance(error, IdentityRefused):
            self._end(str(error))
            return
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self._recheck())
        await asyncio.shield(self._checking)

    async def _recheck(self) -> None:
        assert self._http is not None  # noqa: S101 - set before the transport runs
        try:
            await self._probe(self._http)
        except BackendError as error:
            self._end(error.message)
        else:
            log.warning("a request to %s could not connect; the probe got through", self.backend_id)

    def _end(self, reason: str) -> None:
        """The backend is gone: take nothing more from it, and end :meth:`receive`."""
        if self._gone:
            return
        self._gone = True
        self._lost = reason
        if self._reading is not None:
            self._reading.cancel()

    async def _run(self, client: httpx2.AsyncClient, ready: asyncio.Future[None]) -> None:
        """Probe, then hold the SDK transport open and move what it reads into the queue."""
        swallowed = _SwallowedError()
        logging.getLogger(_SDK_TRANSPORT_LOG).addFilter(swallowed)
        try:
            async with client:
                await self._probe(client)
                async with streamable_http_client(
                    self.backend.url,
                    http_client=client,
                    max_sse_event_size=MAX_MESSAGE_BYTES,  # as on stdio (the SDK's default: 1 MiB)
                ) as (read, write):
                    self._write = write
                    ready.set_result(None)
                    with anyio.CancelScope() as self._reading:
                        if self._closing:
                            self._reading.cancel()
                        async for item in read:
                            await self._take(item)  # waits while the relay is behind
                    if swallowed.error is not None and not (self._gone or self._closing):
                        self._lost = _describe(swallowed.error, self.backend.timeout_seconds)
        except BackendError as exc:  # the probe failed
            if not ready.done():
                ready.set_exception(exc)
        except Exception as exc:  # the transport failed: an ExceptionGroup from its tasks
            if not self._gone:
                self._lost = _describe(exc, self.backend.timeout_seconds)
            log.debug("HTTP backend transport ended", exc_info=True)
            if not ready.done():
                ready.set_exception(
                    BackendError(
                        f"cannot open the backend at {self.backend_id}: {self._lost}",
                        fix="check backend.url and that the server is running",
                    )
                )
        finally:
            logging.getLogger(_SDK_TRANSPORT_LOG).removeFilter(swallowed)
            self._write = None
            for clock in self._clocks.values():
                clock.cancel()  # the relay answers what is still in flight
            self._clocks.clear()
            self._incoming.put_nowait((None, None))
            if not ready.done():  # cancelled while starting
                ready.cancel()

    async def close(self) -> None:
        self._closing = True
        runner = self._runner
        if runner is None or runner.done():
            return
        if self._write is None:  # still being reached: there is no session to end with it
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            return
        if self._reading is not None:
            self._reading.cancel()  # leave the read loop; the SDK then ends the session
        try:
            await asyncio.wait_for(asyncio.shield(runner), timeout=CLOSE_SECONDS)
        except TimeoutError:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def exit_detail(self) -> tuple[dict[str, Any], str]:
        return (
            {"transport": "http", "url": self.backend_id, "error": self._lost},
            f"the backend connection was lost ({self._lost})",
        )

    # ---------------------------------------------------------------- messages

    async def send(self, message: Message) -> None:
        write = self._write
        if write is None:
            return  # gone: receive() has ended or is about to
        try:
            payload = jsonrpc_message_adapter.validate_python(message.body)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"][1:]) or "message"
            raise Unsendable(f"not a valid MCP message ({where}: {first['msg']})") from None
        if message.kind == "notification" and message.method == _INITIALIZED:
            if self._initialized:  # the SDK opens the session's event stream for each one
                raise Unsendable(
                    f"{_INITIALIZED} was sent already in this session; another would open "
                    "another event stream to the backend"
                )
            # before the backend answered initialize there is no session to open a stream
            # of (the SDK opens none): that one does not count
            self._initialized = self._handshaken
        if message.kind == "request" and message.method in _WATCHED:
            self._watched[message.id] = message.method
        if message.kind == "request":
            self._start_clock(message)
        headers = self._headers(message)
        metadata = ClientMessageMetadata(headers=headers) if headers else None
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await write.send(SessionMessage(payload, metadata=metadata))

    async def receive(self) -> AsyncIterator[Message]:
        while True:
            message, size = await self._incoming.get()
            if size is not None:
                async with self._room:
                    self._held -= 1
                    self._held_bytes -= size
                    self._room.notify_all()
            if message is None:
                return
            yield message

    async def _hold(self, message: Message) -> None:
        """Queue one of the backend's messages for :meth:`receive`, once there is room.

        While this waits, the read loop does not read: the SDK's tasks wait to hand over
        what they parsed, stop reading their streams, and the backend's writes block.
        Nothing the relay waits for is stuck behind it but the backend's own messages,
        which come in order as the relay takes them: the relay's taking never waits on
        this channel's reading (it waits on the client, the audit, or sending, which the
        SDK does on other tasks)."""
        size = len(message.raw)
        async with self._room:
            await self._room.wait_for(
                lambda: (
                    self._held == 0
                    or (
                        self._held < MAX_HELD_MESSAGES and self._held_bytes + size <= MAX_HELD_BYTES
                    )
                )
            )
            self._held += 1
            self._held_bytes += size
        self._incoming.put_nowait((message, size))

    async def _take(self, item: SessionMessage | Exception) -> None:
        if self._gone:
            return  # what the transport still hands over: the relay answers for it
        if isinstance(item, Exception):  # e.g. an SSE event that is not JSON-RPC
            log.warning("the backend sent an unusable message: %s", item)
            return
        body = item.message.model_dump(by_alias=True, mode="json", exclude_unset=True)
        if "method" not in body:
            request_id = body.get("id")
            clock = self._clocks.pop(request_id, None)
            if clock is not None:
                clock.cancel()
            elif request_id in self._expired:  # answered already, at its deadline
                del self._expired[request_id]
                log.debug("dropped the backend's late answer to request %r", request_id)
                return
            self._learn(body)
        await self._hold(from_body(body))

    # ---------------------------------------------------------------- deadlines

    def _start_clock(self, message: Message) -> None:
        """Every request but an open-ended one gets its answer by its deadline."""
        if message.method in OPEN_ENDED:
            return
        self._expired.pop(message.id, None)  # a reused id: the SDK drops the old exchange
        old = self._clocks.pop(message.id, None)
        if old is not None:
            old.cancel()
        seconds = self.backend.request_timeout_seconds
        loop = asyncio.get_running_loop()
        self._clocks[message.id] = loop.call_later(seconds, self._expire, message.id)

    def _expire(self, request_id: Any) -> None:
        """The deadline passed: the client gets an error now, the backend is told to stop
        (``notifications/cancelled``), and its answer, should it come, is dropped."""
        self._clocks.pop(request_id, None)
        self._watched.pop(request_id, None)
        if len(self._expired) >= MAX_EXPIRED:
            self._expired.pop(next(iter(self._expired)))
        self._expired[request_id] = None
        seconds = self.backend.request_timeout_seconds
        text = f"no complete answer from the backend within {seconds:g} s (request {request_id})"
        answer = from_body(error_response(request_id, BACKEND_FAILED, text))
        self._incoming.put_nowait((answer, None))  # one per request the client sent: not held
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": text},
        }
        task = asyncio.ensure_future(self.send(from_body(cancel)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _learn(self, response: dict[str, Any]) -> None:
        """What later requests need: the negotiated version, the tools' header mirrors."""
        method = self._watched.pop(response.get("id"), None)
        result = response.get("result")
        if method is None or not isinstance(result, dict):
            return
        if method == "initialize":
            self._handshaken = True
            version = result.get("protocolVersion")
            if isinstance(version, str) and _HEADER_VALUE.fullmatch(version):
                self._negotiated = version
            return
        tools = result.get("tools")
        for tool in tools if isinstance(tools, list) else []:
            name = tool.get("name") if isinstance(tool, dict) else None
            if not isinstance(name, str):
                continue
            schema = tool.get("inputSchema")
            mirrors = x_mcp_header_map(schema) if find_invalid_x_mcp_header(schema) is None else {}
            self._mirrors -= len(self._param_headers.pop(name, {}))
            if not mirrors:
                continue
            if (
                len(mirrors) <= MAX_MIRRORS_PER_TOOL
                and len(self._param_headers) < MAX_MIRRORED_TOOLS
                and self._mirrors + len(mirrors) <= MAX_MIRRORS
            ):
                self._param_headers[name] = mirrors
                self._mirrors += len(mirrors)
            elif not self._mirrors_full:
                self._mirrors_full = True
                log.warning(
                    "the backend lists more tools whose arguments go in headers (x-mcp-header) "
                    "than are kept (%d tools, %d headers each, %d in all); calls of the others "
                    "carry no such headers",
                    MAX_MIRRORED_TOOLS,
                    MAX_MIRRORS_PER_TOOL,
                    MAX_MIRRORS,
                )

    def _headers(self, message: Message) -> dict[str, str] | None:
        """The routing headers for one message; a value that could not be sent as it is
        is left out (the backend then refuses the request, which the client is told)."""
        params = message.params
        meta = params.get("_meta")
        version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        if message.kind == "request" and isinstance(version, str):  # 2026-07-28 envelope
            headers: dict[str, str] = {}
            if _HEADER_VALUE.fullmatch(version):
                headers[MCP_PROTOCOL_VERSION_HEADER] = version
            if _HEADER_VALUE.fullmatch(message.method):
                headers[MCP_METHOD_HEADER] = message.method
            name_key = NAME_BEARING_METHODS.get(message.method)
            name = params.get(name_key) if name_key else None
            if isinstance(name, str):
                headers[MCP_NAME_HEADER] = encode_header_value(name)
                arguments = params.get("arguments")
                if message.method == "tools/call" and isinstance(arguments, dict):
                    headers.update(mcp_param_headers(self._param_headers.get(name, {}), arguments))
            return headers
        if self._negotiated is not None and message.method != "initialize":
            return {MCP_PROTOCOL_VERSION_HEADER: self._negotiated}
        return None
