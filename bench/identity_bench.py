"""Per-request identity cost: the ``oidc`` provider with full validation on every request
and with a cached validation, against a bare PyJWT decode and the ``local`` provider.

Run from the repository root::

    python bench/identity_bench.py            # full run (~25 s on 2 cores), writes
                                              # bench/results/identity.md
    python bench/identity_bench.py --quick    # a few seconds; prints only (unless --output)

Everything runs in this process. Two signing keys are generated with ``cryptography`` (RSA
2048 for RS256, EC P-256 for ES256); a threaded stdlib HTTP server on 127.0.0.1 plays the
identity provider: ``/.well-known/openid-configuration`` (issuer = its own
``http://127.0.0.1:PORT``) and ``/jwks`` with both public keys. Access tokens are signed
with PyJWT: ``typ: at+jwt``, a ``kid``, and ``iss``, ``aud``, ``sub`` ("alice"), ``exp``
(an hour ahead), ``iat``, ``nbf``, ``azp``, ``client_id``, ``scope``, ``groups``. Each
provider reads its token from an in-memory ``TokenStorage``.

Variants, each called once per request inside one running event loop:

* ``oidc``, ``validation_cache_seconds=0`` (the default): ``current_subject()`` checks the
  signature and every claim on every request; the JWKS is fetched once, at the first
  request, and served from the cache afterwards;
* ``oidc``, ``validation_cache_seconds=60``: the identity validated for this very token is
  reused (it is validated again after 60 s);
* baselines: ``jwt.decode(token, key, algorithms=[alg], audience=..., issuer=...)`` with a
  pre-loaded public key (what a minimal validator costs), and the built-in ``local``
  provider's ``current_subject()`` (a fixed subject: the floor);
* diagnostics, parts of the full-validation path: ``TokenValidator.validate`` (the
  provider without its lock, store and cache bookkeeping), ``JWKSCache.get_keys`` (the key
  lookup: answered from the current key set on the loop; only a fetch goes to a worker
  thread) and the signature checked by ``cryptography`` alone.

Before anything is timed every variant must return subject "alice" (and a token signed
with another key under the same kid must be refused); afterwards the IdP must have served
exactly one discovery document and one JWKS per provider (nothing fetched while timing)
and each provider recorded exactly one ``token_validated`` event and nothing else. These
are correctness checks that raise; timings are never asserted.

Each call is timed on its own with ``time.perf_counter_ns``, after a warm-up; the
variants take turns in rounds (the order rotating), so load from elsewhere on the machine
falls on all alike. The garbage collector stays enabled. p50/p99 are nearest-rank
percentiles over all timed calls; ratios are to the bare PyJWT decode of the same
algorithm.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import itertools
import json
import os
import platform
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import jwt
from bench_scratch import check, cpu_model, load_text, percentile, publish
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from mcp_acp_oidc.errors import TokenRejectedError
from mcp_acp_oidc.jwks import JWKSCache
from mcp_acp_oidc.provider import OIDCConfig, OIDCIdentityProvider
from mcp_acp_oidc.validator import TokenValidator

from mcp_acp.audit.events import AuthEvent
from mcp_acp.builtins.local_identity import LocalIdentityProvider
from mcp_acp.models import StoredToken, Subject

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "identity.md"

SUBJECT: Final = "alice"
AUDIENCE: Final = "urn:mcp-acp:bench"
CLIENT_ID: Final = "mcp-acp-bench"
ALGORITHMS: Final = ("RS256", "ES256")
KIDS: Final = {"RS256": "bench-rsa-1", "ES256": "bench-ec-1"}
TOKEN_LIFETIME = 3600  # s: far beyond any run, so no token expires or is due for refresh
CACHE_SECONDS = 60.0  # the largest validation_cache_seconds the plugin allows


# ------------------------------------------------------------------ the identity provider


def new_private_key(alg: str) -> Any:
    """A fresh signing key for ``alg`` (RSA 2048 for RS256, EC P-256 for ES256)."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"no key type for {alg}")


def public_jwk(private_key: Any, alg: str) -> dict[str, Any]:
    """The public half of ``private_key`` as a JWK, with its kid, use and alg."""
    public = private_key.public_key()
    maker = RSAAlgorithm if alg.startswith("RS") else ECAlgorithm
    jwk: dict[str, Any] = maker.to_jwk(public, as_dict=True)
    return {**jwk, "kid": KIDS[alg], "use": "sig", "alg": alg}


