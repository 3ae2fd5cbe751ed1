"""How the real ``mcp-acp run`` process ends: whatever is stuck, whenever a signal comes,
however the backend behaves — with the reason recorded, the documented exit code, no
backend process left behind and no control socket.

The backend is ``peers/stubborn_server.py`` (it can ignore SIGTERM and the end of its
input, and leaves a ``sleep`` holding its stdout); the posture check is a real plugin found
through its entry point, scripted by a file: ``pass``, ``fail``, ``hold`` (until a
``release`` file exists) or ``stuck`` (in a worker thread that never returns, as a check
doing blocking I/O would).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import (
    CLI,
    STUBBORN,
    HttpServer,
    Proxy,
    configure,
    kill_leftovers,
    pid_in,
    proxy_env,
    records,
    running,
    use_mode_check,
    use_plugin,
    wait_for_event,
)

from mcp_acp.audit.chain import read_head

ALLOW_ALL = {
    "version": "1",
    "rules": [{"id": "allow-all", "effect": "allow", "conditions": {"tool_name": "*"}}],
}


class Home:
    """A configured home: the stubborn backend, a private socket directory, and (with
    :meth:`scripted_posture`) the scripted posture check."""

    def __init__(self, home: Path, tmp_path: Path, *backend_options: str) -> None:
        self.home = home
        self.state = tmp_path / "backend"
        self.state.mkdir()
        self.sockets = tmp_path / "sockets"
        self.checks = tmp_path / "checks"
        self.checks.mkdir()
        self.site = tmp_path / "site"
        args = [str(STUBBORN), str(self.state), *backend_options]
        self.log_dir = configure(home, sys.executable, args, ALLOW_ALL)
        self.config_file = home / ".config" / "mcp-acp" / "config.json"
        self.env = proxy_env(home)
        self.edit(
            lambda config: config.setdefault("proxy", {}).update(socket_dir=str(self.sockets))
        )
        self.started: list[Proxy] = []

    def edit(self, change: Any) -> None:
        config = json.loads(self.config_file.read_text())
        change(config)
        self.config_file.write_text(json.dumps(config))

    def scripted_posture(self, mode: str, *, timeout: float = 60, threshold: int = 1) -> None:
        self.env = use_mode_check(
            self.home,
            self.site,
            self.checks / "mode",
            mode=mode,
            timeout=timeout,
            threshold=threshold,
        )

    def mode(self, mode: str) -> None:
        (self.checks / "mode").write_text(mode)

    def wait_for_check(self, mode: str) -> None:
        """Until the posture check has started a round in ``mode``."""
        wait_for_file(self.checks / f"checking-{mode}")

    def start(self) -> Proxy:
        proxy = Proxy(self.home, self.env)
        self.started.append(proxy)
        return proxy

    def backend(self) -> tuple[int, int | None]:
        server = pid_in(self.state / "server.pid")
        child = self.state / "grandchild.pid"
        return server, int(child.read_text()) if child.exists() else None

    def control_sockets(self) -> list[str]:
        return sorted(p.name for p in self.sockets.glob("proxy-*.sock"))

    def stderr(self) -> str:
        return (self.home / "proxy-stderr.txt").read_text()


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not written within 30 s"
        time.sleep(0.02)


@pytest.fixture
def make_home(isolated_home: Path, tmp_path: Path) -> Iterator[Any]:
    """``make_home(*backend_options)``; every proxy it started and whatever is left of the
    backend are killed after the test."""
    homes: list[Home] = []

    def make(*backend_options: str) -> Home:
        home = Home(isolated_home, tmp_path, *backend_options)
        homes.append(home)
        return home

    yield make
    for home in homes:
        for proxy in home.started:
            if proxy.proc.poll() is None:
                proxy.proc.kill()
            proxy.proc.wait()
            for pipe in (proxy.proc.stdin, proxy.proc.stdout, proxy.stderr):
                with contextlib.suppress(OSError, ValueError):
                    if pipe is not None:
                        pipe.close()
        kill_leftovers(home.state)


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """The URL of an HTTP server that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


def ended(log_dir: Path) -> list[str]:
    return [r["reason"] for r in records(log_dir, "auth") if r["event"] == "session_ended"]


# ---------------------------------------------------------------- the backend


