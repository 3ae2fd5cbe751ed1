# ruff: noqa: S105, S106, S107  (fixture tokens and endpoints, not secrets)
"""Device-flow rules DF-1..DF-12 (security checklist, "OAuth 2.0 Device Authorization
Grant") against a small fault-injecting IdP on 127.0.0.1.

Time is simulated: the client's ``sleep`` records each wait and advances a fake clock,
while the HTTP requests are real, so the tests measure gaps without waiting for them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from mcp_acp_oidc.device import DEVICE_CODE_GRANT, DeviceFlowClient
from mcp_acp_oidc.errors import DeviceFlowError, TokenRejectedError, UnvalidatedRefreshError
from mcp_acp_oidc.login import device_login
from mcp_acp_oidc.refresh import refresh_and_validate

from mcp_acp.models import StoredToken

PENDING = ("json", 400, {"error": "authorization_pending"})
SLOW = ("json", 400, {"error": "slow_down"})
DROP = ("drop",)


class _Handler(BaseHTTPRequestHandler):
    server: _IdP

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self.server.requests.append((self.path, form))
        if self.path == "/device":
            action: tuple[Any, ...] = ("json", 200, self.server.device_response)
        else:
            script = self.server.token_script
            action = script.pop(0) if len(script) > 1 else script[0]
        if action[0] == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if action[0] == "html":
            body, status, ctype = b"<html>busy</html>", action[1], "text/html"
        else:
            body, status, ctype = json.dumps(action[2]).encode(), action[1], "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _IdP(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.device_response: dict[str, Any] = {
            "device_code": "dc-1",
            "user_code": "ABCD-EFGH",
            "verification_uri": f"{self.base}/device",
            "expires_in": 600,
        }
        self.token_script: list[tuple[Any, ...]] = [PENDING]

    def polls(self) -> list[dict[str, str]]:
        return [form for path, form in self.requests if path == "/token"]


@pytest.fixture
def idp() -> Iterator[_IdP]:
    server = _IdP()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def client_for(idp: _IdP, fake_time: FakeTime, **options: Any) -> DeviceFlowClient:
    settings: dict[str, Any] = {
        "device_authorization_endpoint": f"{idp.base}/device",
        "token_endpoint": f"{idp.base}/token",
        "client_id": "mcp-acp-cli",
        "scope": "openid offline_access mcp:tools",
        "resource": "urn:mcp-acp:proxy",
        "sleep": fake_time.sleep,
        "clock": fake_time.clock,
        "timeout": 2.0,
    }
    settings.update(options)
    return DeviceFlowClient(**settings)


def success(access_token: str = "at") -> tuple[Any, ...]:
    return ("json", 200, {"access_token": access_token, "token_type": "Bearer", "expires_in": 300})


async def run(idp: _IdP, fake_time: FakeTime, **options: Any) -> Any:
    client = client_for(idp, fake_time, **options)
    return await client.poll(await client.start())


async def test_df1_missing_interval_defaults_to_5s(idp, fake_time) -> None:
    idp.token_script = [PENDING, success()]
    await run(idp, fake_time)
    assert fake_time.waits == [5.0, 5.0]


async def test_df2_and_mcp7_request_bodies(idp, fake_time) -> None:
    idp.token_script = [success()]
    await run(idp, fake_time, audience="https://api.example.test")
    (device_path, device_form), (_, token_form) = idp.requests
    assert device_path == "/device"
    assert device_form == {
        "client_id": "mcp-acp-cli",
        "scope": "openid offline_access mcp:tools",
        "resource": "urn:mcp-acp:proxy",
        "audience": "https://api.example.test",
    }
    assert token_form == {
        "grant_type": DEVICE_CODE_GRANT,
        "device_code": "dc-1",
        "client_id": "mcp-acp-cli",
        "resource": "urn:mcp-acp:proxy",
        "audience": "https://api.example.test",
    }


async def test_df3_pending_keeps_polling_at_the_interval(idp, fake_time) -> None:
    idp.device_response["interval"] = 7
    idp.token_script = [PENDING, PENDING, PENDING, success("tok")]
    tokens = await run(idp, fake_time)
    assert tokens.access_token == "tok"
    assert len(idp.polls()) == 4
    assert fake_time.waits == [7.0] * 4


async def test_df4_slow_down_adds_5s_for_good(idp, fake_time) -> None:
    idp.token_script = [SLOW, SLOW, PENDING, PENDING, success()]
    await run(idp, fake_time)
    assert fake_time.waits == [5.0, 10.0, 15.0, 15.0, 15.0]


@pytest.mark.parametrize(
    "error",
    [
        "access_denied",
        "expired_token",
        "invalid_grant",
        "invalid_client",
        "unsupported_grant_type",
        "invalid_request",
    ],
)
async def test_df5_df6_df9_final_errors_stop_without_retry(idp, fake_time, error) -> None:
    idp.token_script = [PENDING, ("json", 400, {"error": error})]
    with pytest.raises(DeviceFlowError) as info:
        await run(idp, fake_time)
    assert info.value.error == error
    assert len(idp.polls()) == 2  # no poll after the final answer
    assert [path for path, _ in idp.requests].count("/device") == 1  # no automatic restart


async def test_df7_local_stop_at_expires_in(idp, fake_time) -> None:
    idp.device_response["expires_in"] = 12
    idp.token_script = [PENDING]
    with pytest.raises(DeviceFlowError) as info:
        await run(idp, fake_time)
    assert info.value.error == "local_timeout"
    assert len(idp.polls()) <= 3
    assert fake_time.now <= 12


async def test_df8_dropped_connections_back_off(idp, fake_time) -> None:
    idp.token_script = [DROP, DROP, ("html", 503), success()]
    tokens = await run(idp, fake_time)
    assert tokens.access_token == "at"
    assert fake_time.waits == [5.0, 10.0, 20.0, 40.0]


async def test_df8_backoff_is_capped_and_ends_at_expiry(idp, fake_time) -> None:
    idp.device_response["expires_in"] = 300
    idp.token_script = [DROP]
    with pytest.raises(DeviceFlowError) as info:
        await run(idp, fake_time)
    assert info.value.error == "local_timeout"
    assert max(fake_time.waits) == 60.0
    assert len(idp.polls()) <= 10


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://evil.test/device",
        "https://idp.test/device;rm -rf ~",
        "https://idp.test/$(touch pwned)",
        "https://idp.test/`id`",
        "https://idp.test/a|b",
        "https://idp.test/a&calc.exe",
        'https://idp.test/"quoted"',
        "https://idp.test/line\nbreak",
        # a page of screens: what follows it (the user code) scrolls out of sight
        pytest.param("https://idp.test/" + "a" * 400_000, id="400k-characters"),
        "",
        None,
        42,
    ],
)
@pytest.mark.parametrize("field", ["verification_uri", "verification_uri_complete"])
async def test_df10_dangerous_verification_uris_are_refused(idp, fake_time, uri, field) -> None:
    if uri is None:  # verification_uri_complete is optional: absent means no value at all
        uri = "javascript:alert(1)"
    idp.device_response[field] = uri
    with pytest.raises(DeviceFlowError) as info:
        await client_for(idp, fake_time).start()
    assert info.value.error == "bad_response"
    assert idp.polls() == []


@pytest.mark.parametrize(
    ("interval", "first_wait"),
    [
        (0, 1.0),
        (-3, 1.0),
        (1e6, 60.0),
        ("5", 5.0),
        (True, 5.0),
        (None, 5.0),
        (2.5, 2.5),
        # beyond float range: not a number, the default applies
        pytest.param(10**400, 5.0, id="10**400"),
    ],
)
async def test_df11_hostile_interval_is_clamped(idp, fake_time, interval, first_wait) -> None:
    idp.device_response["interval"] = interval
    idp.token_script = [PENDING, PENDING, success()]
    await run(idp, fake_time)
    assert fake_time.waits == [first_wait] * 3


@pytest.mark.parametrize(("expires_in", "limit"), [(0, 1.0), (-5, 1.0), (10**9, 1800.0)])
async def test_df11_hostile_expires_in_is_clamped(idp, fake_time, expires_in, limit) -> None:
    idp.device_response["expires_in"] = expires_in
    idp.device_response["interval"] = 60
    idp.token_script = [PENDING]
    with pytest.raises(DeviceFlowError):
        await run(idp, fake_time)
    assert fake_time.now <= limit


@pytest.mark.parametrize(
    "response",
    [
        {
            "device_code": "",
            "user_code": "A",
            "verification_uri": "https://i.test/",
            "expires_in": 5,
        },
        {"user_code": "A", "verification_uri": "https://i.test/", "expires_in": 5},
        {
            "device_code": "d",
            "user_code": "A B",
            "verification_uri": "https://i.test/",
            "expires_in": 5,
        },
        {
            "device_code": "d",
            "user_code": "\u001b[2J",
            "verification_uri": "https://i.test/",
            "expires_in": 5,
        },
        {"device_code": "d", "user_code": "A", "verification_uri": "https://i.test/"},
        {
            "device_code": "d",
            "user_code": "A",
            "verification_uri": "https://i.test/",
            "expires_in": "600",
        },
        {
            "device_code": "d",
            "user_code": "A",
            "verification_uri": "https://i.test/",
            "expires_in": 10**400,  # float() of it overflows
        },
    ],
)
async def test_malformed_device_responses_are_refused(idp, fake_time, response) -> None:
    idp.device_response = response
    with pytest.raises(DeviceFlowError) as info:
        await client_for(idp, fake_time).start()
    assert info.value.error == "bad_response"


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer"},
        {"access_token": "", "token_type": "Bearer"},
        {"access_token": "x", "token_type": "mac"},
        {"access_token": "x"},
        {"access_token": 5, "token_type": "Bearer"},
    ],
)
async def test_malformed_token_responses_are_refused(idp, fake_time, body) -> None:
    idp.token_script = [("json", 200, body)]
    with pytest.raises(DeviceFlowError) as info:
        await run(idp, fake_time)
    assert info.value.error == "bad_response"


@pytest.mark.parametrize(
    "expires_in", [10**400, -(10**400), "300", None], ids=["10**400", "-10**400", "str", "none"]
)
async def test_token_response_expires_in_that_is_not_a_float_is_ignored(
    idp, fake_time, expires_in
) -> None:
    """Never an OverflowError: the token's own exp is what counts (``stored_token``)."""
    body: dict[str, Any] = {"access_token": "at", "token_type": "Bearer"}
    if expires_in is not None:
        body["expires_in"] = expires_in
    idp.token_script = [("json", 200, body)]
    tokens = await run(idp, fake_time)
    assert tokens.expires_in is None