class _Handler(BaseHTTPRequestHandler):
    """Serves the discovery document and the JWKS; counts requests by path."""

    server: _IdPServer

    def do_GET(self) -> None:
        idp = self.server.idp
        with idp.lock:
            idp.hits[self.path] += 1
        body = idp.documents.get(self.path)
        status = 200 if body is not None else 404
        body = body if body is not None else b'{"error":"not_found"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line on stderr per request."""


class _IdPServer(ThreadingHTTPServer):
    daemon_threads = True
    idp: IdP


@dataclass
class IdP:
    """A local OpenID Provider: signing keys, its documents and the requests it served."""

    url: str
    private_keys: dict[str, Any]
    documents: dict[str, bytes]
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    issued: Iterator[int] = field(default_factory=itertools.count)

    def public_key(self, alg: str) -> Any:
        return self.private_keys[alg].public_key()

    def token(
        self, alg: str, *, signing_key: Any = None, subject: str = SUBJECT, **claims: Any
    ) -> str:
        """An RFC 9068-style access token for ``subject``, signed with the IdP's key for
        ``alg`` (or with ``signing_key``: a forgery, same kid)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": subject,
            "exp": now + TOKEN_LIFETIME,
            "iat": now,
            "nbf": now,
            "azp": CLIENT_ID,
            "client_id": CLIENT_ID,
            "scope": "openid offline_access tools:read",
            "groups": ["eng"],
            "jti": f"bench-{alg}-{next(self.issued)}",  # every token distinct
            **claims,
        }
        key = signing_key if signing_key is not None else self.private_keys[alg]
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": KIDS[alg], "typ": "at+jwt"})


@contextmanager
def running_idp() -> Iterator[IdP]:
    """Keys generated, the server listening on 127.0.0.1 (an ephemeral port), stopped after."""
    private_keys = {alg: new_private_key(alg) for alg in ALGORITHMS}
    server = _IdPServer(("127.0.0.1", 0), _Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    discovery = {
        "issuer": url,
        "jwks_uri": f"{url}/jwks",
        "token_endpoint": f"{url}/token",
        "device_authorization_endpoint": f"{url}/device_authorization",
        "response_types_supported": ["code"],
        "id_token_signing_alg_values_supported": list(ALGORITHMS),
    }
    jwks = {"keys": [public_jwk(private_keys[alg], alg) for alg in ALGORITHMS]}
    server.idp = IdP(
        url=url,
        private_keys=private_keys,
        documents={
            "/.well-known/openid-configuration": json.dumps(discovery).encode(),
            "/jwks": json.dumps(jwks).encode(),
        },
    )
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="bench-idp", daemon=True
    )
    thread.start()
    try:
        yield server.idp
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class MemoryTokenStorage:
    """A :class:`~mcp_acp.protocols.TokenStorage` in a dict (no keychain, no file)."""

    description = "memory (benchmark)"

    def __init__(self, *tokens: StoredToken) -> None:
        self._tokens = {token.issuer: token for token in tokens}

    def load(self, issuer: str) -> StoredToken | None:
        return self._tokens.get(issuer)

    def save(self, token: StoredToken) -> None:
        self._tokens[token.issuer] = token

    def delete(self, issuer: str) -> None:
        self._tokens.pop(issuer, None)


@dataclass
class Provider:
    """An ``oidc`` provider holding one token, and the auth events it recorded."""

    alg: str
    cache_seconds: float
    token: str
    provider: OIDCIdentityProvider
    events: list[AuthEvent] = field(default_factory=list)
    forged: bool = False  # holds a forgery (built to be refused, never timed)


def provider_options(idp: IdP, alg: str, cache_seconds: float) -> OIDCConfig:
    """The ``identity.config`` a user would write for this IdP (defaults elsewhere)."""
    return OIDCConfig(
        issuer=idp.url,
        client_id=CLIENT_ID,
        audience=AUDIENCE,
        algorithms=(alg,),
        token_type="at+jwt",  # noqa: S106 - the JOSE typ (RFC 9068), not a secret
        validation_cache_seconds=cache_seconds,
    )


def make_provider(
    idp: IdP, alg: str, cache_seconds: float, *, token: str | None = None
) -> Provider:
    """An ``OIDCIdentityProvider`` as ``mcp-acp run`` builds it (auth events recorded, here
    into a list), for the IdP's issuer, holding ``token`` (default: a fresh valid one)."""
    token = token if token is not None else idp.token(alg)
    claims = jwt.decode(token, options={"verify_signature": False})
    stored = StoredToken(
        issuer=idp.url,
        access_token=token,
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        scope=claims.get("scope"),
    )
    events: list[AuthEvent] = []

    async def record(event: AuthEvent) -> None:
        events.append(event)

    provider = OIDCIdentityProvider(
        provider_options(idp, alg, cache_seconds), MemoryTokenStorage(stored), record_auth=record
    )
    return Provider(alg, cache_seconds, token, provider, events)


