"""Helpers for end-to-end proxy tests: the real ``mcp-acp run`` process, driven line by line
or by the ``mcp`` SDK's own client."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from queue import Empty, Queue
from typing import Any

from mcp import Client, StdioServerParameters, stdio_client

E2E = Path(__file__).parent / "e2e"
CLI = Path(sys.executable).parent / "mcp-acp"


def on_a_terminal(args: Iterable[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run ``mcp-acp args`` with stdout and stderr on a pseudo-terminal (click strips ANSI
    escapes only when it writes to a pipe); return its exit code and all it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(CLI), *args], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        return proc.wait(timeout=60), b"".join(chunks)
    finally:
        os.close(master)
        proc.kill()


HTTP_SERVER = E2E / "peers" / "http_server.py"
MODULES = E2E / "node_modules" / "@modelcontextprotocol"
FILESYSTEM = MODULES / "server-filesystem" / "dist"
EVERYTHING = MODULES / "server-everything" / "dist" / "index.js"
#: The reference git server from PyPI (dev extra): a Python server on the mcp 2.3 SDK that
#: speaks both protocol eras.
GIT_SERVER = Path(sys.executable).parent / "mcp-server-git"
DENIED = -32003


def proxy_env(home: Path) -> dict[str, str]:
    """The environment ``mcp-acp`` runs in: HOME set, no mcp-acp or XDG variables but the
    runtime directory, which is the home's own (control sockets of other proxies on the
    machine are not the test's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(home)
    env["XDG_RUNTIME_DIR"] = str(home / "run")
    return env


def recording_notifier(directory: Path) -> tuple[str, Path]:
    """A ``notify-send`` that records its arguments (no desktop session can show a real
    one here), and its environment in ``notified-env.txt`` beside them. Returns the
    directory to put first on PATH and the record file."""
    bin_dir = directory / "notifier-bin"
    bin_dir.mkdir(exist_ok=True)
    record = directory / "notified.txt"
    script = bin_dir / "notify-send"
    environment = directory / "notified-env.txt"
    script.write_text(f'#!/bin/sh\nenv > {environment}\nprintf "%s\\n" "$@" >> {record}\n')
    script.chmod(0o755)
    return str(bin_dir), record


def wait_for_text(path: Path, timeout: float = 10.0) -> str:
    """The notifier runs detached: wait for what it writes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"nothing written to {path} within {timeout} s")


def configure(home: Path, command: str, args: Iterable[str], policy: dict[str, Any]) -> Path:
    """``mcp-acp init`` for a stdio backend, then ``policy``; returns the audit log directory."""
    argv = [str(CLI), "init", "--non-interactive", "--force", "--backend-command", command]
    for arg in args:
        argv += ["--backend-arg", arg]
    subprocess.run(argv, env=proxy_env(home), check=True, capture_output=True)
    (home / ".config" / "mcp-acp" / "policy.json").write_text(json.dumps(policy))
    return home / ".local" / "state" / "mcp-acp" / "log"


def install_plugin(site: Path, *, module: str, source: str, name: str) -> None:
    """Install a test plugin the way a real one is found: module ``module`` with ``source``
    and an entry point ``name`` in a ``.dist-info`` under ``site`` (put ``site`` on
    ``PYTHONPATH``). Installed, not allowed."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mcp_acp]\n{name} = {module}\n")


def site_path(site: Path) -> str:
    """A ``PYTHONPATH`` with ``site`` first, then the one the tests run with (which may put
    the code under test, a worktree, before the installed copy): what a subprocess needs to
    find a test distribution under ``site`` and still import the ``mcp_acp`` under test."""
    inherited = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(site), inherited] if inherited else [str(site)])


#: A policy allowing the recording peer's ``echo`` tool and nothing else.
ALLOW_ECHO = {
    "version": "1",
    "rules": [{"id": "echo", "effect": "allow", "conditions": {"tool_name": "echo"}}],
}


