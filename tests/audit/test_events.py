"""Audit event helpers that the relay calls for every request."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from mcp_acp.audit.events import SystemEvent, payload_digest
from mcp_acp.audit.redact import MAX_SCANNED_STRINGS, TOO_MANY_STRINGS, secret_kinds

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


TIMES = [
    datetime(2026, 11, 26, 18, 23, 28, 113999, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 6, 30, 23, 30, 0, 500, tzinfo=timezone(timedelta(hours=-5))),  # next day
    datetime(2026, 3, 1, 0, 15, 0, 1000, tzinfo=timezone(timedelta(hours=5, minutes=30))),
]


@pytest.mark.parametrize("ts", TIMES)
def test_ts_is_utc_iso_8601_with_milliseconds(ts: datetime) -> None:
    utc = ts.astimezone(UTC)
    expected = "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 (the reference)
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond // 1000,
    )
    record = json.loads(SystemEvent(event="tick", ts=ts).model_dump_json())
    assert record["ts"] == expected


def test_secret_kinds_finds_each_credential_shape_at_any_depth_and_in_keys() -> None:
    arguments = {
        "files": [{"content": "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n"}],
        "headers": {"Authorization": "Bearer abcdefgh12345678"},
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.": "a JWT as a key",
        "deep": [[[["gho_" + "x" * 36]]]],
        "aws": ("AKIAIOSFODNN7EXAMPLE",),
    }
    assert secret_kinds(arguments) == [
        "a private key (PEM)",
        "a JWT",
        "a GitHub token",
        "an AWS access key id",
        "a bearer or basic credential",
    ]


@pytest.mark.parametrize(
    "value",
    [
        {"path": "/home/alice/.ssh/config", "text": "see the -----BEGIN CERTIFICATE----- block"},
        {"token": "not-a-known-shape", "n": 3, "ok": True, "none": None},
        ["AKIA-lowercase-akiaiosfodnn7example", "ghp_short", "eyJ.not.enough"],
        "plain text",
    ],
)
def test_secret_kinds_leaves_plain_values_alone(value: Any) -> None:
    assert secret_kinds(value) == []


def test_secret_kinds_past_its_budget_of_strings_is_a_finding() -> None:
    """Scanning stops after MAX_SCANNED_STRINGS strings; what was not looked at may hold a
    credential, so running out of budget is reported, never taken as clean."""
    hidden = ["AKIAIOSFODNN7EXAMPLE"] + ["filler"] * MAX_SCANNED_STRINGS  # scanned last
    assert secret_kinds(hidden) == [TOO_MANY_STRINGS]
    assert secret_kinds(hidden[::-1]) == ["an AWS access key id", TOO_MANY_STRINGS]
    assert secret_kinds({"pad": ["filler"] * MAX_SCANNED_STRINGS}) == [TOO_MANY_STRINGS]  # key
    assert secret_kinds(["filler"] * MAX_SCANNED_STRINGS) == []  # all of them looked at