def test_a_backend_crash_is_seen_though_its_child_holds_the_pipe(make_home: Any) -> None:
    """The backend leaves a ``sleep`` holding its stdout, then crashes: its stdout never
    reaches end of file, but the proxy sees the exit — the requests in flight are answered,
    ``backend_exited`` is recorded, exit 17 — and the ``sleep`` ends with it."""
    home = make_home("--grandchild")
    proxy = home.start()
    proxy.initialize()
    _, child = home.backend()
    assert child is not None
    slow = proxy.request("tools/call", {"name": "slow", "arguments": {}})
    crash = proxy.request("tools/call", {"name": "crash", "arguments": {}})
    for request_id in (slow, crash):
        answer = proxy.answer(request_id)
        assert answer["error"]["message"] == "the backend exited (code 3)"
    assert proxy.proc.wait(timeout=30) == 17
    # one line, like every other failure: where Claude Desktop's log shows it
    last = home.stderr().strip().splitlines()[-1]
    assert last.startswith("backend error: the backend exited (code 3) — fix: its own error output")
    exited = [r for r in records(home.log_dir, "system") if r["event"] == "backend_exited"]
    assert exited[0]["detail"] == {"returncode": 3}
    assert ended(home.log_dir) == ["the backend exited"]
    assert not running(child)


def test_a_stubborn_backend_and_its_child_end_with_the_session(make_home: Any) -> None:
    """The backend ignores the end of its input and SIGTERM; so does the ``sleep`` it
    started. After the graces both are killed: nothing of the backend outlives the proxy."""
    home = make_home("--grandchild", "--ignore-term", "--ignore-eof")
    proxy = home.start()
    proxy.initialize()
    server, child = home.backend()
    assert child is not None
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=60) == 0
    assert not running(server)
    assert not running(child)
    assert home.control_sockets() == []


@pytest.mark.parametrize("failure", ["posture", "audit"])
def test_a_fail_closed_exit_ends_the_backend_and_removes_the_control_socket(
    make_home: Any, failure: str
) -> None:
    """The shutdown coordinator ends the process with ``os._exit`` (no ``finally`` runs):
    it ends the backend's process group and removes the control socket itself."""
    home = make_home("--grandchild", "--ignore-term", "--ignore-eof")
    home.scripted_posture("pass")
    proxy = home.start()
    proxy.initialize()
    server, child = home.backend()
    assert child is not None
    assert home.control_sockets() == [f"proxy-{proxy.proc.pid}.sock"]
    if failure == "posture":
        home.mode("fail")
    else:
        (home.log_dir / "decisions.jsonl").unlink()
        proxy.request("tools/call", {"name": "echo", "arguments": {}})
    assert proxy.proc.wait(timeout=60) == {"posture": 15, "audit": 13}[failure]
    assert not running(server)
    assert not running(child)
    assert home.control_sockets() == []


@pytest.mark.parametrize("planted", ["fallback", "shutdowns"])
def test_a_fifo_where_the_audit_fallback_goes_still_ends_the_process(
    make_home: Any, tmp_path: Path, planted: str
) -> None:
    """``audit.fallback_path`` in a shared (sticky) directory, where a FIFO was made first
    at the fallback file — or at both ``shutdowns.jsonl`` files, the log directory's and
    the one beside the fallback file. The audit trail fails: opening the FIFO to keep the
    event (or the shutdown record) once blocked for ever, on the event loop — no exit, no
    record, SIGTERM unheard, the backend left running. Now the FIFO is refused, the
    process exits 13 and ends the backend, and stderr says what was wrong."""
    home = make_home("--ignore-term", "--ignore-eof")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    fallback = shared / "fallback.jsonl"
    home.edit(lambda config: config["audit"].update(fallback_path=str(fallback)))
    proxy = home.start()
    proxy.initialize()
    server, _ = home.backend()
    if planted == "fallback":
        os.mkfifo(fallback)
    else:
        os.mkfifo(home.log_dir / "shutdowns.jsonl")
        os.mkfifo(shared / "shutdowns.jsonl")
    (home.log_dir / "decisions.jsonl").unlink()
    proxy.request("tools/call", {"name": "echo", "arguments": {}})
    assert proxy.proc.wait(timeout=60) == 13
    assert not running(server)
    stderr = home.stderr()
    assert "mcp-acp: shutting down: audit error: " in stderr
    if planted == "fallback":
        assert (
            f"mcp-acp: audit fallback failed too (audit.fallback_path: {fallback} is a FIFO "
            "(named pipe) or a device, not a regular file); lost event: " in stderr
        )
        shutdowns = [json.loads(line) for line in (home.log_dir / "shutdowns.jsonl").open()]
        assert (shutdowns[0]["failure_class"], shutdowns[0]["exit_code"]) == ("audit", 13)
    else:
        assert (
            f"mcp-acp: shutdown not recorded: {home.log_dir / 'shutdowns.jsonl'} is a FIFO "
            f"(named pipe) or a device, not a regular file; nor beside audit.fallback_path: "
            f"{shared / 'shutdowns.jsonl'} is a FIFO" in stderr
        )


