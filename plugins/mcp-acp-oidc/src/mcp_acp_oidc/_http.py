"""Small helpers shared by the HTTP clients of this package: URL checks, bounded reads
and an overall deadline per request."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = [
    "MAX_JSON_BYTES",
    "aread_bounded",
    "check_url",
    "is_loopback_host",
    "overall_deadline",
    "parse_json_object",
]

MAX_JSON_BYTES = 512 * 1024
"""No metadata, JWKS or token response we accept is larger than this."""


def is_loopback_host(host: str) -> bool:
    """``True`` for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: object, *, what: str) -> str | None:
    """Return why ``url`` is unacceptable as an IdP endpoint, or ``None`` if it is fine.

    ``https`` is required except for loopback hosts (test IdPs); no user info, no fragment,
    no whitespace or control characters.
    """
    if not isinstance(url, str) or not url:
        return f"{what} is missing or not a string"
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        return f"{what} contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        return f"{what} is not a valid URL"
    del port
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        return f"{what} must be an https URL (got scheme {parts.scheme!r})"
    if parts.scheme == "http" and not is_loopback_host(host):
        return f"{what} must use https (http is allowed only for loopback hosts)"
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
    """Read a streamed response body, refusing more than ``limit`` bytes. It has no
    deadline of its own: call it inside :func:`overall_deadline`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ValueError(f"response larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
