"""Running a child Python against a real Secret Service: its own D-Bus session
(``dbus-run-session``) and an unlocked gnome-keyring in a throw-away HOME. CI installs
both (see ``.ci/run``); locally a test that needs them is skipped only when they are
missing, unless ``REQUIRE_SECRET_SERVICE=1``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MISSING = [p for p in ("dbus-run-session", "gnome-keyring-daemon") if shutil.which(p) is None]
if MISSING and os.environ.get("REQUIRE_SECRET_SERVICE") == "1":
    raise RuntimeError(f"REQUIRE_SECRET_SERVICE=1 but {', '.join(MISSING)} not installed")
#: ``pytestmark = needs_secret_service`` in a module whose tests use :func:`run_child`
needs_secret_service = pytest.mark.skipif(
    bool(MISSING),
    reason=f"needs {' and '.join(MISSING)} (apt-get install -y gnome-keyring dbus-x11; "
    "CI installs them)",
)


def run_child(
    tmp_path: Path, source: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a Python script with ``args`` in a new D-Bus session with an
    unlocked gnome-keyring, HOME a new ``tmp_path/home`` (its path is the script's last
    argument), and none of our environment's D-Bus, XDG, keyring or mcp-acp settings."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DBUS_", "XDG_", "MCP_ACP_", "GNOME_KEYRING", "PYTHON_KEYRING"))
    }
    env["HOME"] = str(home)
    script = tmp_path / "child.py"
    script.write_text(source)
    quoted = " ".join(f'"{arg}"' for arg in (*args, home))
    shell = (
        "echo -n pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null && "
        f'exec "{sys.executable}" "{script}" {quoted}'
    )
    return subprocess.run(
        ["dbus-run-session", "--", "sh", "-c", shell],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