def make_validator(idp: IdP, alg: str) -> TokenValidator:
    """The validator an ``oidc`` provider builds after discovery, built directly."""
    jwks = JWKSCache(f"{idp.url}/jwks")
    return TokenValidator(provider_options(idp, alg, 0.0).validation_config(), jwks)


# ------------------------------------------------------------------ variants


def signature_check(token: str, public: Any, alg: str) -> Callable[[], None]:
    """The token's signature checked by ``cryptography`` alone (raises if it is wrong): the
    floor under any JWT library. The JWS signature is decoded (for ES256, from r||s to DER)
    once, outside the call."""
    signing_input, _, encoded = token.encode().rpartition(b".")
    signature = base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
    if alg == "RS256":
        return lambda: public.verify(signature, signing_input, PKCS1v15(), SHA256())
    half = len(signature) // 2
    r, s = int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
    der = encode_dss_signature(r, s)
    return lambda: public.verify(der, signing_input, ec.ECDSA(SHA256()))


@dataclass
class Variant:
    """One timed call: a way to get the request's subject (a :class:`Subject` or PyJWT's
    claims), or a diagnostic whose result ``expect`` checks instead."""

    key: str
    label: str
    alg: str | None
    call: Callable[[], Any]
    is_async: bool
    diagnostic: bool = False
    expect: Callable[[Any], str | None] | None = None  # a diagnostic's check: the problem
    timings: list[int] = field(default_factory=list)

    async def check(self) -> None:
        """Call once: the subject must be "alice" (a diagnostic: ``expect`` finds no fault)."""
        result = await self.call() if self.is_async else self.call()
        if self.expect is not None:
            problem = self.expect(result)
            check(problem is None, f"{self.key}: {problem}")
            return
        subject = result.subject_id if isinstance(result, Subject) else result["sub"]
        check(subject == SUBJECT, f"{self.key} returned subject {subject!r}, not {SUBJECT!r}")

    def percentile_us(self, p: float) -> float:
        return percentile(sorted(self.timings), p) / 1000


@dataclass
class Suite:
    idp: IdP
    variants: list[Variant]
    providers: list[Provider]  # every provider built, each asks for discovery + JWKS once
    validators: int = 0  # diagnostic validators built directly: one JWKS fetch each


def build_suite(idp: IdP, *, diagnostics: bool = True) -> Suite:
    """Every variant of the benchmark, against ``idp``."""
    suite = Suite(idp, [], [])
    local = LocalIdentityProvider(SUBJECT)
    suite.variants.append(
        Variant("local", "`local` provider (fixed subject)", None, local.current_subject, True)
    )
    for alg in ALGORITHMS:
        token = idp.token(alg)
        public = idp.public_key(alg)

        def bare(token: str = token, public: Any = public, alg: str = alg) -> Any:
            return jwt.decode(token, public, algorithms=[alg], audience=AUDIENCE, issuer=idp.url)

        full = make_provider(idp, alg, 0.0)
        cached = make_provider(idp, alg, CACHE_SECONDS)
        suite.providers += [full, cached]
        suite.variants += [
            Variant(f"pyjwt-{alg}", "bare PyJWT `jwt.decode`", alg, bare, False),
            Variant(
                f"full-{alg}",
                "`oidc`, full validation every request",
                alg,
                full.provider.current_subject,
                True,
            ),
            Variant(
                f"cached-{alg}",
                f"`oidc`, cached validation ({CACHE_SECONDS:g} s)",
                alg,
                cached.provider.current_subject,
                True,
            ),
        ]
        if not diagnostics:
            continue
        validator = make_validator(idp, alg)
        suite.validators += 1

        def validate(validator: TokenValidator = validator, token: str = token) -> Any:
            return validator.validate(token)

        def get_keys(validator: TokenValidator = validator, kid: str = KIDS[alg]) -> Any:
            return validator.jwks.get_keys(kid)

        def one_key(keys: Any, kid: str = KIDS[alg]) -> str | None:
            kids = [key.kid for key in keys]
            return None if kids == [kid] else f"keys {kids}, not [{kid!r}]"

        verify = signature_check(token, public, alg)

        suite.variants += [
            Variant(f"validate-{alg}", "`TokenValidator.validate`", alg, validate, True, True),
            Variant(
                f"keys-{alg}",
                "`JWKSCache.get_keys` (cached keys, on the loop)",
                alg,
                get_keys,
                True,
                diagnostic=True,
                expect=one_key,
            ),
            Variant(
                f"verify-{alg}",
                "signature check alone (`cryptography` `verify`)",
                alg,
                verify,
                False,
                diagnostic=True,
                expect=lambda result: None if result is None else f"returned {result!r}",
            ),
        ]
    return suite


