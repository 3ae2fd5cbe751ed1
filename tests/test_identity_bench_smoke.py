"""The identity benchmark's setup and one tiny measurement: every variant answers "alice",
the timed providers really validate (a forgery is refused, a full-validation provider
validates every request), and the report renders.

Correctness only; timings are never asserted."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from mcp_acp_oidc.errors import TokenRejectedError
from mcp_acp_oidc.validator import TokenValidator

from mcp_acp.models import Provenance


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script as a module (``bench/`` is on pytest's pythonpath)."""
    return importlib.import_module("identity_bench")


@pytest.fixture
def idp(bench: ModuleType) -> Iterator[Any]:
    """The benchmark's IdP on 127.0.0.1, fresh per test (its request counts are checked)."""
    with bench.running_idp() as running:
        yield running


async def test_every_variant_answers_alice(bench: ModuleType, idp: Any) -> None:
    suite = bench.build_suite(idp)
    keys = {variant.key for variant in suite.variants}
    for alg in ("RS256", "ES256"):
        assert {f"pyjwt-{alg}", f"full-{alg}", f"cached-{alg}", f"validate-{alg}"} <= keys
    assert "local" in keys
    for variant in suite.variants:
        await variant.check()  # raises unless the subject is "alice"
    for key in ("full-RS256", "cached-ES256"):
        subject = await next(v for v in suite.variants if v.key == key).call()
        assert subject.subject_id == "alice"
        assert subject.provenance is Provenance.TOKEN
        assert subject.issuer == idp.url


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
@pytest.mark.parametrize("cache_seconds", [0.0, 60.0])
async def test_a_token_signed_with_another_key_is_refused(
    bench: ModuleType, idp: Any, alg: str, cache_seconds: float
) -> None:
    forged = idp.token(alg, signing_key=bench.new_private_key(alg))  # same kid, other key
    entry = bench.make_provider(idp, alg, cache_seconds, token=forged)
    with pytest.raises(TokenRejectedError) as caught:
        await entry.provider.current_subject()
    assert caught.value.reason == "bad_signature"
    assert [event.event for event in entry.events] == ["token_invalid"]


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_claims_are_checked_too(bench: ModuleType, idp: Any, alg: str) -> None:
    entry = bench.make_provider(idp, alg, 0.0, token=idp.token(alg, aud="urn:someone-else"))
    with pytest.raises(TokenRejectedError) as caught:
        await entry.provider.current_subject()
    assert caught.value.reason == "wrong_aud"


async def test_full_validation_validates_every_request(
    bench: ModuleType, idp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    validated: list[str] = []
    original = TokenValidator.validate

    async def counting(self: TokenValidator, token: str) -> Any:
        validated.append(token)
        return await original(self, token)

    monkeypatch.setattr(TokenValidator, "validate", counting)
    full = bench.make_provider(idp, "RS256", 0.0)
    cached = bench.make_provider(idp, "RS256", 60.0)
    for _ in range(3):
        assert (await full.provider.current_subject()).subject_id == "alice"
        assert (await cached.provider.current_subject()).subject_id == "alice"
    assert validated.count(full.token) == 3
    assert validated.count(cached.token) == 1


async def test_one_tiny_measurement_and_report(bench: ModuleType) -> None:
    plan = bench.Plan(rounds=2, calls=5, warmup=2)
    report = await bench.measure(plan)  # its own IdP; checks fetches and auth events
    for variant in report.variants:
        assert len(variant.timings) == 10
        assert all(ns > 0 for ns in variant.timings)
    text = bench.render(report, quick=True)
    assert "| bare PyJWT `jwt.decode` | RS256 | 10 |" in text
    assert "| `oidc`, full validation every request | ES256 | 10 |" in text
    assert "Load average" in text
    assert "1.00x" in text  # each PyJWT row against itself
