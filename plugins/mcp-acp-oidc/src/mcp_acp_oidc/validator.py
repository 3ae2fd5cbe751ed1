"""Validation of JWT access tokens: the security core of the plugin.

:class:`TokenValidator` turns a bearer token into a :class:`~mcp_acp.models.Subject` with
``Provenance.TOKEN``, or raises :class:`~mcp_acp_oidc.errors.TokenRejectedError`. The
checks, in the order they run (cheap ones first, nothing decoded before the size check):

1. **Shape**: a ``str`` of at most ``max_token_bytes`` ASCII characters, exactly three
   non-empty base64url segments (no padding, ``+``, ``/``, whitespace; so no JWE, no
   unsigned token).
2. **Header**: strict JSON (no duplicate members, no ``NaN``, bounded depth); ``alg`` in
   the configured allow-list (exact, case-sensitive; ``none`` and ``HS*`` can never be
   configured); no ``crit`` and no ``b64`` (we implement no JWS extension); ``typ``
   checked when ``token_type`` is set (RFC 9068 ``at+jwt``). ``jku``, ``x5u``, ``jwk`` and
   ``x5c`` are **ignored**: keys come only from the issuer's JWKS, so these headers cause
   no request and cannot supply a key. ``kid`` is only a lookup key (a string of at most
   256 characters); it is never a path, a query or a URL.
3. **Key**: the JWKS keys with that ``kid`` whose type and curve fit ``alg`` (an ``RS256``
   token cannot be checked with an EC key, nor ``ES256`` with an RSA key). A token without
   ``kid`` is accepted only when exactly one key in the set fits its ``alg``.
4. **Signature**, by PyJWT's JWS layer with that one key and that one algorithm.
5. **Claims**, parsed strictly again: ``iss`` equals the configured issuer byte for byte;
   ``aud`` (string or list) contains the configured audience byte for byte; ``exp``,
   ``nbf``, ``iat`` and ``auth_time`` are numbers (not booleans or strings) from 0 to
   :data:`MAX_NUMERIC_DATE` (a date, not an overflow), the first three checked with
   ``leeway``; ``iat`` no older than ``max_token_age`` when set; the required claims are
   present; ``sub`` is a non-empty string of at most 255 printable characters; ``azp`` /
   ``client_id`` is one of ``client_ids`` when set; scope, groups and roles are strings
   or lists of strings (anything else rejects the token rather than being guessed at).

:meth:`TokenValidator.validate_id_token` checks the ID token a login or a refresh brings
with the access token by the same steps, against the client instead of the audience.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from jwt.api_jws import PyJWS
from jwt.exceptions import InvalidTokenError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from mcp_acp.models import Provenance, Subject
from mcp_acp_oidc._http import check_url, parse_json_object
from mcp_acp_oidc.errors import IdTokenRejectedError, TokenRejectedError
from mcp_acp_oidc.jwks import ALGORITHM_KEY_TYPES, JWKSCache, SigningKey

__all__ = [
    "MAX_NUMERIC_DATE",
    "Algorithms",
    "IssuerUrl",
    "TokenValidationConfig",
    "TokenValidator",
    "numeric_date",
]

_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_KID = 256
_MAX_SUB = 255
#: An ID token may carry many claims (groups, profile): the most the config allows, once
#: per login or refresh; the token response it comes in is bounded anyway (512 KiB).
_MAX_ID_TOKEN_BYTES = 65536

MAX_NUMERIC_DATE = 253_402_300_799
"""9999-12-31T23:59:59Z, the last second a :class:`~datetime.datetime` can hold. A time
claim beyond it (``1e20``, ``10**30``) is rejected rather than overflowing later."""


def _issuer_url(value: str) -> str:
    problem = check_url(value, what="issuer")
    if problem:
        raise ValueError(problem)
    return value


def _asymmetric_only(value: tuple[str, ...]) -> tuple[str, ...]:
    bad = [alg for alg in value if alg not in ALGORITHM_KEY_TYPES]
    if bad:
        raise ValueError(f"algorithms {bad} not allowed; choose from {sorted(ALGORITHM_KEY_TYPES)}")
    return value


#: An issuer URL (https, or http to loopback), checked like every endpoint.
IssuerUrl = Annotated[str, AfterValidator(_issuer_url)]
#: Signature algorithms from the fixed asymmetric list (never ``none`` or ``HS*``).
Algorithms = Annotated[tuple[str, ...], AfterValidator(_asymmetric_only)]


class TokenValidationConfig(BaseModel):
    """What a valid access token looks like for this proxy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: IssuerUrl = Field(
        description="Exact issuer identifier (the token's iss must equal it)."
    )
    audience: str = Field(min_length=1, description="This proxy's audience (resource).")
    algorithms: Algorithms = Field(
        default=("RS256", "PS256", "ES256"),
        min_length=1,
        description="Signature algorithms accepted; asymmetric ones only.",
    )
    leeway: float = Field(default=30.0, ge=0, le=300, description="Clock skew allowed, s.")
    required_claims: tuple[str, ...] = ("iss", "sub", "aud", "exp", "iat")
    token_type: str | None = Field(
        default=None,
        description='Required JOSE "typ" header, e.g. "at+jwt" for RFC 9068 providers.',
    )
    client_ids: tuple[str, ...] = Field(
        default=(), description="If set, the token's azp/client_id must be one of these."
    )
    max_token_bytes: int = Field(default=8192, ge=256, le=65536)
    max_token_age: float | None = Field(
        default=None, gt=0, description="Reject tokens whose iat is older than this, s."
    )
    scope_claim: str = "scope"
    groups_claim: str | None = Field(
        default="groups",
        description="Claim with the subject's groups; a dot leads into a nested claim, or, "
        "where that finds none, is part of the name (https://example.com/groups).",
    )
    roles_claim: str | None = Field(
        default="roles",
        description="Claim with the subject's roles; a dot leads into a nested claim, or, "
        "where that finds none, is part of the name (https://example.com/roles).",
    )


