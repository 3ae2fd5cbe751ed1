"""OIDC identity for mcp-acp."""

__version__ = "0.1.0"
