"""``mcp-acp run`` to a real MCP server over streamable HTTP (uvicorn, in its own process,
``peers/mtls_server.py``) that requires a client certificate: real TLS on 127.0.0.1 with
certificates made in the test.

The right client certificate gets a call through. Every fault of the security checklist's
"TLS to HTTP backends" section (TLS-3, -4, -6, -7, -9, and the server checks: unknown CA,
wrong SAN, CN only) makes ``mcp-acp run`` refuse: exit 17 before a single request reaches
the backend, the reason on stderr, and the refusal in the audit trail (``tls_check`` with
severity ``refuse`` for the start-up checks, ``backend_start_failed`` for a failed
handshake)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import CLI, Proxy, on_a_terminal, records

from mcp_acp.audit.chain import verify_stream

PEER = Path(__file__).parent / "peers" / "mtls_server.py"
NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
POLICY = {
    "version": "1",
    "rules": [{"id": "echo", "effect": "allow", "conditions": {"tool_name": "echo"}}],
}


class MtlsServer:
    def __init__(self, cert: Path, key: Path, client_ca: Path, max_tls: str | None = None) -> None:
        errors = cert.parent / f"server-{cert.stem}-stderr.txt"
        self.calls = cert.parent / f"server-{cert.stem}-calls.txt"  # one line per echo call
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(PEER),
                str(cert),
                str(key),
                str(client_ca),
                *([max_tls] * bool(max_tls)),
            ],
            stdout=subprocess.PIPE,
            stderr=errors.open("w"),
            text=True,
            env={**os.environ, "MTLS_SERVER_CALLS": str(self.calls)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip():
            raise AssertionError("the test server did not start: " + errors.read_text())
        self.port = int(line)
        self.url = f"https://127.0.0.1:{self.port}/mcp"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return home


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_", "SSL_"))}
    clean["HOME"] = str(home)
    return clean


@pytest.fixture
def serve(pki: Any) -> Iterator[Callable[..., MtlsServer]]:
    servers: list[MtlsServer] = []

    def start(
        cert: Path | None = None, key: Path | None = None, max_tls: str | None = None
    ) -> MtlsServer:
        server = MtlsServer(cert or pki.server_cert, key or pki.server_key, pki.ca.pem, max_tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def configure(home: Path, env: dict[str, str], pki: Any) -> Callable[..., Path]:
    """``mcp-acp init`` for ``url``, then ``backend.tls`` (the right files unless changed)
    and the policy; returns the audit log directory."""

    def write(
        url: str,
        *,
        tls: bool = True,
        timeout: float = 10,
        policy: dict[str, Any] = POLICY,
        **changes: Any,
    ) -> Path:
        subprocess.run(
            [str(CLI), "init", "--non-interactive", "--force", "--backend-url", url],
            env=env,
            check=True,
            capture_output=True,
        )
        config_dir = home / ".config" / "mcp-acp"
        config_path = config_dir / "config.json"
        config = json.loads(config_path.read_text())
        config["backend"]["timeout_seconds"] = timeout
        if tls:
            options = {
                "client_cert": str(pki.client_cert),
                "client_key": str(pki.client_key),
                "ca_bundle": str(pki.ca.pem),
            }
            options.update({k: str(v) for k, v in changes.items()})
            config["backend"]["tls"] = {"use": "mtls", "config": options}
            config["plugins"] = {"allow": ["mtls"]}
        config_path.write_text(json.dumps(config))
        (config_dir / "policy.json").write_text(json.dumps(policy))
        return home / ".local" / "state" / "mcp-acp" / "log"

    return write


def run_until_exit(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "run"], input="", env=env, capture_output=True, text=True, timeout=timeout
    )


def refused(
    done: subprocess.CompletedProcess[str], log_dir: Path
) -> tuple[str, list[dict[str, Any]]]:
    """Exit 17, one error line, no traceback; returns that line and the system records."""
    assert done.returncode == 17, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if line.startswith("backend error:")]
    assert len(lines) == 1, done.stderr
    system = records(log_dir, "system")
    assert not [r for r in system if r["event"] == "backend_started"]
    for stream in ("system", "auth"):
        assert verify_stream(log_dir, stream).ok
    return lines[0], system


def handshake_refused(done: subprocess.CompletedProcess[str], log_dir: Path, url: str) -> str:
    line, system = refused(done, log_dir)
    assert f"backend at {url}" in line
    failed = [r for r in system if r["event"] == "backend_start_failed"]
    assert failed[0]["detail"]["backend"] == url
    checks = [r for r in system if r["event"] == "tls_check"]
    assert checks  # the start-up checks ran and passed before the handshake was tried
    assert {r["detail"]["severity"] for r in checks} == {"ok"}
    return line


def check_refused(done: subprocess.CompletedProcess[str], log_dir: Path, check: str) -> str:
    line, system = refused(done, log_dir)
    assert "refusing to connect to the backend: TLS check" in line
    bad = [r for r in system if r["event"] == "tls_check" and r["detail"]["severity"] == "refuse"]
    assert [r["detail"]["check"] for r in bad] == [check]
    assert not [r for r in system if r["event"] == "backend_start_failed"]  # never tried
    return line


# ------------------------------------------------------------------- the right certificate


def test_the_right_client_certificate_gets_a_call_through(
    serve: Callable[..., MtlsServer],
    configure: Callable[..., Path],
    home: Path,
    env: dict[str, str],
) -> None:
    """The call goes through and is audited with the server's identity; no TLS key log is
    written, whatever ``SSLKEYLOGFILE`` says (the provider's context is not Python's
    default one, which would honour it)."""
    server = serve()
    log_dir = configure(server.url)
    keylog = home / "keylog.txt"
    proxy = Proxy(home, {**env, "SSLKEYLOGFILE": str(keylog)})
    try:
        assert proxy.initialize()["result"]["serverInfo"]["name"] == "mtls-test-server"
        answer = proxy.call("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        assert answer["result"]["content"][0]["text"] == "echo:hi"
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
    system = records(log_dir, "system")
    checks = {r["detail"]["check"]: r["detail"] for r in system if r["event"] == "tls_check"}
    assert checks["key_match"]["severity"] == "ok"
    assert checks["client_certificate_validity"]["subject"] == "CN=client"
    started = [r for r in system if r["event"] == "backend_started"]
    assert started[0]["detail"]["url"] == server.url
    assert started[0]["detail"]["identity"]["names"] == ["IP:127.0.0.1"]
    allowed = [r for r in records(log_dir, "decisions") if r["event"] == "decision"]
    assert any(r.get("tool_name") == "echo" and r["effect"] == "allow" for r in allowed)
    assert not keylog.exists()


def test_server_name_override(
    pki: Any,
    serve: Callable[..., MtlsServer],
    configure: Callable[..., Path],
    home: Path,
    env: dict[str, str],
) -> None:
    """The certificate names ``backend.internal`` only; the URL says 127.0.0.1."""
    cert, key = pki.ca.issue("named", sans=("backend.internal",))
    server = serve(cert, key)
    log_dir = configure(server.url)
    handshake_refused(run_until_exit(env), log_dir, server.url)  # without the override
    configure(server.url, server_name="backend.internal")
    proxy = Proxy(home, env)
    try:
        answer = proxy.initialize()
        assert answer["result"]["serverInfo"]["name"] == "mtls-test-server"
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()


@pytest.mark.parametrize(("days", "severity"), [(10, "warning"), (3, "critical")])
def test_a_client_certificate_near_its_end_is_reported_and_audited(
    pki: Any,
    serve: Callable[..., MtlsServer],
    configure: Callable[..., Path],
    env: dict[str, str],
    days: int,
    severity: str,
) -> None:
    server = serve()
    cert, key = pki.ca.issue("ending-client", client=True, not_after=NOW + days * DAY)
    log_dir = configure(server.url, client_cert=cert, client_key=key)
    done = run_until_exit(env)
    assert done.returncode == 0, done.stderr
    assert f"TLS {severity}: client certificate CN=ending-client expires in" in done.stderr
    system = records(log_dir, "system")
    validity = next(
        r["detail"]
        for r in system
        if r["event"] == "tls_check" and r["detail"]["check"] == "client_certificate_validity"
    )
    assert validity["severity"] == severity
    assert days - 1 < validity["days_left"] <= days
    assert [r for r in system if r["event"] == "backend_started"]


def test_tls_status_shows_subjects_and_days_left(
    serve: Callable[..., MtlsServer], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    configure("https://127.0.0.1:1/mcp")
    done = subprocess.run(
        [str(CLI), "tls", "status", "--json"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    client, ca = report["certificates"]
    assert client["role"] == "client"
    assert client["subject"] == "CN=client"
    assert 89 < client["days_left"] <= 90
    assert ca["subject"] == "CN=trusted test CA"
    assert {c["severity"] for c in report["checks"]} == {"ok"}
    text = subprocess.run([str(CLI), "tls", "status"], env=env, capture_output=True, text=True)
    assert "client: CN=client" in text.stdout
    assert "days left" in text.stdout


def test_tls_status_on_a_terminal_escapes_what_the_certificates_name(
    pki: Any, configure: Callable[..., Path], env: dict[str, str]
) -> None:
    """The names in a certificate are its issuer's to choose: a client certificate whose
    subject and SAN, and a CA of the bundle whose subject, hold terminal escapes (turn the
    text red, clear the screen, set the window title) are shown escaped on a terminal,
    none reaching it (click strips escapes only when writing to a pipe); ``--json``
    escapes them as JSON does."""
    cert, key = pki.ca.issue(
        "escapes", sans=("a\x1b[31mred.example",), common_name="cli\x1b[31mred", client=True
    )
    hostile = type(pki.ca)(pki.directory, "evil\x1b[2J\x1b]0;title\x07")
    bundle = pki.directory / "bundle.pem"
    bundle.write_bytes(pki.ca.pem.read_bytes() + hostile.pem.read_bytes())
    configure("https://127.0.0.1:1/mcp", client_cert=cert, client_key=key, ca_bundle=bundle)
    code, out = on_a_terminal(["tls", "status"], env)
    assert code == 0, out
    assert b"\x1b" not in out
    assert b"\x07" not in out
    assert b"client: CN=cli\\x1b[31mred  SAN [DNS:a\\x1b[31mred.example]" in out
    assert b"ca: CN=evil\\x1b[2J\\x1b]0\\;title\\x07 test CA" in out
    assert b"client certificate CN=cli\\x1b[31mred expires in" in out
    done = subprocess.run(
        [str(CLI), "tls", "status", "--json"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    client, _, evil = json.loads(done.stdout)["certificates"]
    assert client["subject"] == "CN=cli\x1b[31mred"
    assert evil["subject"] == "CN=evil\x1b[2J\x1b]0\\;title\x07 test CA"


def test_tls_status_prints_no_credential_of_the_url(
    configure: Callable[..., Path], env: dict[str, str]
) -> None:
    """Every value of the backend URL's query and fragment is redacted, as ``config show``
    redacts it: ``tls status`` printed the URL whole, text and JSON; then it redacted only
    names that look secret, so ``?sig=``, ``?t%6Fken=`` (the server reads ``token``) and
    ``#token=`` were still printed."""
    for query, shown in [
        ("?token=canary-s3cret&tenant=a", "?token=<redacted>&tenant=<redacted>"),
        ("?t%6Fken=canary-s3cret", "?t%6Fken=<redacted>"),
        ("?sig=canary-s3cret", "?sig=<redacted>"),
        ("#token=canary-s3cret", "#token=<redacted>"),
    ]:
        configure(f"https://127.0.0.1:1/mcp{query}")
        for json_flag in ([], ["--json"]):
            done = subprocess.run(
                [str(CLI), "tls", "status", *json_flag], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
            assert "canary-s3cret" not in done.stdout + done.stderr
            assert f"https://127.0.0.1:1/mcp{shown}" in done.stdout


@pytest.mark.parametrize(
    ("option", "role", "label"),
    [("client_cert", "client", "client certificate"), ("ca_bundle", "ca", "CA bundle")],
)
def test_tls_status_with_a_fifo_for_a_certificate_refuses_and_exits(
    pki: Any,
    configure: Callable[..., Path],
    env: dict[str, str],
    option: str,
    role: str,
    label: str,
) -> None:
    """A FIFO where a certificate or the CA bundle should be: the checks refuse it without
    waiting for a writer, and ``tls status`` shows what the checks read — nothing of that
    file — instead of opening the path again (which blocked for ever on the FIFO). The
    timeout only stops a hung run from holding up the suite."""
    fifo = pki.directory / "fifo.pem"
    os.mkfifo(fifo, 0o644)
    configure("https://127.0.0.1:1/mcp", **{option: fifo})
    done = subprocess.run(
        [str(CLI), "tls", "status"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{role}: {fifo}: not read: its file check refused it (below)" in done.stdout
    assert (
        f"[refuse] {label}_file: {label} {fifo} is a FIFO (named pipe), not a regular file"
        in done.stdout
    )


# ------------------------------------------------------------------- the server is wrong


def test_unknown_ca(
    pki: Any, serve: Callable[..., MtlsServer], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    server = serve(*pki.rogue.issue("rogue-server"))
    log_dir = configure(server.url)
    assert "CERTIFICATE_VERIFY_FAILED" in handshake_refused(
        run_until_exit(env), log_dir, server.url
    )


def test_wrong_san(
    pki: Any, serve: Callable[..., MtlsServer], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    server = serve(*pki.ca.issue("elsewhere", sans=("other.example",)))
    log_dir = configure(server.url)
    line = handshake_refused(run_until_exit(env), log_dir, server.url)
    assert "CERTIFICATE_VERIFY_FAILED" in line
    assert "IP address mismatch" in line


def test_cn_only_certificate(
    pki: Any, serve: Callable[..., MtlsServer], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    """CN=127.0.0.1 and no SAN: there is no fallback to the common name."""
    server = serve(*pki.ca.issue("cn-only", sans=(), common_name="127.0.0.1"))
    log_dir = configure(server.url)
    assert "CERTIFICATE_VERIFY_FAILED" in handshake_refused(
        run_until_exit(env), log_dir, server.url
    )


@pytest.mark.parametrize(
    ("not_before", "not_after", "words"),
    [
        (NOW - 30 * DAY, NOW - DAY, "certificate has expired"),
        (NOW + DAY, NOW + 30 * DAY, "not yet valid"),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_server_certificate_out_of_its_validity(
    pki: Any,
    serve: Callable[..., MtlsServer],
    configure: Callable[..., Path],
    env: dict[str, str],
    not_before: dt.datetime,
    not_after: dt.datetime,
    words: str,
) -> None:
    server = serve(*pki.ca.issue("dated-server", not_before=not_before, not_after=not_after))
    log_dir = configure(server.url)
    assert words in handshake_refused(run_until_exit(env), log_dir, server.url)


def test_server_limited_to_tls_1_1(
    pki: Any, serve: Callable[..., MtlsServer], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    server = serve(max_tls="1.1")
    # the server is real: a legacy client that allows TLS 1.1 completes the handshake
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    legacy.load_verify_locations(str(pki.ca.pem))
    legacy.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy.minimum_version = ssl.TLSVersion.TLSv1_1
    try:
        with (
            socket.create_connection(("127.0.0.1", server.port)) as sock,
            legacy.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() == "TLSv1.1"
    except ssl.SSLError as exc:  # an OpenSSL built without TLS 1.1 proves nothing here
        pytest.skip(f"this OpenSSL cannot complete a TLS 1.1 handshake: {exc}")
    log_dir = configure(server.url)
    assert "ConnectError" in handshake_refused(run_until_exit(env), log_dir, server.url)


def test_server_that_accepts_tcp_and_stalls_is_bounded(
    configure: Callable[..., Path], env: dict[str, str]
) -> None:
    """TLS-9: the kernel completes the TCP handshake; nobody ever answers the ClientHello."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/mcp"
        log_dir = configure(url, timeout=2)
        began = time.monotonic()
        done = run_until_exit(env)
        elapsed = time.monotonic() - began
    line = handshake_refused(done, log_dir, url)
    assert "did not answer within 2 s" in line
    assert elapsed < 2 + 8  # the bound, plus the proxy's own start-up


class Trickle:
    """A TLS server on 127.0.0.1 that requires a client certificate, completes the
    handshake, reads the request, then sends an HTTP answer's head one byte every
    ``step`` seconds: never quiet long enough for a read timeout, and never done."""

    def __init__(self, pki: Any, step: float) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(pki.ca.pem)
        self.step = step
        self.stop = threading.Event()
        self.handshakes = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}/mcp"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._dribble, args=(conn,), daemon=True).start()

    def _dribble(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-pad: "
        with (
            contextlib.suppress(OSError),
            conn,
            self.context.wrap_socket(conn, server_side=True) as tls,
        ):
            self.handshakes += 1
            tls.recv(65536)
            for byte in head + b"a" * 100_000:
                if self.stop.wait(self.step):
                    return
                tls.sendall(bytes([byte]))

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


def test_a_server_that_answers_a_byte_at_a_time_is_bounded(
    pki: Any, configure: Callable[..., Path], env: dict[str, str]
) -> None:
    """TLS-9: the handshake completes, then the answer's head comes a byte every half
    second. The start-up probe as a whole — not each read — is held to timeout_seconds."""
    trickle = Trickle(pki, step=0.5)
    try:
        log_dir = configure(trickle.url, timeout=2)
        done = run_until_exit(env)
    finally:
        trickle.close()
    line = handshake_refused(done, log_dir, trickle.url)
    assert f"the backend at {trickle.url} did not answer within 2 s" in line
    assert trickle.handshakes == 1  # it was the answer that was late, not the handshake


# ------------------------------------------------------------------- our side is wrong


def test_no_client_certificate(
    pki: Any, serve: Callable[..., MtlsServer], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    """An https backend without backend.tls: the server is verified as usual (here against
    our CA through SSL_CERT_FILE), no client certificate is sent, the server refuses."""
    server = serve()
    log_dir = configure(server.url, tls=False)
    done = run_until_exit({**env, "SSL_CERT_FILE": str(pki.ca.pem)})
    line, system = refused(done, log_dir)
    assert f"cannot reach the backend at {server.url}" in line
    assert [r for r in system if r["event"] == "backend_start_failed"]
    assert not [r for r in system if r["event"] == "tls_check"]


def test_key_readable_by_others(
    pki: Any, serve: Callable[..., MtlsServer], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    server = serve()
    log_dir = configure(server.url)
    pki.client_key.chmod(0o644)
    assert "mode 0644" in check_refused(run_until_exit(env), log_dir, "client key_file")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root (CI is root)")
@pytest.mark.parametrize(
    ("file", "check"),
    [("client_key", "client key_file"), ("client_cert", "client certificate_file")],
)
def test_a_client_file_owned_by_another_user(
    pki: Any,
    serve: Callable[..., MtlsServer],
    configure: Callable[..., Path],
    env: dict[str, str],
    file: str,
    check: str,
) -> None:
    """TLS-7: the client key or certificate owned by someone else (here uid 4242, with the
    right mode) is refused before any handshake: its owner could swap it at any time."""
    server = serve()
    log_dir = configure(server.url)
    os.chown(getattr(pki, file), 4242, 4242)
    assert "owned by uid 4242" in check_refused(run_until_exit(env), log_dir, check)


def test_a_ca_bundle_in_a_directory_others_can_write(
    pki: Any,
    serve: Callable[..., MtlsServer],
    configure: Callable[..., Path],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    """TLS-7: root's 0644 bundle in a 0777 directory; another user could rename their own
    CA over it (or a symlink to any file root owns) at any time."""
    server = serve()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    bundle = shared / "ca.pem"
    bundle.write_bytes(pki.ca.pem.read_bytes())
    bundle.chmod(0o644)
    log_dir = configure(server.url, ca_bundle=bundle)
    line = check_refused(run_until_exit(env), log_dir, "CA bundle_file")
    assert f"directory {shared} is writable by group or others (mode 0777)" in line
    status = subprocess.run([str(CLI), "tls", "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 1
    assert "[refuse] CA bundle_file" in status.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a symlink to another user")
def test_a_ca_bundle_symlink_another_user_planted_in_a_sticky_directory(
    pki: Any,
    serve: Callable[..., MtlsServer],
    configure: Callable[..., Path],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The config names a CA bundle in a /tmp-like directory; before it is there, another
    user (uid 65534) plants a symlink at that name to a CA certificate root owns whose key
    they hold (CPython's test CA, say: its key is public), and serves the backend's URL with
    a certificate that CA signed. Every check of the file itself passes (root's, 0644): the
    link's owner is what gives it away. ``run`` refuses before any handshake."""
    system = tmp_path / "system"
    system.mkdir(mode=0o755)
    public_ca = system / "public-test-ca.pem"  # root's: the rogue CA plays the public one
    public_ca.write_bytes(pki.rogue.pem.read_bytes())
    public_ca.chmod(0o644)
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    planted = sticky / "victim-ca.pem"
    planted.symlink_to(public_ca)
    os.lchown(planted, 65534, 65534)
    impostor = serve(*pki.rogue.issue("impostor", sans=("127.0.0.1",)))
    log_dir = configure(impostor.url, ca_bundle=planted)
    line = check_refused(run_until_exit(env), log_dir, "CA bundle_file")
    assert f"symlink {planted} is owned by uid 65534, not by you (uid 0) or root" in line
    assert not impostor.calls.exists()


def test_key_from_another_pair(
    pki: Any, serve: Callable[..., MtlsServer], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    server = serve()
    _, other_key = pki.ca.issue("other-client", client=True)
    log_dir = configure(server.url, client_key=other_key)
    assert "does not belong" in check_refused(run_until_exit(env), log_dir, "key_match")


def test_expired_client_certificate(
    pki: Any, serve: Callable[..., MtlsServer], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    server = serve()
    cert, key = pki.ca.issue(
        "old-client", client=True, not_before=NOW - 30 * DAY, not_after=NOW - DAY
    )
    log_dir = configure(server.url, client_cert=cert, client_key=key)
    assert "expired" in check_refused(run_until_exit(env), log_dir, "client_certificate_validity")


def test_a_client_certificate_the_server_does_not_trust(
    pki: Any, serve: Callable[..., MtlsServer], configure: Callable[..., Path], env: dict[str, str]
) -> None:
    server = serve()
    cert, key = pki.rogue.issue("rogue-client", client=True)
    log_dir = configure(server.url, client_cert=cert, client_key=key)
    handshake_refused(run_until_exit(env), log_dir, server.url)


# ------------------------------------------------------------------- the backend's identity

IDENTITY_POLICY = {
    "version": "1",
    "rules": [
        {
            "id": "echo-on-notes",
            "effect": "allow",
            "conditions": {
                "tool_name": "echo",
                "backend_identity": "DNS:notes.internal",
                "min_provenance": {"backend_identity": "mtls"},
            },
        }
    ],
}


def _echo(proxy: Proxy, text: str) -> dict[str, Any]:
    return proxy.call("tools/call", {"name": "echo", "arguments": {"text": text}})


def _tool_decisions(log_dir: Path) -> list[dict[str, Any]]:
    return [r for r in records(log_dir, "decisions") if r.get("tool_name") == "echo"]


def test_a_rule_on_the_backend_identity_lets_the_named_server_through(
    pki: Any,
    serve: Callable[..., MtlsServer],
    configure: Callable[..., Path],
    home: Path,
    env: dict[str, str],
) -> None:
    server = serve(*pki.ca.issue("notes", sans=("127.0.0.1", "notes.internal")))
    log_dir = configure(server.url, policy=IDENTITY_POLICY)
    proxy = Proxy(home, env)
    try:
        proxy.initialize()
        listed = proxy.call("tools/list")["result"]["tools"]
        assert [tool["name"] for tool in listed] == ["echo"]
        assert _echo(proxy, "hi")["result"]["content"][0]["text"] == "echo:hi"
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
    assert server.calls.read_text() == "echo:hi\n"
    (decision,) = _tool_decisions(log_dir)
    assert decision["effect"] == "allow"
    assert decision["rule_id"] == "echo-on-notes"
    assert decision["backend_identity"] == ["DNS:notes.internal", "IP:127.0.0.1"]
    assert decision["backend_identity_provenance"] == "mtls"
    assert "backend identity DNS:notes.internal matches" in decision["reason"]
    started = next(r for r in records(log_dir, "system") if r["event"] == "backend_started")
    identity = started["detail"]["identity"]
    assert identity["names"] == ["DNS:notes.internal", "IP:127.0.0.1"]
    assert identity["subject"] == "CN=notes"
    assert identity["provenance"] == "mtls"
    assert len(identity["sha256"]) == 64
    assert verify_stream(log_dir, "decisions").ok


def test_the_same_rule_denies_a_server_with_another_name(
    pki: Any,
    serve: Callable[..., MtlsServer],
    configure: Callable[..., Path],
    home: Path,
    env: dict[str, str],
) -> None:
    """Trusted by the same CA and the name we asked for (``server_name``), but not the
    server the rule names: the tool is hidden, the call denied, the server never asked."""
    server = serve(*pki.ca.issue("other", sans=("other.internal",)))
    log_dir = configure(server.url, policy=IDENTITY_POLICY, server_name="other.internal")
    proxy = Proxy(home, env)
    try:
        assert proxy.initialize()["result"]["serverInfo"]["name"] == "mtls-test-server"
        assert proxy.call("tools/list")["result"]["tools"] == []
        denied = _echo(proxy, "hi")
        assert denied["error"]["code"] == -32003
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
    assert not server.calls.exists()
    (decision,) = _tool_decisions(log_dir)
    assert decision["effect"] == "deny"
    assert "rule_id" not in decision  # no rule matched: denied by default
    assert decision["backend_identity"] == ["DNS:other.internal"]
    assert decision["backend_identity_provenance"] == "mtls"


class Switch:
    """A TCP forwarder on 127.0.0.1: each new connection goes to the current ``target``;
    ``switch(port)`` points later connections at another server and cuts the open ones (a
    load balancer that moves a client to another backend)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def switch(self, target: int) -> None:
        self.target = target
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    def close(self) -> None:
        self.switch(self.target)
        self.listener.close()


def test_a_new_connection_to_another_server_is_refused_mid_session(
    pki: Any,
    serve: Callable[..., MtlsServer],
    configure: Callable[..., Path],
    home: Path,
    env: dict[str, str],
) -> None:
    """The identity is the one the session started with: after a switch to another server
    that the CA also vouches for (and whose certificate is valid for the same host), the
    new connection is refused before the request is written on it, and the session ends."""
    notes = serve(*pki.ca.issue("notes", sans=("127.0.0.1", "notes.internal")))
    other = serve(*pki.ca.issue("other", sans=("127.0.0.1", "other.internal")))
    switch = Switch(notes.port)
    try:
        url = f"https://127.0.0.1:{switch.port}/mcp"
        log_dir = configure(url, policy={"version": "1", "rules": POLICY["rules"]})
        proxy = Proxy(home, env)
        try:
            proxy.initialize()
            assert _echo(proxy, "first")["result"]["content"][0]["text"] == "echo:first"
            switch.switch(other.port)
            time.sleep(0.5)  # the proxy's pooled connections see the cut
            lost = _echo(proxy, "second")
            assert lost["error"]["code"] == -32000
            assert "not for DNS:notes.internal, IP:127.0.0.1" in lost["error"]["message"]
            assert proxy.proc.wait(timeout=30) == 17
        finally:
            if proxy.proc.poll() is None:
                proxy.proc.kill()
    finally:
        switch.close()
    assert notes.calls.read_text() == "echo:first\n"
    assert not other.calls.exists()
    exited = next(r for r in records(log_dir, "system") if r["event"] == "backend_exited")
    assert (
        "presented a certificate for DNS:other.internal, IP:127.0.0.1"
        in (exited["detail"]["error"])
    )
