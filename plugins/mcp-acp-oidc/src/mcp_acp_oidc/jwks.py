"""The issuer's signing keys (JWKS): fetched, filtered, cached, refetched sparingly.

Only asymmetric signature keys are kept: ``oct`` (HMAC) keys, keys marked for another
``use``, keys announcing an algorithm outside :data:`ALGORITHM_KEY_TYPES` (``none``,
``HS256``) and RSA keys shorter than 2048 bits are dropped when the set is loaded, so a
token can never be checked against them.

:meth:`JWKSCache.get_keys` answers from the current set directly; otherwise it may fetch,
with ``httpx.AsyncClient`` on the event loop. ``timeout`` bounds each fetch as a whole —
connecting, headers and body (:func:`~mcp_acp_oidc._http.overall_deadline`) — so an IdP that
trickles its answer a byte at a time cannot hold it longer; a fetch out of time fails like an
unreachable JWKS. One fetch at a time: callers that arrive during a fetch wait for it and
take its result, starting none of their own, so none waits longer than one ``timeout``. The
fetch is a task of its own, so a caller that is cancelled (its request was) does not abort
it for the others.

Refetch rules, so a token cannot make us hammer the IdP:

* the set is reused for ``ttl`` seconds;
* a ``kid`` that is not in the set triggers at most one refetch per ``cooldown`` seconds
  (key rotation is picked up; 1,000 random ``kid``\\s cost one request);
* a failed fetch is not retried for ``cooldown`` seconds either;
* when the set has expired and cannot be refetched, there are no keys: every token is
  rejected (fail closed) until a fetch succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import attrs
import httpx
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from mcp_acp_oidc._http import (
    JSON_HEADERS,
    aread_bounded,
    check_url,
    idp_client,
    overall_deadline,
    parse_json_object,
    tls_verify,
)
from mcp_acp_oidc.errors import JWKSUnavailableError

__all__ = ["ALGORITHM_KEY_TYPES", "MAX_KEYS", "MIN_RSA_BITS", "JWKSCache", "SigningKey"]

log = logging.getLogger(__name__)

ALGORITHM_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
"""Every algorithm a token may use, with the key type (and curve) it needs. No ``HS*``,
no ``none``: a configuration cannot allow them."""

MIN_RSA_BITS = 2048

#: The y coordinates (mod p) of the points of small order of Ed25519 (orders 1, 2, 4 and 8:
#: 1, p - 1, 0 and the two of order 8) and Ed448 (1, p - 1, 0). A public key at one of
#: them proves nothing: a signature whose R is the identity and whose S is 0 (or another
#: small-order R) verifies for chosen messages, so anyone could sign tokens with it.
_P25519 = 2**255 - 19
_Y25519_ORDER_8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
SMALL_ORDER_Y_ED25519 = frozenset({0, 1, _P25519 - 1, _Y25519_ORDER_8, _P25519 - _Y25519_ORDER_8})
_P448 = 2**448 - 2**224 - 1
SMALL_ORDER_Y_ED448 = frozenset({0, 1, _P448 - 1})


def small_order(key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) -> bool:
    """Whether an EdDSA public key is a point of small order (non-canonical encodings, y
    at or past p, included: compared mod p). The encoding is y, little-endian, with the
    sign of x in the top bit (RFC 8032 5.1.2, 5.2.2)."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if isinstance(key, ed25519.Ed25519PublicKey):
        y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
        return y % _P25519 in SMALL_ORDER_Y_ED25519
    y = int.from_bytes(raw[:56], "little")  # the 57th byte holds only the sign of x
    return y % _P448 in SMALL_ORDER_Y_ED448


MAX_KEYS = 64
"""Keys beyond this many in one JWKS are ignored."""

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


