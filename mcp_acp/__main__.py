"""``python -m mcp_acp`` runs the CLI."""

from mcp_acp.cli import main

main()
