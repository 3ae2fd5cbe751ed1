"""Resource URIs as the policy sees them: one normal form, ambiguous ones refused.

A ``uri`` condition compares the normal form of the requested URI, never the string as
sent, and the patterns are stored in the same form (:func:`normalise_uri_pattern`). As with
paths, what two programs could read differently is refused with a reason, not cleaned up:

* ``file:`` URIs are paths: decoded once, no host but ``localhost``, then normalised as a
  path argument is (:mod:`mcp_acp.policy.paths`); the normal form is ``file://`` and the
  path, so ``file://localhost/etc/x``, ``file:/etc/x`` and ``file:////etc/x`` are
  ``file:///etc/x``. The proxy follows the path's symlinks; a rule sees both.
* Every other URI: the scheme lower-case; a percent-escape of an unreserved character
  (``%61`` is ``a``) decoded, any other escape in upper case. Refused: no scheme,
  non-ASCII (percent-encode it), whitespace, control characters, ``\\``, an invalid
  escape, a ``.`` or ``..`` segment (written or encoded), and in the path an encoded
  ``/``, ``\\``, ``%`` or control character (``..%2f``, ``%252e``).
* ``http``, ``https``, ``ws``, ``wss`` also: the host lower-case and required, without user
  info or percent-encoding, a numeric host only as a dotted quad (``2130706433`` and
  ``0x7f.1`` are 127.0.0.1 to a browser), IPv6 compressed, the default port dropped, an
  empty path written ``/``; an empty segment (``//admin``) is refused — some servers merge
  slashes, some do not.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

from mcp_acp.policy.paths import AmbiguousPathError, file_uri_to_path, normalise_path_pattern

__all__ = ["deny_forms", "normalise_uri", "normalise_uri_pattern", "uri_scheme"]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
#: Schemes with a host and default port, read the way browsers and HTTP servers read them.
_WEB_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})?")
#: Escapes refused in a path: a separator, a percent (double encoding) or a control.
_PATH_FORBIDDEN = re.compile(r"%(?:2F|5C|25|[01][0-9A-F]|7F)")
_BAD_CHARACTER = re.compile(r"[^\x21-\x7e]|\\")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_DOTTED_QUAD = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
                          r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])")  # fmt: skip


def uri_scheme(uri: str) -> str | None:
    """The lower-case scheme of ``uri``, or ``None`` (never raises)."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else None


def normalise_uri(uri: str) -> str:
    """The normal form of ``uri`` (without following symlinks), or ``AmbiguousPathError``."""
    match = _SCHEME.match(uri)
    if match is None:
        raise AmbiguousPathError(uri, "is not an absolute URI (it has no scheme)")
    scheme = match.group(1).lower()
    if scheme == "file":
        return "file://" + file_uri_to_path(uri)
    if (bad := _BAD_CHARACTER.search(uri)) is not None:
        char = bad.group()
        what = "a backslash" if char == "\\" else f"character U+{ord(char):04X}"
        hint = " (percent-encode it)" if not char.isascii() else ""
        raise AmbiguousPathError(uri, f"contains {what}{hint}")
    rest, hash_mark, fragment = uri[match.end() :].partition("#")
    rest, question_mark, query = rest.partition("?")
    web = scheme in _WEB_PORTS
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        path = slash + path
        host = _web_authority(uri, scheme, authority) if web else _escapes(uri, authority)
        head = f"{scheme}://{host}"
    elif web:
        raise AmbiguousPathError(uri, "has no host (write scheme://host/…)")
    else:
        head, path = f"{scheme}:", rest
    if web and not path:
        path = "/"
    path = _escapes(uri, path)
    if (encoded := _PATH_FORBIDDEN.search(path)) is not None:
        raise AmbiguousPathError(
            uri, f"has {encoded.group()} in its path (an encoded separator, percent or control)"
        )
    segments = path.split("/")
    if any(segment in (".", "..") for segment in segments):
        raise AmbiguousPathError(uri, "contains a '.' or '..' segment")
    if web and "" in segments[1:-1]:
        raise AmbiguousPathError(uri, "has an empty path segment ('//')")
    tail = (question_mark + _escapes(uri, query)) + (hash_mark + _escapes(uri, fragment))
    return head + path + tail


def deny_forms(normal: str) -> tuple[str, ...]:
    """Further forms a deny rule also sees: without query and fragment (``/admin?x`` is
    ``/admin``), and with every escape decoded (``%EF%BD%81dmin`` folds to ``admin``)."""
    forms = [normal]
    if not normal.startswith("file:"):
        bare = normal.partition("#")[0].partition("?")[0]
        forms.append(bare)
        forms += [unquote(form, errors="replace") for form in forms if "%" in form]
    return tuple(dict.fromkeys(forms))


