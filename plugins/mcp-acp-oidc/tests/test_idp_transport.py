# ruff: noqa: S106  (canary tokens, not secrets)
"""How every request to the identity provider travels: never through a proxy the
environment names, and never asking for (nor taking) a compressed answer.

The device code, the refresh token (refresh and revocation) and the tokens in the answers
travel in clear to a plain-http loopback test IdP; httpx, left to itself, sends every
request — loopback ones included — to the host ``HTTP_PROXY`` names. A small IdP on
127.0.0.1 and a recording proxy that answers 502 show each client (discovery, JWKS, device
request, refresh, revocation) going straight to the IdP. An answer compressed all the same
— a megabyte of gzip that inflates to a gigabyte — is refused by each client before it is
inflated, not read until the size limit.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mcp_acp_oidc.device import DeviceFlowClient
from mcp_acp_oidc.discovery import discover
from mcp_acp_oidc.errors import DeviceFlowError, DiscoveryError, JWKSUnavailableError, RefreshError
from mcp_acp_oidc.jwks import JWKSCache
from mcp_acp_oidc.provider import OIDCConfig, OIDCIdentityProvider
from mcp_acp_oidc.refresh import refresh
from proxy_helpers import RecordingProxy

from mcp_acp.errors import AuthenticationError
from mcp_acp.models import StoredToken

REFRESH_CANARY = "REFRESH-CANARY-5d1f0c"
DEVICE_CANARY = "DEVICE-CANARY-9a7e21"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class _Handler(BaseHTTPRequestHandler):
    server: _IdP

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self.server.accept_encodings.append(self.headers.get("Accept-Encoding"))
        data = json.dumps(body).encode()
        if self.server.bomb is not None:  # compressed whatever was asked for
            status, data = 200, self.server.bomb
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if self.server.bomb is not None:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.seen.append(("GET", self.path, ""))
        base = self.server.base
        if self.path == "/.well-known/openid-configuration":
            self._answer(
                200,
                {
                    "issuer": base,
                    "jwks_uri": f"{base}/jwks",
                    "token_endpoint": f"{base}/token",
                    "device_authorization_endpoint": f"{base}/device",
                    "revocation_endpoint": f"{base}/revoke",
                },
            )
        else:
            self._answer(200, {"keys": []})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append(("POST", self.path, self.rfile.read(length).decode()))
        if self.path == "/device":
            self._answer(
                200,
                {
                    "device_code": DEVICE_CANARY,
                    "user_code": "ABCD-EFGH",
                    "verification_uri": f"{self.server.base}/verify",
                    "expires_in": 600,
                },
            )
        elif self.path == "/revoke":
            self._answer(200, {})
        else:  # the token endpoint is down: the stored tokens stay
            self._answer(503, {"error": "temporarily_unavailable"})

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _IdP(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self.seen: list[tuple[str, str, str]] = []
        self.accept_encodings: list[str | None] = []
        self.bomb: bytes | None = None


def _gzip_bomb(megabytes: int) -> bytes:
    """A JSON object whose one string of spaces inflates to ``megabytes`` MiB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    parts = [packer.compress(b'{"keys": "')]
    spaces = b" " * (1 << 20)
    parts.extend(packer.compress(spaces) for _ in range(megabytes))
    parts += [packer.compress(b'"}'), packer.flush()]
    return b"".join(parts)


@pytest.fixture
def idp() -> Iterator[_IdP]:
    server = _IdP()
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def environment_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy()
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for base in PROXY_VARIABLES:
        monkeypatch.setenv(base, proxy.url)
        monkeypatch.setenv(base.lower(), proxy.url)
    yield proxy
    proxy.close()


class _Storage:
    description = "in-memory (tests)"

    def __init__(self, token: StoredToken) -> None:
        self.tokens = {token.issuer: token}

    def load(self, issuer: str) -> StoredToken | None:
        return self.tokens.get(issuer)

    def save(self, token: StoredToken) -> None:
        self.tokens[token.issuer] = token

    def delete(self, issuer: str) -> None:
        self.tokens.pop(issuer, None)


async def test_no_request_to_the_idp_goes_through_an_environment_proxy(
    idp: _IdP, environment_proxy: RecordingProxy
) -> None:
    options = OIDCConfig(issuer=idp.base, client_id="cli", audience="urn:mcp-acp:proxy")
    due = StoredToken(
        issuer=idp.base,
        access_token="not-a-jwt",
        refresh_token=REFRESH_CANARY,
        expires_at=datetime.now(UTC) + timedelta(seconds=10),  # within the refresh margin
    )
    provider = OIDCIdentityProvider(options, _Storage(due))

    # discovery, then a refresh (the token is due), which the token endpoint refuses
    with pytest.raises(AuthenticationError):
        await provider.current_subject()
    # the signing keys
    await JWKSCache(f"{idp.base}/jwks", timeout=5).get_keys(None)
    # a device login's first request (no poll: the proxy matters, not the login)
    authorization = await _device_client(idp).start()
    assert authorization.user_code == "ABCD-EFGH"
    # logout revokes the refresh token
    result = await provider.logout()
    assert result.warning is None

    assert environment_proxy.received == []
    paths = [(method, path) for method, path, _ in idp.seen]
    assert paths == [
        ("GET", "/.well-known/openid-configuration"),
        ("POST", "/token"),
        ("GET", "/jwks"),
        ("POST", "/device"),
        ("POST", "/revoke"),
    ]
    bodies = {path: body for _, path, body in idp.seen}
    assert REFRESH_CANARY in bodies["/token"]
    assert REFRESH_CANARY in bodies["/revoke"]


def _device_client(idp: _IdP) -> DeviceFlowClient:
    return DeviceFlowClient(
        device_authorization_endpoint=f"{idp.base}/device",
        token_endpoint=f"{idp.base}/token",
        client_id="cli",
        scope="openid",
        resource="urn:mcp-acp:proxy",
        timeout=5,
    )


async def test_a_compressed_answer_from_the_idp_is_refused_before_it_is_inflated(
    idp: _IdP,
) -> None:
    idp.bomb = _gzip_bomb(256)  # 250 kB on the wire, 256 MiB inflated
    with pytest.raises(DiscoveryError, match=r"compressed answer \(content-encoding 'gzip'\)"):
        await discover(idp.base, timeout=5)
    with pytest.raises(JWKSUnavailableError):
        await JWKSCache(f"{idp.base}/jwks", timeout=5).get_keys(None)
    with pytest.raises(DeviceFlowError, match=r"compressed answer") as device:
        await _device_client(idp).start()
    assert device.value.error == "bad_response"
    with pytest.raises(RefreshError, match=r"compressed answer") as refreshed:
        await refresh(
            token_endpoint=f"{idp.base}/token",
            client_id="cli",
            refresh_token=REFRESH_CANARY,
            resource="urn:mcp-acp:proxy",
            timeout=5,
        )
    assert refreshed.value.error == "bad_response"
    # none was asked for
    assert idp.accept_encodings == ["identity"] * 4
