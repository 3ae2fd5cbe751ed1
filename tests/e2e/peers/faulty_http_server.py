"""A streamable-HTTP MCP server that misbehaves on request, for tests of how the HTTP
channel bounds a backend: raw HTTP/1.1 on asyncio, so it can do what no well-behaved
server library would.

Run as ``python faulty_http_server.py LOG``: it listens on ``127.0.0.1:<free port>``
(path ``/mcp``), prints the port on stdout, and appends each request's line, headers and
body (one JSON object a line) to LOG. ``GET`` gets 405 (no event stream), ``DELETE`` 200, a
notification or response 202, ``initialize`` and ``tools/list`` a proper answer. With
``?flood=N`` in the URL, the session's ``GET`` (the event stream) gets N notifications of
1 MiB each, as fast as the connection takes them, each logged (``{"flood": n}``) once
written, then ``{"flood": "done"}``. With ``?relisten`` in the URL, the session's ``GET``
gets an event stream that ends at once: one event (id ``g``, no data) and ``retry: 0``,
logged (``{"listen": n}``). With ``?many=N``, each ``tools/list`` lists N tools never listed
before, each with an argument mirrored in a header (``x-mcp-header``). Any request to
``/moved`` is redirected (307) to ``/mcp``.
With ``?sid=S`` in the URL, ``initialize`` gives the session id ``S`` (percent-decoded, as
bytes). A ``tools/call`` does what its tool's name says:

* ``echo`` — an answer at once;
* ``big_json`` — a JSON answer of ``mib`` MiB, sent as it is made (nothing is held), with
  its ``Content-Length``, or in chunks without one if ``chunked`` is true;
* ``big_event`` — an SSE answer whose one event carries ``mib`` MiB;
* ``gzip_bomb`` — a small gzip body (``content-encoding: gzip``) that inflates to 64 MiB;
* ``stall`` — headers and half the body, then silence (the connection held);
* ``drop`` — headers and half the body, then the connection closed;
* ``keep_alive`` — SSE headers, then an SSE comment every 0.2 s and never an event;
* ``stray`` — an SSE answer: a result for request 999999 (``stray``), then the call's own
  (``real``), then that again (``duplicate``); lines end in CRLF, with a comment;
* ``resume`` — an SSE stream with one event (id ``ev-1``, no data) that then ends: the
  client resumes it with a ``GET`` (``Last-Event-ID: ev-1``), which gets a result for
  request 999999 (``stray``), then the call's own (``resumed``);
* ``resume_loop`` — an SSE stream with one event (id ``loop``, no data) and ``retry: 0``,
  that then ends; each resumption (a ``GET`` with ``Last-Event-ID: loop``) gets the same
  and is logged (``{"resumed": n}``): the answer never comes;
* ``huge_retry`` — as ``resume``, but the event (id ``huge``) has a ``retry:`` of 401
  digits;
* ``big_id`` — an SSE answer: the call's own (``real``) in an event whose id is ``mib``
  MiB long;
* ``cookies`` — an answer that sets ``n`` cookies ``c0``… of 40 bytes and one ``big`` of
  5000 bytes;
* ``redirect`` — ``307 Temporary Redirect`` to ``/other`` on the same server (which, asked,
  answers as ``/mcp`` does);
* ``charset`` — the call's answer (``text`` ``"real"``) in the charset ``charset`` names,
  declared in its content type: as JSON, or with ``sse`` as an event stream, a result for
  request 999999 (``stray``) before it (and U+0A0A after: a blank line to a byte reader);
* ``ansi_event`` — an SSE answer: an event whose name holds terminal escapes, then the
  call's own answer (``real``);
* ``case_pair`` — an SSE answer: a notification whose ``params`` has ``data`` and ``DATA``,
  then the call's own answer, whose content has ``text`` and ``TEXT``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
from typing import Any
from urllib.parse import unquote_to_bytes

LOG = sys.argv[1]
TOOLS = ["echo", "big_json", "big_event", "gzip_bomb", "stall", "drop", "keep_alive", "stray"]
TOOLS += ["resume", "case_pair", "redirect", "charset", "ansi_event", "resume_loop"]
TOOLS += ["huge_retry", "big_id", "cookies"]
#: The request a ``resume`` stream answers, by the id of its event.
RESUMED: dict[str, Any] = {}
#: How many times a stream that ends at once was opened: ``resumed``, ``listen``.
OPENED = {"resumed": 0, "listen": 0}
#: How many ``?many=N`` listings were made.
LISTINGS = [0]
#: An event stream that ends at once, to be opened again at once.
AT_ONCE = b"retry: 0\nid: %s\ndata: \n\n"


def events(*messages: bytes, end: bytes = b"\n") -> bytes:
    return b"".join(b"event: message" + end + b"data: " + m + end + end for m in messages)


MIB = 1024 * 1024


def head(status: str, content_type: str, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\nmcp-session-id: s1\r\n{extra}\r\n"
    ).encode()


def whole(
    status: str, body: bytes = b"", content_type: str = "application/json", extra_head: str = ""
) -> bytes:
    return head(status, content_type, f"content-length: {len(body)}\r\n{extra_head}") + body


def answer(request_id: Any, result: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()


def text_result(request_id: Any, text: str) -> bytes:
    return answer(request_id, {"content": [{"type": "text", "text": text}]})


async def tool_call(
    writer: asyncio.StreamWriter, request_id: Any, name: str, arguments: dict[str, Any]
) -> bool:
    """Answer one call; False when the connection must not be used again."""
    size = int(float(arguments.get("mib", 1)) * MIB)
    if name == "big_json":
        prefix = b'{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"' % (
            json.dumps(request_id).encode()
        )
        suffix = b'"}]}}'
        if arguments.get("chunked"):  # no length given: only counting finds the size
            writer.write(head("200 OK", "application/json", "transfer-encoding: chunked\r\n"))
            pieces = [prefix, *[b"A" * 65536] * (size // 65536), b"A" * (size % 65536) + suffix]
            for piece in pieces:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            length = len(prefix) + size + len(suffix)
            writer.write(head("200 OK", "application/json", f"content-length: {length}\r\n"))
            writer.write(prefix)
            for _ in range(size // 65536):
                writer.write(b"A" * 65536)
                await writer.drain()
            writer.write(b"A" * (size % 65536) + suffix)
    elif name == "big_event":
        writer.write(head("200 OK", "text/event-stream"))
        writer.write(b"event: message\ndata: " + text_result(request_id, "")[:-5])
        for _ in range(size // 65536):
            writer.write(b"A" * 65536)
            await writer.drain()
        writer.write(b'"}]}}\n\n')
        await writer.drain()
        return False  # no length: the stream ends with the connection
    elif name == "gzip_bomb":
        body = gzip.compress(b" " * (64 * MIB) + text_result(request_id, "inflated"))
        writer.write(
            head(
                "200 OK",
                "application/json",
                f"content-encoding: gzip\r\ncontent-length: {len(body)}\r\n",
            )
            + body
        )
    elif name in ("stall", "drop"):
        body = text_result(request_id, "x" * 1000)
        writer.write(whole("200 OK", body)[: -len(body) // 2])
        await writer.drain()
        if name == "drop":
            return False
        await asyncio.sleep(3600)
    elif name == "stray":
        body = b": answers follow\r\n" + events(
            text_result(999999, "stray"),
            text_result(request_id, "real"),
            text_result(request_id, "duplicate"),
            end=b"\r\n",
        )
        writer.write(whole("200 OK", body, "text/event-stream"))
    elif name == "charset":
        charset = arguments["charset"]
        if arguments.get("sse"):
            # U+0A0A: two LF bytes in UTF-16, ending the event for a reader of bytes too
            text = events(text_result(999999, "stray"), text_result(request_id, "real")).decode()
            text, kind = text + "\u0a0a", "text/event-stream"
        else:
            text, kind = text_result(request_id, "real").decode(), "application/json"
        body = text.encode(charset)
        writer.write(whole("200 OK", body, f"{kind}; charset={charset}"))
    elif name == "ansi_event":
        body = b"event: \x1b[2K\x1b[31mpolicy reloaded\x1b[0m\ndata: x\n\n"
        body += events(text_result(request_id, "real"))
        writer.write(whole("200 OK", body, "text/event-stream"))
    elif name == "redirect":
        writer.write(whole("307 Temporary Redirect", extra_head="location: /other\r\n"))
    elif name == "case_pair":
        note = b'{"jsonrpc":"2.0","method":"notifications/message",'
        note += b'"params":{"level":"info","data":"shown","DATA":"or this"}}'
        content = b'[{"type":"text","text":"harmless","TEXT":"what a case-blind reader keeps"}]'
        own = b'{"jsonrpc":"2.0","id":%s,"result":{"content":%s}}' % (
            json.dumps(request_id).encode(),
            content,
        )
        writer.write(whole("200 OK", events(note, own), "text/event-stream"))
    elif name == "resume":
        RESUMED["ev-1"] = request_id
        body = b"retry: 10\nid: ev-1\ndata: \n\n"  # a priming event: resumable, no answer
        writer.write(whole("200 OK", body, "text/event-stream"))
    elif name == "big_id":
        event_id = b"%s-" % json.dumps(request_id).encode() + b"i" * size
        body = b"id: " + event_id + b"\ndata: " + text_result(request_id, "real") + b"\n\n"
        writer.write(whole("200 OK", body, "text/event-stream"))
    elif name == "cookies":
        jar = [f"c{i}={'v' * 36}" for i in range(int(arguments.get("n", 1)))]
        jar.append(f"big={'b' * 4997}")
        extra = "".join(f"set-cookie: {cookie}; Path=/\r\n" for cookie in jar)
        writer.write(whole("200 OK", text_result(request_id, "cookies"), extra_head=extra))
    elif name == "huge_retry":
        RESUMED["huge"] = request_id
        body = b"retry: 1" + b"0" * 400 + b"\nid: huge\ndata: \n\n"
        writer.write(whole("200 OK", body, "text/event-stream"))
    elif name == "resume_loop":
        writer.write(whole("200 OK", AT_ONCE % b"loop", "text/event-stream"))
    elif name == "keep_alive":
        writer.write(head("200 OK", "text/event-stream"))
        while True:
            writer.write(b": still working\n\n")
            await writer.drain()
            await asyncio.sleep(0.2)
    else:
        writer.write(whole("200 OK", text_result(request_id, f"echo:{arguments.get('text', '')}")))
    await writer.drain()
    return True


async def flood(writer: asyncio.StreamWriter, count: int) -> None:
    """``count`` notifications of 1 MiB on an event stream, each logged once written."""
    writer.write(head("200 OK", "text/event-stream"))
    pad = "x" * MIB
    for n in range(1, count + 1):
        params = {"level": "info", "data": pad, "n": n}
        note = {"jsonrpc": "2.0", "method": "notifications/message", "params": params}
        writer.write(b"event: message\ndata: " + json.dumps(note).encode() + b"\n\n")
        await writer.drain()
        with open(LOG, "a") as log:
            log.write(json.dumps({"flood": n}) + "\n")
    with open(LOG, "a") as log:
        log.write(json.dumps({"flood": "done"}) + "\n")
    await asyncio.sleep(3600)


def opened(kind: str) -> None:
    OPENED[kind] += 1
    with open(LOG, "a") as log:
        log.write(json.dumps({kind: OPENED[kind]}) + "\n")


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if ":" in line)
            }
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
            with open(LOG, "a") as log:
                entry = {"line": lines[0], "headers": headers, "body": body.decode()}
                log.write(json.dumps(entry) + "\n")
            method, target = lines[0].split()[:2]
            if target.startswith("/moved"):
                writer.write(whole("307 Temporary Redirect", extra_head="location: /mcp\r\n"))
                await writer.drain()
                continue
            if method == "GET" and "mcp-session-id" in headers and "flood=" in target:
                await flood(writer, int(target.partition("flood=")[2]))
                return
            if method == "GET" and headers.get("last-event-id") == "loop":
                opened("resumed")
                writer.write(whole("200 OK", AT_ONCE % b"loop", "text/event-stream"))
            elif method == "GET" and "mcp-session-id" in headers and "relisten" in target:
                opened("listen")
                writer.write(whole("200 OK", AT_ONCE % b"g", "text/event-stream"))
            elif method == "GET" and headers.get("last-event-id") in RESUMED:
                request_id = RESUMED.pop(headers["last-event-id"])
                body = events(text_result(999999, "stray"), text_result(request_id, "resumed"))
                writer.write(whole("200 OK", body, "text/event-stream"))
            elif method == "GET":
                writer.write(whole("405 Method Not Allowed"))
            elif method == "DELETE":
                writer.write(whole("200 OK"))
            else:
                message = json.loads(body)
                if "method" not in message or "id" not in message:
                    writer.write(whole("202 Accepted"))
                elif message["method"] == "initialize":
                    result = {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "faulty", "version": "1"},
                    }
                    initialized = whole("200 OK", answer(message["id"], result))
                    if "sid=" in target:  # the session id the URL asks for, as bytes
                        sid = unquote_to_bytes(target.partition("sid=")[2])
                        initialized = initialized.replace(b": s1\r\n", b": " + sid + b"\r\n")
                    writer.write(initialized)
                elif message["method"] == "tools/list" and "many=" in target:
                    LISTINGS[0] += 1
                    mirrored = {"type": "string", "x-mcp-header": "A"}
                    schema = {"type": "object", "properties": {"a": mirrored}}
                    count = int(target.partition("many=")[2])
                    tools = [
                        {"name": f"t{LISTINGS[0]}_{i}", "inputSchema": schema} for i in range(count)
                    ]
                    writer.write(whole("200 OK", answer(message["id"], {"tools": tools})))
                elif message["method"] == "tools/list" and "wide=" in target:
                    LISTINGS[0] += 1  # one new tool, whose every argument goes in a header
                    width = int(target.partition("wide=")[2])
                    properties = {
                        f"p{i}": {"type": "string", "x-mcp-header": f"H{i}"} for i in range(width)
                    }
                    schema = {"type": "object", "properties": properties}
                    tools = [{"name": f"w{LISTINGS[0]}", "inputSchema": schema}]
                    writer.write(whole("200 OK", answer(message["id"], {"tools": tools})))
                elif message["method"] == "tools/list":
                    tools = [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]
                    writer.write(whole("200 OK", answer(message["id"], {"tools": tools})))
                elif message["method"] == "tools/call":
                    params = message.get("params") or {}
                    name, arguments = params.get("name"), params.get("arguments") or {}
                    if not await tool_call(writer, message["id"], name, arguments):
                        writer.close()
                        return
                else:
                    writer.write(whole("200 OK", answer(message["id"], {})))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
