"""``mcp-acp run`` with a streamable-HTTP backend, end to end: the real proxy process, a
real MCP server over HTTP on 127.0.0.1 (the ``mcp`` SDK served by uvicorn, in its own
process: ``peers/http_server.py``), and both a raw JSON-RPC client and the SDK's own client."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import CANARIES
from proxy_helpers import (
    CLI,
    DENIED,
    E2E,
    HttpServer,
    Proxy,
    RecordingProxy,
    records,
    wait_for_event,
)

from mcp_acp.audit.chain import verify_stream

POLICY = {
    "version": "1",
    "rules": [
        {"id": "no-deleting", "effect": "deny", "conditions": {"tool_name": "delete_everything"}},
        {
            "id": "echo-on-this-backend",
            "effect": "allow",
            "conditions": {"tool_name": "echo", "backend_id": "http://127.0.0.1:*/mcp"},
        },
        {"id": "sleep", "effect": "allow", "conditions": {"tool_name": "sleep"}},
    ],
}


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    marker_dir = tmp_path / "server"
    marker_dir.mkdir()
    server = HttpServer(marker_dir)
    yield server
    server.kill()


@pytest.fixture
def env(isolated_home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    clean["HOME"] = str(isolated_home)
    return clean


@pytest.fixture
def configure(isolated_home: Path, env: dict[str, str]) -> Callable[..., Path]:
    """Write a config for ``url`` with ``mcp-acp init --non-interactive``, and the policy."""

    def write(url: str, *extra: str) -> Path:
        subprocess.run(
            [str(CLI), "init", "--non-interactive", "--force", "--backend-url", url, *extra],
            env=env,
            check=True,
            capture_output=True,
        )
        config_dir = isolated_home / ".config" / "mcp-acp"
        (config_dir / "policy.json").write_text(json.dumps(POLICY))
        return isolated_home / ".local" / "state" / "mcp-acp" / "log"

    return write


@pytest.fixture
def start(isolated_home: Path, env: dict[str, str]) -> Iterator[Callable[[], Proxy]]:
    started: list[Proxy] = []

    def launch() -> Proxy:
        proxy = Proxy(isolated_home, env)
        started.append(proxy)
        return proxy

    yield launch
    for proxy in started:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.proc.wait()


def tool_call(proxy: Proxy, name: str, **arguments: Any) -> dict[str, Any]:
    return proxy.call("tools/call", {"name": name, "arguments": arguments})


def run_until_exit(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``mcp-acp run`` with no client input: it must start (or fail to) on its own."""
    return subprocess.run(
        [str(CLI), "run"], input="", env=env, capture_output=True, text=True, timeout=timeout
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line the CLI prints for the error (after the 'local identity' warning)."""
    lines = done.stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    assert "Traceback" not in done.stderr
    assert sum(line.startswith("backend error:") for line in lines) == 1, done.stderr
    return lines[-1]


def test_allow_deny_and_listing_over_http(
    http_server: HttpServer, configure: Callable[..., Path], start: Callable[[], Proxy]
) -> None:
    log_dir = configure(http_server.url)
    proxy = start()
    init = proxy.initialize()
    assert init["result"]["serverInfo"]["name"] == "http-test-server"

    tools = [t["name"] for t in proxy.call("tools/list")["result"]["tools"]]
    assert tools == ["echo", "sleep"]  # delete_everything: denied whatever its arguments

    echo = tool_call(proxy, "echo", text="hi")
    assert echo["result"]["content"][0]["text"] == "echo:hi"

    denied = tool_call(proxy, "delete_everything")
    assert denied["error"]["code"] == DENIED
    assert "no-deleting" in denied["error"]["message"]
    assert f"(request {proxy.next_id})" in denied["error"]["message"]
    assert not http_server.deleted.exists()  # evidence on the server's side

    unknown = proxy.call("frobnicate/everything")
    assert unknown["error"]["code"] == DENIED

    assert "result" in proxy.call("ping")
    assert proxy.close() == 0

    system = records(log_dir, "system")
    started = [r for r in system if r["event"] == "backend_started"]
    assert started[0]["detail"] == {"transport": "http", "url": http_server.url}
    decisions = [r for r in records(log_dir, "decisions") if r["event"] == "decision"]
    assert {r["backend_id"] for r in decisions} == {http_server.url}  # the URL is the id
    echo_decision = next(r for r in decisions if r.get("tool_name") == "echo")
    assert echo_decision["rule_id"] == "echo-on-this-backend"
    operations = records(log_dir, "operations")
    assert any(
        r.get("outcome") == "denied" and r.get("tool_name") == "delete_everything"
        for r in operations
    )
    assert records(log_dir, "auth")[-1]["reason"] == "the client closed the session"
    for stream in ("decisions", "operations", "auth", "system"):
        assert verify_stream(log_dir, stream).ok


def test_configured_headers_reach_the_backend_and_no_log(
    tmp_path: Path,
    configure: Callable[..., Path],
    start: Callable[[], Proxy],
    env: dict[str, str],
) -> None:
    token = CANARIES[0].decode()
    marker_dir = tmp_path / "server"
    marker_dir.mkdir()
    server = HttpServer(marker_dir, token=token)
    try:
        configure(server.url)  # no credentials: the server refuses us at start
        done = run_until_exit(env)
        assert done.returncode == 17
        assert f"the backend at {server.url} refused us: HTTP 401" in error_line(done)

        log_dir = configure(server.url, "--backend-header", f"Authorization: Bearer {token}")
        proxy = start()
        proxy.initialize()
        assert tool_call(proxy, "echo", text="x")["result"]["content"][0]["text"] == "echo:x"
        assert proxy.close() == 0
    finally:
        server.kill()
    for log in log_dir.rglob("*"):
        assert log.is_dir() or CANARIES[0] not in log.read_bytes()


def test_a_message_http_cannot_carry_gets_an_error(
    http_server: HttpServer, configure: Callable[..., Path], start: Callable[[], Proxy]
) -> None:
    configure(http_server.url)
    proxy = start()
    proxy.initialize()
    # valid JSON-RPC, allowed (ping is discovery), but params must be an object in MCP
    proxy.send({"jsonrpc": "2.0", "id": 50, "method": "ping", "params": [1, 2]})
    answer = proxy.recv()
    assert answer["id"] == 50
    assert answer["error"]["code"] == -32600
    assert "cannot forward this request to the backend" in answer["error"]["message"]
    assert tool_call(proxy, "echo", text="still here")["result"]["content"][0]["text"] == (
        "echo:still here"
    )
    assert proxy.close() == 0


def test_server_killed_mid_session(
    http_server: HttpServer, configure: Callable[..., Path], start: Callable[[], Proxy]
) -> None:
    log_dir = configure(http_server.url)
    proxy = start()
    proxy.initialize()
    proxy.send(
        {
            "jsonrpc": "2.0",
            "id": 70,
            "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"seconds": 30}},
        }
    )
    time.sleep(0.5)  # the call is in progress on the server
    http_server.kill()
    lost = proxy.recv()  # the answer stream broke: that request fails, the session goes on
    assert lost["id"] == 70
    assert "error" in lost

    proxy.send(
        {
            "jsonrpc": "2.0",
            "id": 71,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "anyone?"}},
        }
    )
    answer = proxy.recv()
    assert answer["id"] == 71
    assert answer["error"]["code"] == -32000
    assert "the backend connection was lost" in answer["error"]["message"]
    assert proxy.proc.wait(timeout=30) == 17

    exited = [r for r in records(log_dir, "system") if r["event"] == "backend_exited"]
    assert len(exited) == 1
    assert exited[0]["detail"]["url"] == http_server.url
    assert "ConnectError" in exited[0]["detail"]["error"]
    assert records(log_dir, "auth")[-1]["reason"] == "the backend exited"


def test_unreachable_backend_at_start(configure: Callable[..., Path], env: dict[str, str]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    log_dir = configure(url)
    done = run_until_exit(env)
    assert done.returncode == 17
    line = error_line(done)
    assert line.startswith(f"backend error: cannot reach the backend at {url}: ConnectError")
    assert "— fix: check backend.url" in line
    assert done.stdout == ""
    failed = [r for r in records(log_dir, "system") if r["event"] == "backend_start_failed"]
    assert failed[0]["detail"]["backend"] == url
    assert records(log_dir, "auth")[-1]["reason"] == "the backend could not be started"


def test_wrong_path_at_start(
    http_server: HttpServer, configure: Callable[..., Path], env: dict[str, str]
) -> None:
    configure(http_server.url.removesuffix("/mcp") + "/nothing-here")
    done = run_until_exit(env)
    assert done.returncode == 17
    assert "HTTP 404" in error_line(done)


def test_a_server_that_never_answers_is_bounded(
    configure: Callable[..., Path], env: dict[str, str]
) -> None:
    """Accepts TCP connections, reads nothing, answers nothing."""
    held: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def accept() -> None:
            while True:
                try:
                    held.append(listener.accept()[0])
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"
        configure(url, "--backend-timeout", "1")
        started = time.monotonic()
        done = run_until_exit(env)
        elapsed = time.monotonic() - started
    for conn in held:
        conn.close()
    assert done.returncode == 17
    assert f"the backend at {url} did not answer within 1 s" in error_line(done)
    assert held  # it did connect
    assert elapsed < 20


def test_a_stop_while_the_backend_is_reached_is_recorded(
    configure: Callable[..., Path], env: dict[str, str]
) -> None:
    """SIGTERM while a backend that accepts connections and answers nothing is being
    reached (its timeout far away): the session ends (exit 0) and the trail says what
    became of the backend. Before, nothing did: no ``backend_started``, no
    ``backend_start_failed``."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"
        log_dir = configure(url, "--backend-timeout", "120")
        proc = subprocess.Popen(
            [str(CLI), "run"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            wait_for_event(log_dir, "auth", "session_started")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdin is not None
            proc.stdin.close()
    (failed,) = [r for r in records(log_dir, "system") if r["event"] == "backend_start_failed"]
    assert failed["detail"] == {"backend": url, "error": "SIGTERM received before it answered"}
    assert not [r for r in records(log_dir, "system") if r["event"] == "backend_started"]
    assert records(log_dir, "auth")[-1]["event"] == "session_ended"
    assert records(log_dir, "auth")[-1]["reason"] == "SIGTERM received"
    for stream in ("system", "auth"):
        assert verify_stream(log_dir, stream).ok


def test_a_slow_answer_is_bounded_and_the_session_goes_on(
    http_server: HttpServer, configure: Callable[..., Path], start: Callable[[], Proxy]
) -> None:
    configure(http_server.url, "--backend-timeout", "1")
    proxy = start()
    proxy.initialize()
    started = time.monotonic()
    slow = tool_call(proxy, "sleep", seconds=5)
    assert time.monotonic() - started < 4
    assert "error" in slow
    assert tool_call(proxy, "echo", text="ok")["result"]["content"][0]["text"] == "echo:ok"
    assert proxy.close() == 0


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_sdk_client_through_the_proxy(
    mode: str, http_server: HttpServer, configure: Callable[..., Path], env: dict[str, str]
) -> None:
    from mcp import Client, MCPError, StdioServerParameters

    configure(http_server.url)
    params = StdioServerParameters(command=str(CLI), args=["run"], env=env)
    async with Client(params, mode=mode) as client:  # type: ignore[arg-type]
        modern = client.protocol_version == "2026-07-28"  # no handshake; headers per request
        assert modern == (mode == "auto")
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["echo", "sleep"]
        echo = await client.call_tool("echo", {"text": "sdk"})
        assert echo.content[0].text == "echo:sdk"  # type: ignore[union-attr]
        with pytest.raises(MCPError) as denied:
            await client.call_tool("delete_everything", {})
        assert denied.value.error.code == DENIED
    assert not http_server.deleted.exists()


def self_signed(directory: Path, *, cn_only: str | None = None) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (``openssl req``); with
    ``cn_only``, one that names that host in its common name only (no subjectAltName)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "1", "-subj", f"/CN={cn_only or '127.0.0.1'}"),
            *(() if cn_only else ("-addext", "subjectAltName=IP:127.0.0.1")),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[HttpServer, Path]]:
    """The same server over HTTPS, with a self-signed certificate for 127.0.0.1."""
    cert, key = self_signed(tmp_path)
    marker_dir = tmp_path / "server"
    marker_dir.mkdir()
    server = HttpServer(marker_dir, tls=(cert, key))
    yield server, cert
    server.kill()


def test_https_certificates_are_verified_by_default(
    https_server: tuple[HttpServer, Path], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    server, _ = https_server
    configure(server.url)
    done = run_until_exit(env)
    assert done.returncode == 17
    line = error_line(done)
    assert f"cannot reach the backend at {server.url}" in line
    assert "CERTIFICATE_VERIFY_FAILED" in line


def test_a_name_only_in_the_common_name_is_not_the_servers_name(
    tmp_path: Path, configure: Callable[..., Path], env: dict[str, str]
) -> None:
    """Without backend.tls as with it, the server's name is checked against the
    certificate's subjectAltName only (RFC 9525): a certificate that names ``localhost``
    in its common name alone, from a CA that ``SSL_CERT_FILE`` names, was accepted
    (Python's contexts fall back to the common name). Start fails, naming the mismatch."""
    cert, key = self_signed(tmp_path, cn_only="localhost")
    marker_dir = tmp_path / "server"
    marker_dir.mkdir()
    server = HttpServer(marker_dir, tls=(cert, key))
    url = server.url.replace("127.0.0.1", "localhost")
    try:
        configure(url)
        clean = {k: v for k, v in env.items() if not k.startswith("SSL_")}
        done = run_until_exit({**clean, "SSL_CERT_FILE": str(cert)})
    finally:
        server.kill()
    assert done.returncode == 17, done.stderr
    line = error_line(done)
    assert f"cannot reach the backend at {url}" in line
    assert "Hostname mismatch" in line


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("SSL_CERT_FILE", "missing.pem", "No such file or directory"),
        ("SSL_CERT_FILE", "not-pem.txt", "NO_CERTIFICATE_OR_CRL_FOUND"),
        ("SSL_CERT_FILE", ".", "Is a directory"),
        ("SSL_CERT_DIR", "not-pem.txt", "is not a directory"),
    ],
    ids=["missing", "not-pem", "directory", "dir-is-a-file"],
)
def test_a_trust_store_variable_that_names_nothing_usable_fails_start(
    tmp_path: Path,
    configure: Callable[..., Path],
    env: dict[str, str],
    name: str,
    value: str,
    why: str,
) -> None:
    """An https backend without backend.tls, verified against what SSL_CERT_FILE or
    SSL_CERT_DIR names: if that is no trust store, start fails as a backend error that
    says which variable and what to do, and is recorded like any failed start."""
    (tmp_path / "not-pem.txt").write_text("hello\n")
    url = "https://127.0.0.1:9/mcp"  # never reached
    log_dir = configure(url)
    path = tmp_path / value
    clean = {k: v for k, v in env.items() if not k.startswith("SSL_")}
    done = run_until_exit({**clean, name: str(path)})
    assert done.returncode == 17, done.stderr
    line = error_line(done)
    assert f"{name} names {path}" in line
    assert why in line
    assert "unset it to use the system's trust store" in done.stderr
    failed = [r for r in records(log_dir, "system") if r["event"] == "backend_start_failed"]
    assert failed[0]["detail"]["backend"] == url
    assert f"{name} names {path}" in failed[0]["detail"]["error"]


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_no_tls_key_log_is_written_whatever_sslkeylogfile_says(
    tmp_path: Path,
    configure: Callable[..., Path],
    start: Callable[[], Proxy],
    env: dict[str, str],
    isolated_home: Path,
    variable: str,
) -> None:
    """``SSLKEYLOGFILE`` in the proxy's environment, and an https backend without
    backend.tls verified through ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``: that context was
    Python's default one, which appends the secrets of every TLS session to the file the
    variable names — and with them anyone who reads it decrypts the traffic, the
    configured ``Authorization`` header included. The call goes through; no key log."""
    token = CANARIES[0].decode()
    cert, key = self_signed(tmp_path)
    if variable == "SSL_CERT_FILE":
        trust = cert
    else:  # a directory of hashed certificates, as OpenSSL looks them up
        trust = tmp_path / "certs"
        trust.mkdir()
        shutil.copy(cert, trust / "idp.pem")
        subprocess.run(["openssl", "rehash", str(trust)], check=True, capture_output=True)
    marker_dir = tmp_path / "server"
    marker_dir.mkdir()
    server = HttpServer(marker_dir, token=token, tls=(cert, key))
    keylog = tmp_path / "keylog.txt"
    env.update({variable: str(trust), "SSLKEYLOGFILE": str(keylog)})
    env.pop("SSL_CERT_DIR" if variable == "SSL_CERT_FILE" else "SSL_CERT_FILE", None)
    try:
        configure(server.url, "--backend-header", f"Authorization: Bearer {token}")
        echo = {"id": "echo", "effect": "allow", "conditions": {"tool_name": "echo"}}
        policy = isolated_home / ".config" / "mcp-acp" / "policy.json"
        policy.write_text(json.dumps({"version": "1", "rules": [echo]}))
        proxy = start()
        proxy.initialize()
        assert tool_call(proxy, "echo", text="x")["result"]["content"][0]["text"] == "echo:x"
        assert proxy.close() == 0
    finally:
        server.kill()
    assert not keylog.exists()


