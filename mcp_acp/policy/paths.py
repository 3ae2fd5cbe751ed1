"""Paths as the policy sees them: normalised once, ambiguous ones refused, never guessed.

A proxy decides on a *string* that a backend resolves later, so anything that two programs
could read differently is refused with a reason instead of being "cleaned up":

* not absolute (relative paths, ``~``, ``$HOME``, ``C:``) — nothing is expanded;
* a ``..`` segment anywhere — lexical collapsing is wrong once symlinks exist;
* NUL, control characters, invisible and bidi-override characters, lone surrogates and
  U+FFFD (a name that was not decoded), characters this Python's Unicode tables do not know
  (a backend with newer ones may normalise them otherwise);
* backslashes (Windows forms, mixed separators), look-alike slashes (U+2215, U+2044, …),
  fullwidth forms, text that is not Unicode NFC;
* percent-encoding in a plain path (``%2e%2e``);
* Windows-only aliases: a ``:`` in a name (drive, alternate data stream), a trailing dot or
  space, reserved device names (``CON``, ``aux.json``, ``COM1``), a name that looks like an
  8.3 short name (``SECRET~1``, ``PROGRA~1.TXT``: ``~`` and digits before the end or a dot),
  which Windows reads as another, longer name;
* ``/proc/self``, ``/proc/<pid>``, ``/proc/thread-self`` and ``/dev/fd`` magic links;
* longer than 4096 bytes, or a name longer than 255 bytes.

What *is* normalised: repeated slashes, ``.`` segments and a trailing slash.

:func:`resolve_symlinks` (I/O, run by the proxy before the decision, not by the pure engine)
follows symlinks like the kernel does, so a rule sees both the requested path and where it
really leads; it refuses a link into ``/proc/self`` or ``/dev/fd`` (the backend would follow
it into its own), and a missing name beside an entry that is its Unicode-equivalent form, or
that holds a character our tables do not know (a backend may open that one). A ``file:``
URI with a control character or an edge space is refused before it is parsed
(``urlsplit`` would drop them).
"""

from __future__ import annotations

import errno
import os
import re
import unicodedata
from collections import deque
from urllib.parse import unquote, urlsplit

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_PATH_BYTES",
    "AmbiguousPathError",
    "extension_of",
    "file_uri_to_path",
    "hidden_character",
    "is_within",
    "normalise_path",
    "normalise_path_pattern",
    "resolve_symlinks",
]

MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255
MAX_SYMLINKS = 40  # as Linux's MAXSYMLINKS

_LOOKALIKE_SLASHES = frozenset("\u2215\u2044\u29f8\u2216\u29f5\u29f9\uff0f\uff3c\u2571\u2572")
#: Characters that show as nothing (or as a plain space) but make a different name:
#: zero-width and bidi controls, soft hyphen, fillers (Hangul, Mongolian, Khmer, braille
#: blank), joiners and variation selectors, tags, line/paragraph separators, odd spaces.
_INVISIBLE = re.compile(
    "[\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f"
    "\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u2069\u2800\u3000\u3164"
    "\ufe00-\ufe0f\ufeff\U000e0000-\U000e007f]"
)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
#: Lone surrogates (not Unicode: Python writes U+DC80-U+DCFF to disk as raw bytes, Node
#: reads them as U+FFFD) and U+FFFD itself (the mark of a name that could not be decoded:
#: Node gives it for every such name, so it may stand for one the proxy cannot name).
_UNDECODED = re.compile("[\ud800-\udfff\ufffd]")
_PERCENT = re.compile("%[0-9A-Fa-f]{2}")


def hidden_character(text: str) -> str | None:
    """The first character of ``text`` that does not show as itself — a control or
    invisible character, a lone surrogate or U+FFFD — if there is one: in a policy's
    pattern, a pasted one makes a rule that names nothing it was meant to."""
    for refused in (_CONTROL, _INVISIBLE, _UNDECODED):
        if (m := refused.search(text)) is not None:
            return m.group()
    return None


