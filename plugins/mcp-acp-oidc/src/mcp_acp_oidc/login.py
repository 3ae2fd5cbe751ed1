"""``auth login`` as a function: device flow → validate → store.

The access token is validated (:class:`~mcp_acp_oidc.validator.TokenValidator`) *before*
anything is stored (checklist DF-12): a token for another audience, issuer or client is
never written to the :class:`~mcp_acp.protocols.TokenStorage`. So is the ID token, when
the provider sends one (OpenID Connect Core 3.1.3.7): a login whose ID token is refused
stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from mcp_acp.errors import AuthenticationError
from mcp_acp.models import StoredToken, Subject
from mcp_acp.protocols import TokenStorage
from mcp_acp_oidc.device import DeviceAuthorization, DeviceFlowClient, TokenResponse
from mcp_acp_oidc.errors import TokenRejectedError, TokenStorageError
from mcp_acp_oidc.validator import MAX_NUMERIC_DATE, TokenValidator, numeric_date

__all__ = ["device_login", "stored_token"]


def stored_token(issuer: str, tokens: TokenResponse, subject: Subject) -> StoredToken:
    """The :class:`StoredToken` for a validated token response.

    It expires at the token's ``exp`` or, for a token without one, ``expires_in`` from
    now; an expiry that is not a date (``1e20``) raises :class:`TokenRejectedError`."""
    exp = subject.claims.get("exp")
    if exp is None:
        exp = time.time() + (tokens.expires_in if tokens.expires_in is not None else 0.0)
    seconds = numeric_date(exp)
    if seconds is None:
        raise TokenRejectedError(
            "bad_claim",
            f"the token's expiry (exp, or expires_in) is not a time from 0 to {MAX_NUMERIC_DATE}",
        )
    return StoredToken(
        issuer=issuer,
        access_token=tokens.access_token,
        expires_at=datetime.fromtimestamp(seconds, UTC),
        refresh_token=tokens.refresh_token,
        id_token=tokens.id_token,
        scope=tokens.scope,
    )


async def device_login(
    client: DeviceFlowClient,
    validator: TokenValidator,
    storage: TokenStorage,
    *,
    show: Callable[[DeviceAuthorization], None],
    store_lock: Callable[[], AbstractAsyncContextManager[object]] | None = None,
) -> Subject:
    """Run the device flow, validate the access token (and the ID token, if one came),
    then store the tokens — under ``store_lock()`` if given (the refresh lock: a proxy's
    refresh in flight stores before this login, never after it).

    A storage failure other than a refusal (a full disk) is a :class:`TokenStorageError`."""
    authorization = await client.start()
    show(authorization)
    tokens = await client.poll(authorization)
    subject = await validator.validate(tokens.access_token)
    if tokens.id_token is not None:
        await validator.validate_id_token(
            tokens.id_token, client_id=client.client_id, subject=subject
        )
    record = stored_token(validator.config.issuer, tokens, subject)
    async with store_lock() if store_lock is not None else contextlib.nullcontext():
        try:
            await asyncio.to_thread(storage.save, record)
        except AuthenticationError:
            raise
        except Exception as exc:  # a storage is another plugin: whatever it raises is reported
            raise TokenStorageError("save", storage.description, exc) from exc
    return subject