async def test_unreachable_device_endpoint(fake_time) -> None:
    client = DeviceFlowClient(
        device_authorization_endpoint="http://127.0.0.1:9/device",
        token_endpoint="http://127.0.0.1:9/token",
        client_id="c",
        scope="openid",
        resource="urn:x",
        sleep=fake_time.sleep,
        clock=fake_time.clock,
    )
    with pytest.raises(DeviceFlowError) as info:
        await client.start()
    assert info.value.error == "unreachable"


async def test_df12_wrong_audience_token_is_never_stored(
    idp, fake_time, jwks_server, keys, kit
) -> None:
    bad = kit.sign({"alg": "RS256", "kid": "rsa-1"}, kit.claims(aud="https://other"), keys.rsa)
    idp.token_script = [success(bad)]
    storage = kit.DictStorage()
    shown: list[str] = []
    with pytest.raises(TokenRejectedError) as info:
        await device_login(
            client_for(idp, fake_time),
            kit.make_validator(jwks_server),
            storage,
            show=lambda auth: shown.append(auth.user_code),
        )
    assert info.value.reason == "wrong_aud"
    assert shown == ["ABCD-EFGH"]
    assert storage.tokens == {}


async def test_df12_valid_token_is_stored(idp, fake_time, jwks_server, keys, kit) -> None:
    good = kit.sign({"alg": "RS256", "kid": "rsa-1"}, kit.claims(), keys.rsa)
    idp.token_script = [
        (
            "json",
            200,
            {
                "access_token": good,
                "token_type": "bearer",
                "refresh_token": "rt",
                "expires_in": 300,
            },
        )
    ]
    storage = kit.DictStorage()
    subject = await device_login(
        client_for(idp, fake_time), kit.make_validator(jwks_server), storage, show=print
    )
    assert subject.subject_id == "alice"
    stored = storage.tokens[kit.ISSUER]
    assert stored.access_token == good
    assert stored.refresh_token == "rt"
    assert "rt" not in repr(stored)


