"""The ``mcp-acp`` executable, and ``python -m mcp_acp``: the CLI, started with garbage
collection paused (see :mod:`mcp_acp.startup`) and pydantic's own plugins off whatever the
environment says (see :mod:`mcp_acp._pydantic_plugins`)."""

from __future__ import annotations

from typing import NoReturn

from mcp_acp._pydantic_plugins import disable_pydantic_plugins
from mcp_acp.startup import pause_collection


def main() -> NoReturn:
    """Turn pydantic's plugins off, pause garbage collection, then run
    :func:`mcp_acp.cli.main`."""
    disable_pydantic_plugins(force=True)  # before pydantic is first imported, by the CLI
    pause_collection()
    from mcp_acp.cli import main as cli_main  # imported after the pause: most of start-up

    cli_main()


if __name__ == "__main__":
    main()
