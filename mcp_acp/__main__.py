"""The ``mcp-acp`` executable, and ``python -m mcp_acp``: the CLI, started with garbage
collection paused (see :mod:`mcp_acp.startup`)."""

from __future__ import annotations

from typing import NoReturn

from mcp_acp.startup import pause_collection


def main() -> NoReturn:
    """Pause garbage collection, then run :func:`mcp_acp.cli.main`."""
    pause_collection()
    from mcp_acp.cli import main as cli_main  # imported after the pause: most of start-up

    cli_main()


if __name__ == "__main__":
    main()
