"""The ``mtls`` TLS provider: a client certificate, a pinned CA bundle, start-up checks.

The context it builds always verifies the server: ``CERT_REQUIRED``, hostname/SAN checks
with no fallback to the subject's common name, TLS 1.2 at least (1.3 preferred by
OpenSSL), X.509 strict mode, and trust in the configured CA bundle only (not the system
store). No option turns any of that off.

Start-up checks (:meth:`MtlsProvider.check`), each reported as a
:class:`~mcp_acp.models.TlsFinding` the proxy audits:

* every file exists and is a regular file of at most 1 MiB, reached only through
  directories that no one but you (or root) can write: each directory the path passes
  through, symlinks followed, is owned by you or root and not writable by group or others
  (unless sticky, as ``/tmp``) — else another user could put their own file, or a
  symlink, in its place — and in a directory others can write (sticky), every entry on
  the way, a symlink above all, is yours or root's: another user's link there is theirs
  to point anywhere (:func:`mcp_acp._fs.unsafe_path`, the rule the config and policy
  files pass too);
* the client key is owned by you, has no group or other permission bits, and is not a
  symlink that leads out of its directory;
* the certificate and the CA bundle are owned by you (or root), not writable by group or
  others, and hold no private key (a file that does is held to the key's rules);
* the key belongs to the certificate;
* the certificate is valid now: refused when expired or not yet valid, ``critical`` with
  fewer than ``critical_days`` left, ``warning`` with fewer than ``warn_days``.

Each file is read once, through the descriptor its checks were made on, never past
:data:`MAX_FILE_BYTES`, and the context is built from those bytes (:class:`CheckedFiles`),
as ``tls status`` shows them (:attr:`MtlsProvider.read`): what the audit says was checked
is what the connection trusts and presents, whatever happens to the files afterwards.

Keys protected by a passphrase are not supported: use file permissions (or a
hardware-backed key through a future provider).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import stat
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mcp_acp._fs import FileTooLargeError, NotRegularFileError, read_opened_file, unsafe_path
from mcp_acp.models import TlsFinding, TlsSeverity
from mcp_acp.registry import PluginContext

__all__ = [
    "CertificateInfo",
    "CheckedFiles",
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


def load_bundle(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of PEM bytes (ValueError if there is none)."""
    return x509.load_pem_x509_certificates(pem)


#: The most read of any configured file: a CA bundle of every public CA is ~220 KiB.
MAX_FILE_BYTES = 1 << 20
#: A PEM private key block of any kind (PKCS#8, PKCS#1 RSA, SEC1 EC, encrypted, OpenSSH).
_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


@dataclass(frozen=True)
class CheckedFiles:
    """What :meth:`MtlsProvider.check` read and accepted: the context is built from these,
    never from the files again."""

    chain: tuple[x509.Certificate, ...]  # the client certificate, then any intermediates
    key: PrivateKeyTypes
    cas: tuple[x509.Certificate, ...]


def _refuse(check: str, detail: str, **facts: Any) -> TlsFinding:
    return TlsFinding(check, TlsSeverity.REFUSE, detail, facts)


def _read_checked(label: str, path: Path, *, secret: bool) -> tuple[list[TlsFinding], bytes | None]:
    """The checks of one configured file, and its bytes if they pass.

    The file is opened once; its owner, mode and type are checked on that descriptor and
    its bytes read from it, so what is checked is what is read (a path checked, then
    opened, could name another file in between)."""
    check = f"{label}_file"
    uid = os.geteuid()
    try:
        link = path.lstat()
        unsafe = unsafe_path(path)
    except FileNotFoundError:
        return [_refuse(check, f"{label} {path} does not exist", path=str(path))], None
    except OSError as exc:
        return [_refuse(check, f"{label} {path}: {exc.strerror or exc}", path=str(path))], None
    if unsafe is not None:
        text = (
            f"{label} {path}: {unsafe}; keep the file where only you or root can change "
            "what its path names"
        )
        return [_refuse(check, text, path=str(path))], None
    try:
        # O_NONBLOCK: a FIFO put there must not hang start-up (it is refused below)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
        fd = os.open(path, flags)
    except OSError as exc:
        return [_refuse(check, f"{label} {path}: {exc.strerror or exc}", path=str(path))], None
    try:
        info, data = read_opened_file(fd, path, MAX_FILE_BYTES)
    except NotRegularFileError as exc:
        return [_refuse(check, f"{label} {exc}", path=str(path))], None
    except FileTooLargeError as exc:
        text = (
            f"{label} {path} is over the {MAX_FILE_BYTES >> 20} MiB limit of a certificate, "
            f"key or CA bundle file ({exc.size} bytes)"
        )
        return [_refuse(check, text, path=str(path))], None
    except OSError as exc:
        return [_refuse(check, f"{label} {path}: {exc.strerror or exc}", path=str(path))], None
    finally:
        os.close(fd)
    hint = ""
    if not secret and _PRIVATE_KEY.search(data):
        secret = True  # a private key, wherever it is, is held to the key's rules
        hint = "; it holds a private key: keep that only in the file client_key names"
    mode = stat.S_IMODE(info.st_mode)
    real = path.resolve()
    if stat.S_ISLNK(link.st_mode) and secret and real.parent != path.absolute().parent:
        text = (
            f"{label} {path} is a symlink to {real}, outside its directory; "
            f"point the config at the file itself{hint}"
        )
        return [_refuse(check, text, path=str(path))], None
    owners = (uid,) if secret else (uid, 0)
    if info.st_uid not in owners:
        text = f"{label} {path} is owned by uid {info.st_uid}, not by you (uid {uid}){hint}"
        return [_refuse(check, text, path=str(path))], None
    if secret and mode & 0o077:
        text = (
            f"{label} {path} has mode {mode:04o}; a private key must be 0600 or stricter "
            f"(chmod 600 {path}){hint}"
        )
        return [_refuse(check, text, path=str(path), mode=f"{mode:04o}")], None
    if not secret and mode & 0o022:
        text = f"{label} {path} is writable by group or others (mode {mode:04o}); chmod go-w {path}"
        return [_refuse(check, text, path=str(path), mode=f"{mode:04o}")], None
    ok = TlsFinding(check, TlsSeverity.OK, f"{label} {path}: ownership and mode ok")
    return [ok], data


