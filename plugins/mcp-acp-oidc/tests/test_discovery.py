"""Discovery: the document must name our issuer exactly, and its endpoints must be
acceptable URLs; a broken or hostile discovery endpoint is an error, never a guess."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mcp_acp_oidc.discovery import discover, metadata_from_document
from mcp_acp_oidc.errors import DiscoveryError

WELL_KNOWN = "/.well-known/openid-configuration"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        status, ctype, body = self.server.answer
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.issuer = f"http://127.0.0.1:{self.server_address[1]}"
        self.hits: list[str] = []
        self.answer: tuple[int, str, bytes] = (200, "application/json", b"{}")

    def serve(self, document: dict[str, Any]) -> None:
        self.answer = (200, "application/json", json.dumps(document).encode())


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def document(issuer: str, **overrides: Any) -> dict[str, Any]:
    doc = {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks",
        "token_endpoint": f"{issuer}/token",
        "device_authorization_endpoint": f"{issuer}/device/auth",
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


async def test_good_document(server) -> None:
    server.serve(document(server.issuer))
    metadata = await discover(server.issuer)
    assert metadata.token_endpoint == f"{server.issuer}/token"
    assert metadata.revocation_endpoint is None
    assert server.hits == [WELL_KNOWN]


async def test_trailing_slash_issuer_uses_one_well_known_path(server) -> None:
    server.serve(document(server.issuer + "/"))
    assert (await discover(server.issuer + "/")).issuer == server.issuer + "/"
    assert server.hits == [WELL_KNOWN]


@pytest.mark.parametrize(
    "claimed",
    ["{issuer}/", "{issuer}:80", "http://localhost:{port}", "https://evil.test", None, 5],
)
async def test_issuer_mismatch_is_refused(server, claimed) -> None:
    port = server.server_address[1]
    value = claimed.format(issuer=server.issuer, port=port) if isinstance(claimed, str) else claimed
    server.serve({**document(server.issuer), "issuer": value})
    with pytest.raises(DiscoveryError, match="another issuer"):
        await discover(server.issuer)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("jwks_uri", "http://evil.test/jwks"),
        ("jwks_uri", "file:///etc/passwd"),
        ("jwks_uri", None),
        ("token_endpoint", "javascript:alert(1)"),
        ("token_endpoint", "http://user:pw@127.0.0.1/token"),
        ("token_endpoint", None),
        ("device_authorization_endpoint", "http://169.254.169.254/device"),
        ("device_authorization_endpoint", "http://127.0.0.1/a b"),
        ("device_authorization_endpoint", ["http://127.0.0.1/x"]),
        ("revocation_endpoint", "ftp://127.0.0.1/revoke"),
    ],
)
async def test_bad_endpoints_are_refused(server, field, value) -> None:
    doc = document(server.issuer)
    if value is None:
        doc.pop(field)
    else:
        doc[field] = value
    server.serve(doc)
    with pytest.raises(DiscoveryError, match="rejected"):
        await discover(server.issuer)


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://169.254.169.254/latest/meta-data",
        "https://127.0.0.1/jwks",
        "https://localhost/jwks",
        "https://[::1]/jwks",
        "https://10.0.0.5/jwks",
        "https://192.168.1.1/jwks",
        # spellings the resolver (inet_aton) reads as those addresses, ipaddress does not
        "https://127.1/jwks",
        "https://2130706433/jwks",
        "https://0x7f000001/jwks",
        "https://0177.0.0.1/jwks",
        "https://10.1/jwks",
        "https://169.254.43518/jwks",
        "https://0/jwks",
        "https://127.0.0.1./jwks",
        "https://localhost./jwks",
        "https://idp.localhost/jwks",
        # full stops IDNA maps to "." before connecting
        "https://127\u30020\u30020\u30021/jwks",
        "https://10\uff0e0\uff0e0\uff0e1/jwks",
        "https://169\uff61254\uff61169\uff61254/jwks",
    ],
)
def test_public_issuer_endpoints_may_not_point_inwards(endpoint: str) -> None:
    issuer = "https://idp.example.test"
    with pytest.raises(DiscoveryError, match=r"address|loopback|in ASCII"):
        metadata_from_document(issuer, document(issuer, jwks_uri=endpoint))


def test_numeric_spellings_name_the_address_the_resolver_connects_to() -> None:
    import socket

    from mcp_acp_oidc._http import ip_literal

    for spelling in ("127.1", "2130706433", "0x7f000001", "0177.0.0.1"):
        assert str(ip_literal(spelling)) == "127.0.0.1"
        assert socket.getaddrinfo(spelling, 443)[0][4][0] == "127.0.0.1"  # what a client does
    assert ip_literal("idp.example.test") is None
    assert ip_literal("1.example") is None


def test_public_issuer_may_use_another_public_host_for_keys() -> None:
    issuer = "https://accounts.example.test"
    doc = document(issuer, jwks_uri="https://keys.example-cdn.test/certs")
    assert metadata_from_document(issuer, doc).jwks_uri == "https://keys.example-cdn.test/certs"


def test_https_issuer_needs_https_endpoints() -> None:
    issuer = "https://idp.example.test"
    doc = document(issuer, jwks_uri="http://127.0.0.1/jwks")
    with pytest.raises(DiscoveryError, match="scheme"):
        metadata_from_document(issuer, doc)
    assert metadata_from_document(issuer, document(issuer)).jwks_uri == f"{issuer}/jwks"


@pytest.mark.parametrize(
    "answer",
    [
        (500, "text/plain", b"oops"),
        (200, "text/html", b"<html>login</html>"),
        (302, "text/plain", b""),
        (200, "application/json", b"[]"),
        (200, "application/json", b'{"issuer": "a", "issuer": "b"}'),
        (200, "application/json", b'{"x": "' + b"a" * 600_000 + b'"}'),
    ],
)
async def test_broken_discovery_endpoint_is_an_error(server, answer) -> None:
    server.answer = answer
    with pytest.raises(DiscoveryError):
        await discover(server.issuer)
    assert "/elsewhere" not in server.hits


@pytest.mark.parametrize(
    "issuer",
    [
        "http://idp.example.test",
        "ftp://127.0.0.1",
        "https://idp.test/#x",
        "",
        # a name under localhost may be asked of DNS: plain http only to localhost itself
        "http://idp.localhost",
        # shown to a human as another address
        "https://idp.example.test/\u202e\u2066moc.elgoog//:sptth\u2069",
        "https://idp.example.test/a\u200bb",
    ],
)
async def test_unacceptable_issuer_is_refused_without_a_request(issuer) -> None:
    with pytest.raises(DiscoveryError, match="issuer rejected"):
        await discover(issuer)


async def test_unreachable_issuer() -> None:
    with pytest.raises(DiscoveryError, match="cannot reach"):
        await discover("http://127.0.0.1:9", timeout=2)


@pytest.mark.parametrize("part", ["body", "headers"])
async def test_trickling_discovery_endpoint_is_cut_off_at_the_timeout(trickle_server, part) -> None:
    """One byte every 0.5 s never trips a per-read timeout; the request as a whole is
    bounded by the timeout (10 s here only proves it does not hang)."""
    server = trickle_server(part)
    with pytest.raises(DiscoveryError, match="no complete answer within 1 s"):
        await asyncio.wait_for(discover(server.base, timeout=1), 10)
    assert server.requests == 1
