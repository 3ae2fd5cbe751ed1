"""JWKS faults (checklist item 24 and "Faults survived"): a real HTTP server on 127.0.0.1
that answers 500, hangs, sends HTML, redirects, or serves keys we must not use."""

from __future__ import annotations

import asyncio
import time

import pytest
from mcp_acp_oidc.errors import JWKSUnavailableError, TokenRejectedError
from mcp_acp_oidc.jwks import JWKSCache

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
    assert cache.keys_for(None) == []
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
    (key,) = validator.jwks.keys_for("rsa-1")
    assert not hasattr(key.key, "private_numbers")


async def test_concurrent_validations_share_one_fetch(jwks_server, keys, kit) -> None:
    validator = kit.make_validator(jwks_server)
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
