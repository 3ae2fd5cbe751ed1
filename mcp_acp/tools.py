"""The tool registry: what a tool does, and which of its arguments are paths. Data, not code.

``operations`` (read / write / delete / execute) and ``side_effects`` of a tool call come,
in this order, from

1. the registry — entries from the config file first, then the shipped
   ``mcp_acp/data/tool_registry.json`` (reference servers: filesystem, git, fetch, memory,
   sqlite, time, shell-style tools); the first entry whose name glob matches wins;
2. name heuristics, only when no entry matched (``delete_*`` → delete, ``run_*`` →
   execute, …);
3. the server's MCP tool annotations, which are untrusted hints and may only *raise* risk:
   ``destructiveHint`` adds delete, ``readOnlyHint: false`` adds write, ``openWorldHint``
   adds network egress. ``readOnlyHint: true`` never removes anything.

A tool nothing recognises has no operations — and an unknown operation never matches a rule
that names operations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, Literal

import attrs
from pydantic import BaseModel, ConfigDict, Field

from mcp_acp.models import PathArgument
from mcp_acp.policy.glob import compile_glob

__all__ = [
    "GENERIC_PATH_ARGUMENTS",
    "ToolEntry",
    "ToolFacts",
    "ToolRegistry",
]

PathRole = Literal["path", "source", "dest"]

#: Argument names that always hold paths, for tools the registry does not list.
GENERIC_PATH_ARGUMENTS: Mapping[str, PathRole] = {
    "path": "path", "paths": "path", "file": "path", "files": "path", "file_path": "path",
    "filepath": "path", "filename": "path", "directory": "path", "dir": "path",
    "cwd": "path", "repo_path": "path", "output_path": "path", "source_path": "source",
    "from_path": "source", "destination_path": "dest", "dest_path": "dest",
    "to_path": "dest", "target_path": "dest",
}  # fmt: skip

#: Argument names that hold a path only when the value looks like one (an email tool's
#: ``to`` is an address, a copy tool's ``to`` is a path).
LOOSE_PATH_ARGUMENTS: Mapping[str, PathRole] = {
    "source": "source", "src": "source", "from": "source", "origin": "source",
    "destination": "dest", "dest": "dest", "to": "dest", "target": "dest",
    "output": "path", "root": "path",
}  # fmt: skip
_PATH_LIKE = re.compile(r"^(?:[/~.\\]|[A-Za-z]:)|[/\\]")

_HEURISTICS: Mapping[str, frozenset[str]] = {
    "read": frozenset(
        [
            "read",
            "get",
            "list",
            "search",
            "find",
            "view",
            "show",
            "cat",
            "open",
            "query",
            "describe",
            "stat",
            "info",
            "tree",
            "diff",
            "log",
            "status",
            "fetch",
            "download",
        ]
    ),
    "write": frozenset(
        [
            "write",
            "create",
            "edit",
            "update",
            "set",
            "put",
            "add",
            "append",
            "insert",
            "save",
            "move",
            "rename",
            "copy",
            "commit",
            "patch",
            "modify",
            "upload",
            "mkdir",
            "replace",
        ]
    ),
    "delete": frozenset(
        ["delete", "remove", "rm", "drop", "destroy", "erase", "unlink", "purge", "truncate"]
    ),
    "execute": frozenset(
        [
            "exec",
            "execute",
            "run",
            "shell",
            "bash",
            "sh",
            "eval",
            "evaluate",
            "command",
            "spawn",
            "script",
            "python",
            "terminal",
        ]
    ),
}
_TOKEN = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


class ToolEntry(BaseModel):
    """One registry entry (the shape users write under ``tools.registry`` in the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str = Field(min_length=1, description="Tool name glob, case-insensitive.")
    operations: list[str] = Field(default_factory=list)
    side_effects: list[str] = Field(default_factory=list)
    path_arguments: dict[str, PathRole] = Field(
        default_factory=dict, description="Argument name -> role (path, source or dest)."
    )


@attrs.frozen(slots=True)
class ToolFacts:
    """What the registry concluded about one tool, and from where."""

    operations: frozenset[str]
    side_effects: frozenset[str]
    path_arguments: Mapping[str, PathRole]
    source: str  # "registry: <pattern>", "heuristics" or "unknown"
    loose_path_arguments: Mapping[str, PathRole] = attrs.field(factory=dict)


class ToolRegistry:
    """Classifies tools and extracts their path arguments."""

    #: Tool names whose registry facts are remembered (a session calls few tools, often).
    CACHE_SIZE = 1024

    def __init__(self, entries: Sequence[ToolEntry]) -> None:
        self._entries = [(compile_glob(e.tool, paths=False, ignore_case=True), e) for e in entries]
        self._known: dict[str, ToolFacts] = {}

    @classmethod
    def default(cls, extra: Iterable[ToolEntry] = ()) -> ToolRegistry:
        """User ``extra`` entries first, then the shipped registry."""
        text = resources.files("mcp_acp.data").joinpath("tool_registry.json").read_text("utf-8")
        shipped = [ToolEntry.model_validate(item) for item in json.loads(text)["tools"]]
        return cls([*extra, *shipped])

    def facts(self, tool_name: str, annotations: Mapping[str, Any] | None = None) -> ToolFacts:
        """Operations, side effects and path arguments of ``tool_name``."""
        facts = self._known.get(tool_name)
        if facts is None:
            facts = self._lookup(tool_name)
            if len(self._known) < self.CACHE_SIZE:
                self._known[tool_name] = facts
        return _raise_by_annotations(facts, annotations or {})

    def _lookup(self, tool_name: str) -> ToolFacts:
        for pattern, entry in self._entries:
            if pattern.fullmatch(tool_name):
                facts = ToolFacts(
                    frozenset(entry.operations),
                    frozenset(entry.side_effects),
                    entry.path_arguments,
                    f"registry: {entry.tool}",
                )
                break
        else:
            operations = _heuristic_operations(tool_name)
            side_effects = frozenset({"code_exec"}) if "execute" in operations else frozenset()
            facts = ToolFacts(
                operations,
                side_effects,
                GENERIC_PATH_ARGUMENTS,
                "heuristics" if operations else "unknown",
                LOOSE_PATH_ARGUMENTS,
            )
        return facts

    def path_arguments(
        self, facts: ToolFacts, arguments: Mapping[str, Any]
    ) -> tuple[PathArgument, ...]:
        """Every path-typed argument of a call, one entry per path (lists are flattened).

        A path-typed argument whose value is not a string (or list of strings) is kept as
        its ``repr``, which the policy will refuse as ambiguous — never silently skipped.
        """
        found: list[PathArgument] = []
        for name, role in facts.path_arguments.items():
            if name not in arguments:
                continue
            value = arguments[name]
            values = value if isinstance(value, list) else [value]
            for item in values:
                text = item if isinstance(item, str) else repr(item)
                found.append(PathArgument(argument=name, path=text, role=role))
        for name, role in facts.loose_path_arguments.items():
            value = arguments.get(name)
            if isinstance(value, str) and _PATH_LIKE.search(value):
                found.append(PathArgument(argument=name, path=value, role=role))
        return tuple(found)


def _heuristic_operations(tool_name: str) -> frozenset[str]:
    tokens = {t.lower() for t in _TOKEN.findall(tool_name)}
    return frozenset(op for op, words in _HEURISTICS.items() if tokens & words)


def _raise_by_annotations(facts: ToolFacts, annotations: Mapping[str, Any]) -> ToolFacts:
    operations, side_effects = set(facts.operations), set(facts.side_effects)
    if annotations.get("destructiveHint") is True:
        operations.add("delete")
    if annotations.get("readOnlyHint") is False:
        operations.add("write")
    if annotations.get("openWorldHint") is True:
        side_effects.add("network_egress")
    if operations == facts.operations and side_effects == facts.side_effects:
        return facts
    return attrs.evolve(
        facts,
        operations=frozenset(operations),
        side_effects=frozenset(side_effects),
        source=facts.source + " + annotations",
    )
