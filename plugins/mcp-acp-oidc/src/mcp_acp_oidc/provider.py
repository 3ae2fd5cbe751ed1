"""The ``oidc`` identity provider: the subject of every request comes from a validated
OIDC access token, obtained with the device flow (``mcp-acp auth login``) and kept in the
configured :class:`~mcp_acp.protocols.TokenStorage`.

Per request, :meth:`OIDCIdentityProvider.current_subject` validates the held access token
(signature, issuer, audience, lifetime — cheap once the JWKS is cached). Shortly before it
expires (``refresh_margin_seconds``) it is refreshed once, behind a lock, so concurrent
requests cause one refresh; the rotated refresh token is validated and stored before use
(if the new access token cannot be validated only because the issuer's keys are
unavailable, the new tokens are stored untrusted — the spent old refresh token is of no
use — and validated before any use).
Each request it makes to the IdP (discovery, refresh, revocation) is bounded as a whole
by ``http_timeout_seconds``. While a
refresh is in flight, a request whose held token has not expired is validated with that
token instead of waiting for the refresh; the request that started the refresh waits.
At most one refresh is attempted per ``refresh_retry_seconds``, whatever its outcome (no
tight loop against a provider that is down, nor one that issues tokens shorter-lived than
the margin); once the access token has expired, requests are denied until a
refresh or a new login succeeds.

Two proxies (or a proxy and ``auth status``) may share one stored token, even with their
configs in different directories (a keychain item is named by issuer). A refresh takes an
inter-process file lock that belongs to the stored token (:func:`refresh_lock_path`: the
one the token storage names) and re-reads the store under it, so when both find the token
due, one spends the refresh token and the other uses what it stored (refresh-token
rotation would otherwise revoke the grant the second time the old token is presented).

A validated identity may be reused for ``validation_cache_seconds`` (at most 60; the
default 0 validates the signature and claims on every request), never past the token's
``exp`` and never for a different token.

Inside ``mcp-acp run`` every change of state is an auth event in the audit trail:
``token_validated`` (once per access token), ``token_invalid`` (once per token and
reason, including "not logged in" and an unreachable issuer), ``token_refreshed`` and
``token_refresh_failed``. Recording is fail-closed: if the trail cannot take the event,
the request is not served.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mcp_acp._fs import ensure_private_dir, unsafe_permissions
from mcp_acp.audit.events import AuthEvent, AuthEventName
from mcp_acp.errors import AuthenticationError, PluginError
from mcp_acp.models import StoredToken, Subject
from mcp_acp.protocols import TokenStorage
from mcp_acp.registry import AuthRecorder
from mcp_acp.tokens.locks import user_lock_path
from mcp_acp_oidc._http import idp_client, idp_tls_context, overall_deadline
from mcp_acp_oidc.device import DeviceAuthorization, DeviceFlowClient
from mcp_acp_oidc.discovery import ProviderMetadata, discover
from mcp_acp_oidc.errors import (
    DiscoveryError,
    LoginRequiredError,
    RefreshError,
    TokenRejectedError,
    TokenStorageError,
    UnvalidatedRefreshError,
)
from mcp_acp_oidc.jwks import JWKSCache
from mcp_acp_oidc.login import device_login
from mcp_acp_oidc.refresh import refresh_and_validate
from mcp_acp_oidc.validator import Algorithms, IssuerUrl, TokenValidationConfig, TokenValidator

__all__ = ["LogoutResult", "OIDCConfig", "OIDCIdentityProvider", "refresh_lock_path"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class OIDCConfig(BaseModel):
    """Options of the ``oidc`` identity provider (``identity.config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: IssuerUrl = Field(description="Issuer URL, exactly as the provider reports it.")
    client_id: str = Field(min_length=1, description="The public client registered for mcp-acp.")
    audience: str = Field(
        min_length=1,
        description="This proxy's resource identifier: sent as 'resource' (RFC 8707) and "
        "required in the token's aud.",
    )
    audience_parameter: str | None = Field(
        default=None, description="Also send this as 'audience' (providers such as Auth0)."
    )
    scope: str = "openid offline_access"
    algorithms: Algorithms = ("RS256", "PS256", "ES256")
    token_type: str | None = Field(
        default=None, description='Require this JOSE typ, e.g. "at+jwt" (RFC 9068).'
    )
    client_ids: tuple[str, ...] | None = Field(
        default=None,
        min_length=1,  # an empty list would accept tokens issued to any client
        description="Accepted azp/client_id values; default: only client_id.",
    )
    leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    max_token_age_seconds: float | None = Field(default=None, gt=0)
    groups_claim: str | None = "groups"
    roles_claim: str | None = "roles"
    jwks_cache_seconds: float = Field(default=300.0, ge=0)
    jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0)
    http_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    refresh_margin_seconds: float = Field(default=60.0, ge=0)
    refresh_retry_seconds: float = Field(default=30.0, ge=0)
    validation_cache_seconds: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="Reuse a validated identity this long (never past exp); 0 = validate "
        "every request.",
    )

    @field_validator("audience")
    @classmethod
    def _canonical_resource(cls, audience: str) -> str:
        """Sent as ``resource``: RFC 8707 forbids a fragment, and MCP asks for the canonical
        URI (scheme and host in lower case). Refused, not rewritten: the token's ``aud``
        is compared with it byte for byte."""
        if "#" in audience:
            raise ValueError(
                f"audience {audience!r} has a fragment ('#…'); a resource identifier may "
                "not (RFC 8707): remove it"
            )
        scheme = audience.partition(":")[0]  # urlsplit would lower it
        host = urlsplit(audience).netloc.rpartition("@")[2]  # and port
        if scheme != scheme.lower() or host != host.lower():
            raise ValueError(
                f"audience {audience!r} is not in canonical form: write its scheme and host "
                "in lower case (as the token's aud must name it)"
            )
        return audience

    @model_validator(mode="after")
    def _cache_outlives_cooldown(self) -> OIDCConfig:
        # with a shorter cache, keys would expire while a refetch is not yet allowed
        if self.jwks_cache_seconds < self.jwks_refetch_cooldown_seconds:
            raise ValueError("jwks_cache_seconds must be at least jwks_refetch_cooldown_seconds")
        return self

    def validation_config(self) -> TokenValidationConfig:
        return TokenValidationConfig(
            issuer=self.issuer,
            audience=self.audience,
            algorithms=self.algorithms,
            leeway=self.leeway_seconds,
            token_type=self.token_type,
            client_ids=self.client_ids if self.client_ids is not None else (self.client_id,),
            max_token_age=self.max_token_age_seconds,
            groups_claim=self.groups_claim,
            roles_claim=self.roles_claim,
        )


