"""The ``oidc`` identity provider: registration through the plugin loader, its config,
the ``auth`` commands, and the per-request subject (with refresh) against the real
oidc-provider on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
from mcp_acp_oidc import LogoutResult, OIDCConfig, OIDCIdentityProvider
from mcp_acp_oidc.device import DeviceAuthorization
from mcp_acp_oidc.errors import RefreshError, TokenStorageError
from mcp_acp_oidc.refresh import refresh
from pydantic import ValidationError

from mcp_acp.audit.events import AuthEvent
from mcp_acp.errors import AuditError, AuthenticationError
from mcp_acp.models import Provenance, StoredToken
from mcp_acp.plugins import load_plugins
from mcp_acp.registry import Kind
from mcp_acp.tokens.encrypted_file import EncryptedFileStorage

AUDIENCE = "urn:mcp-acp:proxy"


def options(issuer: str, **extra: Any) -> OIDCConfig:
    return OIDCConfig(
        issuer=issuer,
        client_id="mcp-acp-cli",
        audience=AUDIENCE,
        scope="openid offline_access email mcp:tools",
        token_type="at+jwt",  # noqa: S106 - a JOSE typ, not a secret
        **extra,
    )


def test_registered_through_the_loader() -> None:
    plugins = load_plugins({"oidc"})
    registration = plugins.registry.get(Kind.IDENTITY_PROVIDER, "oidc")
    assert registration is not None
    assert registration.plugin == "oidc"
    assert registration.config_model is OIDCConfig


@pytest.mark.parametrize(
    "bad",
    [
        {"issuer": "http://idp.example.test"},
        {"issuer": "javascript:alert(1)"},
        {"algorithms": ["HS256"]},
        {"algorithms": ["none"]},
        {"unknown_option": 1},
        {"client_id": ""},
        {"client_ids": []},  # would accept tokens issued to any client
        {"jwks_cache_seconds": 10, "jwks_refetch_cooldown_seconds": 30},
        {"validation_cache_seconds": 61},
        {"validation_cache_seconds": -1},
        {"audience": "https://proxy.example.test/mcp#fragment"},
        {"audience": "HTTPS://proxy.example.test/mcp"},
        {"audience": "https://Proxy.Example.TEST/mcp"},
    ],
)
def test_bad_config_is_refused(bad: dict[str, Any]) -> None:
    base = {"issuer": "https://idp.example.test", "client_id": "c", "audience": AUDIENCE}
    with pytest.raises(ValidationError):
        OIDCConfig.model_validate({**base, **bad})


@pytest.mark.parametrize(
    "audience", ["https://proxy.example.test/MCP", "https://u@proxy.example.test:8443/x", "mcp"]
)
def test_canonical_or_plain_audiences_are_taken_as_written(audience: str) -> None:
    """Only the scheme and host must be in lower case; a path keeps its case, and an
    audience that is not a URL (some providers name an API so) is taken as it is."""
    base = {"issuer": "https://idp.example.test", "client_id": "c"}
    assert OIDCConfig.model_validate({**base, "audience": audience}).audience == audience


def _config_file(tmp_path: Path, issuer: str) -> Path:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "backend": {"command": sys.executable, "args": ["-c", "pass"]},
                "plugins": {"allow": ["oidc"]},
                "identity": {
                    "use": "oidc",
                    "config": {"issuer": issuer, "client_id": "c", "audience": AUDIENCE},
                },
                "audit": {"log_dir": str(tmp_path / "logs")},
            }
        )
    )
    path.chmod(0o600)
    return path


def test_auth_command_needs_a_token_storage(tmp_path: Path) -> None:
    config = _config_file(tmp_path, "https://idp.example.test")
    env = {**os.environ, "MCP_ACP_CONFIG": str(config)}
    env.pop("MCP_ACP_PLUGINS", None)
    result = subprocess.run(
        [sys.executable, "-m", "mcp_acp", "auth", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 10, result.stderr
    assert "needs a token_storage section" in result.stderr


@pytest.fixture
def storage(kit: Any) -> Any:
    return kit.DictStorage()


async def _login(provider: OIDCIdentityProvider, approve: Any) -> None:
    def show(authorization: DeviceAuthorization) -> None:
        asyncio.get_running_loop().create_task(asyncio.to_thread(approve, authorization))

    subject = await provider.login(show)
    assert subject.subject_id == "alice"


async def fast_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds / 50)


async def test_not_logged_in_is_denied(oidc_provider: str, storage: Any) -> None:
    provider = OIDCIdentityProvider(options(oidc_provider), storage)
    with pytest.raises(AuthenticationError, match="not logged in"):
        await provider.current_subject()


async def test_login_subject_refresh_logout(oidc_provider: str, storage: Any, approve: Any) -> None:
    offset = 0.0
    provider = OIDCIdentityProvider(
        options(oidc_provider), storage, clock=lambda: time.time() + offset, sleep=fast_sleep
    )
    await _login(provider, approve)
    subject = await provider.current_subject()
    assert subject.subject_id == "alice"
    assert subject.provenance is Provenance.TOKEN
    first = storage.tokens[oidc_provider]
    assert storage.saves == 1

    # many concurrent requests shortly before expiry: one refresh, rotated and stored
    offset = 260.0  # the access token lives 300 s; the refresh margin is 60 s
    subjects = await asyncio.gather(*(provider.current_subject() for _ in range(20)))
    assert {s.subject_id for s in subjects} == {"alice"}
    assert storage.saves == 2
    second = storage.tokens[oidc_provider]
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token

    status = await provider.status()
    assert status["logged_in"] is True
    assert status["subject"] == "alice"
    assert second.access_token not in json.dumps(status, default=str)

    assert await provider.logout() == LogoutResult(had_token=True, warning=None)
    assert storage.tokens == {}
    with pytest.raises(AuthenticationError, match="not logged in"):
        await provider.current_subject()
    assert await provider.logout() == LogoutResult(had_token=False)
    # revoked at the provider, not only deleted here
    metadata, _ = await provider._ready()
    assert second.refresh_token is not None
    with pytest.raises(RefreshError) as info:
        await refresh(
            token_endpoint=metadata.token_endpoint,
            client_id="mcp-acp-cli",
            refresh_token=second.refresh_token,
            resource=AUDIENCE,
        )
    assert info.value.error == "invalid_grant"


async def test_refreshes_reuse_one_tls_context(
    oidc_provider: str, storage: Any, approve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request to the IdP goes through one TLS context. A new HTTP client per
    refresh loaded the CA bundle into a new context each time, kept alive by reference
    cycles until a garbage collection: the soak saw RSS climb ~1 MB a refresh."""
    offset = 0.0
    provider = OIDCIdentityProvider(
        options(oidc_provider, refresh_retry_seconds=0),
        storage,
        clock=lambda: time.time() + offset,
        sleep=fast_sleep,
    )
    await _login(provider, approve)
    assert (await provider.current_subject()).subject_id == "alice"  # discovery, JWKS
    offset = 260.0  # every token is due from now on (it lives 300 s, the margin is 60 s)
    made: list[ssl.SSLContext] = []
    original = ssl.SSLContext.__new__

    def counted(cls: type[ssl.SSLContext], *args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = original(cls, *args, **kwargs)
        made.append(context)
        return context

    monkeypatch.setattr(ssl.SSLContext, "__new__", counted)
    for _ in range(4):  # each request refreshes
        assert (await provider.current_subject()).subject_id == "alice"
    assert storage.saves == 5  # the login and four refreshes
    assert await provider.logout() == LogoutResult(had_token=True, warning=None)  # revokes
    assert made == []


async def test_failed_refresh_denies_after_expiry_without_retry_loop(
    oidc_provider: str, storage: Any, approve: Any
) -> None:
    offset = 0.0
    provider = OIDCIdentityProvider(
        options(oidc_provider), storage, clock=lambda: time.time() + offset, sleep=fast_sleep
    )
    await _login(provider, approve)
    held = storage.tokens[oidc_provider]
    spent = StoredToken(
        issuer=held.issuer,
        access_token=held.access_token,
        expires_at=held.expires_at,
        refresh_token="not-a-valid-refresh-token",  # noqa: S106 - a fake
    )
    storage.tokens[oidc_provider] = spent
    provider._token = None  # as after a restart: read the store again
    offset = 260.0  # refresh due, access token still valid: the request is served
    assert (await provider.current_subject()).subject_id == "alice"
    assert oidc_provider not in storage.tokens  # invalid_grant: the spent token is gone
    offset = 400.0  # now expired, and nothing to refresh with: deny
    with pytest.raises(AuthenticationError):
        await provider.current_subject()


async def test_token_endpoint_down_serves_until_expiry_then_denies_without_loop(
    oidc_provider: str, storage: Any, approve: Any, jwks_server: Any
) -> None:
    offset = 0.0
    provider = OIDCIdentityProvider(
        options(oidc_provider, audience_parameter="https://api.example.test"),
        storage,
        clock=lambda: time.time() + offset,
        sleep=fast_sleep,
    )
    await _login(provider, approve)
    metadata, _ = await provider._ready()
    # from now on the token endpoint answers 503 (a recording server on loopback)
    provider._metadata = attrs.evolve(metadata, token_endpoint=f"{jwks_server.base}/token")
    offset = 260.0
    subjects = await asyncio.gather(*(provider.current_subject() for _ in range(20)))
    assert {s.subject_id for s in subjects} == {"alice"}
    for _ in range(20):
        await provider.current_subject()
    assert jwks_server.state.hits["/token"] == 1  # one attempt, no retry loop
    ((_, body),) = jwks_server.state.posts
    form = dict(pair.split("=", 1) for pair in body.split("&"))
    assert form["grant_type"] == "refresh_token"
    assert form["resource"] == "urn%3Amcp-acp%3Aproxy"  # RFC 8707 on refresh too (MCP-7)
    assert form["audience"] == "https%3A%2F%2Fapi.example.test"
    offset = 400.0  # expired: deny
    for _ in range(5):
        with pytest.raises(AuthenticationError, match="expired"):
            await provider.current_subject()
    assert jwks_server.state.hits["/token"] == 1
    assert oidc_provider in storage.tokens  # a provider outage does not delete the login


async def test_two_processes_sharing_a_store_refresh_once(
    oidc_provider: str, storage: Any, approve: Any
) -> None:
    first = OIDCIdentityProvider(
        options(oidc_provider), storage, clock=lambda: time.time() + 260, sleep=fast_sleep
    )
    second = OIDCIdentityProvider(options(oidc_provider), storage)
    await _login(first, approve)  # first's clock is 260 s ahead: its token is due
    login_token = storage.tokens[oidc_provider]
    await first.current_subject()  # refreshes and stores the rotated tokens
    assert storage.saves == 2
    refreshed = storage.tokens[oidc_provider]
    assert refreshed.refresh_token != login_token.refresh_token
    # the second process still holds the login tokens, now due for refresh: it adopts
    # the stored ones instead of spending the replaced refresh token
    second._token = attrs.evolve(login_token, expires_at=datetime.now(UTC))
    assert (await second.current_subject()).subject_id == "alice"
    assert storage.saves == 2
    assert second._token is refreshed


async def test_logout_elsewhere_is_noticed_at_refresh(
    oidc_provider: str, storage: Any, approve: Any
) -> None:
    offset = 0.0
    provider = OIDCIdentityProvider(
        options(oidc_provider), storage, clock=lambda: time.time() + offset, sleep=fast_sleep
    )
    await _login(provider, approve)
    await provider.current_subject()
    storage.tokens.clear()  # 'mcp-acp auth logout' in another process
    offset = 260.0
    with pytest.raises(AuthenticationError, match="logged out"):
        await provider.current_subject()


async def test_logout_and_login_wait_for_a_refresh_in_flight_elsewhere(
    oidc_provider: str, storage: Any, approve: Any, tmp_path: Path
) -> None:
    # Another process (a running proxy) is mid-refresh: it holds the refresh lock and
    # will store its new tokens. A logout (or login) that went ahead would be undone by
    # that store; under the lock it comes after it.
    from filelock import FileLock

    lock_path = tmp_path / "locks" / "refresh.lock"
    provider = OIDCIdentityProvider(
        options(oidc_provider), storage, lock_path=lock_path, sleep=fast_sleep
    )
    await _login(provider, approve)
    held = storage.tokens[oidc_provider]
    marker = f"refreshed-{os.getpid()}"
    lock_path.parent.mkdir(mode=0o700, exist_ok=True)
    elsewhere = FileLock(lock_path, mode=0o600)

    async def while_refreshing_elsewhere(task: asyncio.Task[Any]) -> None:
        for _ in range(100):  # give the task time to finish if it does not wait
            if task.done():
                break
            await asyncio.sleep(0.05)
        storage.save(attrs.evolve(held, access_token=marker))  # the other process stores
        elsewhere.release()
        await asyncio.wait_for(task, 30)

    elsewhere.acquire()
    await while_refreshing_elsewhere(asyncio.create_task(provider.logout()))
    assert storage.tokens == {}  # the refreshed tokens went too

    elsewhere.acquire()
    await while_refreshing_elsewhere(asyncio.create_task(_login(provider, approve)))
    assert storage.tokens[oidc_provider].access_token != marker  # the login came last


async def test_a_login_elsewhere_is_found_when_the_held_token_expired_unrefreshable(
    oidc_provider: str, storage: Any, approve: Any
) -> None:
    provider = OIDCIdentityProvider(options(oidc_provider), storage, sleep=fast_sleep)
    await _login(provider, approve)
    dead = attrs.evolve(
        storage.tokens[oidc_provider],
        access_token=f"expired.{os.getpid()}.gone",
        refresh_token=None,  # no offline_access: nothing can refresh it
        expires_at=datetime.fromtimestamp(time.time() - 5, UTC),
    )
    storage.tokens[oidc_provider] = dead
    with pytest.raises(AuthenticationError):
        await provider.current_subject()
    other = OIDCIdentityProvider(options(oidc_provider), storage, sleep=fast_sleep)
    await _login(other, approve)  # 'mcp-acp auth login' in another terminal
    await asyncio.sleep(1.1)  # at most one look at the store a second
    assert (await provider.current_subject()).subject_id == "alice"


async def test_validated_identity_reused_only_briefly_and_never_past_exp(
    oidc_provider: str, storage: Any, approve: Any
) -> None:
    offset = 0.0
    cached = OIDCIdentityProvider(
        options(oidc_provider, validation_cache_seconds=60, refresh_margin_seconds=0),
        storage,
        clock=lambda: time.time() + offset,
        sleep=fast_sleep,
    )
    await _login(cached, approve)
    one = await cached.current_subject()
    assert await cached.current_subject() is one  # reused, not validated again

    every = OIDCIdentityProvider(options(oidc_provider), storage)
    assert await every.current_subject() is not await every.current_subject()  # default 0

    # another token (a login elsewhere, read after a restart): validated afresh
    cached._token = None
    held = storage.tokens[oidc_provider]
    storage.tokens[oidc_provider] = attrs.evolve(held, access_token=held.access_token + "x")
    with pytest.raises(AuthenticationError, match="rejected"):
        await cached.current_subject()
    storage.tokens[oidc_provider] = held
    cached._token = None
    assert (await cached.current_subject()).subject_id == "alice"

    offset = 400.0  # past exp, well inside the 60 s of reuse: validated again, and refused
    with pytest.raises(AuthenticationError, match="expired"):
        await cached.current_subject()


async def test_auth_events_record_each_change_once(
    oidc_provider: str, storage: Any, approve: Any
) -> None:
    events: list[AuthEvent] = []

    async def record(event: AuthEvent) -> None:
        events.append(event)

    offset = 0.0
    provider = OIDCIdentityProvider(
        options(oidc_provider),
        storage,
        record_auth=record,
        clock=lambda: time.time() + offset,
        sleep=fast_sleep,
    )
    for _ in range(3):
        with pytest.raises(AuthenticationError, match="not logged in"):
            await provider.current_subject()
    await _login(provider, approve)
    for _ in range(3):
        await provider.current_subject()
    offset = 260.0  # due: refreshed, and the new token validated
    await provider.current_subject()
    await provider.current_subject()
    assert [(e.event, e.reason) for e in events] == [
        ("token_invalid", "not_logged_in"),
        ("token_validated", None),
        ("token_refreshed", "rotated"),
        ("token_validated", None),
    ]
    assert {e.issuer for e in events} == {oidc_provider}
    assert events[1].subject_id == "alice"
    assert events[1].detail is not None
    assert "expires_at" in events[1].detail
    tokens = storage.tokens[oidc_provider]
    dumped = json.dumps([e.model_dump(mode="json") for e in events])
    assert tokens.access_token not in dumped
    assert tokens.refresh_token not in dumped

    # a spent refresh token: the failure is recorded with the provider's error code
    storage.tokens[oidc_provider] = attrs.evolve(
        tokens,
        refresh_token="spent",  # noqa: S106 - a fake
        expires_at=datetime.now(UTC),
    )
    provider._token = None
    provider._refresh_attempted_at = None
    offset = 0.0
    await provider.current_subject()  # still valid for a moment: served
    assert (events[-1].event, events[-1].reason) == ("token_refresh_failed", "invalid_grant")


@attrs.define
class _Recorded:
    """A provider on an encrypted token file, its auth events recorded, its clock ``offset``
    seconds ahead of the real one."""

    provider: OIDCIdentityProvider
    storage: EncryptedFileStorage
    events: list[AuthEvent]
    offset: float = 0.0


def _recorded(issuer: str, tmp_path: Path, **extra: Any) -> _Recorded:
    events: list[AuthEvent] = []

    async def record(event: AuthEvent) -> None:
        events.append(event)

    storage = EncryptedFileStorage(tmp_path / "tokens", key_file=tmp_path / "key")
    provider = OIDCIdentityProvider(
        options(issuer, **extra),
        storage,
        record_auth=record,
        clock=lambda: time.time() + recorded.offset,
        sleep=fast_sleep,
    )
    recorded = _Recorded(provider, storage, events)
    return recorded


async def _the_grant_lives(run: _Recorded, issuer: str, *spent: StoredToken) -> None:
    """The next refresh presents the kept refresh token and is rotated: the grant lives;
    no token reached the auth events."""
    run.offset = 260.0
    assert (await run.provider.current_subject()).subject_id == "alice"
    later = run.storage.load(issuer)
    assert later is not None
    assert later.refresh_token not in [token.refresh_token for token in spent]
    assert ("token_refreshed", "rotated") in [(e.event, e.reason) for e in run.events[-3:]]
    dumped = json.dumps([e.model_dump(mode="json") for e in run.events])
    for token in (*spent, later):
        assert token.access_token not in dumped
        assert token.refresh_token is not None
        assert token.refresh_token not in dumped


async def test_a_refresh_while_the_keys_are_unavailable_keeps_the_rotated_grant(
    oidc_provider: str, approve: Any, tmp_path: Path
) -> None:
    # The refresh succeeds at the provider (the old refresh token is spent) while its
    # /jwks is down, so the new access token cannot be validated. The new tokens are kept,
    # untrusted: that request is denied, and once the keys are back the next request is
    # served on them — no new login — and a later refresh still works.
    import local_idp

    # keys never cached: each validation fetches them, so an outage is felt at once;
    # a refresh may follow a failed one at once
    run = _recorded(
        oidc_provider,
        tmp_path,
        jwks_cache_seconds=0,
        jwks_refetch_cooldown_seconds=0,
        refresh_retry_seconds=0,
    )
    events = run.events
    await _login(run.provider, approve)
    login = run.storage.load(oidc_provider)
    assert login is not None
    assert (await run.provider.current_subject()).subject_id == "alice"

    run.offset = 260.0  # due for refresh
    with (
        local_idp.jwks_down(oidc_provider),
        pytest.raises(AuthenticationError, match="jwks_unavailable"),
    ):
        await run.provider.current_subject()  # fail closed: no keys, no identity
    kept = run.storage.load(oidc_provider)
    assert kept is not None
    assert kept.refresh_token != login.refresh_token  # the rotated one, not lost
    assert kept.access_token != login.access_token
    assert (events[-2].event, events[-2].reason) == ("token_refresh_failed", "jwks_unavailable")
    assert (events[-1].event, events[-1].reason) == ("token_invalid", "jwks_unavailable")
    validated = sum(e.event == "token_validated" for e in events)

    run.offset = 0.0  # the keys are back: served on the kept tokens, validated first
    assert (await run.provider.current_subject()).subject_id == "alice"
    assert run.storage.load(oidc_provider) == kept  # no new login, no other refresh
    assert events[-1].event == "token_validated"
    assert sum(e.event == "token_validated" for e in events) == validated + 1
    await _the_grant_lives(run, oidc_provider, login, kept)


async def test_a_refresh_signed_with_a_key_not_yet_fetched_keeps_the_rotated_grant(
    oidc_provider: str, approve: Any, tmp_path: Path
) -> None:
    # The IdP rotates its signing key; a refresh comes back signed with the new key while
    # the refetch cooldown forbids fetching the key set again, so the new access token has
    # no key here (no_key). The old refresh token is spent: the new tokens are kept,
    # untrusted, as during a JWKS outage — not thrown away with the grant. The request
    # that refreshed is served on the old access token, still valid; the next one finds
    # only the kept token, which cannot be validated yet: denied. Once the cooldown has
    # passed the keys are fetched again and the kept token is served.
    import local_idp

    cooldown = 3.0
    run = _recorded(
        oidc_provider, tmp_path, jwks_refetch_cooldown_seconds=cooldown, refresh_retry_seconds=0
    )
    events = run.events
    await _login(run.provider, approve)
    assert (await run.provider.current_subject()).subject_id == "alice"
    fetched = time.monotonic()  # the key set was fetched (at the latest) by now
    login = run.storage.load(oidc_provider)
    assert login is not None

    with local_idp.keys_rotated(oidc_provider):
        run.offset = 260.0  # due for refresh; the old access token lives 40 s more
        assert (await run.provider.current_subject()).subject_id == "alice"
        assert (events[-1].event, events[-1].reason) == ("token_refresh_failed", "no_key")
        kept = run.storage.load(oidc_provider)
        assert kept is not None
        assert kept.refresh_token != login.refresh_token  # the rotated one, not lost
        assert kept.access_token != login.access_token
        run.offset = 0.0  # (the kept token is not due for refresh)
        with pytest.raises(AuthenticationError, match="no_key"):
            await run.provider.current_subject()  # the kept token is not trusted unvalidated
        assert (events[-1].event, events[-1].reason) == ("token_invalid", "no_key")
        assert time.monotonic() - fetched < cooldown, "too slow: the keys were fetched again"

        await asyncio.sleep(cooldown - (time.monotonic() - fetched) + 0.1)
        # the keys may be fetched again: the kept token is served
        assert (await run.provider.current_subject()).subject_id == "alice"
        assert run.storage.load(oidc_provider) == kept  # no new login, no other refresh
        assert events[-1].event == "token_validated"
        await _the_grant_lives(run, oidc_provider, login, kept)


async def test_an_auth_event_the_trail_cannot_take_denies_the_request(
    oidc_provider: str, storage: Any, approve: Any
) -> None:
    async def broken(event: AuthEvent) -> None:
        raise AuditError("audit trail unwritable")

    provider = OIDCIdentityProvider(options(oidc_provider), storage, sleep=fast_sleep)
    await _login(provider, approve)
    failing = OIDCIdentityProvider(options(oidc_provider), storage, record_auth=broken)
    with pytest.raises(AuditError):
        await failing.current_subject()


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Every write of this process to a file past ``limit`` bytes fails with EFBIG, as on
    a full disk (RLIMIT_FSIZE holds for root too, unlike a read-only directory)."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


async def test_refreshed_tokens_that_cannot_be_saved_deny_with_an_identity_error(
    oidc_provider: str, approve: Any, tmp_path: Path
) -> None:
    """The real encrypted-file storage on a "full disk": the refresh succeeds at the
    provider, saving its result fails — an AuthenticationError naming the storage and the
    fix (so the proxy denies with builtin-no-identity), never the OSError."""
    events: list[AuthEvent] = []

    async def record(event: AuthEvent) -> None:
        events.append(event)

    storage = EncryptedFileStorage(tmp_path / "tokens", key_file=tmp_path / "token-storage.key")
    offset = 0.0
    provider = OIDCIdentityProvider(
        options(oidc_provider),
        storage,
        lock_path=tmp_path / "locks" / "refresh.lock",
        record_auth=record,
        clock=lambda: time.time() + offset,
        sleep=fast_sleep,
    )
    await _login(provider, approve)
    await provider.current_subject()
    path = storage.path_for(oidc_provider)
    before = path.read_bytes()

    offset = 260.0  # due for refresh, still valid
    with file_size_limit(0), pytest.raises(AuthenticationError) as info:
        await provider.current_subject()
    assert isinstance(info.value, TokenStorageError)
    assert info.value.action == "save"
    line = info.value.user_line()
    efbig = f"(OSError: [Errno {errno.EFBIG}] {os.strerror(errno.EFBIG)}"
    assert f"could not save the tokens {efbig}" in line
    assert storage.description in line
    assert "fix: " in line
    assert "mcp-acp auth login" in line
    assert path.read_bytes() == before  # the write is atomic: the old record is intact
    assert (events[-1].event, events[-1].reason) == ("token_invalid", "storage_error")

    # no refresh again within refresh_retry_seconds: the held, still valid token serves
    assert (await provider.current_subject()).subject_id == "alice"


async def test_a_login_that_cannot_be_saved_is_an_identity_error(
    oidc_provider: str, approve: Any, tmp_path: Path
) -> None:
    """``auth login`` onto a "full disk": a TokenStorageError (exit 14 and its one line),
    not an OSError (which the CLI can only call an internal error)."""
    storage = EncryptedFileStorage(tmp_path / "tokens", key_file=tmp_path / "token-storage.key")
    provider = OIDCIdentityProvider(options(oidc_provider), storage, sleep=fast_sleep)
    with file_size_limit(0), pytest.raises(TokenStorageError, match="could not save"):
        await _login(provider, approve)
    assert storage.load(oidc_provider) is None


# --- a token endpoint that trickles its answer: bounded, and no queue behind it -----------


@pytest.mark.parametrize("part", ["body", "headers"])
async def test_refresh_against_a_trickling_token_endpoint_ends_at_the_timeout(
    trickle_server: Any, part: str
) -> None:
    """One byte every 0.5 s never trips httpx's per-read timeout; the overall deadline
    does (the 10 s bound only proves the call does not hang)."""
    server = trickle_server(part)
    with pytest.raises(RefreshError, match="within 1 s") as info:
        await asyncio.wait_for(
            refresh(
                token_endpoint=f"{server.base}/token",
                client_id="c",
                refresh_token="rt",  # noqa: S106 - a fake
                resource="urn:x",
                timeout=1.0,
            ),
            10,
        )
    assert info.value.error == "unreachable"


async def _trickling_token_endpoint(provider: OIDCIdentityProvider, server: Any) -> None:
    metadata, _ = await provider._ready()
    provider._metadata = attrs.evolve(metadata, token_endpoint=f"{server.base}/token")


async def test_trickling_token_endpoint_serves_until_expiry_then_denies(
    oidc_provider: str, storage: Any, approve: Any, trickle_server: Any
) -> None:
    """With ``http_timeout_seconds=1`` a refresh against a trickling token endpoint fails
    after about a second: the request is served while the access token is valid, and
    denied once it has expired — each within the 10 s that proves nothing hangs."""
    events: list[AuthEvent] = []

    async def record(event: AuthEvent) -> None:
        events.append(event)

    offset = 0.0
    provider = OIDCIdentityProvider(
        options(oidc_provider, http_timeout_seconds=1, refresh_retry_seconds=0),
        storage,
        record_auth=record,
        clock=lambda: time.time() + offset,
        sleep=fast_sleep,
    )
    await _login(provider, approve)
    server = trickle_server()
    await _trickling_token_endpoint(provider, server)
    offset = 260.0  # due, still valid
    assert (await asyncio.wait_for(provider.current_subject(), 10)).subject_id == "alice"
    assert server.requests == 1
    assert ("token_refresh_failed", "unreachable") in [(e.event, e.reason) for e in events]
    offset = 400.0  # expired: the refresh is tried again, fails again, and the request denied
    with pytest.raises(AuthenticationError, match="expired"):
        await asyncio.wait_for(provider.current_subject(), 10)
    assert server.requests == 2
    assert oidc_provider in storage.tokens  # a slow provider does not delete the login


async def test_requests_do_not_queue_behind_a_refresh_in_flight(
    oidc_provider: str, storage: Any, approve: Any, trickle_server: Any
) -> None:
    """While one request waits for a refresh the token endpoint is still trickling, other
    requests with a valid held token are answered (they would otherwise wait the whole
    30 s timeout, and the 10 s bound below would fail them)."""
    offset = 0.0
    provider = OIDCIdentityProvider(
        options(oidc_provider, http_timeout_seconds=30),
        storage,
        clock=lambda: time.time() + offset,
        sleep=fast_sleep,
    )
    await _login(provider, approve)
    server = trickle_server()
    await _trickling_token_endpoint(provider, server)
    offset = 260.0
    first = asyncio.create_task(provider.current_subject())  # starts the refresh
    assert await asyncio.to_thread(server.seen.wait, 10)
    others = await asyncio.wait_for(
        asyncio.gather(*(provider.current_subject() for _ in range(5))), 10
    )
    assert {s.subject_id for s in others} == {"alice"}
    assert not first.done()  # the refresh is still in flight
    server.release()  # the endpoint hangs up: the refresh fails, the held token serves
    assert (await asyncio.wait_for(first, 10)).subject_id == "alice"
    assert server.requests == 1


# --- logout: the stored tokens go, whatever state they are in ----------------------------


def _damage_mode(path: Path) -> None:
    path.chmod(0o644)


def _damage_contents(path: Path) -> None:
    path.write_bytes(b"garbage")


@pytest.mark.parametrize(
    ("damage", "why"),
    [(_damage_mode, "(mode 0644)"), (_damage_contents, "it is damaged")],
)
async def test_logout_deletes_a_token_record_the_storage_refuses(
    tmp_path: Path, damage: Any, why: str
) -> None:
    """A token file the encrypted-file storage refuses (open to others, or garbage):
    nothing can be revoked, the file is deleted anyway, and the warning says both."""
    storage = EncryptedFileStorage(tmp_path / "tokens", key_file=tmp_path / "token-storage.key")
    issuer = "http://127.0.0.1:9"  # never contacted: there is no token to revoke
    storage.save(
        StoredToken(
            issuer=issuer,
            access_token="at",  # noqa: S106 - a fake
            refresh_token="rt",  # noqa: S106 - a fake
            expires_at=datetime.now(UTC),
        )
    )
    path = storage.path_for(issuer)
    damage(path)
    with pytest.raises(AuthenticationError):
        storage.load(issuer)  # the storage does refuse it
    provider = OIDCIdentityProvider(
        OIDCConfig(issuer=issuer, client_id="c", audience=AUDIENCE), storage
    )
    result = await asyncio.wait_for(provider.logout(), 10)
    assert not path.exists()
    assert result.had_token is True
    assert result.warning is not None
    assert result.warning.startswith(
        "cannot revoke the refresh token: the stored token could not be read ("
    )
    assert why in result.warning
    assert result.warning.endswith("; the tokens were deleted")
    assert "\n" not in result.warning
    assert storage.load(issuer) is None


async def test_logout_with_a_trickling_revocation_endpoint_deletes_within_the_timeout(
    oidc_provider: str, storage: Any, approve: Any, trickle_server: Any
) -> None:
    provider = OIDCIdentityProvider(
        options(oidc_provider, http_timeout_seconds=1), storage, sleep=fast_sleep
    )
    await _login(provider, approve)
    server = trickle_server("headers")  # logout reads the status only, never the body
    metadata, _ = await provider._ready()
    provider._metadata = attrs.evolve(metadata, revocation_endpoint=f"{server.base}/revoke")
    result = await asyncio.wait_for(provider.logout(), 10)
    assert result.had_token is True
    assert result.warning == (
        f"cannot revoke the refresh token: no complete answer from {server.base}/revoke "
        "within 1 s; the tokens were deleted"
    )
    assert storage.tokens == {}
    assert server.requests == 1
