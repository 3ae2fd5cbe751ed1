"""``mcp-acp auth login|status|logout`` against the real oidc-provider, with the token
storage seam filled by an in-memory store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mcp_acp_oidc.cli as auth_cli
import pytest
from click.testing import CliRunner
from mcp_acp_oidc import OIDCConfig, OIDCIdentityProvider
from mcp_acp_oidc.device import DeviceAuthorization
from mcp_acp_oidc.errors import DiscoveryError

from mcp_acp import hardening
from mcp_acp.models import StoredToken


async def fast_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds / 50)


def test_login_status_logout(oidc_provider: str, kit: Any, approve: Any, monkeypatch) -> None:
    storage = kit.DictStorage()
    options = OIDCConfig(
        issuer=oidc_provider,
        client_id="mcp-acp-cli",
        audience="urn:mcp-acp:proxy",
        scope="openid offline_access mcp:tools",
    )
    monkeypatch.setattr(
        auth_cli,
        "_provider",
        lambda ctx: (OIDCIdentityProvider(options, storage, sleep=fast_sleep), frozenset()),
    )
    shown = auth_cli.show_code

    def show_and_approve(authorization: DeviceAuthorization, **options: bool) -> None:
        shown(authorization, **options)
        threading.Thread(target=approve, args=(authorization,), daemon=True).start()

    monkeypatch.setattr(auth_cli, "show_code", show_and_approve)
    # in process: the suite's own process is not to be made undumpable for the tests after
    # this one (the auth commands' protection is tested on a real `auth login`, e2e)
    monkeypatch.setattr(hardening, "protect_process", list)
    runner = CliRunner()

    result = runner.invoke(auth_cli.auth_group, ["status"])
    assert result.exit_code == 1
    assert "logged_in: False" in result.output

    result = runner.invoke(auth_cli.auth_group, ["login", "--no-browser"])
    assert result.exit_code == 0, result.output
    assert "enter the code:" in result.output
    assert "Logged in as alice" in result.output
    token = storage.tokens[oidc_provider]

    result = runner.invoke(auth_cli.auth_group, ["status"])
    assert result.exit_code == 0, result.output
    assert "subject: alice" in result.output
    assert token.access_token not in result.output
    assert token.refresh_token is not None
    assert token.refresh_token not in result.output

    result = runner.invoke(auth_cli.auth_group, ["logout"])
    assert result.exit_code == 0
    assert "Logged out." in result.output
    assert storage.tokens == {}


async def test_unreachable_issuer_is_not_hammered(kit: Any) -> None:
    """A user logged in (a token stored) whose provider cannot be reached: asked once, then
    not again until the back-off ends, however many requests come. (Never logged in, the
    store says so before the provider is asked.)"""
    options = OIDCConfig(issuer="http://127.0.0.1:9", client_id="c", audience="urn:x")
    storage = kit.DictStorage()
    later = datetime.now(UTC) + timedelta(hours=1)
    storage.save(StoredToken(options.issuer, "at-1", later, refresh_token="rt-1"))  # noqa: S106
    provider = OIDCIdentityProvider(options, storage)
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match="cannot reach"):
        await provider.current_subject()
    for _ in range(100):
        with pytest.raises(DiscoveryError, match="not retrying yet"):
            await provider.current_subject()
    assert time.monotonic() - started < 5


SHOW = """
import sys
from mcp_acp_oidc.cli import show_code
from mcp_acp_oidc.device import DeviceAuthorization
show_code(
    DeviceAuthorization("dc", "ABCD-EFGH", sys.argv[1], sys.argv[2] or None, 600.0, 5.0),
    open_browser=sys.argv[3] == "open",
)
"""


@pytest.mark.parametrize(
    ("uri", "complete", "mode", "opened"),
    [
        (
            "https://idp.example/device",
            "https://idp.example/device?user_code=ABCD-EFGH",
            "open",
            "https://idp.example/device?user_code=ABCD-EFGH",
        ),
        ("https://idp.example/device", "", "open", "https://idp.example/device"),
        ("https://idp.example/device", "", "no-browser", None),
        # never handed to a browser, whatever slipped past the earlier checks
        ("file:///etc/passwd", "", "open", None),
        ("javascript:alert(1)", "", "open", None),
    ],
)
def test_login_opens_the_browser_only_for_http_pages(
    tmp_path: Path, uri: str, complete: str, mode: str, opened: str | None
) -> None:
    """``webbrowser`` runs the program named by $BROWSER: this one records its argument."""
    record = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {record}\n')
    browser.chmod(0o755)
    env = {**os.environ, "BROWSER": str(browser)}
    env.pop("DISPLAY", None)
    done = subprocess.run(
        [sys.executable, "-c", SHOW, uri, complete, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "enter the code: ABCD-EFGH" in done.stdout
    deadline = time.monotonic() + 5
    while opened is not None and not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if opened is None:
        time.sleep(0.3)
        assert not record.exists()
    else:
        assert record.read_text().splitlines() == [opened]


def test_the_sign_in_page_is_shown_with_direction_changes_escaped() -> None:
    """What the IdP says is printed so that it reads as it is: a right-to-left override
    or an invisible character in the page's address is escaped, not obeyed by the
    terminal (the check before refuses such an address; this is the second line)."""
    uri = "https://idp.example/\u202e\u2066moc.elgoog//:sptth\u2069"
    done = subprocess.run(
        [sys.executable, "-c", SHOW, uri, "", "no-browser"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "open https://idp.example/\\u202e\\u2066moc.elgoog//:sptth\\u2069" in done.stdout
    assert "\u202e" not in done.stdout