STALLING_SINK = """
import time
from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig
from mcp_acp.hookspecs import hookimpl


class StallingSink(JsonlAuditSink):
    async def write(self, event):
        if getattr(event, "tool_name", None) == "echo":
            time.sleep(3600)  # a call that never returns, on the event loop: a hung mount
        await super().write(event)


@hookimpl
def register_audit_sinks(register):
    register("stalling-jsonl", StallingSink.from_config, JsonlConfig, summary="test: stalls")
"""


def test_an_audit_write_that_never_returns_ends_the_session(make_home: Any) -> None:
    """The audit sink's write of a call's decision never returns, and holds the event loop
    (as an ``fsync`` on a hung mount would): no signal handler runs, no answer goes out.
    Once records have waited ``audit.write_timeout_seconds`` with none written, the
    watchdog thread fails the trail: the shutdown is recorded, the backend ended, the
    control socket removed, and the process exits 13 — before, it hung for ever."""
    home = make_home("--ignore-term", "--ignore-eof")
    home.edit(lambda config: config["audit"].update(write_timeout_seconds=1))
    home.env = use_plugin(
        home.home,
        home.site,
        module="stalling_sink",
        source=STALLING_SINK,
        name="stalling-jsonl",
        use_for="audit.sinks",
    )
    proxy = home.start()
    proxy.initialize()
    server, _ = home.backend()
    proxy.request("tools/call", {"name": "echo", "arguments": {}})
    assert proxy.proc.wait(timeout=60) == 13, home.stderr()
    assert not running(server)
    assert home.control_sockets() == []
    shutdowns = [json.loads(line) for line in (home.log_dir / "shutdowns.jsonl").open()]
    assert shutdowns[0]["detail"] == "audit write watchdog"
    assert "audit.write_timeout_seconds is 1" in shutdowns[0]["reason"]
    assert "no audit record was written in" in ended(home.log_dir)[0]
    assert "mcp-acp: shutting down: audit error: no audit record was written" in home.stderr()