_FULLWIDTH = re.compile("[\uff00-\uffef]")
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"com{i}" for i in range(10)]
    + [f"lpt{i}" for i in range(10)]
    + ["com\u00b9", "com\u00b2", "com\u00b3", "lpt\u00b9", "lpt\u00b2", "lpt\u00b3"]
)
_MAGIC = re.compile(r"^/(?:proc/(?:self|thread-self|\d+)|dev/fd)(?:/|$)")
#: Paths made only of these characters need none of the character checks (the fast path).
_PLAIN = re.compile(r"/[A-Za-z0-9_./+,=@~#&!()\[\]{}' -]*\Z")
#: Anything a plain path needs the slow, segment-by-segment loop for.
#: ``~`` and digits before the end of a name or a dot: how a Windows 8.3 short name ends.
_SHORT_NAME = re.compile(r"~[0-9]+(?:\.|\Z)")
_NOT_CANONICAL = re.compile(
    r"//|/\.(?:/|\Z)|/\Z|[. ](?:/|\Z)|~[0-9]+(?:[./]|\Z)"
    r"|(?i:(?:^|/)(?:con|prn|aux|nul|com\d|lpt\d) *(?:\.[^/]*)?(?:/|\Z))"
)


class AmbiguousPathError(ValueError):
    """A path that could be read two ways; ``reason`` says why (one line)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path!r}: {reason}")
        self.path = path
        self.reason = reason


def normalise_path(raw: str) -> str:
    """Return the canonical form of an absolute path, or raise :class:`AmbiguousPathError`."""
    if not isinstance(raw, str):
        raise AmbiguousPathError(repr(raw), "is not a string")
    if _PLAIN.match(raw) is None:
        _check_characters(raw)
    elif len(raw) <= MAX_COMPONENT_BYTES and _NOT_CANONICAL.search(raw) is None:
        # fast path: plain ASCII, already canonical ('..' segments end in '.', so they
        # are caught by the trailing-dot alternative above)
        if raw.startswith(("/proc/", "/dev/")) and _MAGIC.match(raw):
            raise AmbiguousPathError(raw, "goes through a /proc or /dev/fd magic link")
        return raw
    if len(raw) > MAX_PATH_BYTES // 4 and len(raw.encode()) > MAX_PATH_BYTES:
        raise AmbiguousPathError(raw[:64] + "…", f"is longer than {MAX_PATH_BYTES} bytes")
    parts: list[str] = []
    for part in raw.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise AmbiguousPathError(raw, "contains a '..' segment")
        if len(part) > MAX_COMPONENT_BYTES // 4 and len(part.encode()) > MAX_COMPONENT_BYTES:
            raise AmbiguousPathError(raw, f"has a name longer than {MAX_COMPONENT_BYTES} bytes")
        if ":" in part:
            raise AmbiguousPathError(raw, f"name {part!r} contains ':' (drive or data stream)")
        if part[-1] in ". ":
            raise AmbiguousPathError(raw, f"name {part!r} ends with a dot or space")
        if part.split(".", 1)[0].rstrip(" ").lower() in _WINDOWS_RESERVED:
            raise AmbiguousPathError(raw, f"name {part!r} is a reserved device name")
        if "~" in part and _SHORT_NAME.search(part):
            raise AmbiguousPathError(
                raw, f"name {part!r} looks like a Windows 8.3 short name (another name's alias)"
            )
        parts.append(part)
    path = "/" + "/".join(parts)
    if path.startswith(("/proc/", "/dev/")) and _MAGIC.match(path):
        raise AmbiguousPathError(raw, "goes through a /proc or /dev/fd magic link")
    return path


def normalise_path_pattern(pattern: str) -> str:
    """A path glob in the form request paths are compared in (:func:`normalise_path`):
    repeated slashes and ``.`` segments removed, Unicode NFC; ``ValueError`` (one line, with
    the fix) for one that could never match. A trailing slash is refused rather than
    dropped: ``/srv/private/`` may mean the directory or everything in it."""
    for segment in pattern.split("/"):
        if "**" in segment and segment != "**":
            raise ValueError(f"pattern {pattern!r}: '**' must be a whole segment ('/a/**/b')")
    if "\x00" in pattern:
        raise ValueError("path pattern contains NUL")
    if (hidden := hidden_character(pattern)) is not None:  # a path with one is ambiguous
        raise ValueError(
            f"path pattern {pattern!r} contains U+{ord(hidden):04X}, which no path "
            "the proxy accepts holds: it would never match; remove it"
        )
    if "\\" in pattern:
        raise ValueError(f"path pattern {pattern!r} uses '\\'; use '/' separators")
    if ".." in pattern.split("/"):
        raise ValueError(f"path pattern {pattern!r} contains a '..' segment")
    if not (pattern.startswith(("/", "**"))):
        raise ValueError(f"path pattern {pattern!r} must be absolute (start with '/' or '**')")
    head = "/" if pattern.startswith("/") else ""
    normal = head + "/".join(part for part in pattern.split("/") if part not in ("", "."))
    if pattern.endswith("/") and normal != "/":
        fix = repr(normal) if normal.endswith("**") else f"{normal!r} or {normal + '/**'!r}"
        raise ValueError(
            f"path pattern {pattern!r} ends with '/', which no path has once normalised; "
            f"write {fix}"
        )
    return unicodedata.normalize("NFC", normal)


def _check_characters(raw: str) -> None:
    """The slow, precise checks for paths with unusual characters (or not absolute)."""
    if not raw:
        raise AmbiguousPathError(raw, "is empty")
    if "\x00" in raw:
        raise AmbiguousPathError(raw, "contains a NUL character")
    if (m := _CONTROL.search(raw)) is not None:
        raise AmbiguousPathError(raw, f"contains control character U+{ord(m.group()):04X}")
    if (m := _INVISIBLE.search(raw)) is not None:
        raise AmbiguousPathError(
            raw, f"contains invisible or bidi character U+{ord(m.group()):04X}"
        )
    if (m := _UNDECODED.search(raw)) is not None:
        what = "the replacement character" if m.group() == "\ufffd" else "a lone surrogate"
        raise AmbiguousPathError(
            raw, f"contains {what} U+{ord(m.group()):04X} (a name programs decode differently)"
        )
    if "\\" in raw:
        raise AmbiguousPathError(raw, "contains a backslash (Windows path or mixed separators)")
    if lookalike := _LOOKALIKE_SLASHES.intersection(raw):
        char = min(lookalike)
        raise AmbiguousPathError(raw, f"contains look-alike slash U+{ord(char):04X}")
    if (m := _FULLWIDTH.search(raw)) is not None:
        raise AmbiguousPathError(raw, f"contains fullwidth character U+{ord(m.group()):04X}")
    if _PERCENT.search(raw):
        raise AmbiguousPathError(raw, "contains percent-encoding (plain paths are not URLs)")
    if not raw.startswith("/"):
        if re.match(r"^[A-Za-z]:", raw):
            raise AmbiguousPathError(raw, "is a Windows drive path")
        raise AmbiguousPathError(
            raw, "is not absolute ('~', '$HOME' and relative paths are not expanded)"
        )
    if (unknown := _unknown_character(raw)) is not None:
        raise AmbiguousPathError(
            raw, f"contains {unknown}: a program with newer ones may normalise it otherwise"
        )
    if not unicodedata.is_normalized("NFC", raw):
        raise AmbiguousPathError(raw, "is not in Unicode NFC form")


def file_uri_to_path(uri: str) -> str:
    """Path of a ``file:`` URI (decoded once, then normalised), or ``AmbiguousPathError``."""
    # refused as written: urlsplit would drop tabs and line breaks, and leading C0 controls
    # and spaces, so the decision would be on another string than the backend's
    if (m := _CONTROL.search(uri)) is not None:
        raise AmbiguousPathError(uri, f"contains control character U+{ord(m.group()):04X}")
    if uri[:1] == " " or uri[-1:] == " ":
        raise AmbiguousPathError(uri, "begins or ends with a space")
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. "file://[x/": an invalid IPv6 host
        raise AmbiguousPathError(uri, "is not a valid URI") from None
    if parts.scheme.lower() != "file":
        raise AmbiguousPathError(uri, "is not a file: URI")
    if parts.netloc not in ("", "localhost"):
        raise AmbiguousPathError(uri, f"names a remote host {parts.netloc!r}")
    if parts.query or parts.fragment:
        raise AmbiguousPathError(uri, "has a query or fragment")
    try:
        decoded = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        raise AmbiguousPathError(uri, "has invalid (e.g. overlong) UTF-8 encoding") from None
    return normalise_path(decoded)


def extension_of(path: str) -> str | None:
    """Lower-case extension without the dot (``"pem"``), or ``None``."""
    name = path.rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem and ext else None


def is_within(path: str, directory: str) -> bool:
    """True if normalised ``path`` is ``directory`` or below it (never a prefix sibling)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def resolve_symlinks(path: str, *, max_links: int = MAX_SYMLINKS) -> str:
    """Follow every symlink in normalised absolute ``path``, as the kernel would.

    Missing components are kept as written (a file about to be created). A loop, more than
    ``max_links`` links, a directory we may not inspect, a link into a per-process magic
    directory (``/proc/self``, ``/dev/fd``: the backend would see its own, not ours), or a
    missing name whose Unicode equivalent exists (:func:`_refuse_equivalent`) raise
    ``AmbiguousPathError``.
    """
    pending = deque(part for part in path.split("/") if part)
    resolved = "/"
    links = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":  # only from a symlink's target
            resolved = os.path.dirname(resolved) or "/"
            continue
        candidate = os.path.join(resolved, part)
        if resolved in ("/proc", "/dev") and _MAGIC.match(candidate):  # only through a link:
            raise AmbiguousPathError(  # the path as written was checked
                path, f"a symlink leads into {candidate}, which each process sees as its own"
            )
        try:
            target = os.readlink(candidate)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                _refuse_equivalent(path, resolved, part)
            if exc.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
                resolved = candidate  # not a link, or does not exist (yet)
                continue
            raise AmbiguousPathError(path, f"cannot inspect {candidate}: {exc.strerror}") from None
        links += 1
        if links > max_links:
            raise AmbiguousPathError(path, f"follows more than {max_links} symlinks (a loop?)")
        if target.startswith("/"):
            resolved = "/"
        pending.extendleft(reversed(target.split("/")))
    return resolved


