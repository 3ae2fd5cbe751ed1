"""The built-in ``acp`` policy language. The file format lives in :mod:`.model`."""

from mcp_acp.policy.model import Conditions, PolicyFile, Rule

__all__ = ["Conditions", "PolicyFile", "Rule"]