def _b64_json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenRejectedError("malformed", f"{what} is not base64url") from exc
    if raw.startswith(b"\xef\xbb\xbf"):
        raise TokenRejectedError("malformed", f"{what} starts with a byte-order mark")
    try:
        return parse_json_object(raw)
    except ValueError as exc:
        raise TokenRejectedError("malformed", f"{what} is not acceptable JSON: {exc}") from exc


def numeric_date(value: Any) -> float | None:
    """``value`` as seconds since 1970 if it is a JWT NumericDate that fits a
    :class:`~datetime.datetime` (0 to :data:`MAX_NUMERIC_DATE`), else ``None``.

    Compared before any conversion: ``float(10**400)`` itself overflows, and NaN and
    infinities fail the comparison."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value <= MAX_NUMERIC_DATE:
        return None
    return float(value)


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    seconds = numeric_date(claims[name])
    if seconds is None:
        raise TokenRejectedError(
            "bad_claim", f"claim {name!r} is not a time in seconds from 0 to {MAX_NUMERIC_DATE}"
        )
    return seconds


def _string_set(value: Any, name: str, *, split: bool = False) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):  # scopes: delimited by a space alone (RFC 6749 3.3)
        return frozenset(filter(None, value.split(" "))) if split else frozenset([value])
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise TokenRejectedError("bad_claim", f"claim {name!r} is not a string or list of strings")


_MISSING = object()


def _claim_path(claims: Mapping[str, Any], path: str | None) -> Any:
    """The claim ``path`` names, or ``None``: a dot leads into a nested claim
    (``realm_access.roles`` is ``roles`` inside ``realm_access``); where that finds nothing,
    the name is read with its dot, as a claim of its own — a namespaced name such as
    ``https://mcp-acp.example.com/roles``, as Auth0 requires."""
    if not path:
        return None
    found = _follow(claims, path.split("."))
    return None if found is _MISSING else found


def _follow(value: Any, parts: list[str]) -> Any:
    if not parts:
        return value
    if not isinstance(value, dict):
        return _MISSING
    for n in range(1, len(parts) + 1):  # the nested reading first, as before
        name = ".".join(parts[:n])
        if name in value:
            found = _follow(value[name], parts[n:])
            if found is not _MISSING:
                return found
    return _MISSING


