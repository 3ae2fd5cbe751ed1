"""Small helpers shared by the HTTP clients of this package: URL checks, bounded reads
and an overall deadline per request."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx

from mcp_acp._tls import verifying_context

__all__ = [
    "JSON_HEADERS",
    "MAX_JSON_BYTES",
    "aread_bounded",
    "check_url",
    "idp_client",
    "idp_tls_context",
    "ip_literal",
    "is_loopback_host",
    "overall_deadline",
    "parse_json_object",
    "tls_verify",
]

MAX_JSON_BYTES = 512 * 1024
"""No metadata, JWKS or token response we accept is larger than this."""

JSON_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}
"""The headers of every request to the IdP: a JSON answer, not compressed (a compressed
one is refused: a megabyte of gzip inflates to a gigabyte before any limit is seen)."""


def idp_tls_context() -> ssl.SSLContext:
    """The context a request to the identity provider is verified with: the CA
    certificates httpx's own default trusts — ``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else
    certifi's bundle — in a context that writes no key log
    (:func:`mcp_acp._tls.verifying_context`). httpx's default context honours
    ``SSLKEYLOGFILE``: every token, refresh token and device code would be decryptable by
    whoever reads that file."""
    if cafile := os.environ.get("SSL_CERT_FILE"):
        return verifying_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return verifying_context(capath=capath)
    return verifying_context(cafile=certifi.where())


def tls_verify(verify: ssl.SSLContext | bool) -> ssl.SSLContext | bool:
    """What an httpx client of this package is given as ``verify``: ``True`` (httpx's
    default context, key log and all) becomes :func:`idp_tls_context`."""
    return idp_tls_context() if verify is True else verify


def idp_client(*, timeout: float, verify: ssl.SSLContext | bool) -> httpx.AsyncClient:
    """The HTTP client of every request to the identity provider: no redirect followed,
    no compressed answer asked for (:data:`JSON_HEADERS`), and ``trust_env`` off — no
    proxy named by ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` (httpx would send even
    plain-http loopback traffic, device code and refresh token in clear, to that proxy's
    host) and no ``.netrc``. ``verify`` as in :func:`tls_verify`."""
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        verify=tls_verify(verify),
        trust_env=False,
        headers={"Accept-Encoding": "identity"},
    )


#: A host name made only of numbers (decimal, octal, hex) and at most three dots: what the
#: C resolver (``inet_aton``) takes for an IPv4 address — ``127.1``, ``2130706433``,
#: ``0x7f000001``, ``0177.0.0.1`` are all 127.0.0.1 — though ``ipaddress`` does not.
_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` names literally, in any spelling the resolver accepts (see
    :data:`_NUMERIC_HOST`), or ``None`` for a host name."""
    host = host.strip("[]").removesuffix(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_loopback_host(host: str) -> bool:
    """``True`` for ``localhost`` (and names under it) and loopback IP literals
    (``127.0.0.0/8``, ``::1``) in any spelling."""
    name = host.lower().removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = ip_literal(host)
    return address is not None and address.is_loopback


def _plain_http_host(host: str) -> bool:
    """Where plain http may go: ``localhost`` itself and loopback IP literals, which never
    leave the machine. Not a name under ``localhost`` (``idp.localhost``): a resolver that
    does not keep those to itself asks DNS, whose answer could send tokens elsewhere."""
    if host.lower().removesuffix(".") == "localhost":
        return True
    address = ip_literal(host)
    return address is not None and address.is_loopback


def check_url(url: object, *, what: str) -> str | None:
    """Return why ``url`` is unacceptable as an IdP endpoint, or ``None`` if it is fine.

    ``https`` is required except for ``localhost`` and loopback addresses (test IdPs); the
    host in ASCII; no user info, no fragment, no whitespace, control, invisible or
    direction-changing characters.
    """
    if not isinstance(url, str) or not url:
        return f"{what} is missing or not a string"
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        return f"{what} contains whitespace or control characters"
    if not url.isprintable():  # a bidi override or an invisible character: shown otherwise
        return f"{what} contains an invisible or direction-changing character"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        return f"{what} is not a valid URL"
    del port
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        return f"{what} must be an https URL (got scheme {parts.scheme!r})"
    if not host.isascii():
        # IDNA maps look-alikes to ASCII before connecting ("127。0。0。1" is 127.0.0.1):
        # a host is checked as the connection will use it, so it must be written so
        return f"{what} must name its host in ASCII (an international name in punycode)"
    if parts.scheme == "http" and not _plain_http_host(host):
        return f"{what} must use https (http is allowed only for localhost and loopback addresses)"
    if parts.username is not None or parts.password is not None:
        return f"{what} must not contain user info"
    if parts.fragment:
        return f"{what} must not contain a fragment"
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def parse_json_object(data: bytes | str) -> dict[str, Any]:
    """Strict JSON: an object, no duplicate member names, no NaN/Infinity, bounded depth.

    Raises ``ValueError`` for anything else (including input nested too deep to parse).
    """
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8") from exc
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def overall_deadline(seconds: float) -> asyncio.Timeout:
    """A bound on one whole request to the IdP: connecting, sending, the headers and the
    body together; on expiry the block is cancelled and ``TimeoutError`` raised.

    httpx's timeouts bound each network operation, not the request: a server that sends
    a byte every half second never trips them."""
    return asyncio.timeout(seconds)


async def aread_bounded(response: httpx.Response, limit: int = MAX_JSON_BYTES) -> bytes:
    """Read a streamed response body, refusing more than ``limit`` bytes, and refusing a
    compressed one (:data:`JSON_HEADERS` asks for none) before reading anything: httpx
    would inflate each piece whole, a 64 KiB piece of gzip into 64 MiB. It has no
    deadline of its own: call it inside :func:`overall_deadline`."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise ValueError(f"compressed answer (content-encoding {encoding[:40]!r}), none asked for")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > limit:
            raise ValueError(f"response larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
