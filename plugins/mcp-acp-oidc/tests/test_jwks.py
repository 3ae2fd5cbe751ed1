"""JWKS faults (checklist item 24 and "Faults survived"): a real HTTP server on 127.0.0.1
that answers 500, hangs, sends HTML, redirects, or serves keys we must not use."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from mcp_acp_oidc.errors import JWKSUnavailableError, RefreshError, TokenRejectedError
from mcp_acp_oidc.jwks import JWKSCache
from mcp_acp_oidc.refresh import refresh

RS = {"alg": "RS256", "kid": "rsa-1"}


@pytest.mark.parametrize("mode", ["500", "html", "redirect", "big"])
async def test_unusable_jwks_without_cache_denies(jwks_server, keys, kit, mode) -> None:
    jwks_server.state.mode = mode
    validator = kit.make_validator(jwks_server)
    with pytest.raises(JWKSUnavailableError):
        await validator.validate(kit.sign(RS, kit.claims(), keys.rsa))
    assert jwks_server.state.hits["/evil-jwks.json"] == 0  # redirects are not followed


async def test_hanging_jwks_is_bounded_by_the_timeout(jwks_server, keys, kit) -> None:
    jwks_server.state.mode = "hang"
    jwks_server.state.hang_seconds = 5.0
    validator = kit.make_validator(jwks_server, timeout=0.3)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    with pytest.raises(JWKSUnavailableError):
        await validator.validate(kit.sign(RS, kit.claims(), keys.rsa))
    elapsed = time.monotonic() - started
    task.cancel()
    assert elapsed < 2.0
    assert ticks > 5  # the event loop kept running during the fetch (it is off-loop)


async def test_cached_keys_survive_outage_until_ttl_then_deny(jwks_server, keys, kit) -> None:
    clock = kit.Clock()
    validator = kit.make_validator(jwks_server, clock=clock, ttl=300, cooldown=30)
    token = kit.sign(RS, kit.claims(), keys.rsa)
    assert await validator.validate(token)
    jwks_server.state.mode = "500"
    clock.now += 299
    assert await validator.validate(token)  # cached, no request
    assert jwks_server.state.hits["/jwks"] == 1
    clock.now += 2  # TTL over, refetch fails: fail closed
    with pytest.raises(JWKSUnavailableError):
        await validator.validate(token)
    # and the failing endpoint is not hammered: no new attempt within the cooldown
    for _ in range(20):
        with pytest.raises(JWKSUnavailableError):
            await validator.validate(token)
    assert jwks_server.state.hits["/jwks"] == 2
    jwks_server.state.mode = "ok"
    clock.now += 31
    assert await validator.validate(token)
    assert jwks_server.state.hits["/jwks"] == 3


async def test_a_stalled_refetch_for_an_unknown_kid_does_not_hold_up_known_keys(
    jwks_server, keys, kit
) -> None:
    validator = kit.make_validator(jwks_server, timeout=3.0, cooldown=0)
    good = kit.sign(RS, kit.claims(), keys.rsa)
    assert await validator.validate(good)
    jwks_server.state.mode = "hang"
    jwks_server.state.hang_seconds = 2.0
    # a token with a random kid makes the cache refetch; the IdP stalls that fetch
    stray = asyncio.create_task(
        validator.validate(kit.sign({**RS, "kid": "random-kid"}, kit.claims(), keys.rsa))
    )
    await asyncio.sleep(0.3)
    assert not stray.done()
    started = time.monotonic()
    subject = await asyncio.wait_for(validator.validate(good), 1.0)
    assert subject.subject_id == "alice"
    assert time.monotonic() - started < 0.5  # served from the current set, not queued
    with pytest.raises(TokenRejectedError):
        await stray


async def _until_requested(jwks_server, count: int) -> None:
    """Wait (at most 10 s) until /jwks has been asked ``count`` times."""
    async with asyncio.timeout(10):
        while jwks_server.state.hits["/jwks"] < count:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("part", ["headers", "body"])
async def test_trickling_jwks_is_cut_off_at_the_timeout(jwks_server, keys, kit, part) -> None:
    """One byte every 0.5 s never trips a per-read timeout; the fetch as a whole —
    connecting, headers, body — is bounded by the timeout, the token rejected, and the
    connection dropped (nothing goes on fetching in the background). The 10 s bounds only
    prove that nothing hangs."""
    jwks_server.state.mode = f"trickle-{part}"
    validator = kit.make_validator(jwks_server, timeout=1.0)
    with pytest.raises(JWKSUnavailableError):
        await asyncio.wait_for(validator.validate(kit.sign(RS, kit.claims(), keys.rsa)), 10)
    assert await asyncio.to_thread(jwks_server.state.hung_up.wait, 10)
    assert jwks_server.state.hits["/jwks"] == 1


@pytest.mark.parametrize("part", ["headers", "body"])
async def test_a_request_arriving_during_a_stuck_fetch_waits_for_that_fetch_only(
    jwks_server, keys, kit, part
) -> None:
    """With no cooldown a refetch is always allowed; still, a request that finds a fetch in
    flight takes that fetch's result (here: none) instead of starting another after it, so
    it waits at most the one timeout and the IdP sees one request."""
    jwks_server.state.mode = f"trickle-{part}"
    validator = kit.make_validator(jwks_server, timeout=1.0, cooldown=0)
    token = kit.sign(RS, kit.claims(), keys.rsa)
    first = asyncio.create_task(validator.validate(token))
    await _until_requested(jwks_server, 1)
    with pytest.raises(JWKSUnavailableError):
        await asyncio.wait_for(validator.validate(token), 10)
    with pytest.raises(JWKSUnavailableError):
        await asyncio.wait_for(first, 10)
    assert jwks_server.state.hits["/jwks"] == 1


async def test_cached_keys_serve_while_the_endpoint_trickles_until_their_ttl(
    jwks_server, keys, kit
) -> None:
    clock = kit.Clock()
    validator = kit.make_validator(jwks_server, clock=clock, ttl=300, cooldown=0, timeout=1.0)
    good = kit.sign(RS, kit.claims(), keys.rsa)
    assert await validator.validate(good)
    jwks_server.state.mode = "trickle-headers"
    # an unknown kid makes the cache refetch; the IdP trickles that fetch
    stray = asyncio.create_task(
        validator.validate(kit.sign({**RS, "kid": "unknown"}, kit.claims(), keys.rsa))
    )
    await _until_requested(jwks_server, 2)
    assert (await asyncio.wait_for(validator.validate(good), 10)).subject_id == "alice"
    with pytest.raises(TokenRejectedError) as info:
        await asyncio.wait_for(stray, 10)
    assert info.value.reason == "no_key"
    assert await validator.validate(good)  # the failed refetch left the cached set in place
    clock.now += 300  # the set has expired; its refetch trickles too: no keys, denied
    with pytest.raises(JWKSUnavailableError):
        await asyncio.wait_for(validator.validate(good), 10)
    assert jwks_server.state.hits["/jwks"] == 3


async def test_a_cancelled_request_does_not_abort_the_fetch_it_started(
    jwks_server, keys, kit
) -> None:
    """A client may cancel its request (``notifications/cancelled``) while its token waits
    for the keys; the fetch goes on (bounded by the timeout) and serves the next request,
    without a second request to the IdP (and no cooldown wait)."""
    jwks_server.state.mode = "hang"
    jwks_server.state.hang_seconds = 1.0
    validator = kit.make_validator(jwks_server, timeout=5.0, cooldown=30)
    token = kit.sign(RS, kit.claims(), keys.rsa)
    first = asyncio.create_task(validator.validate(token))
    await _until_requested(jwks_server, 1)
    first.cancel()
    subject = await asyncio.wait_for(validator.validate(token), 10)
    assert subject.subject_id == "alice"
    assert first.cancelled()
    assert jwks_server.state.hits["/jwks"] == 1


async def test_oct_none_and_foreign_use_keys_are_ignored(jwks_server, keys, kit) -> None:
    rsa_jwk = kit.public_jwk(keys.rsa, "x")
    jwks_server.state.jwks = {
        "keys": [
            {"kty": "oct", "kid": "hs", "k": kit.b64(b"secret")},
            {**kit.public_jwk(keys.rsa, "none"), "alg": "none"},
            {**kit.public_jwk(keys.rsa, "hs-rsa"), "alg": "HS256"},
            {**kit.public_jwk(keys.rsa, "enc"), "use": "enc"},
            {**rsa_jwk, "kid": 7},
            {"kty": "RSA", "kid": "broken", "n": "AA", "e": "AQAB"},
            "not a key",
        ]
    }
    cache = JWKSCache(jwks_server.jwks_uri, timeout=1.0)
    assert await cache.get_keys(None) == []
    validator = kit.make_validator(jwks_server)
    for kid in ("hs", "none", "hs-rsa", "enc", "broken"):
        token = kit.sign({"alg": "RS256", "kid": kid}, kit.claims(), keys.rsa)
        with pytest.raises(TokenRejectedError) as info:
            await validator.validate(token)
        assert info.value.reason == "no_key"
    token = kit.sign({"alg": "HS256", "kid": "hs"}, kit.claims(), b"secret")
    with pytest.raises(TokenRejectedError):
        await validator.validate(token)


async def test_leaked_private_key_in_jwks_is_used_as_public_only(jwks_server, keys, kit):
    from jwt.algorithms import RSAAlgorithm

    private_jwk = RSAAlgorithm.to_jwk(keys.rsa, as_dict=True)
    jwks_server.state.jwks = {"keys": [{**private_jwk, "kid": "rsa-1"}]}
    validator = kit.make_validator(jwks_server)
    assert await validator.validate(kit.sign(RS, kit.claims(), keys.rsa))
    (key,) = await validator.jwks.get_keys("rsa-1")
    assert not hasattr(key.key, "private_numbers")


@pytest.mark.parametrize("ttl", [300, 0])
async def test_concurrent_validations_share_one_fetch(jwks_server, keys, kit, ttl) -> None:
    """No cooldown holds back a second fetch here: the 49 that arrive during the first
    take its keys — even when they are out of date at once (``ttl`` 0)."""
    validator = kit.make_validator(jwks_server, ttl=ttl, cooldown=0)
    token = kit.sign(RS, kit.claims(), keys.rsa)
    results = await asyncio.gather(*(validator.validate(token) for _ in range(50)))
    assert len(results) == 50
    assert jwks_server.state.hits["/jwks"] == 1


@pytest.mark.parametrize(
    "uri",
    [
        "http://idp.example.test/jwks",
        "file:///etc/passwd",
        "https://user:pw@idp.example.test/jwks",
        "https://idp.example.test/jwks#x",
        "https://idp.example.test/jw ks",
        "",
    ],
)
def test_unacceptable_jwks_uri_is_refused(uri) -> None:
    with pytest.raises(JWKSUnavailableError):
        JWKSCache(uri)


def _ed25519_points(y: int) -> list[tuple[int, int]]:
    """The points of edwards25519 (-x^2 + y^2 = 1 + d x^2 y^2) with this y."""
    p = 2**255 - 19
    d = -121665 * pow(121666, -1, p) % p
    u = (y * y - 1) * pow(d * y * y + 1, -1, p) % p
    x = pow(u, (p + 3) // 8, p)
    if x * x % p != u:
        x = x * pow(2, (p - 1) // 4, p) % p
    if x * x % p != u:
        return []
    return sorted({(x, y), ((p - x) % p, y)})


def _ed25519_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    p = 2**255 - 19
    d = -121665 * pow(121666, -1, p) % p
    (x1, y1), (x2, y2) = a, b
    t = d * x1 * x2 * y1 * y2 % p
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, -1, p) % p
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, p) % p
    return x3, y3


def test_the_small_order_points_refused_are_exactly_the_eight_of_edwards25519() -> None:
    """Computed here on the curve, not taken from the code under test: every y in the set
    is on the curve with a point whose order divides 8, and together they hold 8 points —
    the whole small-order subgroup (the cofactor is 8), so none is missed."""
    from mcp_acp_oidc.jwks import SMALL_ORDER_Y_ED25519

    points = [point for y in SMALL_ORDER_Y_ED25519 for point in _ed25519_points(y)]
    assert len(set(points)) == 8
    for point in points:
        multiple = point
        for _ in range(7):
            multiple = _ed25519_add(multiple, point)
        assert multiple == (0, 1), point  # [8]P is the identity


async def test_a_small_order_eddsa_key_is_refused_and_signs_nothing(jwks_server, keys, kit) -> None:
    """A JWKS key at a point of small order verifies a signature whose R is the identity
    and S is 0 for any message: refused, so such a forged token has no key. Non-canonical
    encodings (y = p + 1 is y = 1) and Ed448's identity too; an ordinary key still
    verifies."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    p = 2**255 - 19
    identity = (1).to_bytes(32, "little")
    order_2 = (p - 1).to_bytes(32, "little")
    non_canonical = (p + 1).to_bytes(32, "little")
    order_8 = (
        2707385501144840649318225287225658788936804267575313519463743609750303402022
    ).to_bytes(32, "little")
    with_sign = bytes([*order_8[:31], order_8[31] | 0x80])  # the other x, same y
    bad = {
        "identity": identity,
        "order-2": order_2,
        "non-canonical": non_canonical,
        "order-8": order_8,
        "order-8-neg-x": with_sign,
    }
    good = ed25519.Ed25519PrivateKey.generate()
    good_raw = good.public_key().public_bytes_raw()
    jwks = [{"kty": "OKP", "crv": "Ed25519", "x": kit.b64(x), "kid": k} for k, x in bad.items()]
    ed448_identity = (1).to_bytes(57, "little")
    jwks.append({"kty": "OKP", "crv": "Ed448", "x": kit.b64(ed448_identity), "kid": "ed448"})
    jwks.append({"kty": "OKP", "crv": "Ed25519", "x": kit.b64(good_raw), "kid": "good"})
    jwks_server.state.jwks = {"keys": jwks}
    cache = JWKSCache(jwks_server.jwks_uri, timeout=1.0)
    assert [key.kid for key in await cache.get_keys(None)] == ["good"]
    validator = kit.make_validator(jwks_server, algorithms=("EdDSA",))
    header = {"alg": "EdDSA", "kid": "identity"}
    forged = (
        f"{kit.part(header)}.{kit.part(kit.claims(sub='admin'))}.{kit.b64(identity + bytes(32))}"
    )
    with pytest.raises(TokenRejectedError) as info:
        await validator.validate(forged)
    assert info.value.reason == "no_key"
    signing_input = f"{kit.part({'alg': 'EdDSA', 'kid': 'good'})}.{kit.part(kit.claims())}"
    token = f"{signing_input}.{kit.b64(good.sign(signing_input.encode()))}"
    assert (await validator.validate(token)).subject_id == "alice"


