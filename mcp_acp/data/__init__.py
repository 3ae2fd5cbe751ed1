"""Data files shipped with mcp-acp (the tool registry)."""
