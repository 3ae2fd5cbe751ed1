"""Audit event helpers that the relay calls for every request."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from mcp_acp.audit.events import SystemEvent, payload_digest, without_secrets
from mcp_acp.audit.redact import MAX_SCANNED_STRINGS, TOO_MANY_STRINGS, redact, secret_kinds
from mcp_acp.config import redact_text

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


#: One key of each service shape, made up, as an agent could hold and pass on.
SERVICE_KEYS = {
    "a GitHub token": "github_pat_" + "A1b2" * 6,
    "a GitLab token": "glpat-" + "x9Y_" * 5,
    "an Anthropic or OpenAI API key": "sk-ant-api03-" + "Zq8" * 10,
    "a Slack token": "xoxb-1234567890-abcdefghij",
    "a Google API key": "AIza" + "Sy" * 17 + "_",
    "a Stripe secret key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
}


@pytest.mark.parametrize("kind", list(SERVICE_KEYS))
def test_service_keys_are_found_going_out_and_never_recorded(kind: str) -> None:
    """Before, only GitHub's classic tokens and AWS key ids were known by their shape: an
    Anthropic, OpenAI, Slack, GitLab, Google or Stripe key in a tool's arguments went out
    without the human being asked (builtin-secret-outbound), and a recorded payload kept
    it."""
    key = SERVICE_KEYS[kind]
    arguments = {"body": f"use {key} for the call", "n": 1}
    assert secret_kinds(arguments) == [kind]
    assert redact(arguments) == {"body": "use <redacted> for the call", "n": 1}
    assert key not in redact_text(f"curl -d key={key} and then {key}")


LONG_PAD = "x " * 3000  # past the length from which strings are checked for literals first

EVERY_SHAPE = {
    **SERVICE_KEYS,
    "an AWS access key id": "AKIAIOSFODNN7EXAMPLE",
    "a GitHub token": "ghs_" + "k" * 36,
    "a private key (PEM)": "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----",
    "a JWT": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.c2ln",
    "a bearer or basic credential": "BeArEr abcdefgh12345678",
}


@pytest.mark.parametrize("kind", list(EVERY_SHAPE))
def test_every_shape_is_found_in_a_long_string_too(kind: str) -> None:
    """A long string is first checked for the plain text every shape holds, and scanned by
    the patterns only if it has some: that check must let every shape through, at either
    end of the string."""
    for text in (LONG_PAD + EVERY_SHAPE[kind], EVERY_SHAPE[kind] + " " + LONG_PAD):
        assert secret_kinds({"body": text}) == [kind]
        assert EVERY_SHAPE[kind] not in redact(text)
    assert secret_kinds({"body": LONG_PAD}) == []


@pytest.mark.parametrize(
    "value",
    [
        {"path": "/home/alice/.ssh/config", "text": "see the -----BEGIN CERTIFICATE----- block"},
        {"token": "not-a-known-shape", "n": 3, "ok": True, "none": None},
        ["AKIA-lowercase-akiaiosfodnn7example", "ghp_short", "eyJ.not.enough"],
        ["task-" + "a" * 30, "ask-" + "b" * 30, "sk-short", "xoxb-short", "AIza" + "c" * 20],
        ["disk_live_" + "d" * 30, "glpat-short", "github_pat_short"],
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


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # a header quoted alone: no '=', URL or bearer scheme for the quick look to find
        ("refused X-Api-Key: ak-CANARY-1", "refused X-Api-Key: <redacted>"),
        # a token response's body, as a library's error quotes it
        ('{"access_token":"at-CANARY-2"}', '{"access_token":"<redacted>"}'),
        ("{'api_key': 'CANARY-3'}", "{'api_key': '<redacted>'}"),
        # the fix after a message is not a header's value
        (
            "refused: token: CANARY-4 — fix: run 'mcp-acp auth login'",
            "refused: token: <redacted> — fix: run 'mcp-acp auth login'",
        ),
        # nor is what follows the word "key" in a sentence
        (
            "c.pem: it holds a private key: keep that only in the file client_key names",
            "c.pem: it holds a private key: keep that only in the file client_key names",
        ),
        # a component's name is not a credential, nor the rest of the line after it
        (
            "no such component (loaded: token_storage:file, approver:cli) — fix: list them",
            "no such component (loaded: token_storage:file, approver:cli) — fix: list them",
        ),
    ],
)
def test_credentials_in_prose_are_redacted_and_nothing_else(text: str, shown: str) -> None:
    assert without_secrets(text) == shown


def test_the_quick_look_knows_every_word_a_secret_name_is_found_by() -> None:
    """``without_secrets`` looks for a colon and a secret word before it redacts a
    ``Name: value`` header; a word the header pattern knows that the quick look did not
    would let such a header pass unredacted. Both use one list now: a header named by any
    of its words, or by the longer names the pattern spells out, is redacted."""
    from mcp_acp.audit.redact import SECRET_WORDS

    for word in (*SECRET_WORDS, "authorization", "apikey", "credentials"):
        # as a header's name (a bare "key:" in a sentence is the English word)
        assert without_secrets(f"refused X-{word.upper()}: CANARY") == (
            f"refused X-{word.upper()}: <redacted>"
        )