class MtlsProvider:
    """A :class:`~mcp_acp.protocols.TlsProvider` for mutual TLS."""

    def __init__(self, options: MtlsConfig, *, now: datetime | None = None) -> None:
        self.options = options
        self._now = now
        #: What the last :meth:`check` read, if it passed; the context is built from it.
        self.checked: CheckedFiles | None = None
        #: The bytes of ``client_cert`` and ``ca_bundle`` (by option name) as the last
        #: :meth:`check` read them, each once its file checks passed: what ``tls status``
        #: shows, so that it never opens a path again (a FIFO put there since would hang
        #: it, ``/dev/zero`` fill its memory, another file show what was not checked).
        self.read: dict[str, bytes] = {}

    @classmethod
    def from_config(cls, options: MtlsConfig, context: PluginContext) -> MtlsProvider:
        return cls(options.resolved(context.config_dir))

    def check(self) -> list[TlsFinding]:
        self.checked = None
        opts = self.options
        cert_found, cert_pem = _read_checked("client certificate", opts.client_cert, secret=False)
        key_found, key_pem = _read_checked("client key", opts.client_key, secret=True)
        ca_found, ca_pem = _read_checked("CA bundle", opts.ca_bundle, secret=False)
        self.read = {
            name: pem
            for name, pem in (("client_cert", cert_pem), ("ca_bundle", ca_pem))
            if pem is not None
        }
        findings = [*cert_found, *key_found, *ca_found]
        if cert_pem is None or key_pem is None or ca_pem is None:
            return findings
        try:
            chain = x509.load_pem_x509_certificates(cert_pem)
        except ValueError as exc:
            return [*findings, _refuse("client_certificate", f"{opts.client_cert}: {exc}")]
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            return [
                *findings,
                _refuse("client_key", f"{opts.client_key} is not an unencrypted PEM key: {exc}"),
            ]
        try:
            cas = x509.load_pem_x509_certificates(ca_pem)
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
        cert = chain[0]
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
        validity = self._validity(certificate_info(cert))
        findings.append(validity)
        if validity.severity is not TlsSeverity.REFUSE:
            self.checked = CheckedFiles(tuple(chain), key, tuple(cas))
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
        """The context built from what :meth:`check` read and accepted (it runs the checks
        first if they have not run); ValueError if they refuse."""
        if self.checked is None:
            self.check()
        if self.checked is None:
            raise ValueError(
                "the files of backend.tls did not pass the start-up checks "
                "('mcp-acp tls status' shows why)"
            )
        return build_context(self.options, self.checked)


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


def build_context(options: MtlsConfig, files: CheckedFiles) -> ssl.SSLContext:
    """The client context: verification always on, trust only in the CA certificates of
    ``files``, and its client certificate and key (see :func:`_load_chain`)."""
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
    der = serialization.Encoding.DER
    context.load_verify_locations(cadata=b"".join(ca.public_bytes(der) for ca in files.cas))
    pem = serialization.Encoding.PEM
    chain = b"".join(cert.public_bytes(pem) for cert in files.chain)
    key = files.key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _load_chain(context, chain, key)
    return context


def _load_chain(context: ssl.SSLContext, chain: bytes, key: bytes) -> None:
    """``load_cert_chain`` from bytes in memory.

    Python's ``ssl`` loads a certificate and key from files only, and reading the
    configured files again would undo the checks: another file may stand at the path by
    now. A copy on disk would put the key where its checks never looked. So each is
    written into a pipe of this process, and OpenSSL opens the pipe's read end by its
    ``/dev/fd`` name: it reads exactly the bytes :meth:`MtlsProvider.check` accepted,
    and nothing touches the disk. A thread writes each pipe (a long chain may not fit in
    its buffer while OpenSSL has not started to read it)."""
    fds = Path("/dev/fd")
    if not fds.is_dir():
        raise OSError(f"{fds} is missing: the client certificate cannot be handed to OpenSSL")
    ends: list[int] = []
    writers: list[threading.Thread] = []
    try:
        for data in (chain, key):
            read_end, write_end = os.pipe()
            ends.append(read_end)
            writer = threading.Thread(
                target=_write_all, args=(write_end, data), name="mtls-pipe", daemon=True
            )
            writer.start()
            writers.append(writer)
        context.load_cert_chain(str(fds / str(ends[0])), str(fds / str(ends[1])))
    finally:
        for read_end in ends:
            os.close(read_end)  # a writer still blocked gets EPIPE and ends
        for writer in writers:
            writer.join()


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError:
        pass  # OpenSSL stopped reading (it failed on an earlier file)
    finally:
        os.close(fd)