def id_token(keys: Any, kit: Any, *, signer: str = "rsa", kid: str = "rsa-1", **claims: Any) -> str:
    """An ID token for alice and this client (as an IdP issues one: aud the client, no
    scope, groups or roles), signed with ``keys.<signer>`` under ``kid``; ``claims``
    override."""
    claims = {
        "aud": kit.CLIENT_ID,
        **dict.fromkeys(("scope", "groups", "roles", "jti"), kit.DROP),
    } | claims
    payload = kit.claims(**claims)
    return kit.sign({"alg": "RS256", "kid": kid}, payload, getattr(keys, signer))


def tokens_with(access_token: str, id_token: str) -> tuple[Any, ...]:
    body = {
        "access_token": access_token,
        "token_type": "Bearer",
        "refresh_token": "rt-2",
        "id_token": id_token,
        "expires_in": 300,
    }
    return ("json", 200, body)


#: ID tokens an IdP (or whoever answers in its place) must not get past a login or a
#: refresh, with the reason each is refused for.
HOSTILE_ID_TOKENS = {
    "forged signature": ({"signer": "attacker_rsa"}, "bad_signature"),
    "another client's": ({"aud": "another-client", "azp": "another-client"}, "wrong_aud"),
    "the access token's audience": ({"aud": "urn:mcp-acp:proxy"}, "wrong_aud"),
    "expired": ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
    "another subject": ({"sub": "mallory"}, "wrong_sub"),
    "another issuer": ({"iss": "https://evil.example.test"}, "wrong_iss"),
    "another party": ({"aud": ["mcp-acp-cli", "other"], "azp": "other"}, "wrong_client"),
}


