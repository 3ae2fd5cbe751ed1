"""The backend's identity, as the certificate it proved in a verified TLS handshake names it.

An identity is the certificate's subjectAltName entries of three kinds, each written with
its kind: ``DNS:mcp.internal.example``, ``URI:spiffe://example.org/ns/prod/sa/notes``,
``IP:10.0.0.7``. The proxy reads them (:func:`verified_certificate`), the policy matches
them (``backend_identity`` conditions), the audit trail records them; all three use the
canonical form of :func:`canonical_name`, so a name is written one way only.

Other kinds of subjectAltName (e-mail, directory names, ``otherName``) and the subject's
common name are not part of the identity: TLS hostname checks use the subjectAltName only,
and so does this. The subject is recorded for people to read.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl

import attrs

__all__ = ["KINDS", "PeerCertificate", "canonical_name", "peer_certificate", "verified_certificate"]

#: The kinds of subjectAltName that make up an identity.
KINDS = ("DNS", "IP", "URI")


def canonical_name(text: str) -> str:
    """``'dns:Notes.Internal'`` → ``'DNS:notes.internal'``: the kind upper-case; an ASCII DNS
    name lower-case (DNS ignores case; other names are kept as written, so a look-alike
    never becomes the name it imitates); an IP address in its shortest form; a URI as
    written. Raises ValueError saying what is wrong."""
    kind, colon, value = text.partition(":")
    kind = kind.upper()
    if not colon or kind not in KINDS:
        raise ValueError(
            f"{text!r} must start with DNS:, URI: or IP: (e.g. 'DNS:mcp.internal.example')"
        )
    if not value:
        raise ValueError(f"{text!r} names nothing after '{kind}:'")
    if kind == "DNS":
        return f"DNS:{value.lower() if value.isascii() else value}"
    if kind == "IP":
        try:
            return f"IP:{ipaddress.ip_address(value)}"
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address") from None
    return f"URI:{value}"


@attrs.frozen(slots=True)
class PeerCertificate:
    """What the backend's certificate says about it: ``names`` (sorted, canonical) are the
    identity; ``subject`` and ``sha256`` are recorded for people."""

    names: tuple[str, ...]
    subject: str
    sha256: str


def peer_certificate(der: bytes) -> PeerCertificate:
    """The identity in a DER certificate. Raises ValueError if it cannot be parsed."""
    from cryptography import x509  # only HTTPS backends with a TLS provider need it

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names: set[str] = set()
    else:
        names = {canonical_name(f"DNS:{n}") for n in san.get_values_for_type(x509.DNSName) if n}
        names |= {f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)}
        names |= {f"URI:{n}" for n in san.get_values_for_type(x509.UniformResourceIdentifier) if n}
    return PeerCertificate(
        names=tuple(sorted(names)),
        subject=cert.subject.rfc4514_string(),
        sha256=hashlib.sha256(der).hexdigest(),
    )


def verified_certificate(
    tls: ssl.SSLObject | ssl.SSLSocket, context: ssl.SSLContext
) -> PeerCertificate | None:
    """The peer's certificate after a completed handshake, but only if that handshake was
    made with ``context`` and verified the peer; None otherwise (never a guess)."""
    if tls.context is not context or context.verify_mode != ssl.CERT_REQUIRED:
        return None
    if not tls.getpeercert():  # an empty dict: the certificate was not validated
        return None
    der = tls.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return peer_certificate(der)
    except ValueError:
        return None
