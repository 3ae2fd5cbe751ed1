"""Checklist item 20 at the HTTP layer: framing of the Authorization header."""

from __future__ import annotations

import pytest
from mcp_acp_oidc.bearer import bearer_token
from mcp_acp_oidc.errors import TokenRejectedError

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"  # noqa: S105 - a fake token


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    assert bearer_token([f"{scheme} {TOKEN}"]) == TOKEN


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [f"Bearer {TOKEN}", f"Bearer {TOKEN}"],
        [f"Bearer Bearer {TOKEN}"],
        [f"Bearer  {TOKEN}"],
        [f"Bearer {TOKEN} "],
        [f"Bearer {TOKEN}\n"],
        [f"Basic {TOKEN}"],
        ["Bearer"],
        ["Bearer "],
        [TOKEN],
        [f"Bearer {TOKEN},Bearer {TOKEN}"],
        [f"Bearer\t{TOKEN}"],
    ],
)
def test_bad_authorization_headers_are_rejected(headers: list[str]) -> None:
    with pytest.raises(TokenRejectedError):
        bearer_token(headers)
