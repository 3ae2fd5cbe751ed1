# ruff: noqa: S106  (JOSE typ values and fixture tokens, not secrets)
"""Malicious tokens (security checklist, "JWT: malicious tokens"): every one is denied.

Keys and tokens are made in the test; the JWKS comes from a real HTTP server on
127.0.0.1. Each test names the checklist item it covers.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mcp_acp_oidc.device import TokenResponse
from mcp_acp_oidc.errors import TokenRejectedError
from mcp_acp_oidc.login import stored_token
from mcp_acp_oidc.validator import MAX_NUMERIC_DATE, TokenValidationConfig, TokenValidator

from mcp_acp.models import Provenance, Subject
from mcp_acp.policy.engine import AcpPolicyEngine
from mcp_acp.policy.model import PolicyFile
from mcp_acp.request import build_decision_request
from mcp_acp.tools import ToolRegistry

RS = {"alg": "RS256", "kid": "rsa-1"}
ES = {"alg": "ES256", "kid": "ec-1"}


async def rejected(validator: TokenValidator, token: Any, reason: str | None = None) -> str:
    with pytest.raises(TokenRejectedError) as info:
        await validator.validate(token)
    if reason is not None:
        assert info.value.reason == reason, info.value
    assert "eyJ" not in str(info.value)  # never echoes a token
    return info.value.reason


# --- the happy paths the hostile ones are variations of ---------------------------------


async def test_valid_rs256_token_gives_token_subject(validator, keys, kit) -> None:
    now = time.time()
    token = kit.sign(RS, kit.claims(auth_time=int(now) - 60, iat=int(now) - 10), keys.rsa)
    subject = await validator.validate(token)
    assert subject.subject_id == "alice"
    assert subject.provenance is Provenance.TOKEN
    assert subject.issuer == kit.ISSUER
    assert subject.audience == (kit.AUDIENCE,)
    assert subject.client_id == kit.CLIENT_ID
    assert subject.scopes == {"openid", "mcp:tools"}
    assert subject.groups == {"eng"}
    assert subject.roles == {"dev"}
    assert subject.auth_time is not None
    assert subject.token_age_seconds is not None
    assert 9 <= subject.token_age_seconds < 60
    assert subject.claims["jti"] == "j1"


async def test_valid_es256_token(validator, keys, kit) -> None:
    assert (await validator.validate(kit.sign(ES, kit.claims(), keys.ec))).subject_id == "alice"


async def test_nested_group_and_role_claims(jwks_server, keys, kit) -> None:
    validator = kit.make_validator(
        jwks_server, groups_claim="ext.groups", roles_claim="realm_access.roles"
    )
    token = kit.sign(
        RS,
        kit.claims(ext={"groups": "ops"}, realm_access={"roles": ["admin"]}),
        keys.rsa,
    )
    subject = await validator.validate(token)
    assert subject.groups == {"ops"}
    assert subject.roles == {"admin"}


async def test_namespaced_claim_names_with_dots_are_read(jwks_server, keys, kit) -> None:
    """Auth0 wants custom claims namespaced by a URL, dots and all
    (docs/authentication.md: ``https://mcp-acp.example.com/roles``): read as written, not
    split at its dots into nested claims that do not exist — which gave no groups, so a
    deny rule on a group never matched its members."""
    validator = kit.make_validator(
        jwks_server,
        groups_claim="https://mcp-acp.example.com/groups",
        roles_claim="https://mcp-acp.example.com/claims.roles",
    )
    token = kit.sign(
        RS,
        kit.claims(
            **{
                "https://mcp-acp.example.com/groups": ["contractors"],
                "https://mcp-acp.example.com/claims": {"roles": ["admin"]},
            }
        ),
        keys.rsa,
    )
    subject = await validator.validate(token)
    assert subject.groups == {"contractors"}
    assert subject.roles == {"admin"}
    policy = PolicyFile.model_validate(
        {
            "rules": [
                {"id": "no-contractors", "effect": "deny", "conditions": {"groups": "contractors"}},
                {"id": "time", "effect": "allow", "conditions": {"tool_name": "get_current_time"}},
            ]
        }
    )
    request = build_decision_request(
        method="tools/call",
        params={"name": "get_current_time", "arguments": {}},
        subject=subject,
        registry=ToolRegistry.default(),
        backend_id="b",
        session_id="s",
        request_id="1",
    )
    assert AcpPolicyEngine(policy).decide(request).rule_id == "no-contractors"
    # both readings in one token: the nested one, as before
    both = kit.make_validator(jwks_server, groups_claim="ext.groups")
    token = kit.sign(RS, kit.claims(ext={"groups": ["ops"]}, **{"ext.groups": ["x"]}), keys.rsa)
    assert (await both.validate(token)).groups == {"ops"}


@pytest.mark.parametrize("gap", ["\u00a0", "\u3000", "\x1f", "\x85", "\u2028", "\t", "\n"])
async def test_scope_is_split_at_spaces_only(validator, keys, kit, gap) -> None:
    """RFC 6749 3.3: scopes are delimited by a space (%x20). ``str.split()`` also split at
    a no-break space, a unit separator, U+2028 …, so a scope a provider passed through from
    what the client asked for (a dynamic scope, ``group:x<NBSP>mcp:exec``) gave the token
    ``mcp:exec`` too. Such a scope is now one scope, which no rule names."""
    token = kit.sign(RS, kit.claims(scope=f"openid group:x{gap}mcp:exec  mcp:tools"), keys.rsa)
    scopes = (await validator.validate(token)).scopes
    assert scopes == {"openid", f"group:x{gap}mcp:exec", "mcp:tools"}


async def test_scp_list_claim_is_read_as_scopes(validator, keys, kit) -> None:
    token = kit.sign(RS, kit.claims(scope=kit.DROP, scp=["a", "b"]), keys.rsa)
    assert (await validator.validate(token)).scopes == {"a", "b"}


@pytest.mark.parametrize("value", [{"x": 1}, [1, 2], 5, True])
async def test_groups_of_the_wrong_type_reject(validator, keys, kit, value) -> None:
    await rejected(validator, kit.sign(RS, kit.claims(groups=value), keys.rsa), "bad_claim")


# --- 1. alg none --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"])
async def test_alg_none_is_rejected(validator, kit, alg, signature) -> None:
    token = f"{kit.part({'alg': alg, 'kid': 'rsa-1'})}.{kit.part(kit.claims())}.{signature}"
    reason = await rejected(validator, token)
    assert reason in ("malformed", "alg_not_allowed")


def test_none_and_hmac_cannot_be_configured(kit) -> None:
    for algorithms in (("none",), ("HS256",), ("RS256", "HS512")):
        with pytest.raises(ValueError, match="not allowed"):
            TokenValidationConfig(issuer=kit.ISSUER, audience="a", algorithms=algorithms)


# --- 2, 3. HMAC with the public key as the secret -----------------------------------------


def _hmac_secrets(keys) -> dict[str, bytes]:
    rsa_pub = keys.rsa.public_key()
    ec_pub = keys.ec.public_key()
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    jwk = {"kty": "RSA", "n": rsa_pub.public_numbers().n, "e": 65537}
    return {
        "rsa-pem": rsa_pub.public_bytes(pem, spki),
        "rsa-der": rsa_pub.public_bytes(der, spki),
        "rsa-jwk": json.dumps(jwk).encode(),
        "rsa-n": str(rsa_pub.public_numbers().n).encode(),
        "ec-pem": ec_pub.public_bytes(pem, spki),
        "ec-openssh": ec_pub.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "empty": b"",
    }


@pytest.mark.parametrize(
    "secret", ["rsa-pem", "rsa-der", "rsa-jwk", "rsa-n", "ec-pem", "ec-openssh", "empty"]
)
@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
async def test_hs256_signed_with_public_key_is_rejected(validator, keys, kit, secret, kid):
    token = kit.sign({"alg": "HS256", "kid": kid}, kit.claims(), _hmac_secrets(keys)[secret])
    await rejected(validator, token, "alg_not_allowed")


async def test_lowercase_hs256_is_rejected(validator, keys, kit):
    token = kit.sign({"alg": "hs256", "kid": "rsa-1"}, kit.claims(), b"x", alg="HS256")
    await rejected(validator, token, "alg_not_allowed")


# --- 4. alg/kty mismatch; 5. algorithm outside the allow-list -------------------------------


async def test_rs256_token_with_ec_kid_is_rejected(validator, keys, kit) -> None:
    token = kit.sign({"alg": "RS256", "kid": "ec-1"}, kit.claims(), keys.rsa)
    await rejected(validator, token, "no_key")


async def test_es256_token_with_rsa_kid_is_rejected(validator, keys, kit) -> None:
    token = kit.sign({"alg": "ES256", "kid": "rsa-1"}, kit.claims(), keys.ec)
    await rejected(validator, token, "no_key")


@pytest.mark.parametrize("alg", ["PS256", "RS512"])
async def test_valid_signature_outside_pinned_alg_is_rejected(jwks_server, keys, kit, alg):
    jwks_server.state.jwks = {"keys": [kit.public_jwk(keys.rsa, "rsa-1")]}  # no "alg" on key
    validator = kit.make_validator(jwks_server, algorithms=("RS256",))
    await rejected(validator, kit.sign({"alg": alg, "kid": "rsa-1"}, kit.claims(), keys.rsa))


async def test_token_alg_must_match_the_alg_the_jwk_announces(validator, keys, kit) -> None:
    # PS256 is allowed, but the JWK says RS256: the same RSA key may not be used for PS256.
    token = kit.sign({"alg": "PS256", "kid": "rsa-1"}, kit.claims(), keys.rsa)
    await rejected(validator, token, "no_key")


# --- 6. attacker key reusing a real kid -----------------------------------------------------


@pytest.mark.parametrize(("header", "attr"), [(RS, "attacker_rsa"), (ES, "attacker_ec")])
async def test_attacker_key_with_real_kid_is_rejected(validator, keys, kit, header, attr):
    token = kit.sign(header, kit.claims(), getattr(keys, attr))
    await rejected(validator, token, "bad_signature")


# --- 7, 8. jwk / jku / x5u / x5c headers are ignored ----------------------------------------


def _self_signed_x5c(private_key) -> list[str]:
    import base64
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private_key, hashes.SHA256())
    )
    return [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]


async def test_key_carrying_headers_are_ignored_and_cause_no_request(
    validator, jwks_server, keys, kit
) -> None:
    evil = f"{jwks_server.base}/evil-jwks.json"
    attacker_jwk = kit.public_jwk(keys.attacker_rsa, "rsa-1")
    headers: list[dict[str, Any]] = [
        {**RS, "jwk": attacker_jwk},
        {"alg": "RS256", "jwk": attacker_jwk},
        {**RS, "jku": evil},
        {"alg": "RS256", "kid": "attacker", "jku": evil},
        {**RS, "x5u": evil},
        {"alg": "RS256", "kid": "attacker", "x5u": evil},
        {**RS, "x5c": _self_signed_x5c(keys.attacker_rsa)},
    ]
    for header in headers:
        await rejected(validator, kit.sign(header, kit.claims(), keys.attacker_rsa))
    assert jwks_server.state.hits["/evil-jwks.json"] == 0


# --- 9. kid injection -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../dev/null",
        "/proc/self/environ",
        "' OR '1'='1",
        "a\u0000b",
        "rsa-1\u0000",
        "x" * 257,
    ],
)
async def test_kid_injection_is_a_failed_lookup(validator, keys, kit, kid) -> None:
    for key, alg in ((b"", "HS256"), (keys.rsa, "RS256")):
        token = kit.sign({"alg": alg, "kid": kid}, kit.claims(), key)
        reason = await rejected(validator, token)
        assert reason in ("alg_not_allowed", "no_key", "bad_kid")


async def test_64k_kid_is_rejected_by_size(validator, keys, kit) -> None:
    token = kit.sign({"alg": "RS256", "kid": "k" * 65536}, kit.claims(), keys.rsa)
    await rejected(validator, token, "too_large")


@pytest.mark.parametrize("kid", [1, {"a": 1}, ["rsa-1"], True, ""])
async def test_non_string_kid_is_rejected(validator, keys, kit, kid) -> None:
    token = kit.sign({"alg": "RS256", "kid": kid}, kit.claims(), keys.rsa)
    await rejected(validator, token, "bad_kid")


async def test_null_kid_means_no_kid(jwks_server, keys, kit) -> None:
    # JWKS holds one RSA and one EC key: an RS256 token without kid has one candidate.
    validator = kit.make_validator(jwks_server)
    token = kit.sign({"alg": "RS256", "kid": None}, kit.claims(), keys.attacker_rsa)
    await rejected(validator, token, "bad_signature")
    assert await validator.validate(kit.sign({"alg": "RS256"}, kit.claims(), keys.rsa))


# --- 10, 11. rotation, kid spray, no kid --------------------------------------------------


async def test_rotated_in_key_costs_exactly_one_refetch(jwks_server, keys, kit) -> None:
    validator = kit.make_validator(jwks_server, cooldown=0.0)
    await validator.validate(kit.sign(RS, kit.claims(), keys.rsa))
    assert validator.jwks.fetch_count == 1
    jwks_server.state.jwks["keys"].append(kit.public_jwk(keys.rsa2, "rsa-2", "RS256"))
    token = kit.sign({"alg": "RS256", "kid": "rsa-2"}, kit.claims(), keys.rsa2)
    assert (await validator.validate(token)).subject_id == "alice"
    assert validator.jwks.fetch_count == 2
    await validator.validate(token)
    assert validator.jwks.fetch_count == 2


async def test_thousand_unknown_kids_cost_at_most_one_refetch(jwks_server, keys, kit) -> None:
    clock = kit.Clock()
    validator = kit.make_validator(jwks_server, clock=clock, cooldown=30.0)
    await validator.validate(kit.sign(RS, kit.claims(), keys.rsa))  # first fetch
    clock.now += 31  # cooldown over: one refetch is allowed now
    started = time.monotonic()
    for i in range(1000):
        token = kit.sign({"alg": "RS256", "kid": f"spray-{i}"}, kit.claims(), keys.rsa)
        await rejected(validator, token, "no_key")
    assert validator.jwks.fetch_count == 2
    assert jwks_server.state.hits["/jwks"] == 2
    assert time.monotonic() - started < 10


async def test_no_kid_with_several_keys_for_the_alg_is_rejected(jwks_server, keys, kit):
    jwks_server.state.jwks["keys"].append(kit.public_jwk(keys.rsa2, "rsa-2", "RS256"))
    validator = kit.make_validator(jwks_server)
    for key in (keys.rsa, keys.rsa2):
        await rejected(validator, kit.sign({"alg": "RS256"}, kit.claims(), key), "no_key")


async def test_duplicate_kid_in_jwks_is_rejected(jwks_server, keys, kit) -> None:
    jwks_server.state.jwks["keys"].append(kit.public_jwk(keys.rsa2, "rsa-1", "RS256"))
    validator = kit.make_validator(jwks_server)
    await rejected(validator, kit.sign(RS, kit.claims(), keys.rsa), "no_key")


# --- 12, 13. time claims --------------------------------------------------------------------


async def test_exp_leeway_boundary(validator, keys, kit) -> None:
    now = int(time.time())
    ok = kit.sign(RS, kit.claims(exp=now - 30 + 2, iat=now - 100), keys.rsa)
    assert await validator.validate(ok)
    late = kit.sign(RS, kit.claims(exp=now - 30 - 2, iat=now - 100), keys.rsa)
    await rejected(validator, late, "expired")


@pytest.mark.parametrize(
    ("exp", "reason"),
    [
        ("missing", "missing_claim"),
        ("9999999999", "bad_claim"),
        (True, "bad_claim"),
        ([9999999999], "bad_claim"),
        (1, "expired"),
        (-1, "bad_claim"),  # before 1970: not a NumericDate
        (None, "bad_claim"),
    ],
)
async def test_bad_exp_values(validator, keys, kit, exp, reason) -> None:
    value = kit.DROP if exp == "missing" else exp
    await rejected(validator, kit.sign(RS, kit.claims(exp=value), keys.rsa), reason)


@pytest.mark.parametrize("literal", ["1e309", "NaN", "Infinity", "-Infinity"])
async def test_non_finite_exp_is_rejected(validator, keys, kit, literal) -> None:
    payload = json.dumps(kit.claims()).replace('"exp": ', '"exp": ' + literal + ', "x": ')
    reason = await rejected(validator, kit.sign(RS, payload, keys.rsa))
    assert reason in ("bad_claim", "malformed")


TIME_CLAIMS = ("exp", "nbf", "iat", "auth_time")
OUT_OF_RANGE = [
    "1e20",
    "-1e20",
    "1e309",  # JSON allows it; Python reads it as inf
    "-1e309",
    str(10**30),
    str(-(10**30)),
    str(10**400),  # float() of it overflows
    str(MAX_NUMERIC_DATE + 1),
    "-1",
    "-0.5",
]


@pytest.mark.parametrize("claim", TIME_CLAIMS)
@pytest.mark.parametrize("literal", OUT_OF_RANGE)
async def test_time_claims_that_are_not_dates_are_bad_claims(
    validator, keys, kit, claim, literal
) -> None:
    """A signed token whose time claim overflows a date is a bad claim, never an
    OverflowError (which would escape as something other than a denial)."""
    payload = json.dumps(kit.claims(**{claim: 123456789}))
    payload = payload.replace(f'"{claim}": 123456789', f'"{claim}": {literal}')
    assert literal in payload
    await rejected(validator, kit.sign(RS, payload, keys.rsa), "bad_claim")


async def test_the_last_representable_second_is_a_valid_expiry(validator, keys, kit) -> None:
    token = kit.sign(RS, kit.claims(exp=MAX_NUMERIC_DATE, auth_time=0), keys.rsa)
    subject = await validator.validate(token)
    assert subject.auth_time == datetime(1970, 1, 1, tzinfo=UTC)
    stored = stored_token(kit.ISSUER, TokenResponse("at", "Bearer", None), subject)
    assert stored.expires_at == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("claims", "expires_in"),
    [({"exp": 1e20}, None), ({"exp": -1}, 300.0), ({}, 1e300), ({}, -1e12)],
)
def test_stored_token_refuses_an_expiry_that_is_not_a_date(kit, claims, expires_in) -> None:
    """``stored_token`` checks again what it turns into a date (the token's exp, or
    ``expires_in`` from now for a token without exp): an error, never an OverflowError."""
    subject = Subject(subject_id="alice", provenance=Provenance.TOKEN, claims=claims)
    with pytest.raises(TokenRejectedError) as info:
        stored_token(kit.ISSUER, TokenResponse("at", "Bearer", expires_in), subject)
    assert info.value.reason == "bad_claim"


async def test_nbf_in_future_is_rejected(validator, keys, kit) -> None:
    token = kit.sign(RS, kit.claims(nbf=int(time.time()) + 31 + 5), keys.rsa)
    await rejected(validator, token, "not_yet_valid")


async def test_iat_in_future_is_rejected(validator, keys, kit) -> None:
    token = kit.sign(RS, kit.claims(iat=int(time.time()) + 40), keys.rsa)
    await rejected(validator, token, "not_yet_valid")


async def test_token_older_than_max_age_is_rejected(jwks_server, keys, kit) -> None:
    validator = kit.make_validator(jwks_server, max_token_age=600)
    now = int(time.time())
    await rejected(validator, kit.sign(RS, kit.claims(iat=now - 700), keys.rsa), "too_old")
    assert await validator.validate(kit.sign(RS, kit.claims(iat=now - 500), keys.rsa))


# --- 14. issuer exact match -----------------------------------------------------------------


@pytest.mark.parametrize(
    "iss",
    [
        "https://idp.example.test/",
        "https://IDP.example.test",
        "http://idp.example.test",
        "https://idp.example.test:443",
        "https://idp.ex\u0430mple.test",  # Cyrillic small a
        "",
        None,
        ["https://idp.example.test"],
    ],
)
async def test_issuer_variants_are_rejected(validator, keys, kit, iss) -> None:
    await rejected(validator, kit.sign(RS, kit.claims(iss=iss), keys.rsa), "wrong_iss")


async def test_missing_iss_is_rejected(validator, keys, kit) -> None:
    await rejected(validator, kit.sign(RS, kit.claims(iss=kit.DROP), keys.rsa), "missing_claim")


# --- 15, 16. audience, azp, cross-JWT confusion ---------------------------------------------


@pytest.mark.parametrize(
    "aud",
    [
        "",
        [],
        ["https://other"],
        "urn:mcp-acp:proxy/",
        "URN:MCP-ACP:PROXY",
        [None],
        {"aud": "urn:mcp-acp:proxy"},
    ],
)
async def test_audience_variants_are_rejected(validator, keys, kit, aud) -> None:
    await rejected(validator, kit.sign(RS, kit.claims(aud=aud), keys.rsa), "wrong_aud")


async def test_missing_aud_is_rejected(validator, keys, kit) -> None:
    await rejected(validator, kit.sign(RS, kit.claims(aud=kit.DROP), keys.rsa), "missing_claim")


async def test_multi_audience_with_foreign_azp_is_rejected(validator, keys, kit) -> None:
    token = kit.sign(RS, kit.claims(aud=[kit.AUDIENCE, "https://other"], azp="evil"), keys.rsa)
    await rejected(validator, token, "wrong_client")
    ok = kit.sign(RS, kit.claims(aud=[kit.AUDIENCE, "https://other"]), keys.rsa)
    assert (await validator.validate(ok)).audience == (kit.AUDIENCE, "https://other")


async def test_azp_and_client_id_must_agree(validator, keys, kit) -> None:
    token = kit.sign(RS, kit.claims(client_id="evil"), keys.rsa)
    await rejected(validator, token, "wrong_client")


async def test_id_token_presented_as_access_token_is_rejected(jwks_server, keys, kit) -> None:
    id_token_claims = kit.claims(aud=kit.CLIENT_ID, nonce="n", email="alice@example.test")
    validator = kit.make_validator(jwks_server)
    await rejected(validator, kit.sign({**RS, "typ": "JWT"}, id_token_claims, keys.rsa))


@pytest.mark.parametrize("typ", ["JWT", None, "jwt", "at+jwt+x", 5])
async def test_typ_other_than_at_jwt_is_rejected_when_required(jwks_server, keys, kit, typ):
    validator = kit.make_validator(jwks_server, token_type="at+jwt")
    header = {**RS, "typ": typ} if typ is not None else RS
    await rejected(validator, kit.sign(header, kit.claims(), keys.rsa), "wrong_typ")


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
async def test_typ_at_jwt_is_accepted_when_required(jwks_server, keys, kit, typ) -> None:
    validator = kit.make_validator(jwks_server, token_type="at+jwt")
    assert await validator.validate(kit.sign({**RS, "typ": typ}, kit.claims(), keys.rsa))


# --- 17, 18. crit, b64, duplicate members -----------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{"crit": ["foo"], "foo": 1}, {"crit": []}, {"crit": ["exp"]}, {"b64": False, "crit": ["b64"]}],
)
async def test_crit_and_b64_are_rejected(validator, keys, kit, extra) -> None:
    token = kit.sign({**RS, **extra}, kit.claims(), keys.rsa, alg="RS256")
    await rejected(validator, token, "unsupported_header")


async def test_duplicate_header_member_is_rejected(validator, keys, kit) -> None:
    header = '{"alg":"RS256","kid":"rsa-1","alg":"none"}'
    await rejected(validator, kit.sign(header, kit.claims(), keys.rsa, alg="RS256"), "malformed")


async def test_duplicate_payload_member_is_rejected(validator, keys, kit) -> None:
    payload = json.dumps(kit.claims(aud="other"))[:-1] + f', "aud": "{kit.AUDIENCE}"}}'
    await rejected(validator, kit.sign(RS, payload, keys.rsa), "malformed")


# --- 19. size and shape -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [16 * 1024, 1024 * 1024])
async def test_oversized_token_is_rejected_before_decoding(validator, keys, kit, size) -> None:
    token = kit.sign(RS, kit.claims(pad="x" * size), keys.rsa)
    started = time.monotonic()
    await rejected(validator, token, "too_large")
    assert time.monotonic() - started < 0.5
    assert validator.jwks.fetch_count == 0  # rejected before any key lookup


async def test_deeply_nested_json_does_not_crash(jwks_server, keys, kit) -> None:
    validator = kit.make_validator(jwks_server, max_token_bytes=65536)
    deep = "[" * 10000 + "]" * 10000
    header = '{"alg":"RS256","kid":"rsa-1","x":' + deep + "}"
    await rejected(validator, kit.sign(header, kit.claims(), keys.rsa, alg="RS256"), "malformed")
    payload = json.dumps(kit.claims())[:-1] + ', "x": ' + deep + "}"
    await rejected(validator, kit.sign(RS, payload, keys.rsa), "malformed")


async def test_many_claims_are_bounded_by_size(validator, keys, kit) -> None:
    many = {f"c{i}": i for i in range(100_000)}
    await rejected(validator, kit.sign(RS, kit.claims(**many), keys.rsa), "too_large")


async def test_framing_variants_are_rejected(validator, keys, kit) -> None:
    good = kit.sign(RS, kit.claims(), keys.rsa)
    h, p, s = good.split(".")
    variants = [
        f"{h}.{p}",
        f"{h}.{p}.{s}.{s}",
        f"{h}.{p}.{s}.{s}.{s}",  # JWE shape
        f"{h}.{p}.{s}=",
        f"{h}=.{p}.{s}",
        f"{h}.{p}.{s[:-2]}+/",
        f"{h}.{p} .{s}",
        f"{h}.{p}.{s}\n",
        f"Bearer {good}",
        "",
        "...",
        None,
        b"bytes",
        good.encode(),
    ]
    for token in variants:
        await rejected(validator, token, "malformed")
    assert await validator.validate(good)


# --- 21. signature tampering ------------------------------------------------------------------


def _flip(signature_b64: str, kit) -> str:
    import base64

    raw = bytearray(base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return kit.b64(bytes(raw))


@pytest.mark.parametrize(("header", "attr"), [(RS, "rsa"), (ES, "ec")])
async def test_tampered_signatures_are_rejected(validator, keys, kit, header, attr) -> None:
    token = kit.sign(header, kit.claims(), getattr(keys, attr))
    h, p, s = token.split(".")
    for signature in (_flip(s, kit), s[: len(s) // 2], kit.b64(b"\x00")):
        await rejected(validator, f"{h}.{p}.{signature}", "bad_signature")
    # payload changed under the old signature
    other = kit.part(kit.claims(sub="admin"))
    await rejected(validator, f"{h}.{other}.{s}", "bad_signature")


async def test_ecdsa_psychic_signature_is_rejected(validator, kit) -> None:
    token = f"{kit.part(ES)}.{kit.part(kit.claims())}.{kit.b64(bytes(64))}"
    await rejected(validator, token, "bad_signature")


async def test_ecdsa_der_signature_is_rejected(validator, keys, kit) -> None:
    from cryptography.hazmat.primitives import hashes

    signing_input = f"{kit.part(ES)}.{kit.part(kit.claims())}"
    der = keys.ec.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    await rejected(validator, f"{signing_input}.{kit.b64(der)}", "bad_signature")


async def test_short_rsa_key_in_jwks_is_refused(jwks_server, keys, kit) -> None:
    jwks_server.state.jwks = {"keys": [kit.public_jwk(keys.weak_rsa, "weak", "RS256")]}
    validator = kit.make_validator(jwks_server)
    token = kit.sign({"alg": "RS256", "kid": "weak"}, kit.claims(), keys.weak_rsa)
    await rejected(validator, token, "no_key")


# --- 22. sub and payload content ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "reason"),
    [
        (None, "bad_claim"),
        ("", "bad_claim"),
        ("al\u0000ice", "bad_claim"),
        ("al\nice", "bad_claim"),
        ("eve\u202enimda", "bad_claim"),  # a right-to-left override: shown as "eveadmin"
        ("admin\u200b", "bad_claim"),  # an invisible character: another "admin"
        ("x" * 256, "bad_claim"),
        ("x" * 10240, "too_large"),
        (42, "bad_claim"),
        ("missing", "missing_claim"),
    ],
)
async def test_bad_sub_is_rejected(validator, keys, kit, sub, reason) -> None:
    value = kit.DROP if sub == "missing" else sub
    await rejected(validator, kit.sign(RS, kit.claims(sub=value), keys.rsa), reason)


async def test_non_utf8_and_bom_payloads_are_rejected(validator, keys, kit) -> None:
    body = json.dumps(kit.claims()).encode()
    for payload in (body.replace(b"alice", b"al\xffice"), b"\xef\xbb\xbf" + body):
        await rejected(validator, kit.sign(RS, payload, keys.rsa), "malformed")


@pytest.mark.parametrize("payload", ["[]", '"s"', "null", "1"])
async def test_payload_that_is_not_an_object_is_rejected(validator, keys, kit, payload) -> None:
    await rejected(validator, kit.sign(RS, payload, keys.rsa), "malformed")


# --- 23. issuer-key binding --------------------------------------------------------------------


async def test_issuer_key_binding(keys, kit, jwks_server) -> None:
    server_b = type(jwks_server)()
    try:
        server_b.state.jwks = {"keys": [kit.public_jwk(keys.rsa2, "b-1", "RS256")]}
        issuer_b = "https://idp-b.example.test"
        validator_a = kit.make_validator(jwks_server)
        validator_b = kit.make_validator(server_b, issuer=issuer_b)
        # A's key, B's issuer: A refuses the issuer, B has no such key
        forged = kit.sign(RS, kit.claims(iss=issuer_b), keys.rsa)
        await rejected(validator_a, forged, "wrong_iss")
        await rejected(validator_b, forged, "no_key")
        # same, reusing B's kid
        forged_kid = kit.sign({"alg": "RS256", "kid": "b-1"}, kit.claims(iss=issuer_b), keys.rsa)
        await rejected(validator_b, forged_kid, "bad_signature")
        genuine = kit.sign({"alg": "RS256", "kid": "b-1"}, kit.claims(iss=issuer_b), keys.rsa2)
        assert (await validator_b.validate(genuine)).issuer == issuer_b
    finally:
        server_b.close()


# --- other key types: the curve must fit the algorithm --------------------------------------


async def test_eddsa_and_es384_keys(jwks_server, kit) -> None:
    import json as _json

    from cryptography.hazmat.primitives.asymmetric import ed25519
    from jwt.algorithms import OKPAlgorithm

    ed = ed25519.Ed25519PrivateKey.generate()
    p384 = ec.generate_private_key(ec.SECP384R1())
    ed_jwk = {**_json.loads(OKPAlgorithm.to_jwk(ed.public_key())), "kid": "ed-1"}
    jwks_server.state.jwks = {"keys": [ed_jwk, kit.public_jwk(p384, "p384-1")]}
    validator = kit.make_validator(jwks_server, algorithms=("EdDSA", "ES384", "ES256"))
    ok_ed = kit.sign({"alg": "EdDSA", "kid": "ed-1"}, kit.claims(), ed)
    assert (await validator.validate(ok_ed)).subject_id == "alice"
    ok_384 = kit.sign({"alg": "ES384", "kid": "p384-1"}, kit.claims(), p384)
    assert (await validator.validate(ok_384)).subject_id == "alice"
    # a P-384 key may not check an ES256 token, whatever the signature
    await rejected(validator, kit.sign({"alg": "ES256", "kid": "p384-1"}, kit.claims(), p384))
    # EdDSA token naming the EC key, ES384 naming the Ed25519 key
    await rejected(
        validator, kit.sign({"alg": "EdDSA", "kid": "p384-1"}, kit.claims(), ed), "no_key"
    )
    await rejected(
        validator, kit.sign({"alg": "ES384", "kid": "ed-1"}, kit.claims(), p384), "no_key"
    )


async def test_nbf_leeway_boundary(validator, keys, kit) -> None:
    now = int(time.time())
    assert await validator.validate(kit.sign(RS, kit.claims(nbf=now + 30 - 2), keys.rsa))
    await rejected(validator, kit.sign(RS, kit.claims(nbf=now + 30 + 2), keys.rsa), "not_yet_valid")


@pytest.mark.parametrize("value", ["1700000000", True, None, [1], float("inf")])
async def test_bad_nbf_and_iat_types(validator, keys, kit, value) -> None:
    for claim in ("nbf", "iat", "auth_time"):
        payload = kit.claims(**{claim: value})
        try:
            token = kit.sign(RS, payload, keys.rsa)
        except ValueError:  # json.dumps refuses inf only with allow_nan=False
            continue
        await rejected(validator, token)
