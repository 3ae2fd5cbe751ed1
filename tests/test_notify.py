"""The desktop notifier's argument vectors: no shell, one bounded line, text that cannot
become an option or break out of the AppleScript string. (osascript itself only exists on
macOS; the notify-send path runs for real in tests/e2e/test_posture.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_acp.notify import notification_command


def test_macos_quotes_the_applescript_strings() -> None:
    argv = notification_command(
        'say "hi"', 'x" & (do shell script "touch /tmp/p") & "\\', platform="darwin"
    )
    assert argv[:2] == ["/usr/bin/osascript", "-e"]
    assert len(argv) == 3
    script = argv[2]
    # every quote and backslash of the text is escaped: the script holds two string
    # literals and nothing else
    assert script == (
        'display notification "x\\" & (do shell script \\"touch /tmp/p\\") & \\"\\\\" '
        'with title "say \\"hi\\""'
    )


def test_linux_uses_notify_send_with_text_after_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert notification_command("t", "m", platform="linux") == []  # not installed: nothing
    exe = tmp_path / "notify-send"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    argv = notification_command("--title", "-m\nsecond line\x1b[31m" + "x" * 500, platform="linux")
    assert argv[:4] == [str(exe), "--app-name=mcp-acp", "--urgency=critical", "--"]
    title, message = argv[4:]
    assert title == "--title"  # after '--': text, not an option
    assert "\n" not in message
    assert "\x1b" not in message
    assert len(message) <= 300


def test_other_platforms_show_nothing() -> None:
    assert notification_command("t", "m", platform="win32") == []
