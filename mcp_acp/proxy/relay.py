"""The relay: client on our stdin/stdout, the backend behind a channel, one PEP between.

The client speaks newline-delimited JSON (what MCP's stdio transport is); the backend is
reached through a :class:`~mcp_acp.proxy.channel.BackendChannel` (a child process over
stdio, or streamable HTTP) — the relay's logic is the same for both. Every request and
notification from the client, and every request and notification the backend sends to
the client (sampling, elicitation, roots; progress, logging, list changes), passes the
enforcement point — notifications and backend requests after their side's flood limit
(:meth:`~mcp_acp.proxy.pep.EnforcementPoint.admit`); permitted messages are forwarded as
the exact bytes received, and a message JSON readers could read two ways is refused
wherever the policy would decide on it (see :mod:`mcp_acp.proxy.messages`). A message
spelling a key the proxy reads in another letter case is denied before the policy
(:data:`MISCASED`), from either side, and so is a notification whose method is not a
notification's (:data:`NOT_A_NOTIFICATION`); a request whose id JavaScript would round
(beyond ±(2^53-1)) is invalid, answered as such to whichever side sent it. A denied
request gets a JSON-RPC error (:data:`~mcp_acp.proxy.messages.DENIED`) naming the rule
and the request id, and never reaches the other side. List results are filtered: a tool,
resource or prompt that the subject could never be allowed to use is not listed, nor is
one whose entry carries hidden-instruction markers (quarantined, see
:mod:`mcp_acp.proxy.lists`). When the backend goes away, every request still in
flight or still being decided is answered with an error (the answers recorded like the
backend's) — nothing more is read from the client, what is in progress finishes first — and
the session ends (exit code 17). When the client stops reading (its end of
our output is closed), nothing more is forwarded and the session ends (exit code 0).

A request whose decision is cut short — the client cancels it, the session ends, the
backend goes away — is denied on record (:meth:`EnforcementPoint.check`), with the reason.
At a fail-closed shutdown the process exits from the shutdown coordinator, without the
event loop: the enforcement point records those denials there, and the relay answers the
requests with an error if the client's pipe takes it at once (:meth:`Relay._answer_at_exit`).

The answer (its result, or its error) to a ``tools/call``, ``resources/read``,
``prompts/get``, ``tasks/result`` (a task's result) or the handshake (``initialize``,
``server/discover``: the server's ``instructions``) is screened before it is relayed
(:func:`~mcp_acp.proxy.screening.screen_result`: hidden-instruction tags, also split across
adjacent text items, control and invisible characters; bounded). It is relayed unchanged all
the same; a finding exposes the session to untrusted content
(:meth:`EnforcementPoint.expose`), and the answer's operation record lists the findings; an
answer that reads two ways (a key twice) is refused instead, since the screen reads one way.
So is a ``sampling/createMessage`` request of the backend's (its ``params``: what it wants the
client's model to read), on its own or inside an answer (``inputRequests``), decided as any
backend request: if it is relayed, a finding exposes the session first; relayed or not, an
operation record lists the findings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import re
import select
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from mcp_acp.audit.events import (
    OperationEvent,
    SystemEvent,
    argument_fields,
    payload_digest,
    without_secrets,
)
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.errors import AuditError, BackendError, exception_text
from mcp_acp.proxy.channel import BackendChannel, Unsendable
from mcp_acp.proxy.lists import LISTS, ListGuard
from mcp_acp.proxy.messages import (
    DENIED,
    INVALID_REQUEST,
    MAX_MESSAGE_BYTES,
    PARSE_ERROR,
    TOO_LARGE,
    Message,
    encode,
    error_response,
    from_body,
    miscased,
    parse,
    read_line,
)
from mcp_acp.proxy.pep import AT_EXIT_SECONDS, EnforcementPoint, Verdict
from mcp_acp.proxy.pins import ToolPins
from mcp_acp.proxy.screening import MAX_FINDINGS, screen_result

__all__ = ["ClientWriter", "Relay"]

log = logging.getLogger(__name__)

#: After the client closes its input, how long answers still in progress may take.
DRAIN_SECONDS = 10.0
#: When the session ends with decisions in progress, how long their tasks may take to
#: record the denial, once cancelled.
CUT_SHORT_SECONDS = 5.0
#: Why the session ended, when the client stopped reading what the proxy writes.
OUTPUT_CLOSED = "the client's output closed"
#: JSON-RPC error code for a request that failed on the backend's side: the backend went
#: away, or its answer was refused (it could be read two ways).
BACKEND_FAILED = -32000
#: Requests the backend sent the client that may wait for its answer at once; beyond, the
#: backend's next request is refused.
MAX_ASKED = 1_000
#: What a client reads when mcp-acp itself failed on its message (a bug; the traceback is
#: in mcp-acp's log).
INTERNAL = "internal error; see mcp-acp's log"
#: The client's requests whose answers are screened, and the parameter naming what each is
#: about (the tool, the resource's URI, the prompt, the task): an exposure names it. The
#: handshake's answer names nothing: its ``instructions`` (and server info) go to the
#: client's model. A task's result (a ``tools/call`` sent with a ``task``, answered with
#: the task at once) is the answer to ``tasks/result``.
SCREENED: dict[str, str | None] = {
    "tools/call": "name",
    "resources/read": "uri",
    "prompts/get": "name",
    "tasks/result": "taskId",
    "initialize": None,
    "server/discover": None,
}
#: The backend's requests that are screened: text it wants the client's model to read.
SCREENED_ASKS = frozenset({"sampling/createMessage"})
#: A string id that reads as an integer (ASCII digits only: "²" is a digit to str.isdigit).
_DECIMAL = re.compile(r"-?[0-9]+")
#: The rule of a denial of a message that spells a key the proxy reads in another letter
#: case (:attr:`Message.miscased`): what the policy decided on is not what the other side
#: would act on.
MISCASED = "builtin-miscased-key"
#: The rule of a denial of a notification whose method is not a notification's: MCP's are
#: all ``notifications/…``. Sent without an id, a request would skip what the relay holds
#: back for requests (a quarantined tool, a strict schema, the backend's annotations).
NOT_A_NOTIFICATION = "builtin-not-a-notification"
NOTIFICATIONS = "notifications/"


def _unwritable(error: BaseException | None) -> str:
    """Why a message is refused once the audit trail cannot be written (``error``), with
    credentials redacted: a sink's own ``AuditError`` may quote the URL it sent the record
    to, token and all, and this text goes to the backend and to approvers as well."""
    return f"the audit trail cannot be written ({without_secrets(str(error))})"


#: How a message refused before any decision is counted in the ``messages_dropped`` record
#: (:meth:`EnforcementPoint.drop`): by kind, never by the sender's text.
REFUSED_NOT_JSON = "refused: not JSON"
REFUSED_AMBIGUOUS = "refused: ambiguous JSON"
REFUSED_INVALID = "refused: invalid JSON-RPC"
REFUSED_TOO_LARGE = "refused: too large"
REFUSED_ID_IN_USE = "refused: id in use"


def _refused(message: Message) -> str:
    """The count a message refused before any decision goes under (:data:`REFUSED_INVALID`
    and the others)."""
    if message.ambiguous is not None:
        return REFUSED_AMBIGUOUS
    if (message.problem or "").startswith("not valid JSON"):
        return REFUSED_NOT_JSON
    return REFUSED_INVALID


def _an_answer(message: Message) -> bool:
    """Whether an invalid ``message`` is shaped as an answer: no method, a result or an
    error (both, say)."""
    body = message.body
    return "method" not in body and ("result" in body or "error" in body)


def _misspelt(why: str | None) -> tuple[str, str] | None:
    """The denial (rule id, reason) of a message whose key is spelt in another letter case
    (``why``: :attr:`Message.miscased`), if it is: for ``EnforcementPoint.check(withheld=)``,
    so that it is recorded like any denial before the policy."""
    return None if why is None else (MISCASED, why)


def _asks_for_input(message: Message) -> bool:
    """A result carrying requests for the client (2026-07-28 era ``inputRequests``)."""
    result = message.body.get("result")
    return isinstance(result, dict) and isinstance(result.get("inputRequests"), dict)


def _unreadable_input_requests(message: Message) -> str | None:
    """Why a result's ``inputRequests`` cannot be decided one by one — it is there, but not
    an object of requests (an array, a string) that a lenient client might still act on —
    or None."""
    result = message.body.get("result")
    asks = result.get("inputRequests") if isinstance(result, dict) else None
    if asks is None or isinstance(asks, dict):
        return None
    shape = "an array" if isinstance(asks, list) else f"of type {type(asks).__name__}"
    return (
        f"its inputRequests is {shape}, not an object of requests by name: requests for "
        "the client that the proxy cannot decide"
    )


class ClientWriter(Protocol):
    """Where the relay writes to the client: an ``asyncio.StreamWriter``, or anything with
    the same three methods. ``is_closing()``: the client's end is gone (the write pipe's
    transport notices the read end closing before anything is written)."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def is_closing(self) -> bool: ...


