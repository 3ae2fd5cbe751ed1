"""The shutdown coordinator: one place that ends the process when a fail-closed component
(audit, policy, identity, posture, session binding) loses its footing. It records why — in
``shutdowns.jsonl`` (in the log directory, or beside the fallback file when the log
directory is what failed), and as a ``session_ended`` auth event where the trail still
works — says so on stderr and (when configured) on the desktop, runs the clean-ups the
proxy registered (the backend's process group ended, the control socket removed), then
exits with the failure class's exit code (see :mod:`mcp_acp.errors`). It triggers once;
later failures are recorded as secondary.

It exits with ``os._exit``: no ``finally`` block, ``atexit`` handler or thread join runs
after it, so whatever must not outlive the process is a registered clean-up.

Its writes (the fallback file, ``shutdowns.jsonl``) run with a time limit, ``io_timeout``,
and so do the audit trail's records at exit (``session_ended``, denials cut short; see
:meth:`~mcp_acp.audit.trail.AuditTrail.record_at_exit`): on a disk or network mount that
stopped answering a write would never return, and the process would never exit. A write
that overran is given up (said on stderr, the event with it), and not tried again there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from mcp_acp._fs import NotRegularFileError, file_kind, not_only_ours, unsafe_permissions
from mcp_acp.errors import McpAcpError, without_credentials

__all__ = [
    "ShutdownCoordinator",
    "append_line",
    "fallback_shutdowns",
    "line_not_appended",
    "within",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


def append_line(path: Path, record: dict[str, Any]) -> bool:
    """Append one JSON line durably (0600 file, 0700 directory); True if it worked (else
    what was wrong is logged). See :func:`line_not_appended`."""
    problem = line_not_appended(path, record)
    if problem is None:
        return True
    with contextlib.suppress(Exception):
        log.error("cannot write %s: %s", path, problem)
    return False


def line_not_appended(path: Path, record: dict[str, Any]) -> str | None:
    """Append one JSON line durably (0600 file, 0700 directory); ``None`` if it worked,
    else what was wrong. Never raises an ``OSError``, and never blocks on what it opens.

    Only to a regular file of the user's own, in a directory others cannot change:
    never through a symlink, never to a file another user owns or others may write, nor
    into a directory another user owns or others may write, unless it is sticky
    (``fallback_path`` may be set in a shared directory, where anyone could plant either
    first: a link would have the event appended to a file of the user's own, such as a
    shell's start-up file; a file of theirs would hand them the event; in a directory
    they may write they could swap the file). Never to a FIFO or a device either: opened
    without ``O_NONBLOCK``, a FIFO nobody reads would block the open for ever — on the
    event loop, while the audit trail fails — and the process would never exit."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = unsafe_permissions(path.parent)
        if problem is not None:
            return f"refusing its directory: {problem}"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        flags |= os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # O_NONBLOCK: a FIFO nobody reads (or no device)
                return f"{path} is a FIFO (named pipe) or a device, not a regular file"
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW
                return f"{path} is a symlink (never followed)"
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return str(NotRegularFileError(path, file_kind(info.st_mode)))
            problem = not_only_ours(path, info)
            if problem is not None:
                return problem
            os.set_blocking(fd, True)  # a regular file: the write and fsync as ever
            data = json.dumps(record, sort_keys=True, ensure_ascii=True, default=str) + "\n"
            os.write(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}" if exc.filename is None else str(exc)
    return None


def fallback_shutdowns(fallback_path: Path) -> Path:
    """Where shutdowns are recorded when the log directory fails: beside the fallback file."""
    return fallback_path.parent / "shutdowns.jsonl"


def within(seconds: float, work: Callable[[], T]) -> tuple[bool, T | None]:
    """Run ``work`` on a daemon thread and wait at most ``seconds`` for it: whether it
    finished in time (else it goes on, blocked where it is, until the process exits), and
    what it returned (``None`` too if it raised: logged)."""
    done = threading.Event()
    result: list[T] = []

    def run() -> None:
        try:
            result.append(work())
        except Exception as exc:
            with contextlib.suppress(Exception):
                log.error("at shutdown: %s", exc)
        finally:
            done.set()

    try:
        threading.Thread(target=run, name="mcp-acp-shutdown-io", daemon=True).start()
    except RuntimeError:  # no thread to be had (resources exhausted): run it here
        run()
    finished = done.wait(seconds)
    return finished, (result[0] if finished and result else None)


def _exit(code: int) -> NoReturn:
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(code)


