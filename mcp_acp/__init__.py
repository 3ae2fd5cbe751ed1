"""mcp-acp: Zero Trust access control for the Model Context Protocol.

The extension contracts live in :mod:`mcp_acp.protocols`, the hooks that register
implementations in :mod:`mcp_acp.hookspecs`, and the errors in :mod:`mcp_acp.errors`.
"""

from __future__ import annotations

from mcp_acp._pydantic_plugins import disable_pydantic_plugins

# Before anything imports pydantic: no distribution's ``pydantic`` entry point is imported
# into mcp-acp, unless the program importing it set PYDANTIC_DISABLE_PLUGINS itself (see
# mcp_acp._pydantic_plugins; the mcp-acp executable overrides even that).
disable_pydantic_plugins(force=False)

__version__ = "0.1.0"

__all__ = ["__version__"]
