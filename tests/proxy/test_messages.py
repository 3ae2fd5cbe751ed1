"""How the relay reads one line: what it is, and whether JSON readers could read it two
ways (the relay decides on this reading and forwards the bytes as received)."""

from __future__ import annotations

import json

import pytest

from mcp_acp.proxy.messages import (
    MAX_DEPTH,
    MAX_SAFE_ID,
    encode,
    error_response,
    from_body,
    parse,
)


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


@pytest.mark.parametrize(
    "line",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"a","Method":"b"}',
        b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"x":{"y":1,"Y":2}}}',
        b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"n\\u0000":1}}',
        b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"n\\u200b":1}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","NAME":"b"}]}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a","TEXT":"b"}]}}',
        b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":1,"DATA":2}}',
    ],
)
def test_a_decoded_message_is_ambiguous_as_its_line_would_be(line: bytes) -> None:
    """A transport that decodes messages itself (streamable HTTP) hands over dicts: the
    same keys make them ambiguous, for the same reason, so both transports are refused
    alike. (A key twice cannot reach a dict: the decoder kept one, and it is re-encoded.)"""
    decoded = from_body(json.loads(line))
    assert decoded.ambiguous is not None
    assert decoded.ambiguous == parse(line).ambiguous
    assert decoded.kind == parse(line).kind


def test_ordinary_messages_are_not_ambiguous() -> None:
    line = (
        '{"jsonrpc":"2.0","id":"r-1","method":"tools/call","params":{"name":"écho",'
        '"arguments":{"名前":"x","path":"/a b","Path2":"/c","list":[{"a":1},{"a":2}]}}}'
    ).encode()
    message = parse(line)
    assert message.kind == "request"
    assert message.ambiguous is None
    assert message.params["arguments"]["名前"] == "x"
    assert from_body(message.body).ambiguous is None


@pytest.mark.parametrize("request_id", ["1.5", "1.0", "null", "true", "[1]", "{}"])
def test_a_request_whose_id_is_not_a_string_or_an_integer_is_invalid(request_id: str) -> None:
    message = parse(f'{{"jsonrpc":"2.0","id":{request_id},"method":"ping"}}'.encode())
    assert message.kind == "invalid"
    assert message.problem == "the id must be a string or an integer"


def test_a_message_without_an_id_is_a_notification() -> None:
    assert parse(b'{"jsonrpc":"2.0","method":"notifications/initialized"}').kind == "notification"


@pytest.mark.parametrize(
    "method", ["tools/call ", " tools/call", "tools/call\\u0000", "tools/\\u200bcall", "ping\\n"]
)
def test_a_method_with_a_space_at_an_end_or_an_unprintable_character_is_invalid(
    method: str,
) -> None:
    """No MCP method has one; a reader that trims the name, or ends it at a NUL, would read
    ``tools/call`` where the policy read another method (and no tool)."""
    for line in (
        f'{{"jsonrpc":"2.0","id":5,"method":"{method}","params":{{"name":"echo"}}}}',
        f'{{"jsonrpc":"2.0","method":"{method}"}}',
    ):
        message = parse(line.encode())
        assert message.kind == "invalid"
        assert message.problem is not None
        assert "the method" in message.problem
        assert from_body(json.loads(line)).kind == "invalid"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            b'{"jsonrpc":"2.0","id":5,"method":"ping","error":{"code":1,"message":"m"}}',
            "a request or notification with an error or result member",
        ),
        (
            b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo"},"result":{}}',
            "a request or notification with an error or result member",
        ),
        (
            b'{"jsonrpc":"2.0","method":"notifications/message","error":{"code":1,"message":"m"}}',
            "a request or notification with an error or result member",
        ),
        (
            b'{"jsonrpc":"2.0","id":5,"result":{},"error":{"code":1,"message":"m"}}',
            "an answer with both a result and an error",
        ),
        (b'{"jsonrpc":"2.0","id":5,"result":{},"error":null}', "both a result and an error"),
    ],
)
def test_a_message_mixing_a_requests_and_an_answers_members_is_invalid(
    line: bytes, problem: str
) -> None:
    """JSON-RPC: a request has a method, an answer a result or an error, never both. Readers
    differ on such a mix: the mcp Python SDK reads a message with an ``error`` object as an
    error answer, whatever else it carries; the relay read the method, or the result."""
    for message in (parse(line), from_body(json.loads(line))):
        assert message.kind == "invalid"
        assert message.problem is not None
        assert problem in message.problem
        assert message.reply_id == 5 or b'"id"' not in line


