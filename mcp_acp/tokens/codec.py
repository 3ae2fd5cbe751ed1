"""One :class:`~mcp_acp.models.StoredToken` as JSON text, the form every token store keeps.

The encrypted file and the keychain plugin store the same record, so a token set moves
between them unchanged. Parsing never repeats the offending input in an error: the input
holds secrets, and errors end up in logs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from mcp_acp.models import StoredToken

__all__ = ["TOKEN_RECORD_FORMAT", "TokenRecordError", "dump_token", "parse_token"]

TOKEN_RECORD_FORMAT = "mcp-acp-token/1"  # noqa: S105 - a format tag, not a secret


class TokenRecordError(ValueError):
    """The text is not a token record (its message never contains the text)."""


class _TokenRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["mcp-acp-token/1"]
    issuer: str = Field(min_length=1)
    access_token: str = Field(min_length=1)
    expires_at: AwareDatetime
    refresh_token: str | None = None
    id_token: str | None = None
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    scope: str | None = None


def dump_token(token: StoredToken) -> str:
    """The JSON text stored for ``token``."""
    record = _TokenRecord(
        format=TOKEN_RECORD_FORMAT,
        issuer=token.issuer,
        access_token=token.access_token,
        expires_at=token.expires_at,
        refresh_token=token.refresh_token,
        id_token=token.id_token,
        token_type=token.token_type,
        scope=token.scope,
    )
    return record.model_dump_json()


def parse_token(text: str | bytes, *, issuer: str) -> StoredToken:
    """Parse a stored record; raise :class:`TokenRecordError` if it is not one for ``issuer``.

    The issuer inside the record must equal ``issuer``: credentials are keyed by issuer
    and never handed to another authorization server, even if records were swapped.
    """
    try:
        record = _TokenRecord.model_validate_json(text)
    except ValidationError:
        # pydantic's message would quote the input, which holds the tokens
        raise TokenRecordError("not a valid token record") from None
    if record.issuer != issuer:
        raise TokenRecordError("the record belongs to another issuer")
    expires_at: datetime = record.expires_at
    return StoredToken(
        issuer=record.issuer,
        access_token=record.access_token,
        expires_at=expires_at,
        refresh_token=record.refresh_token,
        id_token=record.id_token,
        token_type=record.token_type,
        scope=record.scope,
    )