def engine_plugin(engine: str, decide: str, summary: str) -> str:
    """The source of a test plugin registering the policy engine ``engine`` (no options),
    whose ``decide(self, request)`` runs ``decide`` (its body, unindented)."""
    body = textwrap.indent(textwrap.dedent(decide).strip(), " " * 8)
    return f"""
from pydantic import BaseModel, ConfigDict
from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import Decision, Effect


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Engine:
    policy_id = {engine!r}

    def __init__(self, options, context):
        pass

    def decide(self, request):
{body}


@hookimpl
def register_policy_engines(register):
    register({engine!r}, Engine, Options, summary={summary!r})
"""


def use_plugin(
    home: Path,
    site: Path,
    *,
    module: str,
    source: str,
    name: str,
    use_for: str,
    config: Any = None,
) -> dict[str, str]:
    """Install a test plugin (:func:`install_plugin`), choose it for the config section
    ``use_for`` (``identity``, ``policy``, …; ``audit.sinks``: as the only audit sink) with
    ``config`` (none: ``{}``), and allow it. Returns the environment ``mcp-acp`` runs in to
    find it (``site`` first on ``PYTHONPATH``, before what the tests run with: the code
    under test)."""
    config = {} if config is None else config
    install_plugin(site, module=module, source=source, name=name)
    config_file = home / ".config" / "mcp-acp" / "config.json"
    settings = json.loads(config_file.read_text())
    if use_for == "audit.sinks":
        settings.setdefault("audit", {})["sinks"] = [{"use": name, "config": config}]
    else:
        settings[use_for] = {"use": name, "config": config}
    settings["plugins"] = {"allow": [name]}
    config_file.write_text(json.dumps(settings))
    return {**proxy_env(home), "PYTHONPATH": site_path(site)}


MODE_CHECK = """
import asyncio, gc, threading, time
from datetime import UTC, datetime
from pathlib import Path
from pydantic import BaseModel, ConfigDict
from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import PostureResult, PostureStatus


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode_file: str


class ModeCheck:
    name = "mode"

    def __init__(self, options, context):
        self.mode_file = Path(options.mode_file)

    async def check(self):
        mode = self.mode_file.read_text().strip()
        (self.mode_file.parent / f"checking-{mode}").touch()  # a round has begun in it
        if mode == "hold":  # until the test lets it go
            while not (self.mode_file.parent / "release").exists():
                await asyncio.sleep(0.02)
        elif mode == "stuck":  # a worker thread that never returns
            await asyncio.to_thread(threading.Event().wait)
        elif mode == "cancel":
            raise asyncio.CancelledError
        elif mode == "exit":
            raise SystemExit(0)
        elif mode == "interrupt":
            raise KeyboardInterrupt
        elif mode == "block":  # a synchronous wait in the check's own event loop
            time.sleep(3600)
        elif mode == "stop-monitor":  # a plugin meddling with the proxy's own tasks
            for task in [t for t in gc.get_objects() if isinstance(t, asyncio.Task)]:
                if task.get_coro().__qualname__ == "PostureMonitor.watch":
                    task.get_loop().call_soon_threadsafe(task.cancel)
        status = PostureStatus.FAIL if mode == "fail" else PostureStatus.PASS
        now = datetime.now(UTC)
        if mode == "odd-name":  # a PostureResult, but not of the declared field types
            return PostureResult(check=[self.name], status=status, detail=mode, checked_at=now)
        if mode == "odd-detail":
            return PostureResult(check=self.name, status=status, detail=object(), checked_at=now)
        return PostureResult(check=self.name, status=status, detail=mode, checked_at=now)


@hookimpl
def register_posture_checks(register):
    register("mode-check", ModeCheck, Options, summary="test: the status a file names")
"""