def _refuse_equivalent(path: str, directory: str, name: str) -> None:
    """``name`` does not exist in ``directory`` as written: refuse ``path`` if a name equal
    to it in Unicode NFC form does (``cafe`` + U+0301, as macOS writes ``café``; the Kelvin
    sign U+212A for an ASCII ``K``), or a name with a character this Python's Unicode tables
    do not know (the backend's may be newer and compose it into ours). Backends differ on
    such a name: the filesystem server opens the equivalent entry it finds, and follows it
    if it is a symlink, while the proxy would have decided on a path that does not exist.
    (An ASCII entry is its own NFC form, and ``name`` is NFC: only others can match.)"""
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing exists below: there is no other entry to find
    except OSError as exc:
        raise AmbiguousPathError(path, f"cannot inspect {directory}: {exc.strerror}") from None
    missing = os.path.join(directory, name)
    for entry in entries:
        if entry.isascii() or entry == name:
            continue
        if (unknown := _unknown_character(entry)) is not None:
            raise AmbiguousPathError(
                path,
                f"{missing} does not exist, and {entry!a} beside it holds {unknown}: a backend "
                "may take that name for this one (rename it)",
            )
        if unicodedata.normalize("NFC", entry) == name:
            raise AmbiguousPathError(
                path,
                f"{missing} does not exist but {entry!a}, the same name in another Unicode "
                "form, does; backends may open either (rename it to NFC)",
            )


def _unknown_character(text: str) -> str | None:
    """The first character of ``text`` unassigned in this Python's Unicode database (its
    category ``Cn``), described ("U+16D67, which this proxy's Unicode tables (14.0.0) do
    not know"), or None: a program with newer tables may normalise it otherwise."""
    for char in text:
        if not char.isascii() and unicodedata.category(char) == "Cn":
            return (
                f"U+{ord(char):04X}, which this proxy's Unicode tables "
                f"({unicodedata.unidata_version}) do not know"
            )
    return None