async def test_an_ssl_context_decides_whom_to_trust(https_server: tuple[HttpServer, Path]) -> None:
    """The seam for mutual TLS: the channel takes an ``ssl.SSLContext``, and learns the
    names of the certificate that context verified (the backend's identity)."""
    from mcp_acp.config import HttpBackend
    from mcp_acp.proxy.channel import open_channel
    from mcp_acp.proxy.messages import from_body

    server, cert = https_server
    channel = open_channel(
        HttpBackend(url=server.url), ssl_context=ssl.create_default_context(cafile=str(cert))
    )
    started = await channel.start()
    assert started["url"] == server.url
    assert started["identity"]["names"] == ["IP:127.0.0.1"]
    assert started["identity"]["subject"] == "CN=127.0.0.1"
    assert channel.backend_identity == ("IP:127.0.0.1",)
    try:
        await channel.send(
            from_body(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "tls-test", "version": "1"},
                    },
                }
            )
        )
        answer = await asyncio.wait_for(anext(aiter(channel.receive())), timeout=30)
    finally:
        await channel.close()
    assert answer.kind == "response"
    assert answer.body["result"]["serverInfo"]["name"] == "http-test-server"


def test_https_without_a_tls_provider_proves_no_identity(
    https_server: tuple[HttpServer, Path],
    configure: Callable[..., Path],
    env: dict[str, str],
    isolated_home: Path,
) -> None:
    """Verified against the system's trust store (here the test certificate, through
    SSL_CERT_FILE), the server's certificate names IP:127.0.0.1, yet that is not an identity
    a policy can rely on: only a TLS provider's context gives one. A rule that requires
    it never matches (fail closed)."""
    server, cert = https_server
    log_dir = configure(server.url)
    policy = {
        "version": "1",
        "rules": [
            {
                "id": "echo-on-this-server",
                "effect": "allow",
                "conditions": {"tool_name": "echo", "backend_identity": ["IP:127.0.0.1", "DNS:**"]},
            }
        ],
    }
    (isolated_home / ".config" / "mcp-acp" / "policy.json").write_text(json.dumps(policy))
    proxy = Proxy(isolated_home, {**env, "SSL_CERT_FILE": str(cert)})
    try:
        proxy.initialize()
        denied = tool_call(proxy, "echo", text="hi")
        assert denied["error"]["code"] == DENIED
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
    started = next(r for r in records(log_dir, "system") if r["event"] == "backend_started")
    assert "identity" not in started["detail"]
    (decision,) = [r for r in records(log_dir, "decisions") if r.get("tool_name") == "echo"]
    assert decision["effect"] == "deny"
    assert "backend_identity" not in decision


