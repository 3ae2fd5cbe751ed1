"""How the relay reads one line: what it is, and whether JSON readers could read it two
ways (the relay decides on this reading and forwards the bytes as received)."""

from __future__ import annotations

import pytest

from mcp_acp.proxy.messages import parse


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}', "the key 'method' appears twice"),
        (b'{"jsonrpc":"2.0","id":1,"method":"a","Method":"b"}', "'method' and 'Method' differ"),
        (b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"x":{"y":1,"Y":2}}}', "'y' and 'Y'"),
        (b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"n\\u0000":1}}', "control or invisible"),
        (b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"n\\u200b":1}}', "control or invisible"),
        (b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"stra\\u00dfe":1,"STRASSE":2}}', "case"),
        (b'{"jsonrpc":"2.0","id":1,"result":{"rows":[{"a":1},{"a":1,"a":2}]}}', "appears twice"),
    ],
)
def test_keys_a_reader_could_take_differently_make_the_message_ambiguous(
    line: bytes, problem: str
) -> None:
    message = parse(line)
    assert message.ambiguous is not None
    assert message.ambiguous.startswith("ambiguous JSON: ")
    assert problem in message.ambiguous
    assert message.id == 1  # Python's reading, kept so the refusal can name the request
    assert message.kind in {"request", "response"}


def test_ordinary_messages_are_not_ambiguous() -> None:
    line = (
        '{"jsonrpc":"2.0","id":"r-1","method":"tools/call","params":{"name":"écho",'
        '"arguments":{"名前":"x","path":"/a b","Path2":"/c","list":[{"a":1},{"a":2}]}}}'
    ).encode()
    message = parse(line)
    assert message.kind == "request"
    assert message.ambiguous is None
    assert message.params["arguments"]["名前"] == "x"


@pytest.mark.parametrize("request_id", ["1.5", "1.0", "null", "true", "[1]", "{}"])
def test_a_request_whose_id_is_not_a_string_or_an_integer_is_invalid(request_id: str) -> None:
    message = parse(f'{{"jsonrpc":"2.0","id":{request_id},"method":"ping"}}'.encode())
    assert message.kind == "invalid"
    assert message.problem == "the id must be a string or an integer"


def test_a_message_without_an_id_is_a_notification() -> None:
    assert parse(b'{"jsonrpc":"2.0","method":"notifications/initialized"}').kind == "notification"