async def check_subjects(suite: Suite) -> None:
    """Every variant returns "alice"; a forged token is refused by the same setup."""
    for variant in suite.variants:
        await variant.check()
    for alg in ALGORITHMS:
        await check_forgery_refused(suite, alg)


async def check_forgery_refused(suite: Suite, alg: str) -> None:
    """A token signed with another key under the IdP's kid is refused (``bad_signature``)
    by a provider set up like the timed ones, with and without the validation cache."""
    forged = suite.idp.token(alg, signing_key=new_private_key(alg))
    for cache_seconds in (0.0, CACHE_SECONDS):
        entry = make_provider(suite.idp, alg, cache_seconds, token=forged)
        entry.forged = True
        suite.providers.append(entry)
        try:
            await entry.provider.current_subject()
        except TokenRejectedError as exc:
            check(exc.reason == "bad_signature", f"forged {alg} token refused: {exc.reason}")
        else:
            raise AssertionError(f"a forged {alg} token was accepted (cache {cache_seconds:g} s)")
        names = [event.event for event in entry.events]
        check(names == ["token_invalid"], f"the forgery recorded {names}")


def check_after(suite: Suite) -> None:
    """One discovery per provider and one JWKS fetch per provider and validator (so none
    while timing), and exactly one ``token_validated`` event per timed provider."""
    discoveries = suite.idp.hits["/.well-known/openid-configuration"]
    fetches = suite.idp.hits["/jwks"]
    check(
        discoveries == len(suite.providers),
        f"{discoveries} discovery requests for {len(suite.providers)} providers",
    )
    expected = len(suite.providers) + suite.validators
    check(fetches == expected, f"{fetches} JWKS fetches, expected {expected}")
    for entry in suite.providers:
        if entry.forged:
            continue  # its token_invalid event was checked when it was refused
        names = [event.event for event in entry.events]
        check(
            names == ["token_validated"],
            f"{entry.alg} provider (cache {entry.cache_seconds:g} s) recorded {names}",
        )
        check(
            entry.events[0].subject_id == SUBJECT,
            f"token_validated names {entry.events[0].subject_id!r}",
        )


async def time_variant(variant: Variant, calls: int) -> list[int]:
    """``calls`` calls of ``variant``, each timed on its own (ns)."""
    clock = time.perf_counter_ns
    call = variant.call
    timings = [0] * calls
    if variant.is_async:
        for i in range(calls):
            start = clock()
            await call()
            timings[i] = clock() - start
    else:
        for i in range(calls):
            start = clock()
            call()
            timings[i] = clock() - start
    return timings


@dataclass(frozen=True)
class Plan:
    rounds: int
    calls: int  # timed calls per variant per round
    warmup: int  # untimed calls per variant before the first round


FULL = Plan(rounds=10, calls=1_000, warmup=500)
QUICK = Plan(rounds=2, calls=200, warmup=50)


async def run_suite(
    suite: Suite, plan: Plan, *, progress: Callable[[str], None] | None = None
) -> None:
    """Check, warm up, then time every variant in ``plan.rounds`` interleaved rounds."""
    await check_subjects(suite)
    hits_before = Counter(suite.idp.hits)
    for variant in suite.variants:
        await time_variant(variant, plan.warmup)
    count = len(suite.variants)
    for round_ in range(plan.rounds):
        if progress is not None:
            progress(f"  round {round_ + 1}/{plan.rounds}")
        for offset in range(count):
            variant = suite.variants[(round_ + offset) % count]
            gc.collect()
            variant.timings.extend(await time_variant(variant, plan.calls))
    check(
        suite.idp.hits == hits_before,
        f"the IdP was asked for something while timing: {suite.idp.hits - hits_before}",
    )
    check_after(suite)


