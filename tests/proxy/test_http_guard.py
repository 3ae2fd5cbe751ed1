"""The event stream that answers one request passes on only the answers to that request
(``http_guard._OwnAnswers``): how it cuts events out of the bytes, which it leaves out,
and how it bounds what it holds. The end-to-end case is in ``tests/e2e/test_proxy_http.py``
(``test_an_answer_to_another_request_on_a_requests_stream_is_left_out``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx2
import pytest

from mcp_acp.proxy.http_guard import _ANY, _OwnAnswers


class Chunks(httpx2.AsyncByteStream):
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def answer(request_id: Any, text: str) -> bytes:
    result = {"content": [{"type": "text", "text": text}]}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()


async def passed(chunks: Iterable[bytes], expected: Any) -> bytes:
    stream = _OwnAnswers(Chunks(chunks), expected, max_bytes=1000)
    return b"".join([chunk async for chunk in stream])


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


async def test_answers_to_other_requests_are_left_out_whatever_the_line_ends() -> None:
    note = b'{"jsonrpc":"2.0","method":"notifications/progress","params":{}}'
    wire = (
        b": a comment\r\n"
        + b"event: message\r\ndata: " + answer(999, "stray") + b"\r\n\r\n"
        + b"data: " + note + b"\r\r"
        + b"id: 5\ndata: " + answer(7, "real") + b"\n\n"
    )  # fmt: skip
    expected = (
        b"data: " + note + b"\n\n" + b"id: 5\ndata: " + answer(7, "real") + b"\n\n"
    )  # fmt: skip
    assert await passed([wire], 7) == expected
    assert await passed(one_byte_at_a_time(wire), 7) == expected  # CR and LF cut apart too


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (answer(7, "x"), True),
        (answer("7", "x"), False),  # a string is not the number
        (answer(7.0, "x"), False),
        (answer(True, "x"), False),
        (b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}', True),
        (b'{"jsonrpc":"2.0","id":8,"error":{"code":-1,"message":"x"}}', False),
        (b'{"jsonrpc":"2.0","id":8,"method":"x","result":{}}', False),  # an answer all the same
        (b'{"jsonrpc":"2.0","id":8,"method":"sampling/createMessage","params":{}}', True),
        (b"not json", False),
        (b"[1]", False),
    ],
)
async def test_what_a_requests_stream_may_carry(data: bytes, kept: bool) -> None:
    event = b"data: " + data + b"\n\n"
    assert await passed([event], 7) == (event if kept else b"")


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: " + b"a" * 600, b"a" * 600],  # one line, not ended
        [b"data: " + b"a" * 600 + b"\n", b"data: " + b"a" * 600 + b"\n"],  # an event, not ended
        one_byte_at_a_time(b"data: " + b"a" * 1200),  # a line counted as its pieces come
        one_byte_at_a_time(b"data: " + b"a" * 600 + b"\r\ndata: " + b"a" * 600),
    ],
)
async def test_an_event_larger_than_the_limit_is_not_held(chunks: list[bytes]) -> None:
    with pytest.raises(httpx2.SSEError, match="exceeded the 1000 byte limit"):
        await passed(chunks, 7)


async def test_comments_do_not_count_and_are_not_passed() -> None:
    wire = b": " + b"c" * 900 + b"\n" + b": " + b"c" * 900 + b"\n" + b"data: " + answer(7, "x")
    assert await passed([wire + b"\n\n"], 7) == b"data: " + answer(7, "x") + b"\n\n"


async def test_only_message_events_pass_on_any_stream() -> None:
    """The SDK reads no other kind (and prints its name raw); on the session's own stream
    (``_ANY``) every message event passes, whatever its id."""
    note = b'{"jsonrpc":"2.0","method":"notifications/message","params":{}}'
    other = b"event: \x1b[31mendpoint\nid: e1\ndata: x\n\n"
    wire = other + b"id: e2\ndata: " + note + b"\n\ndata: " + answer(999, "x") + b"\n\n"
    kept = b"id: e2\ndata: " + note + b"\n\ndata: " + answer(999, "x") + b"\n\n"
    assert await passed([wire], _ANY) == kept
    assert await passed([wire], 7) == b"id: e2\ndata: " + note + b"\n\n"


@pytest.mark.parametrize("expected", [7, _ANY])
async def test_only_a_retry_of_up_to_nine_digits_is_passed(expected: Any) -> None:
    """The SDK reads ``retry:`` with ``int()`` and waits ``value / 1000.0`` seconds: 400
    digits raised OverflowError in its task, which ended the whole session. A field of up
    to 9 ASCII digits passes; any other (too long, signed, spaced, with ``_``: the SSE
    standard ignores those) is left out, and the event's other fields pass."""
    note = b'{"jsonrpc":"2.0","method":"notifications/message","params":{}}'
    wire = b"".join(
        b"retry: " + value + b"\nid: e\ndata: " + note + b"\n\n"
        for value in (b"1" + b"0" * 400, b"-5", b"+5", b"1_000", b" 5", b"1234567890")
    )
    assert await passed([wire], expected) == (b"id: e\ndata: " + note + b"\n\n") * 6
    kept = b"retry: 999999999\nid: e\ndata: " + note + b"\n\n"
    assert await passed([kept], expected) == kept
    assert await passed([b"retry: 1" + b"0" * 400 + b"\n\n"], expected) == b"\n"  # nothing
