"""Totality: whatever string arrives, the validator answers a subject or a
``TokenRejectedError`` — never another exception, never a crash; and whatever it
accepts can be stored (its times are dates)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_acp_oidc.device import TokenResponse
from mcp_acp_oidc.errors import TokenRejectedError
from mcp_acp_oidc.login import stored_token
from mcp_acp_oidc.validator import MAX_NUMERIC_DATE

B64URL = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=200
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
HEADERS = st.fixed_dictionaries(
    {"alg": st.sampled_from(["RS256", "ES256", "none", "HS256", "PS256", 5, None])},
    optional={"kid": JSON_VALUES | st.sampled_from(["rsa-1", "ec-1"]), "typ": JSON_VALUES},
)
CLAIMS = st.dictionaries(
    st.sampled_from(
        ["iss", "sub", "aud", "exp", "nbf", "iat", "auth_time", "azp", "scope", "groups"]
    ),
    JSON_VALUES,
)
NUMBERS = (
    st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False)
    | st.sampled_from([0, 1e20, -1e20, 10**30, MAX_NUMERIC_DATE, MAX_NUMERIC_DATE + 1])
)
TIMES = st.dictionaries(st.sampled_from(["exp", "nbf", "iat", "auth_time"]), NUMBERS | JSON_VALUES)
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check(validator: Any, token: Any) -> None:
    with contextlib.suppress(TokenRejectedError):
        asyncio.run(validator.validate(token))


@SETTINGS
@given(st.lists(B64URL, min_size=0, max_size=6).map(".".join) | st.text(max_size=300))
def test_random_strings_are_rejected_cleanly(validator, token) -> None:
    _check(validator, token)


@SETTINGS
@given(header=HEADERS, claims=CLAIMS, signature=B64URL)
def test_random_headers_and_claims_are_rejected_cleanly(
    validator, kit, header, claims, signature
) -> None:
    token = f"{kit.part(json.dumps(header))}.{kit.part(json.dumps(claims))}.{signature or 'AA'}"
    _check(validator, token)


@SETTINGS
@given(claims=CLAIMS)
def test_signed_random_claims_give_subject_or_rejection(validator, keys, kit, claims) -> None:
    token = kit.sign({"alg": "RS256", "kid": "rsa-1"}, claims, keys.rsa)
    _check(validator, token)


@SETTINGS
@given(times=TIMES)
def test_valid_token_with_random_times_is_stored_or_rejected_cleanly(
    validator, keys, kit, times
) -> None:
    """Otherwise valid tokens whose exp/nbf/iat/auth_time are any number (huge ints,
    1e308, negatives) or any JSON value: validated and stored, or rejected — never an
    OverflowError from turning a claim into a date."""
    payload = json.dumps({**kit.claims(), **times}, allow_nan=True)
    token = kit.sign({"alg": "RS256", "kid": "rsa-1"}, payload, keys.rsa)
    with contextlib.suppress(TokenRejectedError):
        subject = asyncio.run(validator.validate(token))
        stored_token(kit.ISSUER, TokenResponse("at", "Bearer", 300.0), subject)