# ---------------------------------------------------------------- a backend that misbehaves

FAULTY_SERVER = E2E / "peers" / "faulty_http_server.py"


class FaultyServer:
    """``peers/faulty_http_server.py`` in a subprocess; ``log`` holds what it was sent."""

    def __init__(self, directory: Path) -> None:
        self.log = directory / "requests.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, str(FAULTY_SERVER), str(self.log)],
            stdout=subprocess.PIPE,
            stderr=(directory / "faulty-stderr.txt").open("w"),
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}/mcp"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def faulty_server(tmp_path: Path) -> Iterator[FaultyServer]:
    server = FaultyServer(tmp_path)
    yield server
    server.kill()


MIB = 1024 * 1024
INFO = {"name": "test", "version": "1"}
ECHO = {"name": "echo", "arguments": {"text": "after"}}

ALLOW_EVERY_CALL = {
    "version": "1",
    "rules": [{"id": "calls", "effect": "allow", "conditions": {"mcp_method": "tools/call"}}],
}


@pytest.fixture
def configure_faulty(
    faulty_server: FaultyServer, configure: Callable[..., Path], isolated_home: Path
) -> Callable[..., Path]:
    """Configure the faulty server as the backend, every call allowed; ``backend`` fields
    given by keyword are written into the config (e.g. ``request_timeout_seconds=2``)."""

    def write(*extra: str, **backend: Any) -> Path:
        log_dir = configure(faulty_server.url, *extra)
        config_dir = isolated_home / ".config" / "mcp-acp"
        (config_dir / "policy.json").write_text(json.dumps(ALLOW_EVERY_CALL))
        config = json.loads((config_dir / "config.json").read_text())
        config["backend"].update(backend)
        (config_dir / "config.json").write_text(json.dumps(config))
        return log_dir

    return write


