"""Built-in plugins. They register through the same hooks as third-party plugins
(see :data:`mcp_acp.plugins.DEFAULT_PLUGINS`), so each module here doubles as an example."""
