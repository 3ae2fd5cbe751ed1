"""``mcp-acp demo``: a bundled example MCP server (:mod:`.backend`) and the scripted
walk-through that puts it behind the real proxy (:mod:`.driver`).

Only ``mcp-acp demo`` imports this package; the backend imports the ``mcp`` SDK, which the
proxy's own start-up path never loads.
"""