class TokenValidator:
    """Validates access tokens of one issuer against that issuer's :class:`JWKSCache`.

    ``clock`` returns the current UNIX time (:func:`time.time` unless a test injects one).
    """

    def __init__(
        self,
        config: TokenValidationConfig,
        jwks: JWKSCache,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.jwks = jwks
        self._clock = clock
        self._jws = PyJWS()

    async def validate(self, token: str) -> Subject:
        """Return the token's subject, or raise :class:`TokenRejectedError`."""
        header, alg = self._check_header(token)
        kid = header.get("kid")
        keys = await self.jwks.get_keys(kid)
        key = self._choose_key(keys, alg, kid)
        payload = self._verify_signature(token, key, alg)
        claims = _b64_json_bytes(payload)
        return self._check_claims(claims)

    async def validate_id_token(self, id_token: str, *, client_id: str, subject: Subject) -> None:
        """Check the ID token that came with the access token ``subject`` was validated
        from (OpenID Connect Core 3.1.3.7; 12.2 at a refresh), by the steps of
        :meth:`validate`: a key of the same JWKS and an algorithm of the same allow-list;
        ``iss`` this issuer; ``aud`` containing ``client_id``, and ``azp``, when present,
        equal to it; ``exp``, ``nbf``, ``iat`` within ``leeway``; and ``sub`` the access
        token's subject. There is no ``nonce`` to check: the device flow sends none. Raise
        :class:`~mcp_acp_oidc.errors.IdTokenRejectedError`."""
        config = TokenValidationConfig(
            issuer=self.config.issuer,
            audience=client_id,
            algorithms=self.config.algorithms,
            leeway=self.config.leeway,
            max_token_bytes=_MAX_ID_TOKEN_BYTES,
            groups_claim=None,
            roles_claim=None,
        )
        try:
            identified = await TokenValidator(config, self.jwks, clock=self._clock).validate(
                id_token
            )
        except TokenRejectedError as exc:
            detail = exc.detail
            if exc.reason == "wrong_aud":
                detail = f"its aud does not contain this client_id ({client_id!r})"
            raise IdTokenRejectedError(exc.reason, detail) from exc
        if identified.client_id not in (None, client_id):
            raise IdTokenRejectedError(
                "wrong_client", f"it was issued to another client (azp is not {client_id!r})"
            )
        if identified.subject_id != subject.subject_id:
            raise IdTokenRejectedError("wrong_sub", "its sub is not the access token's subject")

    def _check_header(self, token: Any) -> tuple[dict[str, Any], str]:
        if not isinstance(token, str):
            raise TokenRejectedError("malformed", "token is not a string")
        if len(token) > self.config.max_token_bytes:
            raise TokenRejectedError(
                "too_large", f"token longer than {self.config.max_token_bytes} bytes"
            )
        if not _SHAPE.fullmatch(token):
            raise TokenRejectedError("malformed", "not a compact JWS with three segments")
        header = _b64_json(token.split(".", 1)[0], "header")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise TokenRejectedError("alg_not_allowed", "algorithm not in the allow-list")
        if "crit" in header or "b64" in header:
            raise TokenRejectedError("unsupported_header", "crit/b64 extensions not supported")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID):
            raise TokenRejectedError("bad_kid", "kid is not a string of 1-256 characters")
        if self.config.token_type is not None:
            typ = header.get("typ")
            normal = typ.lower().removeprefix("application/") if isinstance(typ, str) else None
            if normal != self.config.token_type.lower().removeprefix("application/"):
                raise TokenRejectedError("wrong_typ", f"typ must be {self.config.token_type!r}")
        return header, alg

    @staticmethod
    def _choose_key(keys: list[SigningKey], alg: str, kid: str | None) -> SigningKey:
        fitting = [key for key in keys if key.fits(alg)]
        if kid is None and len(fitting) != 1:
            raise TokenRejectedError(
                "no_key", "token has no kid and the JWKS has no single key for its alg"
            )
        if not fitting:
            raise TokenRejectedError("no_key", "no signing key fits the token's kid and alg")
        if len(fitting) > 1:
            raise TokenRejectedError("no_key", "several signing keys share the token's kid")
        return fitting[0]

    def _verify_signature(self, token: str, key: SigningKey, alg: str) -> bytes:
        try:
            decoded = self._jws.decode_complete(token, key=key.key, algorithms=[alg])
        except InvalidTokenError as exc:
            raise TokenRejectedError("bad_signature", "signature verification failed") from exc
        except Exception as exc:  # any other failure inside the crypto layer is a denial too
            raise TokenRejectedError("bad_signature", type(exc).__name__) from exc
        payload = decoded["payload"]
        if not isinstance(payload, bytes):
            raise TokenRejectedError("malformed", "payload is not bytes")
        return payload

    def _check_claims(self, claims: dict[str, Any]) -> Subject:
        cfg = self.config
        missing = [name for name in cfg.required_claims if name not in claims]
        if missing:
            raise TokenRejectedError("missing_claim", f"required claims missing: {missing}")
        if claims.get("iss") != cfg.issuer:
            raise TokenRejectedError("wrong_iss", "issuer does not match")
        audience = claims.get("aud")
        if isinstance(audience, str):
            audiences: tuple[str, ...] = (audience,)
        elif isinstance(audience, list) and all(isinstance(a, str) for a in audience):
            audiences = tuple(audience)
        else:
            raise TokenRejectedError("wrong_aud", "aud is not a string or list of strings")
        if cfg.audience not in audiences:
            raise TokenRejectedError("wrong_aud", "token is not for this audience")

        now = self._clock()
        exp, nbf, iat = (_time_claim(claims, name) for name in ("exp", "nbf", "iat"))
        if exp is not None and now > exp + cfg.leeway:
            raise TokenRejectedError("expired", "token has expired")
        if nbf is not None and now + cfg.leeway < nbf:
            raise TokenRejectedError("not_yet_valid", "token is not valid yet (nbf)")
        if iat is not None and now + cfg.leeway < iat:
            raise TokenRejectedError("not_yet_valid", "token was issued in the future (iat)")
        max_age = cfg.max_token_age
        if iat is not None and max_age is not None and now - iat > max_age + cfg.leeway:
            raise TokenRejectedError("too_old", "token is older than max_token_age")

        subject_id = claims.get("sub")
        if (
            not isinstance(subject_id, str)
            or not 0 < len(subject_id) <= _MAX_SUB
            or not subject_id.isprintable()  # no control, bidi or invisible character
        ):
            raise TokenRejectedError("bad_claim", "sub is not a printable string of 1-255")

        azp, client_id = claims.get("azp"), claims.get("client_id")
        for name, value in (("azp", azp), ("client_id", client_id)):
            if value is not None and not isinstance(value, str):
                raise TokenRejectedError("bad_claim", f"{name} is not a string")
        if azp is not None and client_id is not None and azp != client_id:
            raise TokenRejectedError("wrong_client", "azp and client_id disagree")
        party = azp if azp is not None else client_id
        if cfg.client_ids and party not in cfg.client_ids:
            raise TokenRejectedError("wrong_client", "token was issued to another client")
        if "jti" in claims and not isinstance(claims["jti"], str):
            raise TokenRejectedError("bad_claim", "jti is not a string")

        scopes = _string_set(claims.get(cfg.scope_claim), cfg.scope_claim, split=True)
        if "scp" in claims and cfg.scope_claim == "scope":
            scopes |= _string_set(claims["scp"], "scp")
        groups = _string_set(_claim_path(claims, cfg.groups_claim), "groups")
        roles = _string_set(_claim_path(claims, cfg.roles_claim), "roles")
        auth_time = _time_claim(claims, "auth_time")
        return Subject(
            subject_id=subject_id,
            provenance=Provenance.TOKEN,
            issuer=cfg.issuer,
            audience=audiences,
            client_id=party,
            scopes=scopes,
            groups=groups,
            roles=roles,
            auth_time=None if auth_time is None else datetime.fromtimestamp(auth_time, UTC),
            token_age_seconds=None if iat is None else max(0.0, now - iat),
            claims=claims,
        )


def _b64_json_bytes(payload: bytes) -> dict[str, Any]:
    if payload.startswith(b"\xef\xbb\xbf"):
        raise TokenRejectedError("malformed", "payload starts with a byte-order mark")
    try:
        return parse_json_object(payload)
    except ValueError as exc:
        raise TokenRejectedError("malformed", f"payload is not acceptable JSON: {exc}") from exc
