"""A plugin whose factory cannot be called as ``factory(options, context)``."""

from mcp_acp.hookspecs import hookimpl
from mcp_acp.registry import Register


class OneArgument:
    name = "one-argument"

    def __init__(self, options: object) -> None:  # no context
        self.options = options


@hookimpl
def register_approvers(register: Register) -> None:
    register("one-argument", OneArgument)  # type: ignore[arg-type]