@pytest.mark.parametrize("case", list(HOSTILE_ID_TOKENS))
async def test_a_login_whose_id_token_is_refused_stores_nothing(
    idp, fake_time, jwks_server, keys, kit, case
) -> None:
    """OpenID Connect Core 3.1.3.7: the ID token that comes with a valid access token is
    validated too — signature by the issuer's keys, iss, aud naming the client (azp too),
    exp, and its sub the access token's — or the login fails in one line and nothing is
    stored."""
    overrides, reason = HOSTILE_ID_TOKENS[case]
    good = kit.sign({"alg": "RS256", "kid": "rsa-1"}, kit.claims(), keys.rsa)
    idp.token_script = [tokens_with(good, id_token(keys, kit, **overrides))]
    storage = kit.DictStorage()
    with pytest.raises(TokenRejectedError) as info:
        await device_login(
            client_for(idp, fake_time), kit.make_validator(jwks_server), storage, show=print
        )
    assert info.value.reason == reason
    line = info.value.user_line()
    assert line.startswith(f"authentication error: ID token rejected ({reason}): ")
    assert " — fix: log in again" in line
    assert "\n" not in line
    assert storage.tokens == {}


@pytest.mark.parametrize("case", list(HOSTILE_ID_TOKENS))
async def test_a_refresh_whose_id_token_is_refused_is_not_taken(
    idp, jwks_server, keys, kit, case
) -> None:
    """OpenID Connect Core 12.2: the same checks at a refresh; a refused one fails the
    refresh (the provider then discards the new tokens, as for a refused access token)."""
    overrides, reason = HOSTILE_ID_TOKENS[case]
    good = kit.sign({"alg": "RS256", "kid": "rsa-1"}, kit.claims(), keys.rsa)
    idp.token_script = [tokens_with(good, id_token(keys, kit, **overrides))]
    current = StoredToken(
        issuer=kit.ISSUER, access_token="at-1", refresh_token="rt-1", expires_at=datetime.now(UTC)
    )
    with pytest.raises(TokenRejectedError) as info:
        await refresh_and_validate(
            current,
            kit.make_validator(jwks_server),
            token_endpoint=f"{idp.base}/token",
            client_id="mcp-acp-cli",
            resource="urn:mcp-acp:proxy",
            timeout=2.0,
        )
    assert info.value.reason == reason
    assert info.value.message.startswith(f"ID token rejected ({reason}): ")


async def test_a_valid_id_token_is_stored_with_the_tokens(
    idp, fake_time, jwks_server, keys, kit
) -> None:
    good = kit.sign({"alg": "RS256", "kid": "rsa-1"}, kit.claims(), keys.rsa)
    valid = id_token(keys, kit, azp=kit.DROP)  # azp is optional for a single audience
    idp.token_script = [tokens_with(good, valid)]
    storage = kit.DictStorage()
    await device_login(
        client_for(idp, fake_time), kit.make_validator(jwks_server), storage, show=print
    )
    assert storage.tokens[kit.ISSUER].id_token == valid


