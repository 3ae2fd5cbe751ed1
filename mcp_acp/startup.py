"""Garbage collection paused while the ``mcp-acp`` executable starts.

Start-up builds tens of thousands of objects that live as long as the process — modules,
classes, pydantic schemas, attrs methods — and little garbage; the collector traversing
them again and again while they are built costs about a tenth of the time before
``mcp-acp run`` starts its backend. The executable (:mod:`mcp_acp.__main__`) pauses
collection before it imports anything else; it resumes when the command's start-up is over:
at once for every command but ``run``, and for ``run`` as soon as the backend has been
started. Garbage from start-up is then collected like any other.

Only a pause made here is undone here: a program that embeds mcp-acp and turned the
collector off itself keeps it off.
"""

from __future__ import annotations

import gc

__all__ = ["pause_collection", "resume_collection"]

_paused = False


def pause_collection() -> None:
    """Turn automatic garbage collection off, if it is on, until :func:`resume_collection`."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_collection() -> None:
    """Turn automatic garbage collection back on if :func:`pause_collection` turned it off."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()
