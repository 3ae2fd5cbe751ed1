"""``mcp-acp tls status``: the configured certificates, their subjects and days left, and
the outcome of every start-up check — the same checks ``mcp-acp run`` audits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from mcp_acp.config import HttpBackend, redact_text, resolve_config_path
from mcp_acp.errors import ConfigError, printable
from mcp_acp.models import TlsSeverity
from mcp_acp.runtime import load_runtime
from mcp_acp_mtls.provider import MtlsProvider, certificate_info, load_bundle

__all__ = ["tls_group"]


@click.group("tls")
def tls_group() -> None:
    """Mutual TLS to the HTTP backend (plugin 'mtls')."""


def _certificates(provider: MtlsProvider) -> list[dict[str, Any]]:
    """The certificates as :meth:`MtlsProvider.check` (run first) read them: a path is
    never opened again here, so what is shown is what was checked, and a file the checks
    refused (a FIFO, a device, one too large) is not read at all."""
    now = datetime.now(UTC)
    shown: list[dict[str, Any]] = []
    for role, option, path in (
        ("client", "client_cert", provider.options.client_cert),
        ("ca", "ca_bundle", provider.options.ca_bundle),
    ):
        pem = provider.read.get(option)
        if pem is None:
            error = "not read: its file check refused it (below)"
            shown.append({"role": role, "path": str(path), "error": error})
            continue
        try:
            certs = load_bundle(pem)
        except ValueError as exc:
            shown.append({"role": role, "path": str(path), "error": str(exc)})
            continue
        for cert in certs[:1] if role == "client" else certs:
            info = certificate_info(cert)
            shown.append(
                {
                    "role": role,
                    "path": str(path),
                    "subject": info.subject,
                    "san": info.san,
                    "issuer": info.issuer,
                    "not_after": info.not_after.isoformat(),
                    "days_left": round(info.days_left(now), 1),
                }
            )
    return shown


def _echo(line: str) -> None:
    """One line for the terminal, every character that does not print as itself escaped
    (:func:`~mcp_acp.errors.printable`): the names in a certificate are its issuer's to
    choose — a CA in the bundle, whoever issued the client certificate — and an ANSI escape
    in a subject must not clear the screen or retitle the window."""
    click.echo(printable(line))


@tls_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the client certificate and CA bundle: subjects, SANs, days left, checks.

    Exits 1 when a start-up check would refuse to connect.
    """
    path = resolve_config_path(ctx.find_root().params.get("config"))
    runtime = load_runtime(path)
    backend = runtime.config.backend
    if not isinstance(backend, HttpBackend) or "backend.tls" not in runtime.components:
        raise ConfigError(
            f"{path}: backend.tls is not set: the backend is not reached over mutual TLS",
            fix='set backend.tls to {"use": "mtls", "config": {...}} (see docs/tls.md)',
        )
    provider = runtime.build("backend.tls")
    if not isinstance(provider, MtlsProvider):
        raise ConfigError(
            f"{path}: backend.tls.use = {backend.tls.use if backend.tls else None!r} is not 'mtls'",
            fix="'tls status' describes the 'mtls' provider only",
        )
    findings = provider.check()
    certificates = _certificates(provider)
    url = redact_text(backend.url)  # as 'config show' shows it: a token in the query redacted
    report = {
        "backend": url,
        "server_name": provider.options.server_name,
        "certificates": certificates,
        "checks": [
            {"check": f.check, "severity": f.severity.value, "detail": f.detail} for f in findings
        ],
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))  # JSON escapes every control character
    else:
        _echo(f"backend: {url}")
        if provider.options.server_name:
            _echo(f"server name: {provider.options.server_name}")
        for cert in certificates:
            if "error" in cert:
                _echo(f"{cert['role']}: {cert['path']}: {cert['error']}")
                continue
            _echo(
                f"{cert['role']}: {cert['subject']}  SAN [{', '.join(cert['san'])}]  "
                f"expires {cert['not_after']} ({cert['days_left']} days left)"
            )
        for f in findings:
            _echo(f"  [{f.severity.value}] {f.check}: {f.detail}")
    if any(f.severity is TlsSeverity.REFUSE for f in findings):
        ctx.exit(1)