@pytest.mark.parametrize(
    ("body", "named", "spelt"),
    [
        ({"params": {"Arguments": 1}}, "params has the key 'Arguments'", "arguments"),
        ({"params": {"NAME": "x"}}, "params has the key 'NAME'", "name"),
        ({"params": {"Uri": "x"}}, "params has the key 'Uri'", "uri"),
        ({"Params": {}}, "the message has the key 'Params'", "params"),
        ({"params": {"requestID": 1}}, "params has the key 'requestID'", "requestId"),
        ({"params": {"_META": {}}}, "params has the key '_META'", "_meta"),
        ({"result": {"InputRequests": {}}}, "result has the key 'InputRequests'", "inputRequests"),
        ({"result": {"Tools": []}}, "result has the key 'Tools'", "tools"),
    ],
)
def test_a_key_the_proxy_reads_spelt_in_another_case_marks_the_message(
    body: dict[str, object], named: str, spelt: str
) -> None:
    kind = "response" if "result" in body else "request"
    body = {"jsonrpc": "2.0", "id": 1, **({"method": "x"} if kind == "request" else {}), **body}
    for message in (parse(json.dumps(body).encode()), from_body(body)):
        assert message.kind == kind
        assert message.ambiguous is None  # one spelling only: no pair to refuse
        assert message.miscased is not None
        assert message.miscased.startswith(named)
        assert message.miscased.endswith(f"spell it {spelt!r}")


def test_a_member_missing_for_its_other_spelling_is_named_as_the_problem() -> None:
    message = parse(b'{"jsonrpc":"2.0","id":1,"Method":"tools/call"}')
    assert message.kind == "invalid"
    assert message.problem is not None
    assert "the message has the key 'Method'" in message.problem


def test_keys_the_proxy_does_not_read_may_be_spelt_any_way() -> None:
    # a tool's own arguments are the tool's (path arguments match in any case anyway)
    line = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":'
        b'{"Path":"/a","Text":"b"},"_meta":{"progressToken":1,"ProgressX":2}},"extra":{"ID":1}}'
    )
    assert parse(line).miscased is None


@pytest.mark.parametrize("request_id", [MAX_SAFE_ID + 1, -(MAX_SAFE_ID + 1), 10**30])
def test_a_request_id_beyond_javascripts_safe_integers_is_invalid(request_id: int) -> None:
    message = parse(f'{{"jsonrpc":"2.0","id":{request_id},"method":"ping"}}'.encode())
    assert message.kind == "invalid"
    assert message.problem is not None
    assert f"the id {request_id} is beyond ±{MAX_SAFE_ID}" in message.problem
    assert message.reply_id == request_id  # answered as the sender wrote it


@pytest.mark.parametrize("request_id", [MAX_SAFE_ID, -MAX_SAFE_ID, 0])
def test_a_request_id_within_javascripts_safe_integers_is_read(request_id: int) -> None:
    message = parse(f'{{"jsonrpc":"2.0","id":{request_id},"method":"ping"}}'.encode())
    assert (message.kind, message.id) == ("request", request_id)


@pytest.mark.parametrize("depth", [199, 975, 5000])
def test_nesting_deeper_than_the_limit_is_invalid_not_a_crash(depth: int) -> None:
    # params (1) + arguments (2) + depth arrays: over MAX_DEPTH from 199 on; 975 parsed but
    # then hit Python's recursion limit further on, 5000 hit it while parsing
    deep = b"[" * depth + b"]" * depth
    line = b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"arguments":' + deep + b"}}"
    message = parse(line)
    assert message.kind == "invalid"
    assert message.problem == f"arrays or objects nested deeper than {MAX_DEPTH}"


def test_brackets_inside_strings_do_not_count_and_cannot_hide_nesting() -> None:
    shallow = b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"' + b"[{" * 3000 + b'"}}'
    assert parse(shallow).kind == "request"
    closers = b'"\\\\\\"' + b"]" * 3000 + b'"'  # an escaped backslash and quote, then "]"s
    deep = b"[" * 300 + b"]" * 300
    line = (
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":' + closers + b',"a":' + deep + b"}}"
    )
    assert parse(line).problem == f"arrays or objects nested deeper than {MAX_DEPTH}"


def test_nesting_up_to_the_limit_is_read() -> None:
    deep = b'{"a":' * (MAX_DEPTH - 1) + b"1" + b"}" * (MAX_DEPTH - 1)
    message = parse(b'{"jsonrpc":"2.0","id":1,"method":"x","params":' + deep + b"}")
    assert message.kind == "request"


def test_plain_lines_go_on_as_received_even_with_other_non_ascii_text() -> None:
    line = '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"café ✓"}}\n'.encode()
    assert parse(line).raw == line


