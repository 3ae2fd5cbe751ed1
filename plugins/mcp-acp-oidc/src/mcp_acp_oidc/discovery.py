"""OpenID Provider discovery: ``<issuer>/.well-known/openid-configuration``.

The document is accepted only when its ``issuer`` equals the configured issuer byte for
byte (OIDC Discovery §4.3), and every endpoint we use passes :func:`check_url`: ``https``
(``http`` only on loopback, for test IdPs), the issuer's scheme, no user info, no
fragment, no whitespace. Endpoint hosts may differ from the issuer's (many providers
serve keys from another host), but a public issuer's endpoints may not point at loopback,
private or link-local addresses, and a loopback issuer's endpoints stay on loopback.
Redirects are not followed; the body is bounded, and the request as a whole (body
included) takes at most ``timeout`` seconds.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx

from mcp_acp_oidc._http import (
    JSON_HEADERS,
    aread_bounded,
    check_url,
    idp_client,
    ip_literal,
    is_loopback_host,
    overall_deadline,
    parse_json_object,
)
from mcp_acp_oidc.errors import DiscoveryError

__all__ = ["ProviderMetadata", "discover", "metadata_from_document"]

_FIX = "check the issuer URL in the oidc config and that the identity provider is up"


@attrs.frozen(slots=True)
class ProviderMetadata:
    """The endpoints of one OpenID Provider that this plugin uses."""

    issuer: str
    jwks_uri: str
    token_endpoint: str
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None


def _host_problem(name: str, host: str, issuer_host: str) -> str | None:
    """Endpoints of a loopback issuer stay on loopback; endpoints of a public issuer
    never point at loopback, private or link-local addresses (no SSRF into the host's
    network through a discovery document)."""
    if is_loopback_host(issuer_host):
        return None if is_loopback_host(host) else f"{name} leaves the loopback issuer"
    if is_loopback_host(host):
        return f"{name} points at a loopback address"
    address = ip_literal(host)
    if address is None:
        return None
    if (
        address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
        or address.is_multicast
    ):
        return f"{name} points at a private or link-local address"
    return None


def _optional(document: dict[str, Any], name: str, scheme: str, issuer_host: str) -> str | None:
    if document.get(name) is None:
        return None
    return _endpoint(document, name, scheme, issuer_host)


def _endpoint(document: dict[str, Any], name: str, scheme: str, issuer_host: str) -> str:
    value = document.get(name)
    problem = check_url(value, what=name)
    if problem is None and urlsplit(str(value)).scheme != scheme:
        problem = f"{name} does not use the issuer's scheme {scheme!r}"
    if problem is None:
        problem = _host_problem(name, urlsplit(str(value)).hostname or "", issuer_host)
    if problem:
        raise DiscoveryError(f"provider metadata rejected: {problem}", fix=_FIX)
    return str(value)


def metadata_from_document(issuer: str, document: dict[str, Any]) -> ProviderMetadata:
    """Check a parsed discovery document against ``issuer``; raise :class:`DiscoveryError`."""
    if document.get("issuer") != issuer:
        raise DiscoveryError(
            f"provider metadata names another issuer than {issuer!r}",
            fix="configure the issuer exactly as the provider reports it",
        )
    parts = urlsplit(issuer)
    scheme, host = parts.scheme, parts.hostname or ""
    return ProviderMetadata(
        issuer=issuer,
        jwks_uri=_endpoint(document, "jwks_uri", scheme, host),
        token_endpoint=_endpoint(document, "token_endpoint", scheme, host),
        device_authorization_endpoint=_optional(
            document, "device_authorization_endpoint", scheme, host
        ),
        revocation_endpoint=_optional(document, "revocation_endpoint", scheme, host),
    )


async def discover(
    issuer: str,
    *,
    http: httpx.AsyncClient | None = None,
    timeout: float = 10.0,
    verify: ssl.SSLContext | bool = True,
) -> ProviderMetadata:
    """Fetch and check the issuer's discovery document (``verify``: how the server's
    certificate is checked, when no ``http`` client is given — pass one context to reuse
    it, rather than load the CA bundle again)."""
    problem = check_url(issuer, what="issuer")
    if problem:
        raise DiscoveryError(f"issuer rejected: {problem}", fix=_FIX)
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    client = http or idp_client(timeout=timeout, verify=verify)
    try:
        async with (
            overall_deadline(timeout),
            client.stream("GET", url, headers=JSON_HEADERS) as resp,
        ):
            if resp.status_code != 200:
                raise DiscoveryError(f"{url} answered HTTP {resp.status_code}", fix=_FIX)
            document = parse_json_object(await aread_bounded(resp))
    except TimeoutError as exc:
        raise DiscoveryError(
            f"cannot reach {url}: no complete answer within {timeout:g} s", fix=_FIX
        ) from exc
    except httpx.HTTPError as exc:
        raise DiscoveryError(f"cannot reach {url}: {type(exc).__name__}", fix=_FIX) from exc
    except ValueError as exc:
        raise DiscoveryError(f"{url} is not a JSON object: {exc}", fix=_FIX) from exc
    finally:
        if http is None:
            await client.aclose()
    return metadata_from_document(issuer, document)