def use_mode_check(
    home: Path,
    site: Path,
    mode_file: Path,
    *,
    mode: str = "pass",
    timeout: float = 5,
    threshold: int = 1,
) -> dict[str, str]:
    """A posture check plugin (``mode-check``) whose outcome is named by ``mode_file``:
    ``pass``, ``fail``, or what it does instead of answering — ``cancel``, ``exit`` and
    ``interrupt`` raise ``CancelledError``, ``SystemExit`` and ``KeyboardInterrupt``;
    ``stop-monitor`` cancels the posture monitor's task, then passes; ``hold`` waits until
    a file ``release`` appears beside ``mode_file``, then passes; ``stuck`` waits for a
    worker thread that never returns; ``block`` blocks the thread it runs on for an hour;
    ``odd-name`` and ``odd-detail`` pass in a ``PostureResult`` whose ``check`` is a list,
    or whose ``detail`` is an ``object()``.
    Each round touches ``checking-<mode>`` beside ``mode_file`` as it begins. Installed,
    allowed and configured (a round every second, ``timeout`` and ``threshold`` as given)
    with ``mode``; returns the environment that finds it."""
    mode_file.write_text(mode)
    env = use_plugin(
        home,
        site,
        module="mode_check",
        source=MODE_CHECK,
        name="mode-check",
        use_for="posture",
    )
    config_file = home / ".config" / "mcp-acp" / "config.json"
    settings = json.loads(config_file.read_text())
    check = {"use": "mode-check", "config": {"mode_file": str(mode_file)}}
    settings["posture"] = {
        "checks": [check],
        "interval_seconds": 1,
        "timeout_seconds": timeout,
        "failure_threshold": threshold,
    }
    config_file.write_text(json.dumps(settings))
    return env


HOLDING_SINK = """
import asyncio
from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig
from mcp_acp.errors import AuditError
from mcp_acp.hookspecs import hookimpl


class HoldingSink(JsonlAuditSink):
    failed = None

    async def write(self, event):
        if self.failed is None:
            self.failed = asyncio.Event()
        try:
            await super().write(event)
        except AuditError:
            self.failed.set()
            raise
        asked = getattr(event, "approver", None) == "cli"
        if asked and getattr(event, "final_effect", None) == "allow":
            await self.failed.wait()  # durable; returns once the trail has failed


@hookimpl
def register_audit_sinks(register):
    register("holding-jsonl", HoldingSink.from_config, JsonlConfig, summary="test: jsonl, held")
"""


