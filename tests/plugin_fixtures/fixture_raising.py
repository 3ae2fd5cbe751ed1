"""A plugin whose registration hook raises."""

from mcp_acp.hookspecs import hookimpl


@hookimpl
def register_approvers(register):  # type: ignore[no-untyped-def]
    raise RuntimeError("database not reachable")
