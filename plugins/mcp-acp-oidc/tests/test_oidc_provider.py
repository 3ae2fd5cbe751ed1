"""End to end against a real OpenID Provider (npm ``oidc-provider``) on 127.0.0.1:
discovery, the device flow approved headlessly through its interaction pages, validation of
its RFC 9068 access tokens, refresh-token rotation, and a denial."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mcp_acp_oidc.device import DeviceAuthorization, DeviceFlowClient
from mcp_acp_oidc.discovery import ProviderMetadata, discover
from mcp_acp_oidc.errors import DeviceFlowError, RefreshError, TokenRejectedError
from mcp_acp_oidc.jwks import JWKSCache
from mcp_acp_oidc.login import device_login
from mcp_acp_oidc.refresh import refresh_and_validate
from mcp_acp_oidc.validator import TokenValidationConfig, TokenValidator

AUDIENCE = "urn:mcp-acp:proxy"
CLIENT_ID = "mcp-acp-cli"
SCOPE = "openid offline_access email mcp:tools"


async def fast_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds / 50)  # 5 s polls become 0.1 s


@pytest.fixture
async def metadata(oidc_provider: str) -> ProviderMetadata:
    return await discover(oidc_provider)


def make_client(metadata: ProviderMetadata, **options: Any) -> DeviceFlowClient:
    assert metadata.device_authorization_endpoint is not None
    settings: dict[str, Any] = {
        "device_authorization_endpoint": metadata.device_authorization_endpoint,
        "token_endpoint": metadata.token_endpoint,
        "client_id": CLIENT_ID,
        "scope": SCOPE,
        "resource": AUDIENCE,
        "sleep": fast_sleep,
    }
    settings.update(options)
    return DeviceFlowClient(**settings)


def make_validator(metadata: ProviderMetadata) -> TokenValidator:
    config = TokenValidationConfig(
        issuer=metadata.issuer,
        audience=AUDIENCE,
        algorithms=("RS256",),
        token_type="at+jwt",  # noqa: S106 - a JOSE typ, not a secret
        client_ids=(CLIENT_ID,),
    )
    return TokenValidator(config, JWKSCache(metadata.jwks_uri))


async def test_discovery(oidc_provider: str, metadata: ProviderMetadata) -> None:
    assert metadata.issuer == oidc_provider
    assert metadata.jwks_uri == f"{oidc_provider}/jwks"
    assert metadata.device_authorization_endpoint == f"{oidc_provider}/device/auth"


async def test_device_login_refresh_rotation(metadata: ProviderMetadata, kit, approve) -> None:
    storage = kit.DictStorage()
    validator = make_validator(metadata)
    client = make_client(metadata)
    shown: list[DeviceAuthorization] = []
    approved = asyncio.Event()

    def show(authorization: DeviceAuthorization) -> None:
        shown.append(authorization)

        async def approve_later() -> None:
            await asyncio.sleep(0.3)  # let the client see authorization_pending first
            await asyncio.to_thread(approve, authorization)
            approved.set()

        asyncio.get_running_loop().create_task(approve_later())

    subject = await device_login(client, validator, storage, show=show)
    assert approved.is_set()
    assert shown[0].interval == 5.0  # oidc-provider sends no interval: RFC default
    assert subject.subject_id == "alice"
    assert subject.client_id == CLIENT_ID
    assert subject.audience == (AUDIENCE,)
    assert "mcp:tools" in subject.scopes
    first = storage.tokens[metadata.issuer]
    assert first.refresh_token is not None
    assert first.id_token is not None

    # the ID token is not an access token
    with pytest.raises(TokenRejectedError):
        await validator.validate(first.id_token)

    second = await refresh_and_validate(
        first,
        validator,
        token_endpoint=metadata.token_endpoint,
        client_id=CLIENT_ID,
        resource=AUDIENCE,
    )
    assert second.refresh_token is not None
    assert second.refresh_token != first.refresh_token  # rotated
    assert second.access_token != first.access_token
    assert (await validator.validate(second.access_token)).subject_id == "alice"

    # the spent refresh token no longer works
    with pytest.raises(RefreshError) as info:
        await refresh_and_validate(
            first,
            validator,
            token_endpoint=metadata.token_endpoint,
            client_id=CLIENT_ID,
            resource=AUDIENCE,
        )
    assert info.value.error == "invalid_grant"


async def test_denied_login_stores_nothing(metadata: ProviderMetadata, kit, approve) -> None:
    storage = kit.DictStorage()

    def show(authorization: DeviceAuthorization) -> None:
        asyncio.get_running_loop().create_task(asyncio.to_thread(approve, authorization, deny=True))

    with pytest.raises(DeviceFlowError) as info:
        await device_login(make_client(metadata), make_validator(metadata), storage, show=show)
    assert info.value.error == "access_denied"
    assert storage.tokens == {}


async def test_unknown_resource_is_refused_by_the_provider(metadata: ProviderMetadata) -> None:
    with pytest.raises(DeviceFlowError) as info:
        await make_client(metadata, resource="urn:someone-else").start()
    assert info.value.error == "invalid_target"
