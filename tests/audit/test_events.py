"""Audit event helpers that the relay calls for every request."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from mcp_acp.audit.events import payload_digest

PAYLOADS: list[Any] = [
    {"text": "call-12"},
    {"b": [1, 2.5, None, True], "a": {"z": "ü", "y": "\u2028"}},
    {"path": "/srv/p1/\udcff"},  # a lone surrogate from undecodable input
    {"when": datetime(2026, 11, 26, tzinfo=UTC)},  # not JSON: recorded as str()
    [],
    None,
    "plain",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_digest_is_sha256_of_the_canonical_json(payload: Any) -> None:
    canonical = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8", "surrogatepass")
    assert payload_digest(payload) == (hashlib.sha256(canonical).hexdigest(), len(canonical))