@pytest.mark.parametrize("problem", ["too-long", "not-ours"])
def test_a_control_socket_that_cannot_be_opened_refuses_the_start_on_record(
    make_home: Any, tmp_path: Path, problem: str
) -> None:
    """``proxy.socket_dir`` too long for a Unix socket's path, or another user's: the
    control socket is opened before ``session_started`` and before the backend, so this is
    a refused start like any other — ``startup_refused`` on record, the trail closed, one
    line naming ``proxy.socket_dir``, exit 10. It used to be opened after both: the
    session ended unrecorded, the backend had been started, and a path too long was an
    ``internal error`` (exit 1)."""
    if problem == "not-ours" and os.geteuid() != 0:
        pytest.skip("only root can give a directory away")
    home = make_home()
    if problem == "too-long":
        sockets = tmp_path / ("d" * 120)
    else:
        sockets = tmp_path / "theirs"
        sockets.mkdir(mode=0o700)
        os.chown(sockets, 65534, 65534)
    home.edit(lambda config: config["proxy"].update(socket_dir=str(sockets)))
    proxy = home.start()
    assert proxy.proc.wait(timeout=60) == 10
    last = home.stderr().strip().splitlines()[-1]
    if problem == "too-long":
        assert last.startswith(f"config error: cannot open the control socket {sockets}/proxy-")
        assert "is too long for a Unix socket — fix: choose a shorter proxy.socket_dir" in last
    else:
        assert last.startswith(
            f"config error: refusing the control socket directory: {sockets} is owned by uid 65534"
        )
    (refused,) = [r for r in records(home.log_dir, "system") if r["event"] == "startup_refused"]
    assert (refused["detail"]["failure_class"], refused["detail"]["exit_code"]) == ("config", 10)
    assert [r for r in records(home.log_dir, "auth") if r["event"] == "session_started"] == []
    assert not (home.state / "server.pid").exists()  # the backend was never started
    verify = subprocess.run(
        [str(CLI), "audit", "verify"], capture_output=True, text=True, env=home.env, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for stream in ("auth", "system"):  # the trail was closed, not left as after a crash
        head = read_head(home.log_dir, stream)
        assert head is not None, stream
        assert head.closed, stream


# ---------------------------------------------------------------- a worker thread is stuck


def test_a_check_stuck_in_a_thread_refuses_the_start_and_the_process_ends(
    make_home: Any,
) -> None:
    """The gate gives up on the check after ``timeout_seconds``; the process then ends
    although the check's thread never returns (``asyncio.run`` would wait for it)."""
    home = make_home()
    home.scripted_posture("stuck", timeout=1)
    proxy = home.start()
    assert proxy.proc.wait(timeout=30) == 15
    refused = [r for r in records(home.log_dir, "system") if r["event"] == "startup_refused"]
    assert refused[0]["detail"]["failure_class"] == "posture"
    assert "mode is unknown: no answer within 1 s" in home.stderr()


def test_mcp_acp_posture_ends_though_a_check_is_stuck_in_a_thread(make_home: Any) -> None:
    """``mcp-acp posture`` gives up on the check after ``timeout_seconds`` and says
    ``unknown``; then it exits, although the worker thread the check waits for never
    returns (that thread, of the check's own event loop, was joined at exit: for ever)."""
    home = make_home()
    home.scripted_posture("stuck", timeout=1)
    shown = subprocess.run(
        [str(CLI), "posture", "--json"],
        env=home.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 15, shown.stderr
    (result,) = json.loads(shown.stdout)
    assert (result["check"], result["status"]) == ("mode", "unknown")
    assert result["detail"] == "no answer within 1 s"
    assert (home.checks / "checking-stuck").exists()  # it ran, and waited on its thread


def test_sigterm_ends_the_session_while_a_check_is_stuck_in_a_thread(make_home: Any) -> None:
    home = make_home()
    home.scripted_posture("pass", timeout=1, threshold=100)  # unknown rounds: not yet fatal
    proxy = home.start()
    proxy.initialize()
    home.mode("stuck")
    home.wait_for_check("stuck")
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=30) == 0
    assert ended(home.log_dir) == ["SIGTERM received"]


def test_a_second_proxy_on_the_same_audit_directory_is_refused(make_home: Any) -> None:
    """Two processes appending to one chain would break it (each continuing from its own
    idea of the end): the second is refused, naming the first, and writes nothing there;
    once the first is gone — even by SIGKILL — the directory can be used again."""
    home = make_home()
    first = home.start()
    first.initialize()
    second = subprocess.run(
        [str(CLI), "run"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env=home.env, timeout=60,
    )  # fmt: skip
    assert second.returncode == 13
    last = second.stderr.strip().splitlines()[-1]
    assert f"is in use by another mcp-acp process (pid {first.proc.pid})" in last
    assert "give each backend's config file its own audit.log_dir" in last
    for stream in ("decisions", "operations", "auth", "system"):  # nothing of the second
        opened = [r for r in records(home.log_dir, stream) if r["event"] == "stream_opened"]
        assert [r["detail"]["pid"] for r in opened] == [first.proc.pid]
    assert not [r for r in records(home.log_dir, "system") if r["event"] == "startup_refused"]
    echoed = first.call("tools/call", {"name": "echo", "arguments": {"said": "still here"}})
    assert "result" in echoed
    first.proc.kill()
    first.proc.wait()
    third = home.start()
    third.initialize()
    third.proc.send_signal(signal.SIGTERM)
    assert third.proc.wait(timeout=30) == 0
    verify = subprocess.run(
        [str(CLI), "audit", "verify"], capture_output=True, text=True, env=home.env, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_check_that_blocks_refuses_the_start_and_the_process_ends(make_home: Any) -> None:
    """A check that blocks the thread it runs on (``time.sleep`` in its ``async def``):
    the gate still gives up on it after ``timeout_seconds``."""
    home = make_home()
    home.scripted_posture("block", timeout=1)
    proxy = home.start()
    assert proxy.proc.wait(timeout=30) == 15
    assert "mode is unknown: no answer within 1 s" in home.stderr()


def test_sigterm_ends_the_session_while_a_check_blocks(make_home: Any) -> None:
    home = make_home()
    home.scripted_posture("pass", timeout=1, threshold=100)
    proxy = home.start()
    proxy.initialize()
    home.mode("block")
    home.wait_for_check("block")
    echoed = proxy.call("tools/call", {"name": "echo", "arguments": {"said": "hello"}})
    assert "result" in echoed  # still serving
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=30) == 0
    assert ended(home.log_dir) == ["SIGTERM received"]


def test_a_check_that_blocks_mid_session_ends_it(make_home: Any) -> None:
    """Its round gives up at the timeout: posture unknown, the session ends (exit 15)."""
    home = make_home()
    home.scripted_posture("pass", timeout=1)
    proxy = home.start()
    proxy.initialize()
    home.mode("block")
    assert proxy.proc.wait(timeout=30) == 15
    lost = [r for r in records(home.log_dir, "auth") if r["event"] == "device_health_failed"]
    assert "mode is unknown: no answer within 1 s" in lost[-1]["reason"]


def test_sigterm_ends_the_session_while_a_policy_reload_reads_a_fifo(make_home: Any) -> None:
    """The reload reads the file on a worker thread, which blocks on a FIFO nobody writes;
    requests are still decided, and SIGTERM still ends the session."""
    home = make_home()
    proxy = home.start()
    proxy.initialize()
    policy = home.home / ".config" / "mcp-acp" / "policy.json"
    policy.unlink()
    os.mkfifo(policy)
    proxy.proc.send_signal(signal.SIGHUP)
    proxy.proc.send_signal(signal.SIGHUP)  # one more reload, after the stuck one: never
    echoed = proxy.call("tools/call", {"name": "echo", "arguments": {"said": "hello"}})
    assert "result" in echoed
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=30) == 0
    assert ended(home.log_dir) == ["SIGTERM received"]


# ---------------------------------------------------------------- signals


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGINT", 130), ("SIGQUIT", 131)])
def test_a_stop_signal_during_start_up_is_recorded(make_home: Any, name: str, code: int) -> None:
    home = make_home()
    home.scripted_posture("hold")  # the gate waits until the test releases it
    proxy = home.start()
    home.wait_for_check("hold")
    proxy.proc.send_signal(getattr(signal, name))
    assert proxy.proc.wait(timeout=30) == code
    (refused,) = [r for r in records(home.log_dir, "system") if r["event"] == "startup_refused"]
    assert refused["detail"] == {
        "failure_class": "signal",
        "exit_code": code,
        "reason": f"{name} received during start-up",
    }
    assert not [r for r in records(home.log_dir, "auth") if r["event"] == "session_started"]
    assert home.stderr().strip().splitlines()[-1] == (
        f"mcp-acp: not started: {name} received during start-up"
    )


def test_sigquit_ends_the_session_as_sigterm_does(make_home: Any) -> None:
    """SIGQUIT (Ctrl-\\ in a terminal, or a supervisor's quit) killed the proxy at once,
    Python's default: no ``session_ended``, the control socket left behind, the backend
    told nothing. It ends the session as SIGTERM does: recorded, exit 0."""
    home = make_home("--note-term")
    proxy = home.start()
    proxy.initialize()
    proxy.proc.send_signal(signal.SIGQUIT)
    assert proxy.proc.wait(timeout=30) == 0
    assert ended(home.log_dir) == ["SIGQUIT received"]
    assert (home.state / "events").read_text().split()[0] == "SIGTERM"  # passed on at once
    assert home.control_sockets() == []


def test_a_sighup_during_start_up_reloads_the_policy_once_there_is_one(make_home: Any) -> None:
    home = make_home()
    home.scripted_posture("hold")
    proxy = home.start()
    home.wait_for_check("hold")
    proxy.proc.send_signal(signal.SIGHUP)  # the default action would end the process
    (home.checks / "release").touch()
    assert proxy.initialize()["result"]["serverInfo"]["name"] == "stubborn"
    wait_for_event(home.log_dir, "system", "policy_reloaded")
    assert proxy.close() == 0


def test_sigterm_while_an_http_backend_is_reached_ends_the_session(make_home: Any) -> None:
    """The backend accepts the connection and never answers the start-up probe: the session
    has started (``session_started``), the backend is not reached yet."""
    home = make_home()
    with silent_server() as url:
        home.edit(lambda c: c.update(backend={"transport": "http", "url": url}))
        proxy = home.start()
        wait_for_file(home.log_dir / "auth.jsonl")
        wait_for_event(home.log_dir, "auth", "session_started")
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=30) == 0
    assert ended(home.log_dir) == ["SIGTERM received"]


