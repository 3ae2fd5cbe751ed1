"""Redaction: what must never reach an audit record, even when full payloads are recorded.

Values under secret-looking keys (``authorization``, ``cookie``, ``token``, ``password``,
``secret``, ``api_key``, …) are replaced, and so are strings that look like credentials
wherever they appear: bearer tokens, JWTs, PEM private keys, and the API keys and tokens of
the services an agent most often holds (GitHub, GitLab, AWS, Anthropic, OpenAI, Slack,
Google, Stripe), by their published prefixes.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "MAX_SCANNED_STRINGS",
    "REDACTED",
    "SECRET_WORDS",
    "TOO_MANY_STRINGS",
    "redact",
    "secret_kinds",
]

REDACTED = "<redacted>"

#: Words that make a name look secret: a key containing one (``MYSQL_PWD``,
#: ``client_secret``), a flag or ``name=value`` with one as a whole part (``--api-key``).
#: The config's redaction builds its name patterns from them; the audit trail's quick look
#: (:func:`~mcp_acp.audit.events.without_secrets`) searches text for them.
SECRET_WORDS = (
    "auth",
    "cookie",
    "token",
    "key",
    "secret",
    "passwd",
    "password",
    "passphrase",
    "pwd",
    "credential",
)

_SECRET_KEY = re.compile(
    r"authorization|cookie|token|secret|password|passwd|api[_-]?key|credential|private[_-]?key",
    re.IGNORECASE,
)
#: A JWT, tried only where a run of base64url characters begins: tried at every ``eyJ``
#: inside a run, each try reads the rest of the run — quadratic time ("eyJ" * 300,000 in a
#: tool's argument held the event loop for minutes). A JWT glued to the end of other
#: base64url characters is not found. (The literal before the look back, as in
#: :func:`_starting`: a look back tried first at every position is slow.)
_JWT = r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"


#: A key's prefix, then a look back: not preceded by a character a key is made of — so a
#: prefix counts only where a run of such characters begins (linear time; ``sk-`` inside
#: ``task-…`` is no key). The literal comes first: a look back at every position of a long
#: string made the scan four times slower.
def _starting(prefix: str) -> str:
    return f"{prefix}(?<![A-Za-z0-9_-]{prefix})"


#: Service credentials by their published prefixes, each with what it is called.
_SERVICE_KEYS = (
    (
        "a GitHub token",
        rf"gh[pousr]_[A-Za-z0-9]{{20,}}|{_starting('github_pat_')}[A-Za-z0-9_]{{22,}}",
    ),
    ("a GitLab token", rf"{_starting('glpat-')}[A-Za-z0-9_-]{{20,}}"),
    ("an AWS access key id", r"AKIA[0-9A-Z]{16}"),
    ("an Anthropic or OpenAI API key", rf"{_starting('sk-')}(?:ant-|proj-)?[A-Za-z0-9_-]{{20,}}"),
    ("a Slack token", rf"{_starting('xox[abposr]-')}[A-Za-z0-9-]{{10,}}"),
    ("a Google API key", rf"{_starting('AIza')}[0-9A-Za-z_-]{{35}}"),
    ("a Stripe secret key", rf"{_starting('[rs]k_live_')}[A-Za-z0-9]{{20,}}"),
)
_SECRET_VALUE = re.compile(
    r"(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    rf"|{_JWT}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"
    + "".join(f"|{shape}" for _, shape in _SERVICE_KEYS),
    re.DOTALL,
)
#: What each credential shape is called when one is found going out (:func:`secret_kinds`).
_KINDS = (
    ("a private key (PEM)", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a JWT", re.compile(_JWT)),
    *((kind, re.compile(shape)) for kind, shape in _SERVICE_KEYS),
    ("a bearer or basic credential", re.compile(r"(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")),
)
#: Any of them (one search for the usual string, which has none).
_ANY_KIND = re.compile("|".join(f"(?:{shape.pattern})" for _, shape in _KINDS))
#: What every shape holds, as plain text (the bearer shape aside, looked for on its own):
#: a long string with none of them is not scanned by the patterns at all — substring
#: checks run at C speed, where the patterns' alternation, tried at every position, took
#: 90 ms for 2 MiB.
_LITERALS = (
    "-----BEGIN",
    "eyJ",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "AKIA",
    "sk-",
    "xox",
    "AIza",
    "k_live_",
)
_BEARER = re.compile(r"(?i:bearer|basic)\s")
#: Strings longer than this are checked for the literals first.
_PREFILTER_FROM = 4096


def _may_hold(text: str) -> bool:
    """Whether ``text`` may hold a credential's shape (false only if it holds none)."""
    if len(text) <= _PREFILTER_FROM:
        return True
    return any(literal in text for literal in _LITERALS) or _BEARER.search(text) is not None


#: Shorter strings cannot hold any of the shapes (the shortest, a JWT or a bearer
#: credential, takes 15 characters).
_SHORTEST = 15
#: Strings looked at per value by :func:`secret_kinds` (past it, the rest is not scanned).
MAX_SCANNED_STRINGS = 100_000
#: What :func:`secret_kinds` reports for a value with more strings than it looks at: the
#: rest could hold anything, so it counts as a finding (fail closed).
TOO_MANY_STRINGS = f"more than {MAX_SCANNED_STRINGS:,} strings, not all scanned"


def secret_kinds(value: Any) -> list[str]:
    """The kinds of credential whose shape appears in any string of ``value`` (any depth,
    keys as well): ``["a private key (PEM)", "a JWT"]``, say. Empty if none. A value with
    more than :data:`MAX_SCANNED_STRINGS` strings is not scanned to its end: then
    :data:`TOO_MANY_STRINGS` is among the kinds — what was not looked at is not clean."""
    found: set[str] = set()
    stack, budget = [value], MAX_SCANNED_STRINGS
    while stack and budget > 0:
        item = stack.pop()
        if isinstance(item, str):
            budget -= 1
            if len(item) >= _SHORTEST and _may_hold(item) and _ANY_KIND.search(item):
                found.update(kind for kind, shape in _KINDS if shape.search(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(key for key in item if isinstance(key, str))
        elif isinstance(item, list | tuple):
            stack.extend(item)
    kinds = [kind for kind, _ in _KINDS if kind in found]
    return [*kinds, TOO_MANY_STRINGS] if stack else kinds


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with secrets replaced by ``<redacted>``."""
    if key and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value) if _may_hold(value) else value
    return value
