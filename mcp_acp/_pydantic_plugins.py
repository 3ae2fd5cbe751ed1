"""pydantic's own plugins, kept out of mcp-acp.

pydantic imports every entry point in the ``pydantic`` group of every installed
distribution the first time it builds a model — no allowlist: a stray ``entry_points.txt``
on ``sys.path`` is enough — and a plugin's hooks see every input validated (the config's
``backend.env`` secrets) and can change what validation returns (the config, the policy).
With ``PYDANTIC_DISABLE_PLUGINS=__all__`` it loads none. It reads the variable every time
it builds a validator, so the variable stays set for the life of the process.

* The ``mcp-acp`` executable (:mod:`mcp_acp.__main__`) sets it to ``__all__`` whatever it
  was (:func:`disable_pydantic_plugins` with ``force``), before pydantic is imported.
* Importing :mod:`mcp_acp` sets it to ``__all__`` only if it is not set at all: a program
  that embeds mcp-acp and set the variable itself (empty, to load its pydantic plugins)
  keeps its choice — and with it, those plugins see what mcp-acp validates.

A stdio backend is another program: it gets the variable as the process had it before
mcp-acp changed it (:func:`restore_for_child`), unless ``backend.env`` sets it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["DISABLE_ENV", "disable_pydantic_plugins", "restore_for_child"]

DISABLE_ENV = "PYDANTIC_DISABLE_PLUGINS"
_ALL = "__all__"

_changed = False  # mcp-acp set the variable (and _before is what it was)
_before: str | None = None  # None: it was not set


def disable_pydantic_plugins(*, force: bool) -> None:
    """Set ``PYDANTIC_DISABLE_PLUGINS=__all__`` in ``os.environ``: always with ``force``,
    else only if the variable is not set."""
    global _changed, _before
    current = os.environ.get(DISABLE_ENV)
    if current == _ALL or (current is not None and not force):
        return
    if not _changed:
        _changed, _before = True, current
    os.environ[DISABLE_ENV] = _ALL


def restore_for_child(env: MutableMapping[str, str]) -> None:
    """In ``env`` (a copy of ``os.environ`` for a child process), put the variable back as
    it was before mcp-acp set it — if mcp-acp set it, and ``env`` still has its value."""
    if not _changed or env.get(DISABLE_ENV) != _ALL:
        return
    if _before is None:
        env.pop(DISABLE_ENV, None)
    else:
        env[DISABLE_ENV] = _before