def test_a_stop_signal_is_passed_on_to_the_backend_at_once(make_home: Any) -> None:
    """The backend's process group gets SIGTERM as soon as the proxy does, before the end
    of its input — not after the 5 s a backend otherwise has to exit by itself: a client
    gives the proxy little time between SIGTERM and SIGKILL (the MCP SDK's, 2 s), and the
    backend, in a process group of its own, must not outlive it."""
    home = make_home("--note-term", "--ignore-eof")
    proxy = home.start()
    proxy.initialize()
    server, _ = home.backend()
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=30) == 0
    assert (home.state / "events").read_text().split() == ["SIGTERM", "EOF"]
    assert not running(server)  # it ignored SIGTERM: killed 1 s later


def test_a_second_stop_signal_ends_the_process_at_once(make_home: Any, tmp_path: Path) -> None:
    """The first SIGTERM ends the session: the HTTP backend's session is closed, which a
    server that never answers the closing ``DELETE`` holds for seconds; the second ends the
    process now — recorded in ``shutdowns.jsonl``, 143."""
    home = make_home()
    marker_dir = tmp_path / "server"
    marker_dir.mkdir()
    server = HttpServer(marker_dir, hang_delete=True)
    try:
        home.edit(lambda c: c.update(backend={"transport": "http", "url": server.url}))
        proxy = home.start()
        proxy.initialize()
        proxy.proc.send_signal(signal.SIGTERM)
        wait_for_file(marker_dir / "delete-received")  # the first is acted on
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=30) == 143
    finally:
        server.kill()
    shutdown = json.loads((home.log_dir / "shutdowns.jsonl").read_text().splitlines()[-1])
    assert shutdown["failure_class"] == "signal"
    assert shutdown["reason"] == "SIGTERM received again while stopping"
    assert "mcp-acp: stopping now: SIGTERM received again while stopping" in home.stderr()


