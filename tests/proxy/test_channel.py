"""Backend channels: which one a config gets, and what the stdio path does not pay for."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CANARIES
from proxy_helpers import STUBBORN, kill_leftovers, pid_in, running

from mcp_acp.config import HttpBackend, StdioBackend
from mcp_acp.proxy.channel import open_channel


def test_a_stdio_proxy_never_imports_the_mcp_sdk() -> None:
    """Importing ``mcp`` costs most of a second; only HTTP backends need it."""
    code = (
        "import sys\n"
        "from mcp_acp.config import StdioBackend\n"
        "from mcp_acp.proxy import serve\n"
        "from mcp_acp.proxy.channel import open_channel\n"
        "open_channel(StdioBackend(command='cat'))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'httpx2'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_backend_ids_are_what_policies_match() -> None:
    assert open_channel(StdioBackend(command="npx", args=["-y", "x"])).backend_id == "npx"
    http = open_channel(HttpBackend(url="https://mcp.example.com/mcp?key=secret#frag"))
    assert http.backend_id == "https://mcp.example.com/mcp"  # a query may carry a secret


class _Tls:
    """What the pool reports of a finished handshake: the context and the peer's certificate."""

    def __init__(self, context: ssl.SSLContext, verified: bool) -> None:
        self.context = context
        self.verified = verified

    def getpeercert(self, binary_form: bool = False) -> Any:
        if binary_form:
            return b"\x30\x03\x02\x01\x00"  # what a server could send; never parsed unverified
        return {"subject": ((("commonName", "x"),),)} if self.verified else {}


class _Stream:
    def __init__(self, tls: _Tls | None) -> None:
        self.tls = tls
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return self.tls if name == "ssl_object" else None

    async def aclose(self) -> None:
        self.closed = True


async def test_only_a_verified_handshake_with_our_context_gives_an_identity() -> None:
    from mcp_acp.proxy.http_backend import HttpChannel, IdentityRefused

    ours = ssl.create_default_context()
    channel = HttpChannel(HttpBackend(url="https://mcp.example.com/mcp"), ssl_context=ours)
    done = "connection.start_tls.complete"
    # another handshake (an HTTPS proxy on the way), or another event: not ours to judge
    await channel._traced(
        done, {"return_value": _Stream(_Tls(ssl.create_default_context(), False))}
    )
    await channel._traced("connection.connect_tcp.complete", {"return_value": _Stream(None)})
    for stream in (_Stream(_Tls(ours, verified=False)), _Stream(None), _Stream(_Tls(ours, True))):
        with pytest.raises(IdentityRefused, match="could not be read as verified"):
            await channel._traced(done, {"return_value": stream})
        assert stream.closed  # the refused connection is closed, not left to the pool
    assert channel.backend_identity == ()


async def test_a_stdio_channel_starts_its_backend_once() -> None:
    """``serve`` starts the backend as soon as the gates pass; the relay's own ``start()``
    then gets the same outcome, and no second process."""
    from mcp_acp.proxy.stdio_backend import StdioChannel

    channel = StdioChannel(
        StdioBackend(command=sys.executable, args=["-c", "import sys; sys.stdin.read()"])
    )
    try:
        first = await channel.start()
        assert await channel.start() == first
        assert first["pid"] > 0
    finally:
        await channel.close()
    await channel.close()  # the relay closes it, and serve again: a second close is harmless


async def test_a_failed_start_fails_again_for_the_relay() -> None:
    """The relay records ``backend_start_failed`` from its own call: the error must come
    back, not a second attempt or a silent success."""
    from mcp_acp.errors import BackendError
    from mcp_acp.proxy.stdio_backend import StdioChannel

    channel = StdioChannel(StdioBackend(command="/nonexistent/mcp-server"))
    with pytest.raises(BackendError, match="cannot start backend") as first:
        await channel.start()
    with pytest.raises(BackendError) as again:
        await channel.start()
    assert again.value is first.value
    await channel.close()


DUMP_ENV = (
    "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w')); sys.stdin.read()"
)


