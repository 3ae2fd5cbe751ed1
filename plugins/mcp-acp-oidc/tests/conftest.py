"""Fixtures: keys made with cryptography, tokens signed by hand, and a JWKS served by a
real HTTP server on 127.0.0.1 that can be told to fail."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, get_default_algorithms
from mcp_acp_oidc.jwks import JWKSCache
from mcp_acp_oidc.validator import TokenValidationConfig, TokenValidator

from mcp_acp.models import StoredToken

# The IdP and the device approval live next to server.mjs, shared with bench/soak.py.
sys.path.insert(0, str(Path(__file__).resolve().parent / "idp"))
import local_idp

ISSUER = "https://idp.example.test"
AUDIENCE = "urn:mcp-acp:proxy"
CLIENT_ID = "mcp-acp-cli"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(value: dict[str, Any] | bytes | str) -> str:
    if isinstance(value, dict):
        value = json.dumps(value, separators=(",", ":"))
    if isinstance(value, str):
        value = value.encode()
    return b64(value)


def sign(
    header: dict[str, Any] | bytes | str,
    payload: dict[str, Any] | bytes | str,
    key: Any,
    alg: str | None = None,
) -> str:
    """Compact JWS over exactly the given header and payload bytes, signed with ``key``
    (a private key object for RS/PS/ES, bytes for HS)."""
    if alg is None:
        assert isinstance(header, dict)
        alg = header["alg"]
    signing_input = f"{part(header)}.{part(payload)}".encode()
    if alg.startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}[alg]
        signature = hmac.new(key, signing_input, digest).digest()
    else:
        signature = get_default_algorithms()[alg].sign(signing_input, key)
    return f"{signing_input.decode()}.{b64(signature)}"


def public_jwk(private_key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(public))
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(public))
    jwk["kid"] = kid
    jwk["use"] = "sig"
    if alg:
        jwk["alg"] = alg
    return jwk


class Keys:
    """Key material for one test session (RSA generation is the slow part)."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.attacker_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.attacker_ec = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


def trickle(
    send: Callable[[bytes], object],
    part: str,
    interval: float,
    released: threading.Event,
    give_up_after: float = float("inf"),
) -> None:
    """Send an HTTP answer that never ends: one byte every ``interval`` seconds — of the
    body after complete headers (``part="body"``), or of a header line (``part="headers"``)
    — until ``released`` is set or ``give_up_after`` seconds have passed. ``send`` raises
    ``OSError`` once the client hangs up."""
    give_up_at = time.monotonic() + give_up_after
    if part == "body":
        send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )
        filler = b" "
    else:  # a header line that never ends
        send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        filler = b"a"
    while not released.wait(interval) and time.monotonic() < give_up_at:
        send(filler)


class FakeIdP(BaseHTTPRequestHandler):
    """Serves ``state.jwks`` at /jwks; counts every request by path. ``state.mode`` makes
    /jwks fail: ``500``, ``html``, ``redirect``, ``big``, ``hang`` (answers after
    ``state.hang_seconds``), ``trickle-headers`` and ``trickle-body`` (see :func:`trickle`;
    ``state.hung_up`` is set when the client hangs up)."""

    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        state.hits[self.path] += 1
        mode = state.mode
        if self.path != "/jwks":
            body, status, ctype = b'{"keys":[]}', 200, "application/json"
        elif mode == "500":
            body, status, ctype = b"oops", 500, "text/plain"
        elif mode == "html":
            body, status, ctype = b"<html><body>Login</body></html>", 200, "text/html"
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "/evil-jwks.json")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        elif mode == "big":
            filler = [{"kty": "oct", "k": "x" * 1000}] * 600
            body, status, ctype = json.dumps({"keys": filler}).encode(), 200, "application/json"
        elif mode == "hang":
            time.sleep(state.hang_seconds)
            body, status, ctype = json.dumps(state.jwks).encode(), 200, "application/json"
        elif mode in ("trickle-headers", "trickle-body"):
            # the answer ends after 30 s all the same: a client that never hangs up (a
            # fetch in a thread nothing can stop) would otherwise hold the test's
            # teardown for ever, where the event loop waits for its worker threads
            try:
                trickle(self.wfile.write, mode.removeprefix("trickle-"), 0.5, state.released, 30)
            except OSError:
                state.hung_up.set()  # the client gave up: what the test wants
            return
        else:
            body, status, ctype = json.dumps(state.jwks).encode(), 200, "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout test)

    def do_POST(self) -> None:
        """Any POST (a token endpoint that is down): recorded, answered 503."""
        state = self.server.state
        state.hits[self.path] += 1
        length = int(self.headers.get("Content-Length") or 0)
        state.posts.append((self.path, self.rfile.read(length).decode()))
        body = b'{"error": "temporarily_unavailable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ServerState:
    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.mode = "ok"
        self.hang_seconds = 3.0
        self.hits: Counter[str] = Counter()
        self.posts: list[tuple[str, str]] = []
        self.released = threading.Event()  # ends every trickling answer
        self.hung_up = threading.Event()  # a client hung up on a trickling answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


