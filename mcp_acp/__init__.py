"""mcp-acp: Zero Trust access control for the Model Context Protocol.

The extension contracts live in :mod:`mcp_acp.protocols`, the hooks that register
implementations in :mod:`mcp_acp.hookspecs`, and the errors in :mod:`mcp_acp.errors`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