# ------------------------------------------------------------------ report


def machine_line() -> str:
    cores = os.cpu_count() or 0
    return (
        f"{cpu_model()}, {cores} cores, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.release()}, "
        f"PyJWT {metadata.version('PyJWT')}, cryptography {metadata.version('cryptography')} "
        f"({openssl_backend.openssl_version_text()})"
    )


def _us(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass
class Report:
    variants: list[Variant]
    plan: Plan
    machine: str
    date: str
    seconds: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def _ratio(variant: Variant, by_key: dict[str, Variant], p: float) -> str:
    if variant.alg is None:
        return "—"
    base = by_key[f"pyjwt-{variant.alg}"].percentile_us(p)
    return f"{variant.percentile_us(p) / base:.2f}x"


def render(report: Report, *, quick: bool) -> str:
    by_key = {variant.key: variant for variant in report.variants}
    plan = report.plan

    def row(variant: Variant) -> str:
        cells = (
            variant.label,
            variant.alg or "—",
            f"{len(variant.timings):,}",
            _us(variant.percentile_us(50)),
            _us(variant.percentile_us(99)),
            _ratio(variant, by_key, 50),
            _ratio(variant, by_key, 99),
        )
        return "| " + " | ".join(cells) + " |"

    order = ["local"] + [
        f"{kind}-{alg}" for alg in ALGORITHMS for kind in ("pyjwt", "full", "cached")
    ]
    header = [
        "| variant | alg | calls | p50 µs | p99 µs | p50 ÷ PyJWT p50 | p99 ÷ PyJWT p99 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines = [
        "# Identity benchmark (per-request subject)",
        "",
        f"- Machine: {report.machine}",
        f"- Date: {report.date}",
        f"- Command: `python bench/identity_bench.py{' --quick' if quick else ''}` "
        f"({plan.rounds} rounds x {plan.calls:,} calls per variant after {plan.warmup:,} "
        f"warm-up calls, {report.seconds:.0f} s)",
        f"- Load average (1/5/15 min): {load_text(report.load_before)} before, "
        f"{load_text(report.load_after)} after, on {os.cpu_count()} cores",
        "- Per call: `time.perf_counter_ns` around one call inside one running event loop "
        "(`await` for the providers); p50/p99 nearest-rank over all calls; ratios to the bare "
        "PyJWT decode of the same algorithm",
        "",
        *header,
        *(row(by_key[key]) for key in order),
    ]
    diagnostics = [variant for variant in report.variants if variant.diagnostic]
    if diagnostics:
        lines += [
            "",
            "Diagnostics (parts of the full-validation path, timed in the same rounds):",
            "",
            *header,
            *(row(variant) for variant in diagnostics),
        ]
    lines += [
        "",
        "Checked: every variant returned subject "
        f'"{SUBJECT}" before timing; a token signed with another key (same kid) was refused '
        "with `bad_signature` by both provider settings; the IdP served one discovery "
        "document and one JWKS per provider and nothing while timing; each provider recorded "
        "exactly one `token_validated` event.",
        "",
    ]
    return "\n".join(lines)


async def measure(plan: Plan, *, progress: Callable[[str], None] | None = None) -> Report:
    load_before = os.getloadavg()
    began = time.perf_counter()
    with running_idp() as idp:
        suite = build_suite(idp)
        await run_suite(suite, plan, progress=progress)
    return Report(
        variants=suite.variants,
        plan=plan,
        machine=machine_line(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.perf_counter() - began,
        load_before=load_before,
        load_after=os.getloadavg(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 short rounds: a smoke run")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown results file (default: {DEFAULT_OUT.relative_to(HERE.parent)} for a "
        "full run; a --quick run writes nothing unless --output is given)",
    )
    args = parser.parse_args(argv)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    progress(f"machine: {machine_line()}")
    report = asyncio.run(measure(QUICK if args.quick else FULL, progress=progress))
    publish(render(report, quick=args.quick), args.output, DEFAULT_OUT, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
