"""Reading a bearer token from HTTP ``Authorization`` headers (RFC 6750 §2.1).

For an HTTP front or resource server built on this plugin. Exactly one ``Authorization``
header, the scheme ``Bearer`` (case-insensitive, RFC 7235), one space, one token of
token68 characters. Two headers, ``Bearer`` twice, a missing token or trailing data are
rejected. Tokens in the query string are not looked at (MCP-4).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mcp_acp_oidc.errors import TokenRejectedError

__all__ = ["bearer_token"]

_CREDENTIALS = re.compile(r"([A-Za-z]+) ([A-Za-z0-9\-._~+/]+=*)")


def bearer_token(authorization_headers: Sequence[str]) -> str:
    """The token from the request's ``Authorization`` header values (all of them)."""
    if len(authorization_headers) != 1:
        raise TokenRejectedError(
            "malformed", f"expected one Authorization header, got {len(authorization_headers)}"
        )
    match = _CREDENTIALS.fullmatch(authorization_headers[0])
    if match is None or match.group(1).lower() != "bearer":
        raise TokenRejectedError("malformed", "Authorization is not 'Bearer <token>'")
    return match.group(2)
