"""The one exception hierarchy of mcp-acp.

Every error a user can see is an :class:`McpAcpError`. It carries

* ``message`` — what was wrong, naming the file, field and value involved;
* ``fix`` — what to do about it;
* ``exit_code`` — the process exit code for its failure class.

``str(error)`` is a single line (``"<message> — fix: <fix>"``): the CLI prints exactly
that line, and no traceback unless ``--debug`` is given. Control characters in the
message are escaped so that a hostile value cannot forge extra lines.

Exit codes (one per failure class, so a supervisor can tell why the proxy stopped):

==================== ==== ==========================================================
class                code when
==================== ==== ==========================================================
McpAcpError             1 anything not covered below
(click usage error)     2 unknown option or command on the command line
ConfigError            10 the config file is missing, unreadable or invalid
PluginError            11 a plugin failed to load, register or configure
PolicyError            12 the policy cannot be loaded or the engine failed
AuditError             13 the audit trail cannot be written (fail closed)
AuthenticationError    14 no valid identity (token missing, expired, forged …)
PostureError           15 the device posture gate or monitor failed
SessionBindingError    16 a session is used by a subject it was not bound to
BackendError           17 the MCP backend cannot be started or reached
==================== ==== ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuditError",
    "AuthenticationError",
    "BackendError",
    "ConfigError",
    "McpAcpError",
    "PluginError",
    "PolicyError",
    "PostureError",
    "SessionBindingError",
    "one_line",
    "printable",
]


def one_line(text: str) -> str:
    """Return ``text`` with every control character escaped, so it prints as one line."""
    out: list[str] = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append(" ")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0x80 <= ord(ch) < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def printable(text: str) -> str:
    """Return ``text`` with every character that does not print as itself escaped
    (``\\x1b``, ``\\u202e``, ``\\udcff``): control and format characters (ANSI escapes,
    bidirectional overrides), line and paragraph separators, unassigned code points and the
    surrogates that stand for undecodable bytes in a file name. For text from the file
    system or a log, which can hold anything."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode()
        for ch in text
    )


def without_credentials(text: str) -> str:
    """``text`` with credentials redacted (:func:`~mcp_acp.audit.events.without_secrets`),
    for the modules the audit package itself imports (this one, the shutdown coordinator)."""
    from mcp_acp.audit.events import without_secrets  # the audit package imports this one

    return str(without_secrets(text))


def exception_text(exc: BaseException) -> str:
    """What ``exc`` says, as mcp-acp quotes it in an error, a record or a log line:
    ``OSError: [Errno 28] No space left on device``, or its type alone if it says nothing.
    Credentials in its text are redacted (:func:`without_credentials`): a plugin's or a
    library's error may quote the URL or header it sent, token and all."""
    text = str(exc)
    return f"{type(exc).__name__}: {without_credentials(text)}" if text else type(exc).__name__


class McpAcpError(Exception):
    """Base class. Raise a subclass; each names its failure class and exit code."""

    exit_code: int = 1
    kind: str = "error"

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        text = self.message if not self.fix else f"{self.message} — fix: {self.fix}"
        return one_line(text)

    def user_line(self) -> str:
        """The single line the CLI prints: ``"<kind> error: <message> — fix: <fix>"``."""
        return f"error: {self}" if self.kind == "error" else f"{self.kind} error: {self}"


class ConfigError(McpAcpError):
    """The config file is missing, unreadable, unsafe (permissions) or invalid.

    An error that sums up several problems (a file with three invalid fields: the first
    one's line, ``(and 2 more)``) carries each of them in ``problems``, an error of its own
    with its own fix, for ``mcp-acp config validate`` to print them all."""

    exit_code = 10
    kind = "config"

    def __init__(
        self, message: str, *, fix: str | None = None, problems: Sequence[ConfigError] = ()
    ) -> None:
        super().__init__(message, fix=fix)
        self.problems: tuple[ConfigError, ...] = tuple(problems)


class PluginError(McpAcpError):
    """A plugin could not be imported, registered twice, or rejected its config section."""

    exit_code = 11
    kind = "plugin"


class PolicyError(McpAcpError):
    """The policy file cannot be loaded, or the policy engine failed."""

    exit_code = 12
    kind = "policy"


class AuditError(McpAcpError):
    """An audit record could not be written durably. Nothing may pass after this."""

    exit_code = 13
    kind = "audit"


class AuthenticationError(McpAcpError):
    """No valid identity: token missing, expired, forged, for another audience, …"""

    exit_code = 14
    kind = "authentication"


class PostureError(McpAcpError):
    """The device posture gate refused to start, or the monitor saw health lost."""

    exit_code = 15
    kind = "posture"


class SessionBindingError(McpAcpError):
    """A session was used by a subject other than the one it is bound to."""

    exit_code = 16
    kind = "session"


class BackendError(McpAcpError):
    """The MCP backend could not be started or reached."""

    exit_code = 17
    kind = "backend"