def assert_session_goes_on(proxy: Proxy) -> None:
    """The proxy still answers, from the backend, and ends cleanly."""
    assert tool_call(proxy, "echo", text="still here")["result"]["content"][0]["text"] == (
        "echo:still here"
    )
    assert proxy.proc.poll() is None
    assert proxy.close() == 0


@pytest.mark.parametrize(
    ("tool", "why"),
    [
        ("big_json", "larger than 10485760 bytes"),  # a JSON answer (Content-Length)
        ("big_event", "10485760 byte limit"),  # one server-sent event
    ],
)
def test_an_oversized_answer_fails_its_request_and_the_session_goes_on(
    tool: str, why: str, configure_faulty: Callable[..., Path], start: Callable[[], Proxy]
) -> None:
    """As on stdio: no message over 10 MiB passes, whichever way HTTP carries it."""
    configure_faulty()
    proxy = start()
    proxy.initialize()
    too_big = tool_call(proxy, tool, mib=11)
    assert too_big["error"]["code"] == -32000
    assert why in too_big["error"]["message"]
    assert_session_goes_on(proxy)


def test_a_compressed_answer_is_refused(
    configure_faulty: Callable[..., Path], start: Callable[[], Proxy], faulty_server: FaultyServer
) -> None:
    """A gzip body would get past the size limit (it inflates after the count): the channel
    asks for none (``Accept-Encoding: identity``) and refuses one that comes anyway."""
    configure_faulty()
    proxy = start()
    proxy.initialize()
    bomb = tool_call(proxy, "gzip_bomb")
    assert bomb["error"]["code"] == -32000
    assert "content-encoding: gzip" in bomb["error"]["message"]
    assert_session_goes_on(proxy)
    sent = [json.loads(line) for line in faulty_server.log.read_text().splitlines()]
    assert {r["headers"].get("accept-encoding") for r in sent} == {"identity"}


@pytest.mark.parametrize(
    ("tool", "why"),
    [
        ("stall", "no answer within 1 s (ReadTimeout)"),  # headers, half a body, silence
        ("drop", "RemoteProtocolError"),  # headers, half a body, the connection closed
    ],
)
def test_a_broken_answer_fails_its_request_only(
    tool: str,
    why: str,
    configure_faulty: Callable[..., Path],
    start: Callable[[], Proxy],
    faulty_server: FaultyServer,
) -> None:
    log_dir = configure_faulty("--backend-timeout", "1")
    proxy = start()
    proxy.initialize()
    broken = tool_call(proxy, tool)
    assert broken["error"]["code"] == -32000
    assert why in broken["error"]["message"]
    assert_session_goes_on(proxy)
    assert not [r for r in records(log_dir, "system") if r["event"] == "backend_exited"]


def test_an_answer_that_never_completes_meets_the_request_deadline(
    configure_faulty: Callable[..., Path], start: Callable[[], Proxy], faulty_server: FaultyServer
) -> None:
    """An event stream that sends a comment every 0.2 s is never quiet long enough for the
    read timeout; ``request_timeout_seconds`` bounds the request as a whole."""
    configure_faulty("--backend-timeout", "1", request_timeout_seconds=2)
    proxy = start()
    proxy.initialize()
    endless = tool_call(proxy, "keep_alive")  # Proxy.recv gives up after 30 s
    assert endless["error"]["code"] == -32000
    assert "no complete answer from the backend within 2 s" in endless["error"]["message"]
    assert_session_goes_on(proxy)
    sent = [json.loads(r["body"]) for r in read_log(faulty_server) if r["body"]]
    cancelled = [m for m in sent if m.get("method") == "notifications/cancelled"]
    assert [m["params"]["requestId"] for m in cancelled] == [endless["id"]]  # as MCP asks


