"""Desktop notifications for the failures that stop the proxy.

An MCP client such as Claude Desktop starts ``mcp-acp run`` in the background and shows
little of its stderr, so a proxy that refuses to start (not logged in, device unhealthy)
or shuts down (audit trail lost) also says so on the desktop, where the platform has a
way: ``osascript`` on macOS, ``notify-send`` on Linux when it is installed. Elsewhere,
or when ``proxy.desktop_notifications`` is false, nothing is shown.

The helper is deliberately thin: one fire-and-forget child process, argument vector
only (no shell), text flattened to one bounded line, never an exception. It never
delays the shutdown it reports. The child gets mcp-acp's environment without the secrets
mcp-acp was given (``withhold``: :meth:`~mcp_acp.runtime.Runtime.secret_env_names`, as a
stdio backend): ``notify-send`` is found on PATH, and any process's environment is readable
by the user's other processes while it runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Collection

from mcp_acp.errors import one_line

__all__ = ["desktop_notify", "notification_command"]

_MAX_TEXT = 300


def _applescript_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def notification_command(title: str, message: str, *, platform: str = sys.platform) -> list[str]:
    """The argument vector that shows the notification here, or ``[]`` if none can."""
    title = one_line(title)[:_MAX_TEXT]
    message = one_line(message)[:_MAX_TEXT]
    if platform == "darwin":
        script = (
            f"display notification {_applescript_string(message)} "
            f"with title {_applescript_string(title)}"
        )
        return ["/usr/bin/osascript", "-e", script]
    if platform.startswith("linux"):
        exe = shutil.which("notify-send")
        if exe is not None:
            # '--' ends the options: a message starting with '-' stays text
            return [exe, "--app-name=mcp-acp", "--urgency=critical", "--", title, message]
    return []


def desktop_notify(title: str, message: str, *, withhold: Collection[str] = frozenset()) -> bool:
    """Show ``title`` / ``message`` on the desktop if possible; True if a notifier ran.
    The notifier's environment is ours without the variables named in ``withhold``."""
    argv = notification_command(title, message)
    if not argv:
        return False
    env = {name: value for name, value in os.environ.items() if name not in withhold}
    with contextlib.suppress(OSError, ValueError):
        subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        return True
    return False
