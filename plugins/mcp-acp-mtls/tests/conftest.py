"""Certificates made in the test (``cryptography``): a CA, server and client certificates,
and the faulty ones the checklist asks about (unknown CA, wrong SAN, CN only, expired, not
yet valid, a key from another pair)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


class CA:
    """A test certificate authority writing PEM files into ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY)
            .not_valid_after(NOW + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = _write_cert(self.cert, directory / f"{name}-ca.pem")

    def issue(
        self,
        label: str,
        *,
        sans: Sequence[str] = ("127.0.0.1",),
        common_name: str | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        client: bool = False,
    ) -> tuple[Path, Path]:
        """A leaf certificate and its key: ``(cert.pem, key.pem)`` (key mode 0600)."""
        key = _key()
        cn = common_name or label
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - DAY)
            .not_valid_after(not_after or NOW + 90 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            names: list[x509.GeneralName] = []
            for san in sans:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(san)))
                except ValueError:
                    names.append(x509.DNSName(san))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return (
            _write_cert(cert, self.directory / f"{label}.pem"),
            _write_key(key, self.directory / f"{label}-key.pem"),
        )


class PKI:
    """The certificates of one test: ``ca`` (trusted) and ``rogue`` (unknown to us)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700)
        os.chmod(directory, 0o700)
        self.directory = directory
        self.ca = CA(directory, "trusted")
        self.rogue = CA(directory, "rogue")
        self.client_cert, self.client_key = self.ca.issue("client", sans=(), client=True)
        self.server_cert, self.server_key = self.ca.issue("server")


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path / "pki")
