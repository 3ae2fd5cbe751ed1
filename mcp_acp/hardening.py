"""Keep what the proxy holds in memory — tokens, a token-storage passphrase in its
environment — out of reach of other processes of the same user, such as the backend it
starts: no core dumps, and on Linux the process is not *dumpable*, so a process without
``CAP_SYS_PTRACE`` can neither attach to it nor read ``/proc/<pid>/mem`` or ``environ``.

``mcp-acp run`` calls :func:`protect_process` first thing, and so does every
``mcp-acp auth`` command (the ``oidc`` plugin's): the commands that load tokens. It
changes process-wide settings, so a program that embeds mcp-acp decides for itself whether
to call it. Side
effect: debuggers and profilers (gdb, py-spy) need root to attach to a protected process.
"""

from __future__ import annotations

import resource
import sys

__all__ = ["protect_process"]

_PR_SET_DUMPABLE = 4


def protect_process() -> list[str]:
    """No core dumps; on Linux, not dumpable. Returns what could not be done, one line each
    (the caller logs it: the proxy runs on, a little less protected)."""
    problems: list[str] = []
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        problems.append(f"core dumps could not be turned off: {exc}")
    if sys.platform.startswith("linux"):
        import ctypes  # only here: ~2 ms to import

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                problems.append(f"prctl(PR_SET_DUMPABLE) failed: errno {ctypes.get_errno()}")
        except (OSError, AttributeError) as exc:
            problems.append(f"prctl(PR_SET_DUMPABLE) is not available: {exc}")
    return problems
