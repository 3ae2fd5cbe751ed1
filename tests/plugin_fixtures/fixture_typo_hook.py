"""A plugin with a misspelled hook name: check_pending must catch it."""

from mcp_acp.hookspecs import hookimpl


@hookimpl
def register_identity_provider(register):  # type: ignore[no-untyped-def]  # missing 's'
    register("never", lambda options, context: None)