class JWKSServer:
    """:class:`FakeIdP` on 127.0.0.1: over plain HTTP, or over TLS with ``tls``'s
    certificate (``https://``)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.httpd = _Server(("127.0.0.1", 0), FakeIdP)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.state = ServerState()
        self.state = self.httpd.state
        self.port = self.httpd.server_address[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.jwks_uri = f"{self.base}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.state.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[JWKSServer]:
    server = JWKSServer()
    server.state.jwks = {
        "keys": [public_jwk(keys.rsa, "rsa-1", "RS256"), public_jwk(keys.ec, "ec-1", "ES256")]
    }
    yield server
    server.close()


def _self_signed(directory: Path, *, cn_only: str | None = None) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, and its key: ``(cert, key)``; with
    ``cn_only``, one that names that host in its common name alone (no subjectAltName)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn_only or "test IdP")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if cn_only is None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = directory / "idp.pem", directory / "idp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def https_idp(keys: Keys, tmp_path: Path) -> Iterator[tuple[JWKSServer, Path]]:
    """:class:`FakeIdP` over real TLS, serving the test keys at /jwks, and its certificate
    (self-signed for 127.0.0.1: a client trusts it through ``SSL_CERT_FILE``)."""
    cert, key = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = JWKSServer(tls)
    server.state.jwks = {
        "keys": [public_jwk(keys.rsa, "rsa-1", "RS256"), public_jwk(keys.ec, "ec-1", "ES256")]
    }
    yield server, cert
    server.close()


@pytest.fixture
def https_idp_named_in_cn_only(keys: Keys, tmp_path: Path) -> Iterator[tuple[JWKSServer, Path]]:
    """As :func:`https_idp`, with a certificate that names ``localhost`` in its common name
    alone (no subjectAltName)."""
    cert, key = _self_signed(tmp_path, cn_only="localhost")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = JWKSServer(tls)
    server.state.jwks = {"keys": [public_jwk(keys.rsa, "rsa-1", "RS256")]}
    yield server, cert
    server.close()


class TrickleServer:
    """An HTTP server on 127.0.0.1 that never finishes an answer: it sends one byte every
    ``interval`` seconds — of the body after complete headers (``part="body"``), or of a
    header line (``part="headers"``) — until the client hangs up or
    :meth:`release` is called, which closes every connection.

    Each byte arrives well within any per-read timeout, so only an overall deadline on
    the request ends it. ``seen`` is set once a request has arrived."""

    def __init__(self, part: str = "body", interval: float = 0.5) -> None:
        self.part = part
        self.interval = interval
        self.requests = 0
        self.seen = threading.Event()
        self._released = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                self.requests += 1
                self.seen.set()
                trickle(conn.sendall, self.part, self.interval, self._released)
            except OSError:
                pass  # the client gave up: what the test wants

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self._listener.close()


@pytest.fixture
def trickle_server() -> Iterator[Callable[..., TrickleServer]]:
    """Start a :class:`TrickleServer` (same arguments); all are closed after the test."""
    started: list[TrickleServer] = []

    def start(part: str = "body", interval: float = 0.5) -> TrickleServer:
        started.append(TrickleServer(part, interval))
        return started[-1]

    yield start
    for server in started:
        server.close()


class Clock:
    """A settable clock for TTL and cooldown tests."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "azp": CLIENT_ID,
        "scope": "openid mcp:tools",
        "groups": ["eng"],
        "roles": ["dev"],
        "jti": "j1",
    }
    for key, value in overrides.items():
        if value is DROP:
            base.pop(key, None)
        else:
            base[key] = value
    return base


DROP = object()


def make_validator(
    server: JWKSServer,
    *,
    clock: Clock | None = None,
    ttl: float = 300.0,
    cooldown: float = 30.0,
    timeout: float = 1.0,
    **config: Any,
) -> TokenValidator:
    options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "client_ids": (CLIENT_ID,)}
    options.update(config)
    jwks = JWKSCache(
        server.jwks_uri,
        ttl=ttl,
        cooldown=cooldown,
        timeout=timeout,
        clock=clock or time.monotonic,
    )
    return TokenValidator(TokenValidationConfig(**options), jwks)


class DictStorage:
    """The token-storage seam (storage itself is another plugin's job)."""

    description = "in-memory (tests)"

    def __init__(self) -> None:
        self.tokens: dict[str, StoredToken] = {}
        self.saves = 0

    def load(self, issuer: str) -> StoredToken | None:
        return self.tokens.get(issuer)

    def save(self, token: StoredToken) -> None:
        self.saves += 1
        self.tokens[token.issuer] = token

    def delete(self, issuer: str) -> None:
        self.tokens.pop(issuer, None)


class Kit:
    """The helpers above, handed to test modules as the ``kit`` fixture (test modules of
    two distributions cannot import each other's ``conftest``)."""

    ISSUER = ISSUER
    AUDIENCE = AUDIENCE
    CLIENT_ID = CLIENT_ID
    DROP = DROP
    Clock = Clock
    b64 = staticmethod(b64)
    part = staticmethod(part)
    sign = staticmethod(sign)
    public_jwk = staticmethod(public_jwk)
    claims = staticmethod(claims)
    make_validator = staticmethod(make_validator)
    DictStorage = DictStorage


@pytest.fixture
def approve() -> Any:
    """Approve (or deny) a device login the way a user would, through the pages."""
    return local_idp.approve_device


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


@pytest.fixture
def validator(jwks_server: JWKSServer) -> TokenValidator:
    return make_validator(jwks_server)


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[str]:
    """A real OpenID Provider (npm ``oidc-provider`` 9.13.3, installed with ``npm ci`` from
    the committed lockfile on first use) on 127.0.0.1. Yields its issuer URL."""
    with contextlib.ExitStack() as stack:
        try:
            issuer = stack.enter_context(local_idp.running())
        except local_idp.IdPError as exc:
            pytest.fail(str(exc))
        yield issuer