@pytest.mark.parametrize("end", ["client-eof", "sigterm"])
def test_a_session_ended_in_the_fail_closed_grace_still_exits_as_a_failure(
    make_home: Any, end: str
) -> None:
    """The audit trail fails; its shutdown waits a short grace (0.2 s) for what is in
    flight. If the session ends within it — the client closes its input, or SIGTERM — the
    process must still end as an audit failure (exit 13, the line, ``shutdowns.jsonl``),
    not as a clean end of session with exit 0."""
    home = make_home()
    proxy = home.start()
    proxy.initialize()
    (home.log_dir / "decisions.jsonl").unlink()
    denied = proxy.answer(proxy.request("tools/call", {"name": "echo", "arguments": {}}))
    assert denied["error"]["code"] == -32003  # the trail failed on this request's record
    if end == "client-eof":
        assert proxy.proc.stdin is not None
        proxy.proc.stdin.close()
    else:
        proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=60) == 13
    assert "mcp-acp: shutting down: audit error: " in home.stderr()
    shutdowns = [json.loads(line) for line in (home.log_dir / "shutdowns.jsonl").open()]
    assert shutdowns[0]["failure_class"] == "audit"
    assert shutdowns[0]["exit_code"] == 13


def test_a_trail_that_fails_as_the_session_ends_exits_as_a_failure(make_home: Any) -> None:
    """The auth stream's file is deleted mid-session; nothing notices until the session
    ends and its ``session_ended`` record cannot be written. That is an audit failure like
    any other: exit 13, the line, ``shutdowns.jsonl`` — not a clean exit 0."""
    home = make_home()
    proxy = home.start()
    proxy.initialize()
    answer = proxy.answer(proxy.request("tools/call", {"name": "echo", "arguments": {}}))
    assert "result" in answer, answer
    (home.log_dir / "auth.jsonl").unlink()
    assert proxy.proc.stdin is not None
    proxy.proc.stdin.close()
    assert proxy.proc.wait(timeout=60) == 13
    assert "mcp-acp: shutting down: audit error: " in home.stderr()
    assert "auth.jsonl" in home.stderr()
    shutdowns = [json.loads(line) for line in (home.log_dir / "shutdowns.jsonl").open()]
    assert (shutdowns[0]["failure_class"], shutdowns[0]["exit_code"]) == ("audit", 13)