@attrs.frozen(slots=True)
class SigningKey:
    """One usable public key from the JWKS."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    """The ``alg`` the JWK announced, if any; a token must then use exactly that one."""
    key: PublicKey = attrs.field(repr=False)

    def fits(self, alg: str) -> bool:
        """Whether a token signed with ``alg`` may be checked against this key."""
        wanted = ALGORITHM_KEY_TYPES.get(alg)
        if wanted is None:
            return False
        kty, crv = wanted
        if self.kty != kty or (crv is not None and self.crv != crv):
            return False
        return self.alg is None or self.alg == alg


def _load_key(jwk: Any) -> SigningKey | None:
    """Turn one JWK into a :class:`SigningKey`, or ``None`` (with a log line) to skip it."""
    if not isinstance(jwk, dict):
        return None
    kty, kid, alg, use = jwk.get("kty"), jwk.get("kid"), jwk.get("alg"), jwk.get("use")
    if kid is not None and not isinstance(kid, str):
        log.warning("JWKS: skipping a key whose kid is not a string")
        return None
    if use is not None and use != "sig":
        return None
    if alg is not None and alg not in ALGORITHM_KEY_TYPES:
        log.warning("JWKS: skipping key %r with algorithm %r", kid, alg)
        return None
    try:
        if kty == "RSA":
            loaded: Any = RSAAlgorithm.from_jwk(jwk)
        elif kty == "EC":
            loaded = ECAlgorithm.from_jwk(jwk)
        elif kty == "OKP":
            loaded = OKPAlgorithm.from_jwk(jwk)
        else:  # "oct" (a shared secret) or unknown: never a verification key here
            log.warning("JWKS: skipping key %r of type %r", kid, kty)
            return None
    except Exception as exc:  # any malformed key material: skip that key only
        log.warning("JWKS: skipping malformed key %r: %s", kid, type(exc).__name__)
        return None
    if hasattr(loaded, "public_key"):  # a JWKS that leaks a private key: use the public half
        loaded = loaded.public_key()
    crv: str | None = None
    if isinstance(loaded, rsa.RSAPublicKey):
        if loaded.key_size < MIN_RSA_BITS:
            log.warning("JWKS: refusing RSA key %r of %d bits", kid, loaded.key_size)
            return None
    elif isinstance(loaded, ec.EllipticCurvePublicKey):
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(
            loaded.curve.name
        )
        if crv is None:
            return None
    elif not isinstance(loaded, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    elif small_order(loaded):
        log.warning("JWKS: refusing key %r: a point of small order signs for anyone", kid)
        return None
    return SigningKey(kid=kid, kty=str(kty), crv=crv, alg=alg, key=loaded)


def parse_jwks(body: bytes) -> list[SigningKey]:
    """Parse a JWKS document; raises ``ValueError`` when it is not one."""
    document = parse_json_object(body)
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("no 'keys' array")
    keys = [key for key in map(_load_key, entries[:MAX_KEYS]) if key is not None]
    return keys


class JWKSCache:
    """Keys of one issuer, from its ``jwks_uri``.

    ``clock`` is :func:`time.monotonic` unless a test injects another.
    """

    def __init__(
        self,
        uri: str,
        *,
        ttl: float = 300.0,
        cooldown: float = 30.0,
        timeout: float = 5.0,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        problem = check_url(uri, what="jwks_uri")
        if problem:
            raise JWKSUnavailableError(problem)
        self.uri = uri
        self.ttl = ttl
        self.cooldown = cooldown
        self.timeout = timeout
        # Load the CA bundle once, here: an AsyncClient given ``True`` loads it again at
        # every fetch (~50 ms), on the event loop.
        self._verify = tls_verify(verify)
        self._clock = clock
        self._keys: list[SigningKey] | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._fetching: asyncio.Task[bool] | None = None
        self.fetch_count = 0
        """How many HTTP requests this cache has made (for tests and metrics)."""

    async def _fetch(self) -> list[SigningKey]:
        self.fetch_count += 1
        async with (
            overall_deadline(self.timeout),
            idp_client(timeout=self.timeout, verify=self._verify) as client,
            client.stream("GET", self.uri, headers=JSON_HEADERS) as resp,
        ):
            if resp.status_code != 200:
                raise ValueError(f"HTTP status {resp.status_code}")
            body = await aread_bounded(resp)
        return parse_jwks(body)

    async def _fetch_and_keep(self) -> bool:
        """Fetch; on success replace the set. Returns whether it succeeded."""
        try:
            keys = await self._fetch()
        except (httpx.HTTPError, ValueError, TimeoutError, OSError) as exc:
            log.warning("JWKS fetch from %s failed: %s", self.uri, type(exc).__name__)
            return False
        self._keys = keys
        self._fetched_at = self._clock()
        return True

    async def _refetch(self, now: float) -> bool:
        """Fetch now, in a task of its own, and wait for it; returns whether it succeeded.

        A caller cancelled while it waits leaves the fetch running for the callers waiting
        with it (see :meth:`_keys_for`); the fetch ends within ``timeout`` all the same."""
        self._last_attempt = now
        self._fetching = asyncio.create_task(self._fetch_and_keep())
        return await asyncio.shield(self._fetching)

    def _may_fetch(self, now: float) -> bool:
        return self._last_attempt is None or now - self._last_attempt >= self.cooldown

    async def _keys_for(self, kid: str | None) -> list[SigningKey]:
        """The keys a token with header ``kid`` may be checked against, fetching when the
        rules allow: at most one fetch per call, and none when a fetch was in flight on
        arrival (its result is taken instead).

        ``kid=None`` returns every key. Raises :class:`JWKSUnavailableError` when there is
        no current key set.
        """
        fetching = self._fetching
        if fetching is not None and not fetching.done():
            fresh, may_fetch = await asyncio.shield(fetching), False
        else:
            fresh, may_fetch = False, True
        now = self._clock()
        may_fetch = may_fetch and self._may_fetch(now)
        if not fresh and (self._keys is None or now - self._fetched_at >= self.ttl):
            if not (may_fetch and await self._refetch(now)):
                self._keys = None  # expired and not renewable: no keys at all
                raise JWKSUnavailableError(f"no current keys from {self.uri}")
            may_fetch = False
        keys: list[SigningKey] = self._keys or []
        if kid is None:
            return list(keys)
        found = [key for key in keys if key.kid == kid]
        if not found and may_fetch and await self._refetch(now):
            found = [key for key in self._keys or [] if key.kid == kid]
        return found

    def _current(self, kid: str | None) -> list[SigningKey] | None:
        """The keys for ``kid`` when the cached set is current and holds them — no I/O,
        no waiting; ``None`` sends the caller to :meth:`_keys_for`."""
        keys = self._keys
        if keys is None or self._clock() - self._fetched_at >= self.ttl:
            return None
        if kid is None:
            return list(keys)
        return [key for key in keys if key.kid == kid] or None

    async def get_keys(self, kid: str | None) -> list[SigningKey]:
        """The keys a token with header ``kid`` may be checked against (every key for
        ``kid=None``): from the current set directly, otherwise after a fetch if the rules
        allow one. Raises :class:`JWKSUnavailableError` when there is no current key set."""
        found = self._current(kid)
        if found is not None:
            return found
        return await self._keys_for(kid)