class ClientPipe(asyncio.streams.FlowControlMixin):
    """The protocol of the client's output when it is a pipe or socket: ``lost`` is set
    when the connection is lost — among other times, as soon as the client closes its
    read end (the event loop sees the pipe's error even with nothing to write)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()


def _idle_fd(writer: ClientWriter | None) -> int | None:
    """The file descriptor behind ``writer`` if nothing is waiting to be written to it — so
    that a line written there now cannot land inside another — else None. (An
    ``asyncio.StreamWriter``'s transport may hold the rest of a message the pipe did not
    take yet; another writer has a ``fileno()`` and writes through at once.)"""
    if writer is None or writer.is_closing():
        return None
    transport = getattr(writer, "transport", None)
    if isinstance(transport, asyncio.WriteTransport):
        if transport.get_write_buffer_size():
            return None
        target = transport.get_extra_info("pipe")
    else:
        target = writer
    fileno = getattr(target, "fileno", None)
    try:
        return int(fileno()) if callable(fileno) else None
    except (OSError, ValueError):
        return None


def _write_by(fd: int, data: bytes, deadline: float) -> bool:
    """Write all of ``data`` to ``fd`` (blocking or not) before ``deadline`` (monotonic);
    whether it was."""
    view = memoryview(data)
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            _, ready, _ = select.select([], [fd], [], left)
            if ready:
                view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue
        except (OSError, ValueError):
            return False
    return True


class Relay:
    """Relays one session between a stdio client and a backend channel."""

    def __init__(
        self,
        pep: EnforcementPoint,
        trail: AuditTrail,
        channel: BackendChannel,
        *,
        record_payloads: bool = False,
        tool_denial: str = "error",
        tool_screening: str = "quarantine",
        pins: ToolPins | None = None,
        pins_backend: str = "",
        review_new_tools: bool = False,
    ) -> None:
        self.pep = pep
        self.trail = trail
        self.channel = channel
        self.record_payloads = record_payloads
        self.tool_denial = tool_denial
        #: what the backend's lists may show, and which listed entries may be used
        self.lists = ListGuard(
            pep,
            trail,
            tool_screening=tool_screening,
            pins=pins,
            pins_backend=pins_backend,
            review_new_tools=review_new_tools,
        )
        self._to_client: ClientWriter | None = None
        self._client_lock = asyncio.Lock()
        self._output_closed = asyncio.Event()  # the client no longer reads: end the session
        #: why the session ended, when the relay ended it (serve records it)
        self.ended_by: str | None = None
        self._loop_thread: int | None = None  # the event loop's thread (run())
        self._deciding: dict[Any, asyncio.Task[None]] = {}
        # the client's requests the enforcement point is still deciding (waiting for a
        # human, say): answered with an error if the decision is cut short
        self._undecided: dict[Any, Message] = {}
        # the tasks of client requests whose decision record is on its way: the decision
        # stands — the client's cancellation no longer ends it (an allowed request is
        # forwarded, a denied one answered, as recorded)
        self._on_record: set[asyncio.Task[None]] = set()
        #: why the backend is gone, once it is (the sentence its requests are answered with)
        self._lost: str | None = None
        # request id -> (method, monotonic ns when it was sent), sent to the backend
        self._in_flight: dict[Any, tuple[str, int]] = {}
        # of those, the screened ones (SCREENED): request id -> (method, what it names)
        self._screening: dict[Any, tuple[str, str | None]] = {}
        # of those, the initialize requests: request id -> the session's client before it
        # (restored if the backend refuses it: Session.handshake_answered)
        self._handshaking: dict[Any, tuple[str | None, str | None, bool]] = {}
        # the backend's request id -> method, sent to the client and not yet answered: the
        # only answers from the client that go to the backend
        self._asked: dict[Any, str] = {}
        self._backend_deciding: dict[Any, asyncio.Task[None]] = {}  # its requests, deciding
        self._tasks: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- plumbing

    async def _send_client(self, data: bytes) -> None:
        """Write to the client. If its end is gone (EPIPE, a reset, a file that cannot
        grow), the session ends: nothing more is forwarded (:meth:`_output_gone`)."""
        assert self._to_client is not None  # noqa: S101 - set by run()
        if self._output_closed.is_set():
            return
        async with self._client_lock:
            try:
                self._to_client.write(data)
                await self._to_client.drain()
            except OSError as exc:  # BrokenPipeError, ConnectionResetError, ENOSPC, …
                self._output_gone(exception_text(exc))

    def _output_gone(self, why: str) -> None:
        if not self._output_closed.is_set():
            log.warning("%s (%s): ending the session", OUTPUT_CLOSED, why)
            self._output_closed.set()

    def _client_reads(self) -> bool:
        """Whether the client still reads what we write; if not, the session ends."""
        assert self._to_client is not None  # noqa: S101 - set by run()
        if not self._output_closed.is_set() and self._to_client.is_closing():
            self._output_gone("its end of the pipe is closed")
        return not self._output_closed.is_set()

    async def _send_backend(self, message: Message) -> None:
        """For messages with no one to answer if the channel cannot carry them."""
        try:
            await self.channel.send(message)
        except Unsendable as exc:
            log.warning("cannot forward %s to the backend: %s", message.kind, exc)

    def _spawn(self, coro: Awaitable[None], *, answer: Any = None) -> asyncio.Task[None]:
        """Run ``coro`` as a task of this session. If it fails unexpectedly (a bug), the
        failure is logged and — for a client request, ``answer`` its id — the client gets
        an error instead of waiting for ever."""

        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("relay task failed")
                if answer is not None:
                    text = f"mcp-acp failed on this request ({INTERNAL})"
                    with contextlib.suppress(Exception):
                        await self._send_client(encode(error_response(answer, DENIED, text)))

        task: asyncio.Task[None] = asyncio.ensure_future(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _cancel_decision(self, task: asyncio.Task[None]) -> None:
        """Cancel the task deciding a request its sender cancelled: the enforcement point
        records the denial as the decision ends (:meth:`EnforcementPoint.check`). A client
        request whose decision record is already on its way is not cancelled: the records
        say what happens to it (forwarded, or denied), and that happens. A task
        that has not begun — the request and its cancellation came in one read — would end
        before its decision began, with no record and no answer: it is cancelled once it
        has begun."""
        if task.done() or task in self._on_record or task.cancelling():
            return
        coro = task.get_coro()  # _spawn's: a coroutine
        if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            asyncio.get_running_loop().call_soon(self._cancel_decision, task)
            return
        task.cancel()

    def _operation_event(
        self, direction: str, message: Message, outcome: str, **fields: Any
    ) -> OperationEvent:
        params = message.params
        arguments = params.get("arguments") if message.method == "tools/call" else params
        name = params.get("name") if message.method == "tools/call" else None
        return OperationEvent.model_validate(  # as OperationEvent(...), without keywords
            {
                "session_id": self.pep.session.id,
                "request_id": str(message.id),
                "direction": direction,
                "mcp_method": message.method or None,
                "tool_name": name if isinstance(name, str) else None,
                "outcome": outcome,
                **argument_fields(arguments, record_payloads=self.record_payloads),
                **fields,
            }
        )

    def _not_forwarded(self, message: Message, why: str) -> OperationEvent:
        """The operation record of a client request denied after its decision — which may
        have been recorded as an allow, "forwarded" — because ``why``."""
        return self._operation_event(
            "client_to_server", message, "denied", error_code=DENIED, reason=f"not forwarded: {why}"
        )

    async def _operation(
        self, direction: str, message: Message, outcome: str, **fields: Any
    ) -> None:
        await self.trail.record(self._operation_event(direction, message, outcome, **fields))

    # ---------------------------------------------------------------- running

    async def run(self, client_in: asyncio.StreamReader, client_out: ClientWriter) -> int:
        """Relay until the client closes its input or the backend goes away; return an exit
        code. Raises :class:`BackendError` (recorded first) if the backend cannot start."""
        self._to_client = client_out
        self._loop_thread = threading.get_ident()
        if self.pep.shutdown is not None:  # after the enforcement point's: records first
            self.pep.shutdown.on_session_end(self._answer_at_exit)
        try:
            try:
                started = await self.channel.start()
            except BackendError as error:
                with contextlib.suppress(AuditError):
                    await self.trail.record(
                        SystemEvent(
                            event="backend_start_failed",
                            session_id=self.pep.session.id,
                            detail={"backend": self.channel.backend_id, "error": error.message},
                        )
                    )
                raise
            await self.trail.record(
                SystemEvent(event="backend_started", session_id=self.pep.session.id, detail=started)
            )
            self.pep.backend_identity = self.channel.backend_identity  # what it proved at start
            return await self._relay(client_in)
        finally:
            self.pep.report_dropped()  # what the flood guards dropped since the last report
            await self.channel.close()

    async def _relay(self, client_in: asyncio.StreamReader) -> int:
        from_client = asyncio.ensure_future(self._client_loop(client_in))
        from_backend = asyncio.ensure_future(self._backend_loop())
        output_closed = asyncio.ensure_future(self._output_closed.wait())
        pipe_lost = asyncio.ensure_future(self._watch_output())
        try:
            done, _ = await asyncio.wait(
                {from_client, from_backend, output_closed}, return_when=asyncio.FIRST_COMPLETED
            )
            if self._output_closed.is_set():  # nothing can reach the client any more
                self.ended_by = self.pep.ending = OUTPUT_CLOSED
                return 0
            code = 0
            if from_client in done and not from_backend.done():
                await self._drain(from_backend)  # answers still owed to the client
            if from_backend.done() and (from_backend in done or self._in_flight or self._undecided):
                code = BackendError.exit_code
                await self._backend_gone(from_client)
            return code
        finally:
            if self.pep.ending is None:  # what cuts short the decisions still in progress
                task = asyncio.current_task()
                stopped = task is not None and task.cancelling() > 0
                self.pep.ending = (
                    "the proxy was stopped" if stopped else "the client closed the session"
                )
            output_closed.cancel()
            pipe_lost.cancel()
            for task in (from_client, from_backend, *self._tasks):
                task.cancel()
            for task in (from_client, from_backend):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._tasks:  # cancelled decisions record their denial: let them
                await asyncio.wait(set(self._tasks), timeout=CUT_SHORT_SECONDS)

    async def _watch_output(self) -> None:
        """The client may close its read end of our output and go quiet: that ends the
        session at once (through ``_output_closed``), not at its next message."""
        transport = getattr(self._to_client, "transport", None)
        protocol = (
            transport.get_protocol() if isinstance(transport, asyncio.BaseTransport) else None
        )
        if isinstance(protocol, ClientPipe):
            await protocol.lost.wait()
            self._output_gone("its end of the pipe is closed")

    async def _drain(self, from_backend: asyncio.Future[None]) -> None:
        """The client closed its input: let decisions and backend answers still in progress
        reach it (bounded), then end."""
        deadline = asyncio.get_running_loop().time() + DRAIN_SECONDS
        while (
            (self._deciding or self._in_flight or self._tasks)
            and not from_backend.done()
            and not self._output_closed.is_set()
        ):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("client gone; %d request(s) still unanswered", len(self._in_flight))
                return
            await asyncio.sleep(0.01)

    async def _backend_gone(self, from_client: asyncio.Future[None]) -> None:
        """The backend is gone. Nothing more is read from the client (it could not be
        served), and every request already taken is answered. What is in progress finishes
        first, within :data:`CUT_SHORT_SECONDS`: an answer of the backend's being filtered
        is relayed; a decision still in progress (a human asked, say) is cut short — denied
        on record naming the backend's exit, and answered with that denial; a decision on
        its way to the record stands (a denial is answered; an allowed request is in flight).
        Then every request in flight is answered with ``BACKEND_FAILED`` and the channel's
        sentence, recorded like a backend's answer."""
        detail, sentence = await self.channel.exit_detail()
        self.pep.ending = self._lost = sentence
        from_client.cancel()
        with contextlib.suppress(AuditError):
            await self.trail.record(
                SystemEvent(event="backend_exited", session_id=self.pep.session.id, detail=detail)
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CUT_SHORT_SECONDS
        while (pending := [t for t in self._tasks if not t.done()]) and loop.time() < deadline:
            for task in (*self._deciding.values(), *self._backend_deciding.values()):
                self._cancel_decision(task)  # its denial recorded and answered as it ends
            # a task may begin deciding meanwhile (read before the client loop stopped)
            await asyncio.wait(pending, timeout=min(0.05, deadline - loop.time()))
        for request_id in list(self._in_flight):
            method, took = self._answered(request_id)
            error = error_response(request_id, BACKEND_FAILED, sentence)
            await self._send_client(encode(error))
            self._record_response(error, request_id, method, took)

    @property
    def backend_lost(self) -> str | None:
        """Why the backend went away (the channel's sentence), once it has."""
        return self._lost

    def _answer_at_exit(self, reason: str) -> None:
        """At a fail-closed shutdown (a callback of the shutdown coordinator, which exits
        once it returns; the event loop does not run again): each client request still
        being decided — its denial recorded by the enforcement point just before — is
        answered with an error, and so is each request the backend has not answered yet
        (``-32000``, recorded as its answer), if the client can take them: only on the event
        loop's thread (nothing else writes to the client meanwhile), with nothing else
        waiting to be written to it, within :data:`AT_EXIT_SECONDS`."""
        if threading.get_ident() != self._loop_thread or self._output_closed.is_set():
            return
        fd = _idle_fd(self._to_client)
        if fd is None:
            return
        why = self.pep.ending or f"the proxy shut down ({reason})"
        text = f"denied: {why} before the request was decided"
        deadline = time.monotonic() + AT_EXIT_SECONDS
        for message in list(self._undecided.values()):
            if not _write_by(fd, self._denial(message, text, "builtin-cut-short"), deadline):
                return
        for request_id in list(self._in_flight):
            method, took = self._answered(request_id)
            sentence = f"{why} before the backend answered (request {request_id})"
            error = error_response(request_id, BACKEND_FAILED, sentence)
            if not _write_by(fd, encode(error), deadline):
                return
            self.trail.record_at_exit(self._response_event(error, request_id, method, took))

    # ---------------------------------------------------------------- client -> backend

    async def _client_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await read_line(reader)
            if line is None or not self._client_reads():
                return
            if line == TOO_LARGE:
                text = f"message larger than {MAX_MESSAGE_BYTES} bytes"
                await self._send_client(encode(error_response(None, INVALID_REQUEST, text)))
                self.pep.drop("client", REFUSED_TOO_LARGE)
                continue
            if not line.strip():
                continue
            message = parse(line + b"\n")
            try:
                await self._client_message(message)
            except Exception:  # a bug must not end the session silently: this one fails
                log.exception("client message not handled (it was not forwarded)")
                if message.kind == "request":
                    text = f"mcp-acp failed on this request; it was not forwarded ({INTERNAL})"
                    with contextlib.suppress(Exception):
                        await self._send_client(encode(error_response(message.id, DENIED, text)))

    async def _client_message(self, message: Message) -> None:
        if message.ambiguous is not None and message.kind == "notification":
            log.warning("client notification refused: %s", message.ambiguous)
            self.pep.drop("client", _refused(message))
        elif message.kind == "invalid" and _an_answer(message):
            # the client's answer to a request of the backend's, unusable: not answered to
            # the client (the id is the backend's; a request of the client's may have it
            # too), and the backend, if it waits for it, told why
            log.warning("client answer %r refused: %s", message.reply_id, message.problem)
            self.pep.drop("client", _refused(message))
            asked = message.reply_id
            if asked is not None and self._asked.pop(asked, None) is not None:
                text = f"the client's answer was refused: {message.problem}"
                await self._send_backend(from_body(error_response(asked, INVALID_REQUEST, text)))
        elif message.kind == "invalid" or (
            message.ambiguous is not None and message.kind == "request"
        ):
            problem = message.ambiguous or message.problem or "invalid message"
            code = PARSE_ERROR if problem.startswith("not valid JSON") else INVALID_REQUEST
            request_id = message.body.get("id") if message.body else None
            await self._send_client(encode(error_response(request_id, code, problem)))
            self.pep.drop("client", _refused(message))
        elif message.kind == "request" and self._in_use(message.id):
            text = (
                f"request id {message.id!r} is already used by a request in progress "
                '(3 and "3" count as one: the audit trail records ids as text); '
                "give every request its own id"
            )
            await self._send_client(encode(error_response(message.id, INVALID_REQUEST, text)))
            self.pep.drop("client", REFUSED_ID_IN_USE)
        elif message.kind == "request":
            task = self._spawn(self._client_request(message), answer=message.id)
            self._deciding[message.id] = task
            task.add_done_callback(self._forget(message.id))
        elif message.kind == "notification":
            waiting = self._deciding.get(message.cancels)
            if waiting is not None:
                self._cancel_decision(waiting)  # a pending decision or approval ends here
            forward = functools.partial(self._send_backend, message)
            await self._notification("client", message, forward)
        elif self._asked.pop(message.id, None) is None:
            # an answer to nothing the backend asked, or a second answer: not passed on
            self.pep.drop("client", "response to no request")
        elif message.ambiguous is not None or message.miscased is not None:
            why = message.ambiguous or message.miscased
            log.warning("client answer %r refused: %s", message.id, why)
            text = f"the client's answer was refused: {why}"
            await self._send_backend(from_body(error_response(message.id, INVALID_REQUEST, text)))
        elif self.trail.failed is not None:  # nothing passes: the backend is told why
            text = f"the client's answer was withheld: {_unwritable(self.trail.failed)}"
            await self._send_backend(from_body(error_response(message.id, DENIED, text)))
        else:  # the answer to a request the backend sent
            await self._send_backend(message)

    def _in_use(self, request_id: str | int) -> bool:
        """Whether a request in progress has this id, or one recorded as the same text
        (``3`` and ``"3"``): records join by the id as text. (Two integers a JavaScript
        backend would read as one never get here: ids beyond ±(2^53-1) are invalid, see
        :mod:`mcp_acp.proxy.messages`.)"""
        twins: list[str | int] = [request_id]
        if isinstance(request_id, int):
            twins.append(str(request_id))
        elif _DECIMAL.fullmatch(request_id) and str(int(request_id)) == request_id:
            twins.append(int(request_id))
        return any(t in self._deciding or t in self._in_flight for t in twins)

    def _forget(self, request_id: Any) -> Callable[[asyncio.Task[None]], None]:
        def forget(task: asyncio.Task[None]) -> None:
            self._deciding.pop(request_id, None)
            self._on_record.discard(task)

        return forget

    async def _client_request(self, message: Message) -> None:
        def operation(allowed: bool) -> OperationEvent:  # recorded with the decision
            # this request's task (looked up: at a fail-closed exit this runs from the
            # shutdown coordinator, perhaps off the loop); decided, not cut short: it stands
            task = self._deciding.get(message.id)
            if task is not None and not task.cancelling():
                self._on_record.add(task)
            if allowed:
                return self._operation_event("client_to_server", message, "forwarded")
            return self._operation_event("client_to_server", message, "denied", error_code=DENIED)

        if not self._client_reads():
            return  # no answer could reach the client: not decided, never forwarded
        annotations = None
        if message.method == "tools/call":
            name = message.params.get("name")
            if isinstance(name, str):
                annotations = self.lists.annotations(name)
        withheld = _misspelt(message.miscased) or self.lists.withheld(
            message.method, message.params
        )
        self._undecided[message.id] = message
        try:
            verdict = await self.pep.check(
                message.method,
                message.params,
                message.id,
                annotations,
                companion=operation,
                withheld=withheld,
                forwards=True,
            )
        except asyncio.CancelledError:  # cut short, its denial on record
            if self._lost is not None and asyncio.current_task() not in self._on_record:
                text = f"denied: {self._lost} before the request was decided"
                await self._deny(message, text, "builtin-cut-short")
            return  # cancelled by the client: nothing is sent on
        except AuditError as error:
            await self._refuse_unrecorded(message, error)
            return
        finally:
            self._undecided.pop(message.id, None)
        if not verdict.allowed:
            await self._deny(message, verdict.reason, verdict.rule_id)
            if verdict.fatal is not None:
                self.pep.fail(verdict.fatal)
            return
        if self.trail.failed is not None:  # it failed since this decision was recorded
            self.pep.settled(verdict, f"denied: {_unwritable(self.trail.failed)}")
            await self._refuse_unrecorded(message, self.trail.failed)
            return
        self._in_flight[message.id] = (message.method, time.monotonic_ns())
        if message.method in SCREENED:
            named_by = SCREENED[message.method]
            name = None if named_by is None else message.params.get(named_by)
            self._screening[message.id] = (
                message.method,
                name if isinstance(name, str) or named_by is None else repr(name),
            )
        # before it is sent: its answer (a list to filter) may be read before send returns
        before = self.pep.session.forwarded(message.method, message.params)
        if before is not None:  # an initialize: the session's client before it
            self._handshaking[message.id] = before
        try:
            await self.channel.send(message)
        except Unsendable as exc:
            self._in_flight.pop(message.id, None)
            self._screening.pop(message.id, None)
            if self._handshaking.pop(message.id, None) is not None:  # not sent: as if refused
                self.pep.session.handshake_answered(before)
            text = f"cannot forward this request to the backend: {exc}"
            self.pep.settled(verdict, f"not forwarded: {text}")
            text = f"{text} (request {message.id})"
            await self._send_client(encode(error_response(message.id, INVALID_REQUEST, text)))
            return
        self.pep.settled(verdict)

    async def _refuse_unrecorded(self, message: Message, error: AuditError) -> None:
        """The trail failed (``error``) as or after the request was decided: denied. Its
        decision record (perhaps in the fallback file) may be an allow, and the operation
        record handed over with it may say "forwarded": one more, to wherever the trail
        writes now, says it was not."""
        text = _unwritable(error)
        await self._deny(message, f"denied: {text}", None)
        self.trail.record_soon(self._not_forwarded(message, text))

    async def _deny(self, message: Message, reason: str, rule_id: str | None) -> None:
        await self._send_client(self._denial(message, reason, rule_id))

    def _denial(self, message: Message, reason: str, rule_id: str | None) -> bytes:
        """The answer denying ``message``: a ``DENIED`` error, or (``tool_denial:
        result``, for a ``tools/call``) a result marked as an error."""
        # the reason may quote what a plugin raised (an identity provider's error naming
        # the token it sent): the other side reads it, so its credentials are redacted
        text = f"{without_secrets(reason)} (request {message.id})"
        if message.method == "tools/call" and self.tool_denial == "result":
            result = {"content": [{"type": "text", "text": text}], "isError": True}
            return encode({"jsonrpc": "2.0", "id": message.id, "result": result})
        return encode(error_response(message.id, DENIED, text, {"rule": rule_id}))

    async def _notification(
        self,
        side: Literal["client", "backend"],
        message: Message,
        forward: Callable[[], Awaitable[None]],
    ) -> None:
        """A notification from either side (cancellation, progress, logging, list changes):
        within the side's flood limit (:meth:`EnforcementPoint.admit`; beyond it, dropped
        and counted), it passes the enforcement point; ``forward`` relays it if allowed.

        One whose method is not a notification's (``tools/call`` without an id) is denied
        before the policy (:data:`NOT_A_NOTIFICATION`), as is one spelling a key the proxy
        reads in another letter case (:data:`MISCASED`): recorded, logged, never relayed,
        and — a notification has no answer — nothing is sent back."""
        if not self.pep.admit(side, message.method):
            return
        withheld = _misspelt(message.miscased)
        if withheld is None and not message.method.startswith(NOTIFICATIONS):
            withheld = (
                NOT_A_NOTIFICATION,
                f"{message.method!r} is not a notification, yet it came without an id; "
                f"notifications are {NOTIFICATIONS}…: send a request with an id",
            )
        if withheld is not None:
            log.warning("%s notification refused (%s): %s", side, *withheld)
        try:
            verdict = await self.pep.check(
                message.method,
                message.params,
                "notification",
                flood_guard=False,
                withheld=withheld,
                from_backend=side == "backend",
                forwards=True,
            )
        except AuditError:
            return  # the trail is failing: the process is shutting down; nothing passes
        if verdict.fatal is not None:
            self.pep.fail(verdict.fatal)
        if verdict.allowed:
            await forward()
            self.pep.settled(verdict)

    # ---------------------------------------------------------------- backend -> client

    async def _backend_loop(self) -> None:
        async for message in self.channel.receive():
            try:
                await self._backend_message(message)
            except Exception:  # a bug must not end the session silently: this one fails
                log.exception("backend message not handled (it was not relayed)")
                if message.kind == "response" and message.id is not None:
                    text = f"mcp-acp failed on the backend's answer ({INTERNAL})"
                    answer = error_response(message.id, BACKEND_FAILED, text)
                    with contextlib.suppress(Exception):
                        await self._send_client(encode(answer))

    async def _backend_message(self, message: Message) -> None:
        if message.kind == "response":
            if message.id not in self._in_flight:  # a second answer, or an answer to
                # nothing: never relayed (a copy of a list would pass unfiltered)
                self.pep.drop("backend", "response to no request")
                return
            source = self._screening.get(message.id)
            before = self._handshaking.get(message.id)
            method, took = self._answered(message.id)
            if before is not None:  # an initialize's answer: refused, unless a result
                refused = not isinstance(message.body.get("result"), dict)
                self.pep.session.handshake_answered(before if refused else None)
            decided = method in LISTS or _asks_for_input(message)
            unreadable = _unreadable_input_requests(message)
            if self.trail.failed is not None:
                await self._withhold_answer(message.id, method, took)
            elif (
                message.miscased is not None
                or (message.ambiguous is not None and (decided or source is not None))
                or unreadable is not None
            ):
                # a screened answer too: the screen reads one copy of a repeated key, and
                # the client's reader may keep the other; a key the relay reads, spelt in
                # another case, is unread here (an "InputRequests") and read by the client;
                # requests for the client in a shape the relay does not decide are refused
                why = message.miscased or message.ambiguous or unreadable
                await self._refuse_answer(message, method, took, why)
            elif decided:
                findings = self._screen_answer(message, source)
                self._spawn(self._backend_response(message, method, took, findings))
            else:  # the usual case: screened, relayed as is, in order, then recorded
                findings = self._screen_answer(message, source)
                await self._send_client(message.raw)
                self._record_response(message.body, message.id, method, took, findings)
        elif message.ambiguous is not None and message.kind == "request":
            log.warning("backend request refused: %s", message.ambiguous)
            answer = error_response(message.id, INVALID_REQUEST, message.ambiguous)
            await self._send_backend(from_body(answer))
            self.pep.drop("backend", _refused(message))
        elif message.ambiguous is not None and message.kind == "notification":
            log.warning("backend notification refused: %s", message.ambiguous)
            self.pep.drop("backend", _refused(message))
        elif message.kind == "request":
            task = self._spawn(self._backend_request(message))
            self._backend_deciding[message.id] = task
            task.add_done_callback(lambda _: self._backend_deciding.pop(message.id, None))
        elif message.kind == "notification":
            if message.cancels is not None:
                self._asked.pop(message.cancels, None)  # no answer is owed to it any more
                deciding = self._backend_deciding.get(message.cancels)
                if deciding is not None:
                    self._cancel_decision(deciding)  # not yet decided: never reaches the client
            # awaited here: in order with the answers around it
            forward = functools.partial(self._send_client, message.raw)
            await self._notification("backend", message, forward)
        else:
            log.warning("backend sent an invalid message: %s", message.problem)
            self.pep.drop("backend", _refused(message))
            answered = message.reply_id
            if answered is not None and "method" in message.body:  # it waits for an answer
                text = f"{message.problem or 'invalid request'} (request {answered})"
                answer = error_response(answered, INVALID_REQUEST, text)
                await self._send_backend(from_body(answer))
            elif answered is not None and answered in self._in_flight:  # the client waits
                method, took = self._answered(answered)
                text = f"the backend's answer was refused: {message.problem} (request {answered})"
                error = error_response(answered, BACKEND_FAILED, text)
                await self._send_client(encode(error))
                self._record_response(error, answered, method, took)

    def _answered(self, request_id: Any) -> tuple[str, float]:
        """The request ``request_id`` is answered: no longer in flight. Its method, and the
        milliseconds since it was sent to the backend (the record's ``duration_ms``)."""
        method, sent = self._in_flight.pop(request_id)
        self._screening.pop(request_id, None)
        self._handshaking.pop(request_id, None)
        return method, round((time.monotonic_ns() - sent) / 1e6, 3)

    def _screen_answer(self, message: Message, source: tuple[str, str | None] | None) -> list[str]:
        """What the backend's answer to a screened request — ``source``: its method and what
        it names (None: not screened) — carries that marks it untrusted, read before it
        reaches the client, so that the client's next request is decided knowing it. Any
        finding exposes the session."""
        if source is None:
            return []
        body = message.body
        findings = (
            screen_result(body["result"], "result")
            if "result" in body
            else screen_result(body.get("error"), "error")
        )
        if findings:
            method, name = source
            self.pep.expose(method, name, message.id, f"its result carries {findings[0]}")
        return findings

    async def _withhold_answer(self, request_id: Any, method: str | None, took: float) -> None:
        """The audit trail has failed, and the process ends in a moment: the backend's answer
        to ``request_id`` does not pass. The client gets a denial instead, recorded as its
        answer (the trail now sends every record to the fallback file)."""
        text = (
            f"denied: {_unwritable(self.trail.failed)}; the backend's answer was withheld "
            f"(request {request_id})"
        )
        error = error_response(request_id, DENIED, text)
        await self._send_client(encode(error))
        self._record_response(error, request_id, method, took)

    async def _refuse_answer(
        self, message: Message, method: str | None, took: float, why: str | None
    ) -> None:
        """A backend answer the relay would decide on (a list to filter, requests for the
        client inside it) or screen (:data:`SCREENED`) but cannot read unambiguously, or
        one spelling a key the relay reads in another letter case, or one whose requests
        for the client are not an object of them (``why``): the client gets an error
        instead, and the answer is recorded as it came."""
        log.warning("backend answer to request %r refused: %s", message.id, why)
        text = f"the backend's answer was refused: {why} (request {message.id})"
        await self._send_client(encode(error_response(message.id, BACKEND_FAILED, text)))
        self._record_response(message.body, message.id, method, took)

    async def _backend_response(
        self, message: Message, method: str | None, took: float, findings: list[str]
    ) -> None:
        inside = await self._input_requests_allowed(message, method)
        if inside is None:
            return
        asked, seen = inside
        body = message.body
        if method in LISTS and isinstance(body.get("result"), dict):
            try:
                body = {**body, "result": await self.lists.filter(method, body["result"])}
                data = encode(body)
            except (AuditError, ValueError) as error:  # no record; or a number JSON lacks
                text = f"the backend's answer could not be filtered: {error}"
                self._settle_all(asked, f"not forwarded: {text}")
                text = f"{text} (request {message.id})"
                await self._send_client(encode(error_response(message.id, BACKEND_FAILED, text)))
                return
        else:
            data = message.raw
        if self.trail.failed is not None:  # it failed while this answer was being decided
            self._settle_all(asked, f"denied: {_unwritable(self.trail.failed)}")
            await self._withhold_answer(message.id, method, took)
            return
        if seen:  # before the client's model can read them
            why = f"its request carries {seen[0]}"
            self.pep.expose("sampling/createMessage", None, f"{message.id}/inputRequests", why)
        await self._send_client(data)
        self._settle_all(asked)
        found = [*findings, *(finding for finding in seen if finding not in findings)]
        self._record_response(body, message.id, method, took, found[:MAX_FINDINGS])

    def _settle_all(self, verdicts: list[Verdict], refused: str | None = None) -> None:
        """Tell whoever approved the requests ``verdicts`` allowed what became of them:
        relayed to the client (``refused`` None), or not, and why."""
        for verdict in verdicts:
            self.pep.settled(verdict, refused)

    def _record_response(
        self,
        body: dict[str, Any],
        request_id: Any,
        method: str | None,
        took: float,
        findings: list[str] | None = None,
    ) -> None:
        """The request's decision was durable before it was forwarded; its response is
        recorded as it is relayed: handed to the trail once the answer is on its way (in the
        same loop step, unless the client is not reading), and committed at the next loop
        iteration — so building the record is not part of the client's wait. If that record
        fails, the trail fails: the event goes to the fallback file and the proxy shuts
        down. ``findings``: what screening the answer (:data:`SCREENED`) found in it."""
        self.trail.record_soon(self._response_event(body, request_id, method, took, findings))

    def _response_event(
        self,
        body: dict[str, Any],
        request_id: Any,
        method: str | None,
        took: float,
        findings: list[str] | None = None,
    ) -> OperationEvent:
        digest, size = payload_digest(body.get("result", body.get("error")))
        error = body.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        return OperationEvent.model_validate(  # as OperationEvent(...), without keywords
            {
                "session_id": self.pep.session.id,
                "request_id": str(request_id),
                "direction": "server_to_client",
                "mcp_method": method,
                "outcome": "error" if error else "response",
                "result_sha256": digest,
                "result_size": size,
                # a backend may send any JSON here; the record's schema says integer
                "error_code": code if type(code) is int else None,
                "duration_ms": took,
                "findings": findings or None,
            }
        )

    async def _input_requests_allowed(
        self, message: Message, method: str | None
    ) -> tuple[list[Verdict], list[str]] | None:
        """2026-07-28 era: a server asks the client for sampling, elicitation or roots inside a
        result (``resultType: "input_required"``, ``inputRequests``), not as a request of its
        own. Each embedded request is decided like a backend request; if one is denied, the
        client gets the denial for its own request and the server never gets an answer
        (None). Otherwise: the verdicts, for the caller to settle (``approval_settled``)
        once the answer is relayed or refused, and what screening found in the sampling
        requests among them (:data:`SCREENED_ASKS`), which expose the session when relayed."""
        result = message.body.get("result")
        embedded = result.get("inputRequests") if isinstance(result, dict) else None
        if not isinstance(embedded, dict):
            return [], []
        original = Message("request", b"", {"id": message.id, "method": method or ""})
        allowed: list[Verdict] = []
        for key, item in embedded.items():
            ask = Message("request", b"", item if isinstance(item, dict) else {})
            misspelt = _misspelt(miscased(ask.body))
            if not self.pep.admit("backend", ask.method):  # requests of the backend's own
                reason = (
                    "denied: the backend's answer asks the client more than "
                    "proxy.rate_limits allows (notifications_per_second, notification_burst)"
                )
                self._settle_all(allowed, f"not forwarded: {reason.removeprefix('denied: ')}")
                await self._deny(original, reason, "builtin-rate-flood")
                return None
            try:
                verdict = await self.pep.check(
                    ask.method,
                    ask.params,
                    f"{message.id}/{key}",
                    flood_guard=False,
                    withheld=misspelt,
                    from_backend=True,
                    forwards=True,
                )
            except AuditError as error:
                self._settle_all(allowed, f"denied: {_unwritable(error)}")
                await self._deny(original, f"denied: {_unwritable(error)}", None)
                return None
            if verdict.allowed:
                allowed.append(verdict)
                continue
            self._settle_all(allowed, f"not forwarded: {key!r} in the same answer was denied")
            await self._deny(original, verdict.reason, verdict.rule_id)
            with contextlib.suppress(AuditError):
                await self.trail.record(
                    OperationEvent(
                        session_id=self.pep.session.id,
                        request_id=str(message.id),
                        direction="server_to_client",
                        mcp_method=ask.method or None,
                        outcome="denied",
                        error_code=DENIED,
                    )
                )
            if verdict.fatal is not None:
                self.pep.fail(verdict.fatal)
            return None
        seen = [
            finding
            for key, item in embedded.items()
            if isinstance(item, dict) and item.get("method") in SCREENED_ASKS
            for finding in screen_result(item.get("params"), f"result.inputRequests.{key}.params")
        ]
        return allowed, seen

    async def _backend_request(self, message: Message) -> None:
        """A request from the backend to the client (sampling, elicitation, roots). Beyond
        the backend's flood limit it is answered with a denial at once, and counted with the
        dropped notifications (:meth:`EnforcementPoint.admit`). A sampling request is
        screened (:data:`SCREENED_ASKS`): relayed, a finding exposes the session before the
        client gets it; relayed or not, an operation record of the request (outcome
        ``forwarded`` or ``denied``) lists the findings."""
        if not self.pep.admit("backend", message.method):
            text = (
                "denied: the backend sends requests and notifications faster than "
                f"proxy.rate_limits allows; slow down (request {message.id})"
            )
            answer = error_response(message.id, DENIED, text, {"rule": "builtin-rate-flood"})
            await self._send_backend(from_body(answer))
            return
        try:
            verdict = await self.pep.check(
                message.method,
                message.params,
                message.id,
                flood_guard=False,
                withheld=_misspelt(message.miscased),
                from_backend=True,
                forwards=True,
            )
        except AuditError as error:
            text = f"denied: {_unwritable(error)}"
            await self._send_backend(from_body(error_response(message.id, DENIED, text)))
            return
        if verdict.fatal is not None:
            self.pep.fail(verdict.fatal)
        findings = (  # params as sent: relayed as the exact bytes, whatever their shape
            screen_result(message.body.get("params"), "params")
            if message.method in SCREENED_ASKS
            else []
        )
        relayed = False
        if verdict.allowed and len(self._asked) >= MAX_ASKED and message.id not in self._asked:
            text = f"denied: {MAX_ASKED} requests already wait for the client"
            self.pep.settled(verdict, text)
            text = f"{text} (request {message.id})"
            await self._send_backend(from_body(error_response(message.id, DENIED, text)))
        elif verdict.allowed and self.trail.failed is not None:
            text = f"denied: {_unwritable(self.trail.failed)}"
            self.pep.settled(verdict, text)
            await self._send_backend(from_body(error_response(message.id, DENIED, text)))
        elif verdict.allowed:
            self._asked[message.id] = message.method
            if findings:  # for the client's answer, and its next requests, to be decided so
                why = f"its request carries {findings[0]}"
                self.pep.expose(message.method, None, message.id, why)
            await self._send_client(message.raw)
            relayed = True
            self.pep.settled(verdict)
        else:
            await self._send_backend(
                from_body(
                    error_response(
                        message.id,
                        DENIED,
                        f"{verdict.reason} (request {message.id})",
                        {"rule": verdict.rule_id},
                    )
                )
            )
        if findings:
            outcome, code = ("forwarded", None) if relayed else ("denied", DENIED)
            self.trail.record_soon(
                self._operation_event(
                    "server_to_client", message, outcome, error_code=code, findings=findings
                )
            )
