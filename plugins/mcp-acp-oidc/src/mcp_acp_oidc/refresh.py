"""The refresh grant (RFC 6749 §6) with refresh-token rotation.

Providers that rotate (OAuth 2.1 requires it for public clients) answer with a new
refresh token and revoke the old one; :func:`rotated_token` then keeps the new one, and
keeps the old one only when the response carries none (RFC 6749 §6). The new access token
— and the new ID token, if one came (OpenID Connect Core 12.2) — is validated before the
caller stores anything, exactly as after a login — except when the issuer's keys are
unavailable for the moment, or a new token is signed with a key not yet fetched (a key
rotation within the refetch cooldown): the old refresh token is spent already, so the new
set is handed back unvalidated (:class:`UnvalidatedRefreshError`) to be kept, its access
token validated before any use and its ID token left out, instead of losing the grant.
"""

from __future__ import annotations

import ssl
import time
from datetime import UTC, datetime

import httpx

from mcp_acp.models import StoredToken
from mcp_acp_oidc._http import (
    JSON_HEADERS,
    aread_bounded,
    check_url,
    idp_client,
    overall_deadline,
    parse_json_object,
)
from mcp_acp_oidc.device import TokenResponse, parse_token_response
from mcp_acp_oidc.errors import (
    DeviceFlowError,
    RefreshError,
    TokenRejectedError,
    UnvalidatedRefreshError,
)
from mcp_acp_oidc.login import stored_token
from mcp_acp_oidc.validator import MAX_NUMERIC_DATE, TokenValidator, numeric_date

__all__ = ["refresh", "refresh_and_validate"]

_FIX = "run 'mcp-acp auth login' again"


async def refresh(
    *,
    token_endpoint: str,
    client_id: str,
    refresh_token: str,
    resource: str,
    audience: str | None = None,
    http: httpx.AsyncClient | None = None,
    timeout: float = 10.0,
    verify: ssl.SSLContext | bool = True,
) -> TokenResponse:
    """Exchange ``refresh_token`` for new tokens; raise :class:`RefreshError`.

    The whole request, body included, is bounded by ``timeout`` seconds. ``verify`` is
    how the server's certificate is checked when no ``http`` client is given: a caller
    that refreshes again and again passes one context (a new client given ``True`` loads
    the CA bundle into a new context every time)."""
    problem = check_url(token_endpoint, what="token_endpoint")
    if problem:
        raise RefreshError("bad_config", problem)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client_id,
        "resource": resource,
    }
    if audience is not None:
        form["audience"] = audience
    client = http or idp_client(timeout=timeout, verify=verify)
    try:
        async with (
            overall_deadline(timeout),
            client.stream("POST", token_endpoint, data=form, headers=JSON_HEADERS) as resp,
        ):
            status = resp.status_code
            document = parse_json_object(await aread_bounded(resp))
    except TimeoutError as exc:
        raise RefreshError(
            "unreachable", f"no complete answer from the token endpoint within {timeout:g} s"
        ) from exc
    except httpx.HTTPError as exc:
        raise RefreshError("unreachable", type(exc).__name__) from exc
    except ValueError as exc:
        raise RefreshError("bad_response", str(exc)) from exc
    finally:
        if http is None:
            await client.aclose()
    if status != 200:
        error = document.get("error")
        code = error if isinstance(error, str) and error.isascii() else f"http_{status}"
        raise RefreshError(code[:64], "the provider refused the refresh token", fix=_FIX)
    try:
        return parse_token_response(document)
    except DeviceFlowError as exc:
        raise RefreshError("bad_response", exc.message) from exc


async def refresh_and_validate(
    current: StoredToken,
    validator: TokenValidator,
    *,
    token_endpoint: str,
    client_id: str,
    resource: str,
    audience: str | None = None,
    http: httpx.AsyncClient | None = None,
    timeout: float = 10.0,
    verify: ssl.SSLContext | bool = True,
) -> StoredToken:
    """Refresh ``current`` (the request bounded by ``timeout`` seconds), validate the new
    access token (and ID token, if one came), return what to store."""
    if current.refresh_token is None:
        raise RefreshError("no_refresh_token", "no refresh token is stored", fix=_FIX)
    tokens = await refresh(
        token_endpoint=token_endpoint,
        client_id=client_id,
        refresh_token=current.refresh_token,
        resource=resource,
        audience=audience,
        http=http,
        timeout=timeout,
        verify=verify,
    )
    try:
        subject = await validator.validate(tokens.access_token)
        if tokens.id_token is not None:
            await validator.validate_id_token(tokens.id_token, client_id=client_id, subject=subject)
    except TokenRejectedError as exc:
        if exc.reason not in ("jwks_unavailable", "no_key"):
            raise
        # The keys are away for now, or a token's key is not fetched yet; the tokens are
        # neither good nor bad yet. The old refresh token is spent, so the new set is
        # handed back to be kept (its access token validated before any use; its ID
        # token, which nothing would validate later, left out), not thrown away with the
        # grant. Its expiry is the response's expires_in: its exp is not read before it
        # validates.
        lifetime = tokens.expires_in if tokens.expires_in is not None else 0.0
        seconds = numeric_date(time.time() + lifetime)
        if seconds is None:  # 1e300: no date (fromtimestamp would raise OverflowError)
            raise TokenRejectedError(
                "bad_claim",
                f"the refreshed tokens' expires_in ({lifetime:g} s) gives no expiry from "
                f"0 to {MAX_NUMERIC_DATE}",
            ) from exc
        expires_at = datetime.fromtimestamp(seconds, UTC)
        unvalidated = _keep_refresh_token(
            current,
            StoredToken(
                issuer=current.issuer,
                access_token=tokens.access_token,
                expires_at=expires_at,
                refresh_token=tokens.refresh_token,
                scope=tokens.scope,
            ),
        )
        raise UnvalidatedRefreshError(exc, unvalidated) from exc
    return _keep_refresh_token(current, stored_token(current.issuer, tokens, subject))


def _keep_refresh_token(current: StoredToken, new: StoredToken) -> StoredToken:
    """``new``, with ``current``'s refresh token (and ID token, scope) where the response
    carried none: a provider that does not rotate leaves the old one valid."""
    if new.refresh_token is not None:
        return new
    return StoredToken(
        issuer=new.issuer,
        access_token=new.access_token,
        expires_at=new.expires_at,
        refresh_token=current.refresh_token,
        id_token=new.id_token or current.id_token,
        scope=new.scope or current.scope,
    )