async def test_a_stdio_backend_does_not_inherit_withheld_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real child writes the environment it got. A withheld name (the token-storage
    passphrase) is missing; any other variable passes; one the config sets by name in
    ``backend.env`` gets the configured value."""
    from mcp_acp.proxy.stdio_backend import StdioChannel

    monkeypatch.setenv("TOKEN_PASSPHRASE", CANARIES[0].decode())
    monkeypatch.setenv("SECOND_SECRET", "from mcp-acp's environment")
    monkeypatch.setenv("UNRELATED_SETTING", "passes")
    seen = tmp_path / "env.json"
    backend = StdioBackend(
        command=sys.executable,
        args=["-c", DUMP_ENV, str(seen)],
        env={"SECOND_SECRET": "set in backend.env"},
    )
    channel = StdioChannel(backend, withhold_env=frozenset({"TOKEN_PASSPHRASE", "SECOND_SECRET"}))
    try:
        started = await channel.start()
    finally:
        await channel.close()  # stdin closed: the child has written its file and exited
    env = json.loads(seen.read_text())
    assert "TOKEN_PASSPHRASE" not in env
    assert env["UNRELATED_SETTING"] == "passes"
    assert env["SECOND_SECRET"] == "set in backend.env"
    assert started["withheld_env"] == ["TOKEN_PASSPHRASE"]  # names only, for the audit record
    assert CANARIES[0].decode() not in json.dumps(started)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """Where the stubborn server writes its pids; whatever is left of it is killed after."""
    yield tmp_path
    kill_leftovers(tmp_path)


def _message(request_id: int, name: str) -> Any:
    from mcp_acp.proxy.messages import parse

    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name}}
    return parse(json.dumps(body).encode() + b"\n")


async def test_a_backend_that_exits_is_gone_though_its_child_holds_the_pipe(
    state: Path,
) -> None:
    """A grandchild that inherited the backend's stdout keeps the pipe open after the
    backend exits: the output still ends, once what the backend wrote is relayed."""
    from mcp_acp.proxy.stdio_backend import StdioChannel

    backend = StdioBackend(command=sys.executable, args=[str(STUBBORN), str(state), "--grandchild"])
    channel = StdioChannel(backend)
    await channel.start()
    grandchild = pid_in(state / "grandchild.pid")
    try:
        await channel.send(_message(1, "last_words"))  # answered, then exit 0

        async def everything() -> list[Any]:
            return [message.id async for message in channel.receive()]

        assert await asyncio.wait_for(everything(), timeout=30) == [1]
        assert await channel.exit_detail() == (
            {"returncode": 0},
            "the backend exited (code 0)",
        )
        assert running(grandchild)  # still there: the pipe was held open
    finally:
        await channel.close()
    assert not running(grandchild)  # ended with the backend's process group


async def test_closing_ends_the_backend_s_whole_process_group(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend that ignores the end of its input and SIGTERM, and whose child ignores
    SIGTERM too: after the graces, both are killed."""
    from mcp_acp.proxy import stdio_backend

    monkeypatch.setattr(stdio_backend, "CLOSE_GRACE_SECONDS", 0.5)
    monkeypatch.setattr(stdio_backend, "KILL_GRACE_SECONDS", 0.5)
    args = [str(STUBBORN), str(state), "--grandchild", "--ignore-term", "--ignore-eof"]
    channel = stdio_backend.StdioChannel(StdioBackend(command=sys.executable, args=args))
    await channel.start()
    server, grandchild = pid_in(state / "server.pid"), pid_in(state / "grandchild.pid")
    await asyncio.wait_for(channel.close(), timeout=30)
    assert not running(server)
    assert not running(grandchild)


async def test_abandon_ends_the_group_from_any_thread(state: Path) -> None:
    """The shutdown coordinator's exit: no event loop to rely on, bounded, quiet."""
    from mcp_acp.proxy.stdio_backend import StdioChannel

    args = [str(STUBBORN), str(state), "--grandchild", "--ignore-eof"]
    channel = StdioChannel(StdioBackend(command=sys.executable, args=args))
    await channel.start()
    server, grandchild = pid_in(state / "server.pid"), pid_in(state / "grandchild.pid")
    worker = threading.Thread(target=channel.abandon)
    worker.start()
    worker.join(timeout=30)
    assert not running(grandchild)
    deadline = time.monotonic() + 30
    while running(server):  # killed; reaped by asyncio's child watcher
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await channel.close()  # after abandon: nothing left to do, and no signal sent


CLOSES_ITS_INPUT = (
    "import os, sys, time\n"
    "os.close(0)\n"
    'print(\'{"jsonrpc": "2.0", "method": "notifications/ready"}\', flush=True)\n'
    "time.sleep(60)\n"
)


async def test_a_backend_that_closes_its_input_is_gone() -> None:
    """It can take no request any more: what is sent is not dropped in silence, its output
    ends, and the relay then answers what is in flight (and ends the session)."""
    from mcp_acp.proxy.stdio_backend import StdioChannel

    channel = StdioChannel(StdioBackend(command=sys.executable, args=["-c", CLOSES_ITS_INPUT]))
    await channel.start()
    try:
        messages = channel.receive()
        ready = await asyncio.wait_for(anext(messages), timeout=30)
        assert ready.method == "notifications/ready"  # its input is closed by now
        await channel.send(_message(1, "echo"))
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(messages), timeout=30)
        assert await channel.exit_detail() == (
            {"returncode": None, "closed": "input"},
            "the backend closed its input",
        )
    finally:
        await channel.close()
