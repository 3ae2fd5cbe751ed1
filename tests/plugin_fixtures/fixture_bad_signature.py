"""A plugin whose hook asks for an argument the spec does not have."""

from mcp_acp.hookspecs import hookimpl


@hookimpl
def register_approvers(register, secret_key):  # type: ignore[no-untyped-def]
    pass