@attrs.frozen(slots=True)
class LogoutResult:
    """What :meth:`OIDCIdentityProvider.logout` did."""

    had_token: bool
    """A token record was stored (readable or not). It has been deleted."""
    warning: str | None = None
    """Why the refresh token was not revoked at the provider, when it was not."""


#: How often an expired token that cannot be refreshed sends the provider back to the
#: token store, for a login made meanwhile in another process.
STORE_REREAD_SECONDS = 1.0


class OIDCIdentityProvider:
    """An :class:`~mcp_acp.protocols.IdentityProvider` backed by OIDC tokens."""

    def __init__(
        self,
        options: OIDCConfig,
        storage: TokenStorage,
        *,
        lock_path: Path | None = None,
        record_auth: AuthRecorder | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self.storage = storage
        self.lock_path = lock_path
        self._record_auth = record_auth
        self._clock = clock
        self._sleep = sleep
        self._metadata: ProviderMetadata | None = None
        self._validator: TokenValidator | None = None
        self._token: StoredToken | None = None
        self._lock = asyncio.Lock()
        self._refresh_attempted_at: float | None = None
        self._reread_at: float | None = None  # the store last read for an expired token
        self._refreshing = False  # a refresh is in flight (see _held_while_refreshing)
        self._discovery_failed_at: float | None = None
        self._verified: tuple[str, Subject, float] | None = None  # token, subject, when
        # One TLS context for every request to the IdP (discovery, JWKS, refresh, revoke),
        # made at the first: a client given verify=True loads the CA bundle into a new
        # context each time, and a refresh every few minutes then grows memory.
        self._tls: ssl.SSLContext | None = None
        self._reported: dict[AuthEventName, tuple[str, str | None]] = {}  # event -> (token, reason)

    async def _ready(self) -> tuple[ProviderMetadata, TokenValidator]:
        if self._metadata is None or self._validator is None:
            now = time.monotonic()
            failed = self._discovery_failed_at
            if failed is not None and now - failed < self.options.refresh_retry_seconds:
                raise DiscoveryError(
                    f"{self.options.issuer} was unreachable moments ago; not retrying yet",
                    fix="check that the identity provider is up",
                )
            if self._tls is None:
                self._tls = await asyncio.to_thread(idp_tls_context)
            try:
                metadata = await discover(
                    self.options.issuer,
                    timeout=self.options.http_timeout_seconds,
                    verify=self._tls,
                )
            except DiscoveryError:
                self._discovery_failed_at = now  # no request storm while the IdP is down
                raise
            self._discovery_failed_at = None
            jwks = JWKSCache(
                metadata.jwks_uri,
                ttl=self.options.jwks_cache_seconds,
                cooldown=self.options.jwks_refetch_cooldown_seconds,
                timeout=self.options.http_timeout_seconds,
                verify=self._tls,
            )
            self._validator = TokenValidator(
                self.options.validation_config(), jwks, clock=self._clock
            )
            self._metadata = metadata
        return self._metadata, self._validator

    async def _storage_call(self, action: str, call: Callable[..., _T], *args: Any) -> _T:
        """Run a token-storage call off the event loop. A storage that refuses a record
        raises ``AuthenticationError`` itself; anything else it raises (``OSError`` for a
        full disk, a keychain error) becomes a :class:`TokenStorageError`, so the request
        is denied for want of an identity instead of failing with a stray exception."""
        try:
            return await asyncio.to_thread(call, *args)
        except AuthenticationError:
            raise
        except Exception as exc:  # a storage is another plugin: whatever it raises denies
            raise TokenStorageError(action, self.storage.description, exc) from exc

    async def _load(self) -> StoredToken:
        held = self._token
        if (
            held is not None
            and held.refresh_token is None
            and self._clock() >= held.expires_at.timestamp()
        ):
            # expired, with nothing to refresh it: only a login elsewhere ('mcp-acp auth
            # login' in another terminal) can help, so look at the store again — at most
            # once a second (an unchanged file's key derivation is reused: a cheap read)
            now = time.monotonic()
            if self._reread_at is None or now - self._reread_at >= STORE_REREAD_SECONDS:
                self._reread_at = now
                self._token = None
        if self._token is None:
            self._token = await self._storage_call("read", self.storage.load, self.options.issuer)
        if self._token is None:
            raise LoginRequiredError("not_logged_in", f"not logged in to {self.options.issuer}")
        return self._token

    async def current_subject(self) -> Subject:
        """Validate (refreshing when due) the held token; raise ``AuthenticationError``."""
        token: StoredToken | None = None
        try:
            held = self._held_while_refreshing()
            if held is not None:
                token, validator = held
            else:
                async with self._lock:  # one store read, one discovery, one refresh at a time
                    # the store first: with nothing stored, "not logged in" is the answer
                    # (and 'auth login' the fix), whether or not the provider is reachable
                    token = await self._load()
                    metadata, validator = await self._ready()
                    if self._due(token):
                        self._refreshing = True
                        try:
                            refreshed = await self._try_refresh(metadata, validator, token)
                        finally:
                            self._refreshing = False
                        if refreshed is not None:
                            token = refreshed
            cached = self._cached(token)
            if cached is not None:
                return cached
            subject = await validator.validate(token.access_token)
        except TokenRejectedError as exc:
            await self._report("token_invalid", token, reason=exc.reason, message=exc.message)
            if exc.reason in ("expired", "too_old"):
                raise LoginRequiredError(
                    "expired", f"the session with {self.options.issuer} has expired"
                ) from exc
            raise
        except AuthenticationError as exc:
            reason = "issuer_unreachable" if isinstance(exc, DiscoveryError) else "unavailable"
            if isinstance(exc, LoginRequiredError):
                reason = exc.reason
            elif isinstance(exc, TokenStorageError):
                reason = "storage_error"
            await self._report("token_invalid", token, reason=reason, message=exc.message)
            raise
        self._verified = (token.access_token, subject, time.monotonic())
        await self._report("token_validated", token, subject=subject)
        return subject

    def _held_while_refreshing(self) -> tuple[StoredToken, TokenValidator] | None:
        """The held token and validator, if a refresh is in flight and that token has not
        expired: the request is then validated with it instead of queueing behind the
        refresh (which a slow provider can stretch to the HTTP timeout and beyond). With
        an expired token the request waits for the refresh, which may bring a valid one."""
        token, validator = self._token, self._validator
        if not self._refreshing or token is None or validator is None:
            return None
        if self._clock() >= token.expires_at.timestamp():
            return None
        return token, validator

    def _cached(self, token: StoredToken) -> Subject | None:
        """The identity validated moments ago for this very token, while it may be reused."""
        if self._verified is None or self.options.validation_cache_seconds <= 0:
            return None
        access_token, subject, when = self._verified
        exp = subject.claims.get("exp")
        if (
            access_token != token.access_token
            or time.monotonic() - when >= self.options.validation_cache_seconds
            or not isinstance(exp, int | float)
            or self._clock() >= exp
        ):
            return None
        return subject

    async def _report(
        self,
        event: AuthEventName,
        token: StoredToken | None,
        *,
        reason: str | None = None,
        message: str | None = None,
        subject: Subject | None = None,
    ) -> None:
        """Record ``event`` in the auth stream once per token and reason (a state change,
        not a line per request; every request has its decision record anyway)."""
        if self._record_auth is None:
            return
        key = (_fingerprint(token), reason)
        if self._reported.get(event) == key:
            return
        detail: dict[str, Any] = {}
        if message is not None:
            detail["message"] = message
        if token is not None:
            detail["expires_at"] = token.expires_at.astimezone(UTC).isoformat()
        if subject is not None and subject.token_age_seconds is not None:
            detail["token_age_seconds"] = round(subject.token_age_seconds, 1)
        if event == "token_validated":
            detail["storage"] = self.storage.description  # an encrypted-file fallback shows
        # marked before the write: concurrent requests do not record it twice (and if the
        # write fails, the AuditError ends the session anyway)
        self._reported[event] = key
        if event == "token_validated":
            self._reported.pop("token_invalid", None)  # a later failure is news again
        await self._record_auth(
            AuthEvent(
                event=event,
                subject_id=subject.subject_id if subject is not None else None,
                issuer=self.options.issuer,
                reason=reason,
                detail=detail or None,
            )
        )

    def _due(self, token: StoredToken) -> bool:
        due = token.expires_at.timestamp() - self.options.refresh_margin_seconds
        return token.refresh_token is not None and self._clock() >= due

    async def _try_refresh(
        self, metadata: ProviderMetadata, validator: TokenValidator, token: StoredToken
    ) -> StoredToken | None:
        now = time.monotonic()
        if (
            self._refresh_attempted_at is not None
            and now - self._refresh_attempted_at < self.options.refresh_retry_seconds
        ):
            return None
        self._refresh_attempted_at = now
        try:
            async with self._refresh_lock():
                # Another process (a second proxy, 'auth login') may have stored newer
                # tokens: use them rather than spend a refresh token that rotation has
                # already replaced.
                latest = await self._storage_call("read", self.storage.load, self.options.issuer)
                if latest is None:
                    self._token = None
                    raise LoginRequiredError("logged_out", f"logged out of {self.options.issuer}")
                if latest.access_token != token.access_token:
                    self._token = latest
                    if not self._due(latest):
                        return latest
                    token = latest
                try:
                    new = await refresh_and_validate(
                        token,
                        validator,
                        token_endpoint=metadata.token_endpoint,
                        client_id=self.options.client_id,
                        resource=self.options.audience,
                        audience=self.options.audience_parameter,
                        timeout=self.options.http_timeout_seconds,
                        verify=self._tls or True,
                    )
                except UnvalidatedRefreshError as exc:
                    # the old refresh token is spent: keep the new set (stored, so a
                    # restart or another process finds it), its access token untrusted —
                    # every request validates the held token before it answers
                    await self._storage_call("save", self.storage.save, exc.unvalidated)
                    self._token = exc.unvalidated
                    raise
                except RefreshError as exc:
                    if exc.error == "invalid_grant":
                        # spent or revoked: only a new login helps. Delete only what we
                        # used, not a login another process stored meanwhile — checked
                        # and deleted under the lock, so no store can come in between.
                        self._token = None
                        current = await self._storage_call(
                            "read", self.storage.load, self.options.issuer
                        )
                        if current is not None and current.refresh_token == token.refresh_token:
                            await self._storage_call(
                                "delete", self.storage.delete, self.options.issuer
                            )
                    raise
                # before first use. If saving fails (a full disk), the request is denied
                # and the new tokens are not used: nothing runs on tokens a restart or a
                # second proxy would not find.
                await self._storage_call("save", self.storage.save, new)
        except (RefreshError, TokenRejectedError) as exc:
            code = exc.error if isinstance(exc, RefreshError) else exc.reason
            log.warning("oidc: token refresh failed: %s", exc)
            await self._report("token_refresh_failed", token, reason=code, message=exc.message)
            return None
        self._token = new
        await self._report(
            "token_refreshed",
            new,
            reason="rotated" if new.refresh_token != token.refresh_token else None,
        )
        return new

    @contextlib.asynccontextmanager
    async def _refresh_lock(self) -> AsyncIterator[None]:
        """The inter-process lock around re-read → refresh → store (none without a path)."""
        if self.lock_path is None:
            yield
            return
        # long enough for the holder's refresh (bounded by the HTTP timeout) to finish
        timeout = 2 * self.options.http_timeout_seconds + 5
        # imported here: its asyncio support costs ~15 ms at every start, and most starts
        # find a token that needs no refresh
        from filelock import AsyncFileLock, Timeout

        lock = AsyncFileLock(self.lock_path, timeout=timeout, mode=0o600)
        try:
            ensure_private_dir(self.lock_path.parent)
            # a directory others can write to would let them hold (or replace) the lock
            unsafe = unsafe_permissions(self.lock_path.parent)
            if unsafe is not None:
                raise RefreshError(
                    "lock_failed",
                    f"cannot use the refresh lock {self.lock_path}: {unsafe}",
                    fix=f"chmod 700 {self.lock_path.parent} (and make it yours)",
                )
            await lock.acquire()
        except Timeout as exc:
            raise RefreshError(
                "lock_timeout",
                f"another process held {self.lock_path} for over {timeout:.0f} s",
                fix="check for a stuck mcp-acp process",
            ) from exc
        except OSError as exc:  # a full disk or a read-only config directory
            raise RefreshError(
                "lock_failed",
                f"cannot take the refresh lock {self.lock_path} ({exc.strerror or exc})",
                fix=f"check that {self.lock_path.parent} is writable and the disk not full",
            ) from exc
        try:
            yield
        finally:
            await lock.release()

    async def login(self, show: Callable[[DeviceAuthorization], None]) -> Subject:
        """The device flow; the token is validated, then stored."""
        metadata, validator = await self._ready()
        if metadata.device_authorization_endpoint is None:
            raise AuthenticationError(
                f"{self.options.issuer} does not offer the device authorization grant",
                fix="enable the device flow for this client at the identity provider",
            )
        client = DeviceFlowClient(
            device_authorization_endpoint=metadata.device_authorization_endpoint,
            token_endpoint=metadata.token_endpoint,
            client_id=self.options.client_id,
            scope=self.options.scope,
            resource=self.options.audience,
            audience=self.options.audience_parameter,
            timeout=self.options.http_timeout_seconds,
            sleep=self._sleep,
        )
        async with self._lock:
            subject = await device_login(
                client, validator, self.storage, show=show, store_lock=self._store_lock
            )
            self._token = None  # re-read what was stored
            self._refresh_attempted_at = None
            return subject

    async def logout(self) -> LogoutResult:
        """Revoke the refresh token where the provider offers it, then delete the tokens.

        The tokens are deleted whatever happens before: a stored record the storage
        refuses (wrong mode, damaged, another key) cannot be revoked, and is deleted all
        the same; a revocation that fails is reported, not fatal. Only a failure to
        delete raises.
        """
        async with self._lock, self._store_lock() as unlocked:
            # under the refresh lock: a refresh in flight elsewhere (a running proxy) stores
            # its new tokens before this reads and deletes them, never after
            warning: str | None = None
            try:
                token = await self._storage_call("read", self.storage.load, self.options.issuer)
            except AuthenticationError as exc:  # refused or damaged: deleted below all the same
                token = None
                warning = f"the stored token could not be read ({exc.message})"
            had_token = token is not None or warning is not None
            if token is not None and token.refresh_token:
                warning = await self._revoke(token.refresh_token)
            await self._storage_call("delete", self.storage.delete, self.options.issuer)
            self._token = None
            if warning is not None:
                warning = f"cannot revoke the refresh token: {warning}; the tokens were deleted"
            if unlocked is not None:
                more = f"{unlocked}: a refresh in flight elsewhere may store tokens again"
                warning = f"{warning}; {more}" if warning else more
            return LogoutResult(had_token=had_token, warning=warning)

    @contextlib.asynccontextmanager
    async def _store_lock(self) -> AsyncIterator[str | None]:
        """The refresh lock, for a login's or logout's write to the store; yields ``None``,
        or — if the lock cannot be had — why not (the write goes ahead all the same:
        logging out must never fail for want of a lock)."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self._refresh_lock())
            except RefreshError as exc:
                if not exc.error.startswith("lock_"):
                    raise
                yield exc.message
                return
            yield None

    async def _revoke(self, refresh_token: str) -> str | None:
        """Revoke ``refresh_token`` (RFC 7009) if the provider has a revocation endpoint;
        return why that failed, or ``None``."""
        try:
            metadata, _ = await self._ready()
        except AuthenticationError as exc:
            return exc.message
        endpoint = metadata.revocation_endpoint
        if endpoint is None:
            return None
        timeout = self.options.http_timeout_seconds
        form = {
            "token": refresh_token,
            "token_type_hint": "refresh_token",
            "client_id": self.options.client_id,
        }
        try:
            async with (
                overall_deadline(timeout),
                idp_client(timeout=timeout, verify=self._tls or True) as client,
                client.stream("POST", endpoint, data=form) as resp,
            ):
                status = resp.status_code  # the body is not needed (nor read)
        except TimeoutError:
            return f"no complete answer from {endpoint} within {timeout:g} s"
        except httpx.HTTPError as exc:
            return f"cannot reach {endpoint} ({type(exc).__name__})"
        if status != 200:
            return f"{endpoint} answered HTTP {status}"
        return None

    async def status(self) -> dict[str, object]:
        """What ``auth status`` shows: never a token value."""
        token = await self._storage_call("read", self.storage.load, self.options.issuer)
        info: dict[str, object] = {
            "issuer": self.options.issuer,
            "storage": self.storage.description,
            "logged_in": token is not None,
        }
        if token is not None:
            info["expires_at"] = token.expires_at.astimezone(UTC).isoformat()
            info["expired"] = token.expires_at <= datetime.now(UTC)
            info["refreshable"] = token.refresh_token is not None
            info["scope"] = token.scope
            try:
                subject = await self.current_subject()
                info["subject"] = subject.subject_id
                info["valid"] = True
            except AuthenticationError as exc:
                info["valid"] = False
                info["problem"] = exc.message
        return info


def _fingerprint(token: StoredToken | None) -> str:
    """Which token an event was about, for de-duplication only (never recorded)."""
    if token is None:
        return ""
    return hashlib.sha256(token.access_token.encode()).hexdigest()


def refresh_lock_path(storage: TokenStorage, issuer: str) -> Path:
    """Where every process that shares ``storage``'s token for ``issuer`` serialises its
    refreshes: the lock the storage names (``lock_path(issuer)``: beside the encrypted
    token file, or per keychain item), else one per user and issuer. Never a file beside
    the config: two configs in two directories may share one stored token."""
    named = getattr(storage, "lock_path", None)
    if named is None:
        return user_lock_path("oidc-refresh", issuer)
    path = named(issuer)
    if not isinstance(path, Path):
        raise PluginError(
            f"token storage {storage.description}: lock_path() returned "
            f"{type(path).__name__}, not a Path",
            fix="fix the token storage plugin (or use one mcp-acp ships)",
        )
    return path
