"""The backend's identity: canonical names, what a certificate yields, and that only a
completed handshake which verified the peer with the given context yields anything."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mcp_acp.backend_identity import canonical_name, peer_certificate, verified_certificate

NOW = dt.datetime.now(dt.UTC)


def certificate(names: list[x509.GeneralName] | None, cn: str = "server") -> tuple[bytes, bytes]:
    """A self-signed certificate with ``names`` as its subjectAltName: (PEM cert, PEM key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("DNS:notes.internal", "DNS:notes.internal"),
        ("dns:NOTES.Internal", "DNS:notes.internal"),
        ("DNS:\u212aey.internal", "DNS:\u212aey.internal"),  # not ASCII: kept, never 'key'
        ("IP:2001:DB8:0:0::1", "IP:2001:db8::1"),
        ("ip:010.000.000.001", None),  # leading zeros are ambiguous: refused by ipaddress
        ("URI:spiffe://Example.org/A", "URI:spiffe://Example.org/A"),
        ("notes.internal", None),
        ("email:a@b", None),
        ("DNS:", None),
    ],
)
def test_canonical_names(text: str, canonical: str | None) -> None:
    if canonical is None:
        with pytest.raises(ValueError, match=r"DNS:, URI: or IP:|names nothing|not an IP"):
            canonical_name(text)
    else:
        assert canonical_name(text) == canonical


def test_the_names_of_a_certificate() -> None:
    pem, _ = certificate(
        [
            x509.DNSName("Notes.Internal.Example"),
            x509.DNSName("notes.internal.example"),  # the same name twice: once
            x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
            x509.UniformResourceIdentifier("spiffe://example.org/ns/prod/sa/notes"),
            x509.RFC822Name("ops@example.org"),  # not an identity kind: left out
            x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])),
        ],
        cn="notes",
    )
    found = peer_certificate(der(pem))
    assert found.names == (
        "DNS:notes.internal.example",
        "IP:2001:db8::1",
        "URI:spiffe://example.org/ns/prod/sa/notes",
    )
    assert found.subject == "CN=notes"
    assert len(found.sha256) == 64


def test_a_certificate_without_subject_alt_names_has_no_identity() -> None:
    """Its common name is not an identity: hostname checks do not use it either."""
    pem, _ = certificate(None, cn="notes.internal.example")
    assert peer_certificate(der(pem)).names == ()


def test_garbage_is_not_a_certificate() -> None:
    with pytest.raises(ValueError, match="parsing"):
        peer_certificate(b"\x30\x03\x02\x01\x00")


def _handshake(
    tmp_path: Path, client: ssl.SSLContext, server_name: str = "notes.internal"
) -> ssl.SSLSocket:
    """A real TLS handshake over a socket pair; returns the client's side."""
    pem, key = certificate([x509.DNSName("notes.internal")])
    (tmp_path / "cert.pem").write_bytes(pem)
    (tmp_path / "key.pem").write_bytes(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    if client.verify_mode == ssl.CERT_REQUIRED:
        client.load_verify_locations(tmp_path / "cert.pem")
    left, right = socket.socketpair()
    accepted: list[ssl.SSLSocket] = []
    serving = threading.Thread(
        target=lambda: accepted.append(server.wrap_socket(right, server_side=True))
    )
    serving.start()
    tls = client.wrap_socket(left, server_hostname=server_name)
    serving.join(10)
    accepted[0].close()
    return tls


def test_a_verified_handshake_with_the_same_context_yields_the_names(tmp_path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with _handshake(tmp_path, context) as tls:
        found = verified_certificate(tls, context)
        assert found is not None
        assert found.names == ("DNS:notes.internal",)
        other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # not the context that verified it
        assert verified_certificate(tls, other) is None


def test_an_unverified_handshake_yields_nothing(tmp_path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the certificate is received, not verified
    with _handshake(tmp_path, context) as tls:
        assert tls.getpeercert(binary_form=True)
        assert verified_certificate(tls, context) is None