@pytest.mark.parametrize("request_kind", ["jwks", "refresh"])
async def test_no_tls_key_log_is_written_whatever_sslkeylogfile_says(
    https_idp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request_kind: str
) -> None:
    """``SSLKEYLOGFILE`` in the environment: httpx's default context (Python's
    ``create_default_context``) appended the secrets of every TLS session with the IdP to
    that file, and anyone who read it could decrypt the tokens. A JWKS fetch and a refresh
    over real TLS (the IdP's certificate trusted through ``SSL_CERT_FILE``, as httpx's
    default does) reach the IdP, and no key log is written."""
    server, cert = https_idp
    keylog = tmp_path / "keylog.txt"
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    if request_kind == "jwks":
        got = await JWKSCache(f"{server.base}/jwks").get_keys(None)
        assert [k.kid for k in got] == ["rsa-1", "ec-1"]
    else:
        with pytest.raises(RefreshError) as refused:  # the fake IdP answers 503
            await refresh(
                token_endpoint=f"{server.base}/token",
                client_id="mcp-acp",
                refresh_token="rt",  # noqa: S106 - a fake
                resource="https://api.example.test",
            )
        assert refused.value.error == "temporarily_unavailable"
        assert [path for path, _ in server.state.posts] == ["/token"]
    assert not keylog.exists()


async def test_the_idps_name_is_checked_against_its_subject_alt_name_only(
    https_idp_named_in_cn_only: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A certificate that names ``localhost`` in its common name alone, from a CA that
    ``SSL_CERT_FILE`` names: Python's contexts fell back to the common name, and the JWKS
    was fetched from a server whose certificate does not name it (RFC 9525). Refused now,
    as for an HTTPS backend: the handshake fails, and the server sees no request."""
    server, cert = https_idp_named_in_cn_only
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with caplog.at_level(logging.WARNING), pytest.raises(JWKSUnavailableError):
        await JWKSCache(f"https://localhost:{server.port}/jwks").get_keys(None)
    assert "failed: ConnectError" in caplog.text  # the TLS handshake
    assert server.state.hits["/jwks"] == 0