def normalise_uri_pattern(pattern: str) -> str:
    """``pattern`` in the normal form of the URIs it is compared with; ``ValueError`` (one
    line, with the fix) if it could never match one. A pattern without a literal scheme
    (``**``, ``*://x/**``) is kept as written."""
    match = _SCHEME.match(pattern)
    if match is None:
        return pattern
    scheme = match.group(1).lower()
    rest = pattern[match.end() :]
    if scheme == "file":
        if rest.startswith("//"):
            host, slash, path = rest[2:].partition("/")
            if host.lower() not in ("", "localhost"):
                raise ValueError(
                    f"uri pattern {pattern!r} names host {host!r}; file: URIs are local "
                    "(write file:///path)"
                )
            rest = slash + path
        if re.search(r"%(?:2[Aa]|3[Ff])", rest):
            raise ValueError(f"uri pattern {pattern!r} percent-encodes '*' or '?'")
        try:
            path = unquote(rest, errors="strict")
        except UnicodeDecodeError:
            raise ValueError(f"uri pattern {pattern!r} has invalid UTF-8 encoding") from None
        try:
            return "file://" + normalise_path_pattern(path)
        except ValueError as exc:
            raise ValueError(f"uri pattern {pattern!r}: {exc}") from None
    if (bad := _BAD_CHARACTER.search(pattern)) is not None:
        char = bad.group()
        hint = "; percent-encode it (UTF-8)" if not char.isascii() else ""
        raise ValueError(f"uri pattern {pattern!r} contains {char!r}{hint}")
    web = scheme in _WEB_PORTS
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        path = slash + path
        if web:
            if "@" in authority:
                raise ValueError(f"uri pattern {pattern!r} has user info, which URIs may not")
            authority = authority.lower()
            host, colon, port = authority.rpartition(":")
            if colon and port.isdigit() and (host.endswith("]") or ":" not in host):
                authority = host if int(port) == _WEB_PORTS[scheme] else f"{host}:{int(port)}"
            path = path or "/"
        head = f"{scheme}://{authority}"
    elif web:
        raise ValueError(f"uri pattern {pattern!r} has no host (write {scheme}://host/…)")
    else:
        head, path = f"{scheme}:", rest
    try:
        path = _escapes(pattern, path)
    except AmbiguousPathError as exc:
        raise ValueError(f"uri pattern {pattern!r} {exc.reason}") from None
    segments = path.split("/")
    if any(segment in (".", "..") for segment in segments):
        raise ValueError(f"uri pattern {pattern!r} contains a '.' or '..' segment")
    if web and "" in segments[1:-1]:
        raise ValueError(f"uri pattern {pattern!r} has an empty segment ('//'), which no URI has")
    return head + path


def _escapes(uri: str, text: str) -> str:
    """Decode escapes of unreserved characters, upper-case the others; refuse a ``%`` that
    starts no escape."""
    if "%" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        hex_digits = match.group(1)
        if hex_digits is None:
            raise AmbiguousPathError(uri, "has a '%' that starts no escape (%XX)")
        char = chr(int(hex_digits, 16))
        return char if _UNRESERVED.fullmatch(char) else "%" + hex_digits.upper()

    return _ESCAPE.sub(one, text)


def _web_authority(uri: str, scheme: str, authority: str) -> str:
    """``host[:port]`` of an http(s)/ws(s) URI in normal form."""
    if "@" in authority:
        raise AmbiguousPathError(uri, "has user info ('user@host'), which hides the host")
    if "%" in authority:
        raise AmbiguousPathError(uri, "has a percent-encoded host")
    if authority.startswith("["):
        end = authority.find("]")
        after = authority[end + 1 :] if end > 0 else ""
        if end < 0 or (after and not after.startswith(":")):
            raise AmbiguousPathError(uri, "has an invalid IPv6 host")
        try:
            host = f"[{ipaddress.IPv6Address(authority[1:end]).compressed}]"
        except ValueError:
            raise AmbiguousPathError(uri, "has an invalid IPv6 host") from None
        colon, port = after[:1], after[1:]
    else:
        host, colon, port = authority.partition(":")
        host = host.lower()
        if not host:
            raise AmbiguousPathError(uri, "has no host")
        if host.endswith("."):
            raise AmbiguousPathError(uri, "has a host ending in '.'")
        if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]) and not _DOTTED_QUAD.fullmatch(host):
            raise AmbiguousPathError(uri, f"has numeric host {host!r} not in dotted-decimal form")
    if not colon or port == "":
        return host
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise AmbiguousPathError(uri, f"has an invalid port {port!r}")
    number = int(port)
    return host if number == _WEB_PORTS[scheme] else f"{host}:{number}"