class ShutdownCoordinator:
    """Records why the process must stop, then stops it with the right exit code."""

    def __init__(
        self,
        *,
        log_dir: Path,
        fallback_path: Path,
        session_id: str | None = None,
        notify: Callable[[str, str], object] | None = None,
        exit: Callable[[int], NoReturn] = _exit,
        io_timeout: float = 30.0,
    ) -> None:
        self.log_dir = log_dir
        self.fallback_path = fallback_path
        #: how long one write of the coordinator's may take (see the module's docstring)
        self.io_timeout = io_timeout
        self._hung: set[Path] = set()  # files whose write overran: not tried again
        self.session_id = session_id
        self._notify = notify
        self._exit = exit
        self._lock = threading.Lock()
        self._triggered: McpAcpError | None = None
        self._session_ended: list[Callable[[str], None]] = []
        self._cleanups: list[Callable[[], None]] = []

    @property
    def triggered(self) -> McpAcpError | None:
        return self._triggered

    def on_session_end(self, callback: Callable[[str], None]) -> None:
        """Register a best-effort callback that writes the ``session_ended`` auth event."""
        self._session_ended.append(callback)

    def on_exit(self, cleanup: Callable[[], None]) -> None:
        """Register a clean-up to run before the process exits through :meth:`trigger`
        (ending the backend's process group, removing the control socket). Best effort: it
        runs while something is failing, from whichever thread triggered, so it must be
        quick, bounded and safe to run twice; what it raises is logged and ignored."""
        self._cleanups.append(cleanup)

    def _clean_up(self) -> None:
        for cleanup in self._cleanups:
            try:
                cleanup()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    log.warning("clean-up at shutdown failed: %s", exc)

    def _append(self, path: Path, record: dict[str, Any]) -> str | None:
        """:func:`line_not_appended`, within ``io_timeout``."""
        if path in self._hung:
            return f"{path}: an earlier write to it did not finish; not tried again"
        finished, outcome = within(self.io_timeout, lambda: (line_not_appended(path, record),))
        if finished:
            return f"{path}: the write failed (see the log)" if outcome is None else outcome[0]
        self._hung.add(path)
        return (
            f"{path}: the write did not finish within {self.io_timeout:g} s (is its file "
            "system hung?); given up"
        )

    def record_fallback(self, event: dict[str, Any], error: McpAcpError) -> None:
        """Keep an event the audit trail could not take, outside the log directory.

        Never raises: this runs while something is already failing.
        """
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "audit_error": without_credentials(str(error)),
            "event": event,
        }
        problem = self._append(self.fallback_path, entry)
        if problem is None:
            return
        with contextlib.suppress(Exception):  # last resort: stderr, which may be broken too
            lost = json.dumps(entry, default=str)
            print(
                f"mcp-acp: audit fallback failed too (audit.fallback_path: {problem}); "
                f"lost event: {lost}",
                file=sys.stderr,
                flush=True,
            )

    def _record_shutdown(self, record: dict[str, Any]) -> None:
        """``record`` into ``shutdowns.jsonl`` in the log directory, else beside the
        fallback file; if neither takes it, what was wrong with each goes to stderr."""
        problem = self._append(self.log_dir / "shutdowns.jsonl", record)
        if problem is None:
            return
        beside = self._append(fallback_shutdowns(self.fallback_path), record)
        if beside is None:
            return
        with contextlib.suppress(Exception):
            print(
                f"mcp-acp: shutdown not recorded: {problem}; nor beside audit.fallback_path: "
                f"{beside}",
                file=sys.stderr,
                flush=True,
            )

    def stop_now(self, code: int, reason: str) -> NoReturn:
        """End the process at once with ``code``, without waiting for the session to end in
        order (a second stop signal while the first is still being acted on): the reason
        goes to ``shutdowns.jsonl`` and stderr, the clean-ups run, nothing else is recorded."""
        reason = without_credentials(reason)
        record = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "failure_class": "signal",
            "exit_code": code,
            "reason": reason,
            "detail": "the orderly stop was cut short",
            "session_id": self.session_id,
            "pid": os.getpid(),
            "primary": self._triggered is None,
        }
        self._record_shutdown(record)
        with contextlib.suppress(Exception):
            print(f"mcp-acp: stopping now: {reason}", file=sys.stderr, flush=True)
        self._clean_up()
        self._exit(code)

    def trigger(self, error: McpAcpError, *, detail: str | None = None) -> NoReturn:
        """Record ``error`` and end the process with ``error.exit_code``."""
        with self._lock:
            first = self._triggered is None
            if first:
                self._triggered = error
        # the error may be a plugin's own (a sink's AuditError quoting the URL it sent,
        # token and all): what it says is redacted wherever it goes from here
        reason, line = without_credentials(str(error)), without_credentials(error.user_line())
        record = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "failure_class": error.kind,
            "exit_code": error.exit_code,
            "reason": reason,
            "detail": detail,
            "session_id": self.session_id,
            "pid": os.getpid(),
            "primary": first,
        }
        self._record_shutdown(record)
        if first:
            for callback in self._session_ended:
                with contextlib.suppress(Exception):
                    callback(f"{error.kind} failure: {reason}")
            with contextlib.suppress(Exception):
                print(f"mcp-acp: shutting down: {line}", file=sys.stderr, flush=True)
            if self._notify is not None:
                with contextlib.suppress(Exception):
                    self._notify("mcp-acp stopped", line)
        self._clean_up()  # every time: a secondary trigger may exit before the first is done
        code = (self._triggered or error).exit_code
        self._exit(code)