async def test_an_id_token_whose_key_is_not_fetched_yet_is_left_out_of_the_kept_set(
    idp, jwks_server, keys, kit
) -> None:
    """A refreshed ID token signed with a key the JWKS does not have yet (a rotation within
    the refetch cooldown) cannot be checked now, nor later: the spent refresh token's
    successors are kept unvalidated, as for such an access token, and the ID token is
    not among them."""
    good = kit.sign({"alg": "RS256", "kid": "rsa-1"}, kit.claims(), keys.rsa)
    rotated = id_token(keys, kit, signer="rsa2", kid="rotated")
    idp.token_script = [tokens_with(good, rotated)]
    current = StoredToken(
        issuer=kit.ISSUER,
        access_token="at-1",
        refresh_token="rt-1",
        id_token="id-1",
        expires_at=datetime.now(UTC),
    )
    with pytest.raises(UnvalidatedRefreshError) as info:
        await refresh_and_validate(
            current,
            kit.make_validator(jwks_server),
            token_endpoint=f"{idp.base}/token",
            client_id="mcp-acp-cli",
            resource="urn:mcp-acp:proxy",
            timeout=2.0,
        )
    assert info.value.reason == "no_key"
    kept = info.value.unvalidated
    assert (kept.access_token, kept.refresh_token, kept.id_token) == (good, "rt-2", None)


@pytest.mark.parametrize("expires_in", [1e300, -1e300, 10**30])
async def test_a_refresh_with_an_expires_in_beyond_any_date_is_refused_not_an_overflow(
    idp, jwks_server, keys, kit, expires_in
) -> None:
    """The new access token is signed with a key not fetched yet (no_key), so the tokens
    would be kept unvalidated, their expiry taken from expires_in: one no date can hold
    is a clean refusal (bad_claim, which the provider reports as a failed refresh), not an
    OverflowError out of the identity provider."""
    rotated = kit.sign({"alg": "RS256", "kid": "rotated"}, kit.claims(), keys.rsa2)
    body = {
        "access_token": rotated,
        "token_type": "Bearer",
        "refresh_token": "rt-2",
        "expires_in": expires_in,
    }
    idp.token_script = [("json", 200, body)]
    current = StoredToken(
        issuer=kit.ISSUER,
        access_token="at-1",
        refresh_token="rt-1",
        expires_at=datetime.now(UTC),
    )
    with pytest.raises(TokenRejectedError) as info:
        await refresh_and_validate(
            current,
            kit.make_validator(jwks_server),
            token_endpoint=f"{idp.base}/token",
            client_id="mcp-acp-cli",
            resource="urn:mcp-acp:proxy",
            timeout=2.0,
        )
    assert info.value.reason == "bad_claim"
    assert "expires_in" in info.value.detail


@pytest.mark.parametrize("part", ["body", "headers"])
async def test_trickling_device_endpoint_is_cut_off_at_the_timeout(
    fake_time, trickle_server, part
) -> None:
    """A device authorization endpoint sending one byte every 0.5 s: ``unreachable``
    after the 1 s timeout (the 10 s bound only proves it does not hang)."""
    server = trickle_server(part)
    client = DeviceFlowClient(
        device_authorization_endpoint=f"{server.base}/device",
        token_endpoint=f"{server.base}/token",
        client_id="c",
        scope="openid",
        resource="urn:x",
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        timeout=1.0,
    )
    with pytest.raises(DeviceFlowError, match="within 1 s") as info:
        await asyncio.wait_for(client.start(), 10)
    assert info.value.error == "unreachable"


async def test_trickling_token_endpoint_polls_back_off_until_expiry(
    idp, fake_time, trickle_server
) -> None:
    """Each poll of a trickling token endpoint ends at the timeout and counts as a failed
    poll (back off, go on); the flow ends at the local expiry instead of hanging."""
    server = trickle_server()
    idp.device_response["expires_in"] = 12
    client = client_for(idp, fake_time, token_endpoint=f"{server.base}/token", timeout=1.0)
    authorization = await client.start()
    with pytest.raises(DeviceFlowError) as info:
        await asyncio.wait_for(client.poll(authorization), 10)
    assert info.value.error == "local_timeout"
    assert server.requests == 1
    assert fake_time.waits == [5.0]  # then 10 s, which would pass the expiry
