"""The backend channel: how the relay reaches the one MCP server it protects.

The relay decides; a channel only carries. :class:`BackendChannel` is what the relay needs
from a backend connection; :func:`open_channel` picks the implementation the config names:

* :class:`~mcp_acp.proxy.stdio_backend.StdioChannel` — a child process, newline-delimited
  JSON on its stdin/stdout, forwarded byte for byte;
* :class:`~mcp_acp.proxy.http_backend.HttpChannel` — streamable HTTP through the ``mcp``
  SDK's client transport. It is imported only when configured: importing ``mcp`` costs
  most of a second, which the stdio path does not pay.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any, Protocol

from mcp_acp.config import HttpBackend, StdioBackend
from mcp_acp.proxy.messages import Message

__all__ = ["BackendChannel", "Unsendable", "open_channel"]


class Unsendable(ValueError):
    """The channel cannot carry this message (e.g. streamable HTTP accepts only messages
    that validate as MCP's JSON-RPC types); the relay answers the sender instead."""


class BackendChannel(Protocol):
    """One connection to the backend, used by one relay for one session."""

    #: What policies see as the backend (``backend_id`` conditions) and the audit records:
    #: the command of a stdio backend, the URL (without query) of an HTTP one.
    backend_id: str
    #: The names of the certificate the backend proved in a verified TLS handshake with a
    #: TLS provider's context (``backend_identity`` conditions, provenance ``mtls``), known
    #: once :meth:`start` has returned; ``()`` when there is none.
    backend_identity: tuple[str, ...]

    def backend_session(self) -> int | None:
        """The session id of the backend's processes (a stdio backend's child runs in a
        session of its own), so that the control socket can refuse them; None when the
        backend runs no process here (HTTP) or has not started."""
        ...

    async def start(self) -> dict[str, Any]:
        """Connect (start the process, reach the server); return the ``detail`` of the
        ``backend_started`` audit event. Raises :class:`~mcp_acp.errors.BackendError`
        with a one-line reason when the backend cannot be started or reached.

        Connects once: a later call returns (or raises) the first call's outcome again.
        ``serve`` starts the backend as soon as the start-up gates have passed, and the
        relay, built meanwhile, calls it again to record the outcome."""
        ...

    async def send(self, message: Message) -> None:
        """Deliver one message. Raises :class:`Unsendable` when this channel cannot carry
        it. A backend that is gone drops it (with a warning in the log): :meth:`receive`
        ends, and the relay answers every request still in flight."""
        ...

    def receive(self) -> AsyncIterator[Message]:
        """The backend's messages in arrival order; ends when the backend is gone (a stdio
        backend: when it exits or stops reading, even if a process it started still holds
        its output open)."""
        ...

    async def exit_detail(self) -> tuple[dict[str, Any], str]:
        """After :meth:`receive` ended: the ``detail`` of the ``backend_exited`` audit event,
        and the sentence that requests still in flight are answered with."""
        ...

    async def close(self) -> None:
        """End the connection (bounded in time). Safe to call more than once."""
        ...


def open_channel(
    backend: StdioBackend | HttpBackend,
    *,
    ssl_context: ssl.SSLContext | None = None,
    withhold_env: frozenset[str] = frozenset(),
) -> BackendChannel:
    """The channel for the configured backend (not connected yet: call ``start``).

    ``ssl_context`` is for HTTPS backends (e.g. a client certificate for mutual TLS);
    None means the default verification of the system's trust store. ``withhold_env`` names
    the variables of mcp-acp's environment a stdio backend does not inherit (secrets given
    to mcp-acp itself, see :meth:`~mcp_acp.runtime.Runtime.secret_env_names`).
    """
    if isinstance(backend, HttpBackend):
        from mcp_acp.proxy.http_backend import HttpChannel  # imports mcp: only when needed

        return HttpChannel(backend, ssl_context=ssl_context)
    from mcp_acp.proxy.stdio_backend import StdioChannel

    return StdioChannel(backend, withhold_env=withhold_env)
