"""The relay benchmark's floor: the least a Python proxy can do under the issue's rules.

Not a product and not a peer: a yardstick for what the targets ask. It relays
newline-delimited JSON-RPC between its stdin/stdout and the backend given on the command
line (``python bench/floor_relay.py [--flush] -- python bench/echo_server.py``), and per
client message does only what the issue's audit rule cannot do without:

* parses the line (``json.loads``) to read its method and tool name;
* refuses ``tools/call rm_rf`` with a JSON-RPC error (never forwarded), and takes
  ``rm_rf`` out of ``tools/list`` answers (the only answers it parses);
* writes one record per request to ``$HOME/floor-records.jsonl`` and makes it durable
  (``write`` + ``fsync``, once for all the requests of one read) before forwarding them.
  With ``--flush`` the records are written but never synced: what the same relay costs
  without the durability the issue asks for (the audit benchmark's ``durability: flush``).

Everything else that ``mcp-acp run`` does is left out: identity, the policy engine, the
hash chain and the other streams, digests of arguments and results, screening, limits,
approvals, cancellation, the session's lifecycle. Answers pass through as bytes after a
size record is written (not synced). It uses asyncio protocols with no task per message,
and fsyncs on the event loop (nothing else is waiting then).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

DENY = "rm_rf"
DENIED_CODE = -32003  # the code mcp-acp answers with, so the benchmark's check is the same


def _lines(buffer: bytearray, data: bytes) -> list[bytes]:
    """Append ``data`` to ``buffer``; take out and return the complete lines."""
    buffer += data
    end = buffer.rfind(b"\n")
    if end < 0:
        return []
    lines = bytes(buffer[: end + 1]).splitlines(keepends=True)
    del buffer[: end + 1]
    return lines


class Floor:
    # Both set by main() before any data can arrive.
    client_out: asyncio.WriteTransport
    backend_in: asyncio.WriteTransport

    def __init__(self, record_fd: int, *, sync: bool) -> None:
        self.record_fd = record_fd
        self.sync = sync
        self.lists: set[Any] = set()  # ids of tools/list requests in flight
        self.done = asyncio.get_running_loop().create_future()
        self._from_client = bytearray()
        self._from_backend = bytearray()

    def from_client(self, data: bytes) -> None:
        forward: list[bytes] = []
        records: list[bytes] = []
        for line in _lines(self._from_client, data):
            message = json.loads(line)
            method = message.get("method")
            name = (message.get("params") or {}).get("name")
            if method == "tools/call" and name == DENY:
                records.append(b'{"deny":%d}\n' % len(line))
                error = {"code": DENIED_CODE, "message": f"{DENY} denied"}
                reply = {"jsonrpc": "2.0", "id": message["id"], "error": error}
                self.client_out.write(json.dumps(reply).encode() + b"\n")
                continue
            if method == "tools/list":
                self.lists.add(message["id"])
            records.append(json.dumps({"method": method, "name": name}).encode() + b"\n")
            forward.append(line)
        if records:
            os.write(self.record_fd, b"".join(records))
            if self.sync:
                os.fsync(self.record_fd)
        if forward:
            self.backend_in.write(b"".join(forward))

    def from_backend(self, data: bytes) -> None:
        out: list[bytes] = []
        for line in _lines(self._from_backend, data):
            if self.lists:
                message = json.loads(line)
                if message.get("id") in self.lists and "result" in message:
                    self.lists.discard(message["id"])
                    tools = message["result"].get("tools", [])
                    message["result"]["tools"] = [t for t in tools if t.get("name") != DENY]
                    line = json.dumps(message).encode() + b"\n"
            out.append(line)
        os.write(self.record_fd, b'{"answer":%d}\n' % sum(map(len, out)))
        self.client_out.write(b"".join(out))


class _Reader(asyncio.Protocol):
    def __init__(self, floor: Floor) -> None:
        self.floor = floor

    def data_received(self, data: bytes) -> None:
        self.floor.from_client(data)

    def eof_received(self) -> bool:
        self.floor.backend_in.close()
        return False


class _Backend(asyncio.SubprocessProtocol):
    def __init__(self, floor: Floor) -> None:
        self.floor = floor

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.floor.from_backend(data)

    def process_exited(self) -> None:
        if not self.floor.done.done():
            self.floor.done.set_result(None)


async def main(argv: list[str], *, sync: bool) -> None:
    loop = asyncio.get_running_loop()
    path = Path(os.environ["HOME"]) / "floor-records.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    floor = Floor(fd, sync=sync)
    transport, _ = await loop.subprocess_exec(  # the client's stdin is read only after this
        lambda: _Backend(floor), *argv, stdin=asyncio.subprocess.PIPE, stderr=None
    )
    floor.backend_in = transport.get_pipe_transport(0)  # type: ignore[assignment]
    floor.client_out, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)
    reader, _ = await loop.connect_read_pipe(lambda: _Reader(floor), sys.stdin.buffer)
    # Reads of 64 KiB, as mcp-acp's own pipes: asyncio's default 256 KiB buffer is big
    # enough to be mmap'ed and costs ~19 µs per read here (see bench/README.md).
    for pipe in (reader, transport.get_pipe_transport(1)):
        pipe.max_size = 64 * 1024  # type: ignore[union-attr]
    await floor.done
    os.close(fd)


if __name__ == "__main__":
    flush = sys.argv[1:2] == ["--flush"]
    command = [a for a in sys.argv[1 + flush :] if a != "--"]
    if not command:
        raise SystemExit("usage: floor_relay.py [--flush] BACKEND-COMMAND [ARG ...]")
    asyncio.run(main(command, sync=not flush))