@pytest.mark.parametrize(
    "line",
    [
        b'{"jsonrpc":"2.0",\r"id":1,"method":"ping"}\n',
        '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"a\u2028b"}}\n'.encode(),
        '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"a\u2029b"}}\n'.encode(),
        '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"a\u0085b"}}\n'.encode(),
    ],
)
def test_a_line_some_reader_would_split_goes_on_re_encoded(line: bytes) -> None:
    message = parse(line)
    assert message.kind == "request"
    assert message.raw != line
    assert message.raw.isascii()
    assert b"\r" not in message.raw
    assert message.raw.endswith(b"\n")
    assert message.raw.count(b"\n") == 1
    assert json.loads(message.raw) == json.loads(line)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    message = parse(
        f'{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"n":{constant}}}}}'.encode()
    )
    assert message.kind == "invalid"
    assert f"{constant} is not a JSON value" in (message.problem or "")


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5e309", "-" + "9" * 400 + ".0"])
def test_a_number_beyond_a_doubles_range_is_refused(number: str) -> None:
    # Python reads it as infinity: forwarded as sent, it would be recorded as null (and
    # digested as Infinity) — the audit record would not say what the backend got
    line = f'{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"n":{number}}}}}'
    message = parse(line.encode())
    assert message.kind == "invalid"
    assert "beyond a double's range" in (message.problem or "")
    assert message.body.get("id") == 3  # read leniently, to answer the request


BIG = "1" * 4_301


@pytest.mark.parametrize(
    ("params", "problem", "answer_to"),
    [
        # Python will not read it (a plain ValueError): said as what it is
        (f'{{"n":-{BIG}}}', "not valid JSON here: a number has more than 4300 digits", 3),
        (f'{{"s":"{BIG}","f":0.{BIG},"e":1e-{BIG}}}', None, None),  # no integers: kept
        # the line was read a second time, leniently, after an ambiguity, a NaN or 1e400 —
        # and that read raised out of parse: the relay's read loop ended
        (f'{{"p":{{"a":1,"A":2}},"n":{BIG}}}', "ambiguous JSON: the keys 'a' and 'A'", 3),
        (f'{{"p":NaN,"n":{BIG}}}', "not valid JSON: NaN is not a JSON value", 3),
        ('{"p":{"a":1,"A":2},', "not valid JSON: Expecting property name", None),
        ('{"p":1e400,', "the number 1e400 is beyond a double's range", None),
    ],
)
def test_a_number_python_will_not_read_or_a_line_cut_short_is_invalid_not_a_crash(
    params: str, problem: str | None, answer_to: int | None
) -> None:
    line = f'{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{params}'
    message = parse((line if line.endswith(",") else line + "}").encode())
    if problem is None:
        assert message.kind == "request"
        return
    assert problem in (message.ambiguous or message.problem or "")
    assert message.kind == ("request" if message.ambiguous else "invalid")
    assert message.body.get("id") == answer_to


def test_an_id_python_will_not_read_is_answered_with_null() -> None:
    message = parse(f'{{"jsonrpc":"2.0","id":{BIG},"method":"ping","p":NaN}}'.encode())
    assert message.kind == "invalid"
    assert message.problem == "not valid JSON here: a number has more than 4300 digits"
    assert message.body.get("id") is None


@pytest.mark.parametrize("number", ["1e308", "-1.7976931348623157e308", "1e-400", "0.5"])
def test_a_large_or_tiny_finite_number_is_kept(number: str) -> None:
    line = f'{{"jsonrpc":"2.0","id":3,"method":"ping","params":{{"n":{number}}}}}'
    message = parse(line.encode())
    assert message.kind == "request"
    assert message.body["params"]["n"] == float(number)


def test_an_error_answers_null_for_an_id_that_is_not_one_and_never_writes_nan() -> None:
    for odd in (float("inf"), float("nan"), [1], {"a": 1}, True, 1.5):
        assert error_response(odd, -32600, "x")["id"] is None
    assert error_response("a", -32600, "x")["id"] == "a"
    with pytest.raises(ValueError, match="JSON compliant"):
        encode({"n": float("nan")})


@pytest.mark.parametrize(
    ("request_id", "cancels"), [(1, 1), ("a", "a"), (True, None), ([1], None), (1.0, None)]
)
def test_a_cancellation_names_a_request_only_by_a_valid_id(
    request_id: object, cancels: object
) -> None:
    body = {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": request_id},
    }
    message = parse(json.dumps(body).encode() + b"\n")
    assert message.kind == "notification"
    assert message.cancels == cancels  # true is not request 1
    assert type(message.cancels) is type(cancels)
