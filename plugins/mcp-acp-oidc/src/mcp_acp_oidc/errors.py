"""Exceptions of the OIDC plugin. All are :class:`~mcp_acp.errors.AuthenticationError`,
so the proxy denies the request (exit code 14 at start-up) whichever one is raised.

Messages never contain a token, a key or a secret: only the reason and the names of
the claims or headers involved.
"""

from __future__ import annotations

from mcp_acp.errors import AuthenticationError
from mcp_acp.models import StoredToken

__all__ = [
    "DeviceFlowError",
    "DiscoveryError",
    "IdTokenRejectedError",
    "JWKSUnavailableError",
    "LoginRequiredError",
    "RefreshError",
    "TokenRejectedError",
    "TokenStorageError",
    "UnvalidatedRefreshError",
]


class TokenRejectedError(AuthenticationError):
    """Raised by :class:`~mcp_acp_oidc.validator.TokenValidator` for a token it refuses.

    ``reason`` is a short stable code (``"alg_not_allowed"``, ``"bad_signature"``,
    ``"expired"``, …) for audit records and tests; ``detail`` says what was wrong;
    ``what`` names the token in the message.
    """

    def __init__(
        self, reason: str, detail: str, *, fix: str | None = None, what: str = "access token"
    ) -> None:
        super().__init__(f"{what} rejected ({reason}): {detail}", fix=fix)
        self.reason = reason
        self.detail = detail


class IdTokenRejectedError(TokenRejectedError):
    """The ID token that came with the access token, at a login or a refresh, was refused
    (:meth:`~mcp_acp_oidc.validator.TokenValidator.validate_id_token`): the login or the
    refresh fails, and none of its tokens is stored."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(
            reason,
            detail,
            fix="log in again; if it is refused again, check issuer and client_id against "
            "the provider's client registration, and this machine's clock",
            what="ID token",
        )


class JWKSUnavailableError(TokenRejectedError):
    """The issuer's signing keys cannot be fetched and no usable cached copy exists."""

    def __init__(self, message: str) -> None:
        super().__init__(
            "jwks_unavailable",
            message,
            fix="check that the identity provider's jwks_uri is reachable",
        )


class UnvalidatedRefreshError(TokenRejectedError):
    """A refresh succeeded, but the new tokens cannot be validated yet: the issuer's keys
    are unavailable (``jwks_unavailable``), or the key the access token or the ID token was
    signed with is not in the key set fetched, which may not be fetched again so soon
    (``no_key``, just after a key rotation). The old refresh token is spent (rotation):
    ``unvalidated`` holds the new token set, to be stored — its access token never used
    before it validates, its ID token left out — rather than lose the grant."""

    def __init__(self, cause: TokenRejectedError, unvalidated: StoredToken) -> None:
        super().__init__(
            cause.reason,
            f"refreshed, but the new tokens cannot be validated yet ({cause.detail}); "
            "they are kept, the access token validated before use",
            fix=cause.fix,
        )
        self.unvalidated = unvalidated


class DiscoveryError(AuthenticationError):
    """The issuer's ``/.well-known/openid-configuration`` is unreachable or unacceptable."""


class DeviceFlowError(AuthenticationError):
    """The device authorization grant ended without a token.

    ``error`` is the OAuth error code (``access_denied``, ``expired_token``, …) or a
    local code (``local_timeout``, ``bad_response``, ``unreachable``).
    """

    def __init__(self, error: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"device login failed ({error}): {message}", fix=fix)
        self.error = error


class RefreshError(AuthenticationError):
    """The refresh grant failed; ``error`` is the OAuth error code or ``unreachable`` /
    ``bad_response``. ``invalid_grant`` means the refresh token is spent: log in again."""

    def __init__(self, error: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"token refresh failed ({error}): {message}", fix=fix)
        self.error = error


class LoginRequiredError(AuthenticationError):
    """There is no usable session: ``reason`` is ``not_logged_in``, ``logged_out`` (the
    token was deleted meanwhile) or ``expired`` (and no refresh succeeded)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, fix="run 'mcp-acp auth login'")
        self.reason = reason


class TokenStorageError(AuthenticationError):
    """The token storage failed to ``read``, ``save`` or ``delete`` (``action``) for a
    reason of its own — a full disk, an I/O error, a keychain that went away — rather
    than refusing a stored record (which storages report as ``AuthenticationError``)."""

    def __init__(self, action: str, storage: str, cause: BaseException) -> None:
        super().__init__(
            f"token storage {storage} could not {action} the tokens "
            f"({type(cause).__name__}: {cause})",
            fix="fix what the error names (free disk space, check the disk or keychain), "
            "then run 'mcp-acp auth login'",
        )
        self.action = action