@pytest.mark.parametrize(("tool", "text"), [("stray", "real"), ("resume", "resumed")])
def test_an_answer_to_another_request_on_a_requests_stream_is_left_out(
    tool: str,
    text: str,
    configure_faulty: Callable[..., Path],
    start: Callable[[], Proxy],
    isolated_home: Path,
) -> None:
    """The SDK gives every answer on the event stream of a request — or on its resumption,
    a GET with Last-Event-ID — that request's id: an answer there for request 999999
    would reach the client as the answer to its own. It is left out, with a warning, and
    the request's own answer comes (its duplicate is dropped, as any second answer)."""
    configure_faulty()
    proxy = start()
    proxy.initialize()
    answer = tool_call(proxy, tool)
    assert answer["result"]["content"][0]["text"] == text
    assert_session_goes_on(proxy)
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    assert "left out an answer to request 999999 on the stream that answers request" in stderr


def test_a_request_stream_the_backend_ends_at_once_for_ever_fails_that_request_only(
    configure_faulty: Callable[..., Path], start: Callable[[], Proxy], faulty_server: FaultyServer
) -> None:
    """The backend ends a request's event stream after an event with an id and ``retry:
    0``, and every resumption of it the same way. The SDK resumed it at once, again and
    again, a level of recursion each, until Python's recursion limit broke the whole
    session (exit 17, within a second). A resumption now waits a second after the
    stream's last opening and keeps to the request's deadline: that request fails, the
    session goes on, and the backend saw a few resumptions, not hundreds."""
    configure_faulty("--backend-timeout", "1", request_timeout_seconds=3)
    proxy = start()
    proxy.initialize()
    endless = tool_call(proxy, "resume_loop")
    assert endless["error"]["code"] == -32000
    assert_session_goes_on(proxy)
    resumed = [r["resumed"] for r in read_log(faulty_server) if "resumed" in r]
    assert 0 < len(resumed) <= 5


@pytest.mark.parametrize("sent", ["101 times after the handshake", "once before it, once after"])
def test_notifications_initialized_opens_one_event_stream_however_often_it_is_sent(
    configure_faulty: Callable[..., Path],
    start: Callable[[], Proxy],
    faulty_server: FaultyServer,
    isolated_home: Path,
    sent: str,
) -> None:
    """The SDK opens the session's event stream (a GET the backend holds open) for every
    ``notifications/initialized`` it is given once the backend has answered ``initialize``,
    each holding one of its 100 connections for the rest of the session: a client that
    sent it 101 times left no connection for any request — every later one failed
    (PoolTimeout), the session was broken for good. It passes once; a repeat is not
    forwarded, with a warning. One sent before ``initialize`` (no session yet: the SDK
    opens no stream for it) does not count: it used up the only one the channel passes,
    so the real one was refused and the stream never opened."""
    configure_faulty("--backend-timeout", "1", url=faulty_server.url + "?flood=0")  # held open
    proxy = start()
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    early = sent.startswith("once before")
    if early:
        proxy.send(initialized)
    proxy.initialize()  # initialize, then notifications/initialized
    for _ in range(0 if early else 100):
        proxy.send(initialized)
    assert_session_goes_on(proxy)
    streams = [
        r
        for r in read_log(faulty_server)
        if r.get("line", "").startswith("GET") and "mcp-session-id" in r["headers"]
    ]
    assert len(streams) == 1
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    repeated = "notifications/initialized was sent already in this session" in stderr
    assert repeated is not early


def test_a_retry_the_sdk_cannot_read_is_left_out_and_the_session_goes_on(
    configure_faulty: Callable[..., Path], start: Callable[[], Proxy], isolated_home: Path
) -> None:
    """A request's event stream ends after an event with an id and a ``retry:`` of 401
    digits: the SDK's wait before resuming it (``value / 1000.0`` seconds) raised
    OverflowError in its task, and the whole session ended (exit 17, "the backend
    connection was lost (OverflowError …)"). The field is left out, with a warning; the
    SDK waits as it would without one, resumes the stream, the answer comes and the
    session goes on."""
    configure_faulty()
    proxy = start()
    proxy.initialize()
    assert tool_call(proxy, "huge_retry")["result"]["content"][0]["text"] == "resumed"
    assert_session_goes_on(proxy)
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    assert "left out a 'retry' field from the backend that is not a number" in stderr


def test_the_cookies_a_backend_sets_are_bounded(
    configure_faulty: Callable[..., Path],
    start: Callable[[], Proxy],
    faulty_server: FaultyServer,
    isolated_home: Path,
) -> None:
    """Cookies the backend sets are kept for the session and sent back (a load balancer's
    stickiness), but at most ``MAX_COOKIES``, each of at most ``MAX_COOKIE_BYTES``: the
    jar grew with every answer, and every request carried all of it (25 answers of 800
    cookies: a 2 MB Cookie header on each request after)."""
    max_cookies, max_cookie_bytes = 50, 4096  # http_backend.MAX_COOKIES, MAX_COOKIE_BYTES
    configure_faulty()
    proxy = start()
    proxy.initialize()
    assert tool_call(proxy, "cookies", n=max_cookies + 10)["result"]["content"][0]["text"] == (
        "cookies"
    )
    assert tool_call(proxy, "cookies", n=5)["result"]["content"][0]["text"] == "cookies"
    assert_session_goes_on(proxy)
    last = next(
        r for r in reversed(read_log(faulty_server)) if r.get("line", "").startswith("POST")
    )
    sent = dict(cookie.split("=", 1) for cookie in last["headers"]["cookie"].split("; "))
    assert sorted(sent) == sorted(f"c{i}" for i in range(max_cookies))  # the first ones, kept
    assert all(len(name) + len(value) <= max_cookie_bytes for name, value in sent.items())
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    assert stderr.count("did not keep a cookie the backend set") == 1


def test_keys_that_differ_only_in_case_are_refused_as_on_stdio(
    configure_faulty: Callable[..., Path], start: Callable[[], Proxy], isolated_home: Path
) -> None:
    """The SDK decodes what comes over HTTP; the channel checks every object of what it
    decoded as the stdio path checks a line: a notification with ``data`` and ``DATA`` is
    dropped, an answer with ``text`` and ``TEXT`` refused, and the session goes on."""
    log_dir = configure_faulty()
    proxy = start()
    proxy.initialize()
    request_id = proxy.request("tools/call", {"name": "case_pair", "arguments": {}})
    refused = proxy.answer(request_id)
    assert refused["error"]["code"] == -32000
    assert (
        "ambiguous JSON: the keys 'text' and 'TEXT' differ only in case"
        in refused["error"]["message"]
    )
    assert proxy.set_aside == []  # the notification before it never came
    assert_session_goes_on(proxy)
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    assert "backend notification refused: ambiguous JSON: the keys 'data' and 'DATA'" in stderr
    assert "{'backend': {'refused: ambiguous JSON': 1}}" in stderr
    answered = [
        r["request_id"]
        for r in records(log_dir, "operations")
        if r.get("direction") == "server_to_client" and r["mcp_method"] == "tools/call"
    ]
    assert answered[0] == str(request_id)  # the refused answer recorded as it came


