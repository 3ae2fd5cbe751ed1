"""A plugin that passes something other than a pydantic model as its config model."""

from mcp_acp.hookspecs import hookimpl


@hookimpl
def register_posture_checks(register):  # type: ignore[no-untyped-def]
    register("odd", lambda options, context: None, dict)
