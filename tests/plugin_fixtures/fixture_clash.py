"""A plugin that registers a name the built-ins already use."""

from mcp_acp.hookspecs import hookimpl


@hookimpl
def register_identity_providers(register):  # type: ignore[no-untyped-def]
    register("local", lambda options, context: None)