def test_a_redirect_fails_its_request_and_is_not_followed(
    configure_faulty: Callable[..., Path], start: Callable[[], Proxy], faulty_server: FaultyServer
) -> None:
    """A request decided for the configured URL goes there or nowhere: a redirect, even to
    another path of the same server, is the request's error, naming where it pointed; the
    request and the configured credentials are not sent there."""
    configure_faulty("--backend-header", "Authorization:Bearer secret-token")
    proxy = start()
    proxy.initialize()
    moved = tool_call(proxy, "redirect")
    assert moved["error"]["code"] == -32000
    assert "redirected the request to http://127.0.0.1:" in moved["error"]["message"]
    assert "/other (HTTP 307); mcp-acp follows no redirects" in moved["error"]["message"]
    assert_session_goes_on(proxy)
    sent = read_log(faulty_server)
    assert [r["line"] for r in sent if "/other" in r["line"]] == []
    assert {r["headers"].get("authorization") for r in sent} == {"Bearer secret-token"}


def test_a_start_probe_answered_with_a_redirect_fails_start(
    faulty_server: FaultyServer, configure: Callable[..., Path], env: dict[str, str]
) -> None:
    """Followed by the SDK, a redirected URL would work, with every request going to
    another URL than the one configured; the start says so instead."""
    configure(faulty_server.url.replace("/mcp", "/moved"))
    done = run_until_exit(env)
    assert done.returncode == 17
    line = error_line(done)
    assert "/moved redirects to http://127.0.0.1:" in line
    assert "/mcp (HTTP 307); mcp-acp follows no redirects" in line
    assert [r["line"].split()[1] for r in read_log(faulty_server)] == ["/moved"]


@pytest.mark.parametrize("sse", [True, False])
def test_an_answer_in_another_charset_than_utf_8_is_refused(
    sse: bool, configure_faulty: Callable[..., Path], start: Callable[[], Proxy]
) -> None:
    """The SDK decodes an answer in the charset it declares, the channel's checks read its
    bytes as UTF-8: in UTF-16 no ``data:`` line is seen, and a stray answer for request
    999999 would reach the client as the answer to its request. Such an answer fails its
    request; one that names UTF-8 another way passes."""
    configure_faulty()
    proxy = start()
    proxy.initialize()
    refused = tool_call(proxy, "charset", charset="utf-16le", sse=sse)
    assert refused["error"]["code"] == -32000
    kind = "text/event-stream" if sse else "application/json"
    assert (
        f"{kind} in charset utf-16le; mcp-acp reads answers in UTF-8 only"
        in (refused["error"]["message"])
    )
    passed = tool_call(proxy, "charset", charset="UTF8", sse=sse)
    assert passed["result"]["content"][0]["text"] == "real"
    assert_session_goes_on(proxy)


@pytest.mark.parametrize(
    ("sid", "why"),
    [
        ("abc%E9def", "'abc?def' that is not visible ASCII (0x21-0x7E only, as MCP requires)"),
        ("a%20b", "'a b' that is not visible ASCII"),
        ("x" * 4097, "of 4097 bytes, more than 4096"),
    ],
)
def test_a_session_id_mcp_does_not_allow_fails_initialize_not_the_session(
    sid: str,
    why: str,
    faulty_server: FaultyServer,
    configure: Callable[..., Path],
    start: Callable[[], Proxy],
) -> None:
    """The SDK sends the session id back on every request: one it cannot encode (a byte
    past ASCII) ended the whole session on the next request, with exit 17. The
    ``initialize`` that gives it fails instead, saying what is wrong with it."""
    log_dir = configure(f"{faulty_server.url}?sid={sid}")
    proxy = start()
    refused = proxy.initialize()
    assert refused["error"]["code"] == -32000
    assert f"the backend gave a session id (Mcp-Session-Id) {why}" in refused["error"]["message"]
    assert "result" in proxy.call("ping")  # no session id taken: the next request goes
    assert proxy.close() == 0
    assert not [r for r in records(log_dir, "system") if r["event"] == "backend_exited"]


def test_an_event_of_another_kind_is_left_out_and_no_escape_reaches_stderr(
    configure_faulty: Callable[..., Path], start: Callable[[], Proxy], isolated_home: Path
) -> None:
    """The SDK reads only ``message`` events and prints the name of any other raw to
    stderr, terminal escapes and all; the channel leaves such an event out first, and
    names it with the escapes replaced."""
    configure_faulty()
    proxy = start()
    proxy.initialize()
    assert tool_call(proxy, "ansi_event")["result"]["content"][0]["text"] == "real"
    assert_session_goes_on(proxy)
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    assert "\x1b" not in stderr
    assert "left out an event named '?[2K?[31mpolicy reloaded?[0m' from the backend" in stderr


def read_log(server: FaultyServer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log.read_text().splitlines()]


