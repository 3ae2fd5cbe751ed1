"""TLS client contexts that verify the server and write no key log."""

from __future__ import annotations

import ssl
import sys

__all__ = ["verifying_context"]


def verifying_context(*, cafile: str | None = None, capath: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server — its certificate chain against the CA
    certificates in ``cafile`` and/or ``capath``, and its name — as
    ``ssl.create_default_context(cafile=…, capath=…)`` builds it, without the one thing that
    function takes from the environment: ``SSLKEYLOGFILE``. Python's default context (and so
    httpx's, which is built with it) appends the secrets of every TLS session to the file
    that variable names, and anyone who can read that file decrypts the traffic — a
    backend's ``Authorization`` header, an identity provider's tokens. Nothing the proxy
    builds writes a key log.

    The server's name is checked against the certificate's subjectAltName only (RFC 9525),
    as OpenSSL's own clients do: Python's contexts otherwise fall back to the subject's
    common name of a certificate that has none.

    Raises ``OSError`` (an ``ssl.SSLError`` for a file that holds no certificate) as
    ``load_verify_locations`` does, and ``ValueError`` without either location."""
    if cafile is None and capath is None:
        raise ValueError("a CA file or a CA directory is needed")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname on
    if sys.version_info >= (3, 13):  # as create_default_context does from Python 3.13 on
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    context.hostname_checks_common_name = False
    context.load_verify_locations(cafile, capath)
    return context
