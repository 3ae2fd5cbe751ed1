"""``auth login`` as a function: device flow → validate → store.

The access token is validated (:class:`~mcp_acp_oidc.validator.TokenValidator`) *before*
anything is stored (checklist DF-12): a token for another audience, issuer or client is
never written to the :class:`~mcp_acp.protocols.TokenStorage`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from mcp_acp.models import StoredToken, Subject
from mcp_acp.protocols import TokenStorage
from mcp_acp_oidc.device import DeviceAuthorization, DeviceFlowClient, TokenResponse
from mcp_acp_oidc.validator import TokenValidator

__all__ = ["device_login", "stored_token"]


def stored_token(issuer: str, tokens: TokenResponse, subject: Subject) -> StoredToken:
    """The :class:`StoredToken` for a validated token response."""
    exp = subject.claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        expires_at = datetime.fromtimestamp(exp, UTC)
    else:
        lifetime = tokens.expires_in if tokens.expires_in is not None else 0.0
        expires_at = datetime.fromtimestamp(time.time() + lifetime, UTC)
    return StoredToken(
        issuer=issuer,
        access_token=tokens.access_token,
        expires_at=expires_at,
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
) -> Subject:
    """Run the device flow, validate the access token, then store the tokens."""
    authorization = await client.start()
    show(authorization)
    tokens = await client.poll(authorization)
    subject = await validator.validate(tokens.access_token)
    storage.save(stored_token(validator.config.issuer, tokens, subject))
    return subject