def use_holding_sink(home: Path, site: Path) -> dict[str, str]:
    """The ``jsonl`` audit sink with one difference (``holding-jsonl``): the write of a
    decision a human approved (``approver: cli``, ``final_effect: allow``) returns, once the
    record is durable, only when a later write has failed — the audit trail fails in the
    moment after that decision is on record, before its request is forwarded. Installed,
    allowed and configured as the only sink; returns the environment that finds it."""
    return use_plugin(
        home,
        site,
        module="holding_sink",
        source=HOLDING_SINK,
        name="holding-jsonl",
        use_for="audit.sinks",
    )


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity; return its output."""
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=e2e", "-c", "user.email=e2e@example.test", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@asynccontextmanager
async def sdk_client(home: Path, mode: str, **options: Any) -> AsyncIterator[Client]:
    """The ``mcp`` SDK client with the real ``mcp-acp run`` as its stdio server; the proxy's
    stderr goes to ``home/proxy-stderr.txt``."""
    server = StdioServerParameters(command=str(CLI), args=["run"], env=proxy_env(home))
    with (home / "proxy-stderr.txt").open("w") as errlog:
        async with Client(stdio_client(server, errlog=errlog), mode=mode, **options) as client:
            yield client


class Proxy:
    """The real ``mcp-acp run`` process, driven line by line."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.stderr = (home / "proxy-stderr.txt").open("w")
        self.proc = subprocess.Popen(
            [str(CLI), "run"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        self.lines: Queue[bytes] = Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.next_id = 1
        self.set_aside: list[dict[str, Any]] = []  # read by answer() while waiting for another

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, body: dict[str, Any]) -> None:
        self.send_raw(json.dumps(body).encode() + b"\n")

    def recv(self, timeout: float = 30) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=timeout))  # type: ignore[no-any-return]
        except Empty:
            raise AssertionError(
                "no answer from the proxy; stderr: " + (self.home / "proxy-stderr.txt").read_text()
            ) from None

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            body["params"] = params
        self.send(body)
        answer = self.recv()
        assert answer["id"] == self.next_id
        return answer

    def request(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Send a request without waiting for its answer; return its id."""
        self.next_id += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            body["params"] = params
        self.send(body)
        return self.next_id

    def answer(self, request_id: int | str, timeout: float = 30) -> dict[str, Any]:
        """The response to ``request_id``, in whatever order answers come; every other
        message read meanwhile is kept in ``set_aside``."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.set_aside:
                if message.get("id") == request_id and "method" not in message:
                    self.set_aside.remove(message)
                    return message
            self.set_aside.append(self.recv(timeout=max(0.0, deadline - time.monotonic())))

    def initialize(self) -> dict[str, Any]:
        answer = self.call(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "1"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def close(self) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        code = self.proc.wait(timeout=30)
        self.stderr.close()
        return code


def records(log_dir: Path, stream: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (log_dir / f"{stream}.jsonl").read_text().splitlines()]


def decisions(log_dir: Path) -> list[dict[str, Any]]:
    return [r for r in records(log_dir, "decisions") if r["event"] == "decision"]


def wait_for_event(log_dir: Path, stream: str, event: str, count: int = 1) -> dict[str, Any]:
    """The ``count``-th ``event`` in ``stream``, once the running proxy has written it
    (the stream's file may not exist yet when this is called)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            found = [r for r in records(log_dir, stream) if r["event"] == event]
        except FileNotFoundError:
            found = []
        if len(found) >= count:
            return found[count - 1]
        time.sleep(0.02)
    raise AssertionError(f"no {event!r} in the {stream} stream after 10 s")


def recording_sampler() -> tuple[list[Any], Any]:
    """A sampling callback for the SDK client that answers every request with a fixed
    text, and the list of the requests it was asked."""
    import mcp_types as types
    from mcp.client.context import ClientRequestContext

    asked: list[types.CreateMessageRequestParams] = []

    async def sampling(
        _context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the test client"),
            model="test-model",
        )

    return asked, sampling


#: A stdio server that is hard to stop and leaves a child holding its stdout (see its
#: docstring); it writes its pids into the directory given as its first argument.
STUBBORN = E2E / "peers" / "stubborn_server.py"


def pid_in(path: Path) -> int:
    """The pid a backend wrote to ``path``, once it has."""
    deadline = time.monotonic() + 30
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} not written within 30 s"
        time.sleep(0.02)
    return int(path.read_text())


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody has reaped yet is not)."""
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return state.returncode == 0 and not state.stdout.strip().startswith("Z")


def kill_leftovers(directory: Path) -> None:
    """After a test: SIGKILL the stubborn server and its child if they are still there
    (only when the code under test failed to end them)."""
    for name in ("server.pid", "grandchild.pid"):
        path = directory / name
        if path.exists() and path.read_text() and running(pid := int(path.read_text())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class HttpServer:
    """``peers/http_server.py`` in a subprocess; ``deleted`` is its evidence file."""

    def __init__(
        self,
        marker_dir: Path,
        tls: tuple[Path, Path] | None = None,
        token: str | None = None,
        *,
        record: bool = False,
        hang_delete: bool = False,
    ) -> None:
        self.marker_dir = marker_dir
        self.requests = marker_dir / "requests.log"  # with record: all that reached it
        self.proc = subprocess.Popen(
            [sys.executable, str(HTTP_SERVER), str(marker_dir), *map(str, tls or ())],
            env={
                **os.environ,
                "HTTP_SERVER_TOKEN": token or "",
                "HTTP_SERVER_RECORD": "1" if record else "",
                "HTTP_SERVER_HANG_DELETE": "1" if hang_delete else "",
            },
            stdout=subprocess.PIPE,
            stderr=(marker_dir / "server-stderr.txt").open("w"),
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once uvicorn accepts connections
        if not line.strip():
            raise AssertionError(
                "the test server did not start: " + (marker_dir / "server-stderr.txt").read_text()
            )
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{int(line)}/mcp"
        self.deleted = marker_dir / "deleted"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class RecordingProxy:
    """A forward proxy that records what it is sent and answers every request with 502 (the
    corporate proxy of a user's ``HTTP_PROXY``); also a backend that is not MCP."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self.received.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")

    def close(self) -> None:
        self.listener.close()
