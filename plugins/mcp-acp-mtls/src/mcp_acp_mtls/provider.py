"""The ``mtls`` TLS provider: a client certificate, a pinned CA bundle, start-up checks.

The context it builds always verifies the server: ``CERT_REQUIRED``, hostname/SAN checks
with no fallback to the subject's common name, TLS 1.2 at least (1.3 preferred by
OpenSSL), X.509 strict mode, and trust in the configured CA bundle only (not the system
store). No option turns any of that off.

Start-up checks (:meth:`MtlsProvider.check`), each reported as a
:class:`~mcp_acp.models.TlsFinding` the proxy audits:

* every file exists and is a regular file; the client key is owned by the user, has no
  group or other permission bits, is not a symlink that leads out of its directory, and
  sits in a directory that only its owner can write;
* the certificate and the CA bundle are owned by the user (or root) and not writable by
  group or others;
* the key belongs to the certificate;
* the certificate is valid now: refused when expired or not yet valid, ``critical`` with
  fewer than ``critical_days`` left, ``warning`` with fewer than ``warn_days``.

Keys protected by a passphrase are not supported: use file permissions (or a
hardware-backed key through a future provider).
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mcp_acp.models import TlsFinding, TlsSeverity
from mcp_acp.registry import PluginContext

__all__ = [
    "CertificateInfo",
    "MtlsConfig",
    "MtlsProvider",
    "build_context",
    "certificate_info",
    "load_bundle",
]


class MtlsConfig(BaseModel):
    """Options of ``backend.tls`` when ``use`` is ``mtls``. Relative paths are taken from
    the config file's directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_cert: Path = Field(description="PEM client certificate (chain) presented to the server.")
    client_key: Path = Field(description="PEM private key of client_cert: mode 0600 or less.")
    ca_bundle: Path = Field(description="PEM CA certificates the server's chain must lead to.")
    server_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.:-]+$",
        description="Name the server certificate must carry (and SNI) instead of the URL's host.",
    )
    warn_days: int = Field(default=14, ge=1, le=365, description="Warn when fewer days remain.")
    critical_days: int = Field(
        default=7, ge=1, le=365, description="Critical when fewer days remain."
    )

    @model_validator(mode="after")
    def _order(self) -> MtlsConfig:
        if self.critical_days > self.warn_days:
            raise ValueError("critical_days must not exceed warn_days")
        return self

    def resolved(self, base: Path) -> MtlsConfig:
        """A copy with relative paths made absolute against ``base``."""
        return self.model_copy(
            update={
                name: base / getattr(self, name)
                for name in ("client_cert", "client_key", "ca_bundle")
                if not getattr(self, name).is_absolute()
            }
        )


class CertificateInfo(BaseModel):
    """What ``tls status`` and the audit record show of one certificate."""

    subject: str
    issuer: str
    san: list[str]
    not_before: datetime
    not_after: datetime
    sha256: str

    def days_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds() / 86400


