"""The OAuth 2.0 Device Authorization Grant (RFC 8628), client side.

:class:`DeviceFlowClient` asks for a device code (:meth:`~DeviceFlowClient.start`), shows
the user code, then polls the token endpoint (:meth:`~DeviceFlowClient.poll`) following
the RFC's rules:

* the poll interval is the server's ``interval``, **5 s** when it is absent, clamped to
  ``[min_interval, max_interval]`` (a hostile ``0``, negative, huge or non-numeric value
  never causes a hot loop or an endless wait);
* ``authorization_pending``: keep polling; ``slow_down``: the interval grows by 5 s for
  this and every later poll;
* ``access_denied``, ``expired_token`` and any other OAuth error end the flow
  (:class:`DeviceFlowError`); no new device request is made automatically;
* polling stops locally once ``expires_in`` (clamped to ``max_expires_in``) has passed,
  even if the server keeps answering ``authorization_pending``;
* connection errors, 5xx answers and answers not complete within ``timeout`` back off
  exponentially (the interval doubles, up to ``max_interval``) and polling continues
  until the local expiry;
* every request, body included, is bounded by ``timeout`` seconds (a server trickling
  its answer cannot hold the client);
* ``resource`` (RFC 8707) and, when configured, ``audience`` are sent on both the device
  request and every token request.

``verification_uri`` and ``verification_uri_complete`` are checked before anything shows
or opens them: ``https`` (``http`` only for loopback test IdPs), no whitespace, quotes
or shell metacharacters (the CVE-2025-6514 pattern), at most 2048 characters.

``sleep`` and ``clock`` are injectable so tests run in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import httpx

from mcp_acp_oidc._http import (
    JSON_HEADERS,
    aread_bounded,
    check_url,
    idp_client,
    idp_tls_context,
    overall_deadline,
    parse_json_object,
)
from mcp_acp_oidc.errors import DeviceFlowError

__all__ = [
    "DEVICE_CODE_GRANT",
    "DeviceAuthorization",
    "DeviceFlowClient",
    "TokenResponse",
    "parse_token_response",
]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0
SLOW_DOWN_STEP = 5.0
_SHELL_META = re.compile(r"[\s\"'`$;&|<>(){}\\^*!\[\]]")
_USER_CODE = re.compile(r"[\x21-\x7e]{1,64}")
MAX_VERIFICATION_URI = 2048


@attrs.frozen(slots=True)
class DeviceAuthorization:
    """The device authorization response, after checks and clamping."""

    device_code: str = attrs.field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


@attrs.frozen(slots=True)
class TokenResponse:
    """A successful token response. ``repr()`` shows no token."""

    access_token: str = attrs.field(repr=False)
    token_type: str
    expires_in: float | None
    refresh_token: str | None = attrs.field(default=None, repr=False)
    id_token: str | None = attrs.field(default=None, repr=False)
    scope: str | None = None


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (not a number, NaN, infinite, or an
    integer beyond float range such as ``10**400``, which ``float()`` cannot convert)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _check_verification_uri(value: Any, name: str) -> str:
    problem = check_url(value, what=name)
    if problem is None and _SHELL_META.search(value):
        problem = f"{name} contains shell metacharacters or quotes"
    if problem is None and len(value) > MAX_VERIFICATION_URI:
        # printed for the user: screens of it would scroll the user code out of sight
        problem = f"{name} is longer than {MAX_VERIFICATION_URI} characters"
    if problem:
        raise DeviceFlowError("bad_response", problem, fix="use a trustworthy identity provider")
    return str(value)


def _optional_str(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise DeviceFlowError("bad_response", f"{name} is not a non-empty string")
    return value


def _scope(document: dict[str, Any]) -> str | None:
    """The granted scopes: a string, which may be empty — the access token carries none of
    those asked for (oidc-provider answers ``"scope": ""`` for a resource whose own scopes
    were not requested: ``openid offline_access`` grant an ID and a refresh token, nothing
    of the API's)."""
    value = document.get("scope")
    if value is not None and not isinstance(value, str):
        raise DeviceFlowError("bad_response", "scope is not a string")
    return value


def parse_token_response(document: dict[str, Any]) -> TokenResponse:
    """Check a successful token endpoint answer (RFC 6749 §5.1)."""
    access_token = document.get("access_token")
    token_type = document.get("token_type")
    if not isinstance(access_token, str) or not access_token:
        raise DeviceFlowError("bad_response", "token response has no access_token")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise DeviceFlowError("bad_response", "token_type is not Bearer")
    return TokenResponse(
        access_token=access_token,
        token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
        expires_in=_number(document.get("expires_in")),
        refresh_token=_optional_str(document, "refresh_token"),
        id_token=_optional_str(document, "id_token"),
        scope=_scope(document),
    )


class DeviceFlowClient:
    """Runs the device authorization grant against one provider for one client."""

    def __init__(
        self,
        *,
        device_authorization_endpoint: str,
        token_endpoint: str,
        client_id: str,
        scope: str,
        resource: str,
        audience: str | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        min_interval: float = 1.0,
        max_interval: float = 60.0,
        max_expires_in: float = 1800.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, url in (
            ("device_authorization_endpoint", device_authorization_endpoint),
            ("token_endpoint", token_endpoint),
        ):
            problem = check_url(url, what=name)
            if problem:
                raise DeviceFlowError("bad_config", problem)
        self.device_authorization_endpoint = device_authorization_endpoint
        self.token_endpoint = token_endpoint
        self.client_id = client_id
        self.scope = scope
        self.resource = resource
        self.audience = audience
        self._http = http
        self._timeout = timeout
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.max_expires_in = max_expires_in
        self._sleep = sleep
        self._clock = clock

    def _extra(self) -> dict[str, str]:
        extra = {"client_id": self.client_id, "resource": self.resource}
        if self.audience is not None:
            extra["audience"] = self.audience
        return extra

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[httpx.AsyncClient]:
        """The injected client, or a new one for the duration of one call."""
        if self._http is not None:
            yield self._http
            return
        async with idp_client(timeout=self._timeout, verify=idp_tls_context()) as client:
            yield client

    async def _post(
        self, client: httpx.AsyncClient, url: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """POST a form; return (status, JSON object). Raises httpx errors, ``ValueError``
        and ``TimeoutError`` (no complete answer within the timeout)."""
        async with (
            overall_deadline(self._timeout),
            client.stream("POST", url, data=form, headers=JSON_HEADERS) as resp,
        ):
            body = await aread_bounded(resp)
            return resp.status_code, parse_json_object(body)

    async def start(self) -> DeviceAuthorization:
        """Request a device code (RFC 8628 §3.1-3.2)."""
        form = {"scope": self.scope, **self._extra()}
        try:
            async with self._session() as client:
                status, document = await self._post(
                    client, self.device_authorization_endpoint, form
                )
        except TimeoutError as exc:
            raise DeviceFlowError(
                "unreachable",
                "no complete answer from the device authorization endpoint within "
                f"{self._timeout:g} s",
            ) from exc
        except httpx.HTTPError as exc:
            raise DeviceFlowError("unreachable", type(exc).__name__) from exc
        except ValueError as exc:
            raise DeviceFlowError("bad_response", str(exc)) from exc
        if status != 200:
            error = document.get("error")
            code = error if isinstance(error, str) and error.isascii() else f"http_{status}"
            raise DeviceFlowError(code[:64], "the provider refused the device request")
        device_code = document.get("device_code")
        user_code = document.get("user_code")
        if not isinstance(device_code, str) or not device_code:
            raise DeviceFlowError("bad_response", "no device_code")
        if not isinstance(user_code, str) or not _USER_CODE.fullmatch(user_code):
            raise DeviceFlowError("bad_response", "user_code is missing or not printable")
        verification_uri = _check_verification_uri(
            document.get("verification_uri"), "verification_uri"
        )
        complete = document.get("verification_uri_complete")
        if complete is not None:
            complete = _check_verification_uri(complete, "verification_uri_complete")
        expires_in = _number(document.get("expires_in"))
        if expires_in is None:
            raise DeviceFlowError("bad_response", "expires_in is missing or not a number")
        interval = _number(document.get("interval"))
        return DeviceAuthorization(
            device_code=device_code,
            user_code=user_code,
            verification_uri=verification_uri,
            verification_uri_complete=complete,
            expires_in=min(max(expires_in, self.min_interval), self.max_expires_in),
            interval=self._clamp(DEFAULT_INTERVAL if interval is None else interval),
        )

    def _clamp(self, interval: float) -> float:
        return min(max(interval, self.min_interval), self.max_interval)

    async def poll(self, authorization: DeviceAuthorization) -> TokenResponse:
        """Poll the token endpoint until a token, a final error, or the local expiry."""
        deadline = self._clock() + authorization.expires_in
        interval = authorization.interval
        wait = interval
        form = {
            "grant_type": DEVICE_CODE_GRANT,
            "device_code": authorization.device_code,
            **self._extra(),
        }
        async with self._session() as client:
            while True:
                if self._clock() + wait > deadline:
                    raise DeviceFlowError(
                        "local_timeout",
                        "the device code expired before the login was approved",
                        fix="run the login again and approve it in time",
                    )
                await self._sleep(wait)
                try:
                    status, document = await self._post(client, self.token_endpoint, form)
                except (httpx.HTTPError, ValueError, TimeoutError):
                    # unreachable, dropped, garbled or too slow: poll less often (RFC 8628 §3.5)
                    wait = min(wait * 2, max(self.max_interval, interval))
                    continue
                if status == 200:
                    return parse_token_response(document)
                error = document.get("error")
                if status >= 500 or not isinstance(error, str):
                    wait = min(wait * 2, max(self.max_interval, interval))
                    continue
                if error == "authorization_pending":
                    wait = interval
                    continue
                if error == "slow_down":
                    interval += SLOW_DOWN_STEP
                    wait = interval
                    continue
                code = error if error.isascii() and error.isprintable() else "invalid_error"
                raise DeviceFlowError(code[:64], "the provider ended the device login")
