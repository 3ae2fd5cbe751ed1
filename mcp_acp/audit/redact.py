"""Redaction: what must never reach an audit record, even when full payloads are recorded.

Values under secret-looking keys (``authorization``, ``cookie``, ``token``, ``password``,
``secret``, ``api_key``, …) are replaced, and so are strings that look like credentials
wherever they appear: bearer tokens, JWTs, PEM private keys, GitHub tokens, AWS access keys.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "redact"]

REDACTED = "<redacted>"

_SECRET_KEY = re.compile(
    r"authorization|cookie|token|secret|password|passwd|api[_-]?key|credential|private[_-]?key",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|AKIA[0-9A-Z]{16}",
    re.DOTALL,
)


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with secrets replaced by ``<redacted>``."""
    if key and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value