async def test_an_oversized_answer_is_never_held_whole(faulty_server: FaultyServer) -> None:
    """64 MiB in chunks, no length given: the channel counts and gives up past 10 MiB; it
    never holds the whole answer (as the SDK, reading it, would)."""
    from mcp_acp.config import HttpBackend
    from mcp_acp.proxy.channel import open_channel
    from mcp_acp.proxy.messages import from_body

    channel = open_channel(HttpBackend(url=faulty_server.url))
    await channel.start()
    answers = aiter(channel.receive())
    call = {"name": "big_json", "arguments": {"mib": 64, "chunked": True}}
    tracemalloc.start()
    try:
        await channel.send(
            from_body({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": call})
        )
        answer = await asyncio.wait_for(anext(answers), timeout=60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await channel.close()
    assert peak < 40 * 1024 * 1024, f"{peak} bytes held"
    assert answer.body["id"] == 7
    assert "larger than 10485760 bytes" in answer.body["error"]["message"]


async def test_event_ids_are_not_held(faulty_server: FaultyServer) -> None:
    """An event's id may take up all of its 10 MiB but the data: the channel remembered
    the last id of each request's event stream, a thousand of them, to know which request
    a resumed stream answers — a backend giving every answer a large id held gigabytes of
    the proxy's memory. Nothing of an event is kept once it is passed on."""
    from mcp_acp.config import HttpBackend
    from mcp_acp.proxy.http_backend import HttpChannel
    from mcp_acp.proxy.messages import from_body

    channel = HttpChannel(HttpBackend(url=faulty_server.url))
    await channel.start()
    messages = aiter(channel.receive())
    call = {"name": "big_id", "arguments": {"mib": 2}}
    tracemalloc.start()
    try:
        for request_id in range(1, 21):
            await channel.send(
                from_body(
                    {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": call}
                )
            )
            answer = await asyncio.wait_for(anext(messages), timeout=60)
            assert answer.body["result"]["content"][0]["text"] == "real"
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        await channel.close()
    assert held < 20 * MIB, f"{held} bytes held after 20 answers with ids of 2 MiB"


async def _listed_three_times(url: str) -> tuple[list[Any], dict[str, Any]]:
    """``tools/list`` three times through an HTTP channel to ``url``: the three answers'
    tools, and the header mirrors the channel kept."""
    from mcp_acp.config import HttpBackend
    from mcp_acp.proxy.http_backend import HttpChannel
    from mcp_acp.proxy.messages import from_body

    channel = HttpChannel(HttpBackend(url=url))
    await channel.start()
    messages = aiter(channel.receive())
    listings = []
    try:
        for request_id in (1, 2, 3):
            await channel.send(
                from_body({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"})
            )
            listed = await asyncio.wait_for(anext(messages), timeout=60)
            listings.append(listed.body["result"]["tools"])
        return listings, dict(channel._param_headers)
    finally:
        await channel.close()


async def test_the_header_mirrors_of_at_most_so_many_tools_are_kept(
    faulty_server: FaultyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The channel keeps each listed tool's ``x-mcp-header`` mirrors, for every listing: a
    backend listing thousands of new tools each time grew the proxy for good (some 8 MB a
    listing of 20,000). It keeps those of 10,000 tools, as many as the relay keeps facts
    of, and says so once."""
    listings, kept = await _listed_three_times(faulty_server.url + "?many=6000")
    assert [len(tools) for tools in listings] == [6000] * 3
    assert len(kept) == 10_000  # http_backend.MAX_MIRRORED_TOOLS
    assert "t1_0" in kept  # the first listed are kept
    assert caplog.text.count("than are kept (10000 tools, 64 headers each") == 1


async def test_a_tool_with_more_header_mirrors_than_any_tool_sends_keeps_none(
    faulty_server: FaultyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One new tool per listing, with 5,000 arguments that each go in a header: the mirrors
    of each were kept whole (the bound was on tools, not on their mirrors), and the proxy
    grew by megabytes a listing, for good. A tool with more than 64 keeps none, and the
    mirrors of all tools together are bounded as well; said once."""
    from mcp_acp.proxy import http_backend

    listings, kept = await _listed_three_times(faulty_server.url + "?wide=5000")
    assert [len(tools[0]["inputSchema"]["properties"]) for tools in listings] == [5000] * 3
    assert sum(len(mirrors) for mirrors in kept.values()) == 0
    assert http_backend.MAX_MIRRORS_PER_TOOL == 64
    assert caplog.text.count("than are kept (10000 tools, 64 headers each, 20000 in all)") == 1


async def test_an_error_that_ends_the_sdks_writer_is_reported_as_itself(
    faulty_server: FaultyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK logs an exception that ends its writer (here: a header it cannot encode on a
    notification's POST) and closes its streams, as if the connection had closed; the
    channel reports that exception, not "the connection closed"."""
    from mcp_acp.config import HttpBackend
    from mcp_acp.proxy import http_backend
    from mcp_acp.proxy.channel import open_channel
    from mcp_acp.proxy.messages import Message, from_body

    def unsendable(channel: object, message: Message) -> dict[str, str]:
        return {"x-test": "caf\xe9"}  # not ASCII: httpx2 raises UnicodeEncodeError

    channel = open_channel(HttpBackend(url=faulty_server.url))
    await channel.start()
    monkeypatch.setattr(http_backend.HttpChannel, "_headers", unsendable)
    try:
        await channel.send(from_body({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        received = await asyncio.wait_for(_all(channel.receive()), timeout=30)
    finally:
        await channel.close()
    assert received == []
    detail, reason = await channel.exit_detail()
    assert detail["error"].startswith("UnicodeEncodeError: 'ascii' codec can't encode")
    assert "the connection closed" not in reason


async def test_a_requests_stream_is_resumed_a_bounded_number_of_times(
    faulty_server: FaultyServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With no wait between resumptions (as ``retry: 0`` asks), a request whose stream the
    backend ends at once is resumed ``MAX_RESUMPTIONS`` times, then fails; the session
    goes on. Without the bound the SDK recursed until the session broke."""
    from mcp_acp.config import HttpBackend
    from mcp_acp.proxy import http_guard
    from mcp_acp.proxy.http_backend import HttpChannel
    from mcp_acp.proxy.messages import from_body

    monkeypatch.setattr(http_guard, "RECONNECT_SECONDS", 0.0, raising=False)
    channel = HttpChannel(HttpBackend(url=faulty_server.url))
    await channel.start()
    messages = aiter(channel.receive())
    endless = {"name": "resume_loop", "arguments": {}}
    try:
        await channel.send(
            from_body({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": endless})
        )
        failed = await asyncio.wait_for(anext(messages), timeout=60)
        await channel.send(
            from_body({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": ECHO})
        )
        after = await asyncio.wait_for(anext(messages), timeout=60)
    finally:
        await channel.close()
    assert failed.body["id"] == 7
    assert failed.body["error"]["code"] == -32000
    assert after.body["result"]["content"][0]["text"] == "echo:after"
    limit = http_guard.MAX_RESUMPTIONS
    assert f"ended the event stream of request 7 {limit + 1} times" in caplog.text
    assert [r["resumed"] for r in read_log(faulty_server) if "resumed" in r][-1] == limit


async def _handshake(channel: Any, messages: AsyncIterator[Any]) -> None:
    """``initialize`` (id 1) through ``channel``, its answer read from ``messages``, then
    ``notifications/initialized``."""
    from mcp_acp.proxy.messages import from_body

    initialize = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": INFO}
    await channel.send(
        from_body({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize})
    )
    assert (await asyncio.wait_for(anext(messages), timeout=30)).body["id"] == 1
    await channel.send(from_body({"jsonrpc": "2.0", "method": "notifications/initialized"}))


async def test_the_sessions_event_stream_is_not_reopened_at_once(
    faulty_server: FaultyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend ends the session's GET stream as soon as it opens, with ``retry: 0``:
    the SDK opened it again at once, a thousand times a second for as long as the session
    lasted. A reopening now waits ``RECONNECT_SECONDS`` after the last opening (here an
    hour: the backend sees one GET, whatever the machine's speed)."""
    from mcp_acp.config import HttpBackend
    from mcp_acp.proxy import http_guard
    from mcp_acp.proxy.http_backend import HttpChannel
    from mcp_acp.proxy.messages import from_body

    def opened() -> int:
        return len([r for r in read_log(faulty_server) if "listen" in r])

    monkeypatch.setattr(http_guard, "RECONNECT_SECONDS", 3600.0, raising=False)
    channel = HttpChannel(HttpBackend(url=faulty_server.url + "?relisten"))
    await channel.start()
    messages = aiter(channel.receive())
    try:
        await _handshake(channel, messages)
        for _ in range(300):  # the event stream opens (and ends at once)
            if opened():
                break
            await asyncio.sleep(0.1)
        for request_id in (2, 3):  # the session goes on meanwhile
            await channel.send(
                from_body(
                    {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": ECHO}
                )
            )
            assert (await asyncio.wait_for(anext(messages), timeout=30)).body["id"] == request_id
        await asyncio.sleep(0.5)
    finally:
        await channel.close()
    assert opened() == 1


async def _all(messages: AsyncIterator[Any]) -> list[Any]:
    return [message async for message in messages]


async def test_a_backend_that_floods_a_client_that_does_not_read_is_held_back(
    faulty_server: FaultyServer,
) -> None:
    """64 notifications of 1 MiB on the event stream while the relay takes nothing (its
    client does not read): the channel holds a bounded number, then stops reading, and
    the backend cannot write them all — as a stdio backend blocks on its pipe. Once the
    relay takes them, every one comes, in order, and an answer with them."""
    from mcp_acp.config import HttpBackend
    from mcp_acp.proxy import http_backend
    from mcp_acp.proxy.http_backend import HttpChannel
    from mcp_acp.proxy.messages import from_body

    def flooded() -> list[Any]:
        return [r["flood"] for r in read_log(faulty_server) if "flood" in r]

    def at_bound(channel: HttpChannel) -> bool:  # no room for another message of 1 MiB
        held, size = getattr(channel, "_held", 0), getattr(channel, "_held_bytes", 0)
        return held >= http_backend.MAX_HELD_MESSAGES or size + MIB > http_backend.MAX_HELD_BYTES

    channel = HttpChannel(HttpBackend(url=faulty_server.url + "?flood=64"))
    await channel.start()
    messages = aiter(channel.receive())
    try:
        await _handshake(channel, messages)
        for _ in range(600):  # the event stream opens and the channel fills up (or, were it
            if at_bound(channel) or "done" in flooded():  # unbounded, takes everything)
                break
            await asyncio.sleep(0.1)
        assert "done" not in flooded(), "the backend wrote all 64 MiB while nobody read"
        assert at_bound(channel)
        assert channel._held_bytes <= http_backend.MAX_HELD_BYTES
        await channel.send(  # a request waits behind what is held, and is answered
            from_body({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": ECHO})
        )
        numbers, answers = [], []
        while len(numbers) < 64 or not answers:
            message = await asyncio.wait_for(anext(messages), timeout=30)
            assert channel._held <= http_backend.MAX_HELD_MESSAGES
            assert channel._held_bytes <= http_backend.MAX_HELD_BYTES
            if message.kind == "notification":
                numbers.append(message.params["n"])
            else:
                answers.append(message.body["result"]["content"][0]["text"])
        assert numbers == list(range(1, 65))
        assert answers == ["echo:after"]
    finally:
        await channel.close()


async def test_the_backend_is_gone_only_when_the_probe_fails_too(
    faulty_server: FaultyServer,
) -> None:
    """A request that could not connect makes the channel probe the backend again: while it
    answers, the session goes on; once the probe fails as it would at start, the backend is
    gone and the channel's messages end."""
    from mcp_acp.config import HttpBackend
    from mcp_acp.proxy.http_backend import HttpChannel

    channel = HttpChannel(HttpBackend(url=faulty_server.url, timeout_seconds=2))
    await channel.start()
    try:
        await channel._connect_failed(httpx2.ConnectError("refused once"))
        assert not channel._gone
        faulty_server.kill()
        await channel._connect_failed(httpx2.ConnectError("refused again"))
        assert [m async for m in channel.receive()] == []  # ended
        detail, sentence = await channel.exit_detail()
    finally:
        await channel.close()
    assert f"cannot reach the backend at {faulty_server.url}: ConnectError" in detail["error"]
    assert sentence.startswith("the backend connection was lost (cannot reach the backend")


@pytest.fixture
def recording_proxy() -> Iterator[RecordingProxy]:
    proxy = RecordingProxy()
    yield proxy
    proxy.close()


def test_environment_proxies_are_ignored(
    tmp_path: Path,
    configure: Callable[..., Path],
    env: dict[str, str],
    isolated_home: Path,
    recording_proxy: RecordingProxy,
) -> None:
    """The backend's plaintext traffic, its credential included, goes straight to the
    configured URL, never to a proxy the environment names."""
    token = CANARIES[0].decode()
    marker_dir = tmp_path / "server"
    marker_dir.mkdir()
    server = HttpServer(marker_dir, token=token)
    try:
        configure(server.url, "--backend-header", f"Authorization: Bearer {token}")
        proxies = {
            name: recording_proxy.url
            for base in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
            for name in (base, base.lower())
        }
        clean = {k: v for k, v in env.items() if k.lower() != "no_proxy"}
        proxy = Proxy(isolated_home, {**clean, **proxies})
        try:
            proxy.initialize()
            assert tool_call(proxy, "echo", text="x")["result"]["content"][0]["text"] == "echo:x"
            assert proxy.close() == 0
        finally:
            if proxy.proc.poll() is None:
                proxy.proc.kill()
    finally:
        server.kill()
    assert recording_proxy.received == []


def test_a_start_probe_answered_with_a_server_error_fails_start(
    configure: Callable[..., Path], env: dict[str, str], recording_proxy: RecordingProxy
) -> None:
    """A 5xx to the start probe (a gateway with nothing behind it) is not an MCP server."""
    url = recording_proxy.url + "/mcp"
    log_dir = configure(url)
    done = run_until_exit(env)
    assert done.returncode == 17
    line = error_line(done)
    assert f"the backend at {url} answered HTTP 502" in line
    failed = [r for r in records(log_dir, "system") if r["event"] == "backend_start_failed"]
    assert failed[0]["detail"]["backend"] == url