def certificate_info(cert: x509.Certificate) -> CertificateInfo:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san = [f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)]
        san += [f"IP:{n}" for n in names.get_values_for_type(x509.IPAddress)]
        san += [f"URI:{n}" for n in names.get_values_for_type(x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        san = []
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        san=san,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def load_bundle(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file (ValueError if there is none)."""
    return x509.load_pem_x509_certificates(path.read_bytes())


def _refuse(check: str, detail: str, **facts: Any) -> TlsFinding:
    return TlsFinding(check, TlsSeverity.REFUSE, detail, facts)


def _file_findings(label: str, path: Path, *, secret: bool) -> list[TlsFinding]:
    """Ownership, mode and symlink checks of one configured file."""
    check = f"{label}_file"
    try:
        link = path.lstat()
    except FileNotFoundError:
        return [_refuse(check, f"{label} {path} does not exist", path=str(path))]
    except OSError as exc:
        return [_refuse(check, f"{label} {path}: {exc.strerror}", path=str(path))]
    real = path.resolve()
    if stat.S_ISLNK(link.st_mode) and secret and real.parent != path.absolute().parent:
        return [
            _refuse(
                check,
                f"{label} {path} is a symlink to {real}, outside its directory; "
                "point the config at the file itself",
                path=str(path),
            )
        ]
    info = real.stat()
    if not stat.S_ISREG(info.st_mode):
        return [_refuse(check, f"{label} {path} is not a regular file", path=str(path))]
    uid = os.geteuid()
    owners = (uid,) if secret else (uid, 0)
    if info.st_uid not in owners:
        return [
            _refuse(
                check,
                f"{label} {path} is owned by uid {info.st_uid}, not by you (uid {uid})",
                path=str(path),
            )
        ]
    mode = stat.S_IMODE(info.st_mode)
    if secret and mode & 0o077:
        return [
            _refuse(
                check,
                f"{label} {path} has mode {mode:04o}; a private key must be 0600 or "
                f"stricter (chmod 600 {path})",
                path=str(path),
                mode=f"{mode:04o}",
            )
        ]
    if not secret and mode & 0o022:
        return [
            _refuse(
                check,
                f"{label} {path} is writable by group or others (mode {mode:04o}); "
                f"chmod go-w {path}",
                path=str(path),
                mode=f"{mode:04o}",
            )
        ]
    if secret:
        directory = real.parent.stat()
        if stat.S_IMODE(directory.st_mode) & 0o022 or directory.st_uid not in (uid, 0):
            return [
                _refuse(
                    check,
                    f"the directory of {label} {real} can be written by others "
                    f"(mode {stat.S_IMODE(directory.st_mode):04o}); chmod go-w {real.parent}",
                    path=str(path),
                )
            ]
    return [TlsFinding(check, TlsSeverity.OK, f"{label} {path}: ownership and mode ok")]


class MtlsProvider:
    """A :class:`~mcp_acp.protocols.TlsProvider` for mutual TLS."""

    def __init__(self, options: MtlsConfig, *, now: datetime | None = None) -> None:
        self.options = options
        self._now = now

    @classmethod
    def from_config(cls, options: MtlsConfig, context: PluginContext) -> MtlsProvider:
        return cls(options.resolved(context.config_dir))

    def check(self) -> list[TlsFinding]:
        opts = self.options
        findings = [
            *_file_findings("client certificate", opts.client_cert, secret=False),
            *_file_findings("client key", opts.client_key, secret=True),
            *_file_findings("CA bundle", opts.ca_bundle, secret=False),
        ]
        if any(f.severity is TlsSeverity.REFUSE for f in findings):
            return findings
        try:
            cert = load_bundle(opts.client_cert)[0]
        except ValueError as exc:
            return [*findings, _refuse("client_certificate", f"{opts.client_cert}: {exc}")]
        try:
            key = serialization.load_pem_private_key(opts.client_key.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            return [
                *findings,
                _refuse("client_key", f"{opts.client_key} is not an unencrypted PEM key: {exc}"),
            ]
        try:
            cas = load_bundle(opts.ca_bundle)
        except ValueError as exc:
            return [*findings, _refuse("ca_bundle", f"{opts.ca_bundle}: {exc}")]
        findings.append(
            TlsFinding(
                "ca_bundle",
                TlsSeverity.OK,
                f"{len(cas)} CA certificate(s)",
                {"subjects": [c.subject.rfc4514_string() for c in cas]},
            )
        )
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
            findings.append(
                _refuse(
                    "key_match",
                    f"client key {opts.client_key} does not belong to certificate "
                    f"{opts.client_cert}",
                )
            )
            return findings
        findings.append(TlsFinding("key_match", TlsSeverity.OK, "the key matches the certificate"))
        findings.append(self._validity(certificate_info(cert)))
        return findings

    def _validity(self, info: CertificateInfo) -> TlsFinding:
        now = self._now or datetime.now(UTC)
        days = info.days_left(now)
        facts = {
            "subject": info.subject,
            "san": info.san,
            "not_after": info.not_after.isoformat(),
            "days_left": round(days, 1),
        }
        opts = self.options
        if now < info.not_before:
            return _refuse(
                "client_certificate_validity",
                f"client certificate {info.subject} is not valid before {info.not_before}",
                **facts,
            )
        if days <= 0:
            return _refuse(
                "client_certificate_validity",
                f"client certificate {info.subject} expired on {info.not_after}; renew it",
                **facts,
            )
        severity = (
            TlsSeverity.CRITICAL
            if days < opts.critical_days
            else TlsSeverity.WARNING
            if days < opts.warn_days
            else TlsSeverity.OK
        )
        text = f"client certificate {info.subject} expires in {days:.1f} days"
        return TlsFinding("client_certificate_validity", severity, text, facts)

    def ssl_context(self) -> ssl.SSLContext:
        return build_context(self.options)


class _NamedContext(ssl.SSLContext):
    """A client context that checks (and sends as SNI) a configured name instead of the
    URL's host. The transport (anyio under httpx2) wraps connections with ``wrap_bio``."""

    server_name: str

    def wrap_bio(  # type: ignore[override]
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)

    def wrap_socket(  # type: ignore[override]
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock,
            server_side,
            do_handshake_on_connect,
            suppress_ragged_eofs,
            self.server_name,
            session,
        )


def build_context(options: MtlsConfig) -> ssl.SSLContext:
    """The client context: verification always on, trust only in ``ca_bundle``."""
    context: ssl.SSLContext
    if options.server_name:
        context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
        context.server_name = options.server_name
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # PROTOCOL_TLS_CLIENT already means CERT_REQUIRED and check_hostname; stated again so
    # that a reader need not know it.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.hostname_checks_common_name = False
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cafile=str(options.ca_bundle))
    context.load_cert_chain(str(options.client_cert), str(options.client_key))
    return context
