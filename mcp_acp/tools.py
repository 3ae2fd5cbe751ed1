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
   adds network egress and untrusted content. ``readOnlyHint: true`` never removes anything.

The side effect ``untrusted_content`` says a tool's results carry content from outside the
user's control (web pages, fetched URLs, issues, mail): once the proxy forwards a call of
one, the session has seen untrusted content (see :mod:`mcp_acp.proxy.pep`).

A tool nothing recognises has no operations — and an unknown operation never matches a rule
that names operations.

Path arguments, for every tool: the generic names (``path``, ``file``, ``cwd``, …) and the
loose ones (``source``, ``to``, …) when their value looks like a path, plus the ones a
registry entry names — an entry can add path arguments, never hide one. For a tool no entry
names, any other string that starts like a path, at any depth, is a path too.
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
from mcp_acp.policy.paths import AmbiguousPathError, file_uri_to_path

__all__ = [
    "GENERIC_PATH_ARGUMENTS",
    "UNTRUSTED_CONTENT",
    "ToolEntry",
    "ToolFacts",
    "ToolRegistry",
]

PathRole = Literal["path", "source", "dest"]

#: The side effect of a tool whose results carry content from outside the user's control.
UNTRUSTED_CONTENT = "untrusted_content"

#: Argument names that always hold paths, whatever the tool (a registry entry adds to them).
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
#: For a tool the registry does not list, any other string that starts like a path — ``/``,
#: ``~``, ``./``, ``../``, a drive letter, ``file:`` — is a path too (see rooted_strings).
_ROOTED = re.compile(r"^(?:[/~]|\.{1,2}(?:[/\\]|$)|[A-Za-z]:[/\\]|file:)", re.IGNORECASE)
#: Values of one call scanned for such strings; past this the call's paths are ambiguous.
MAX_SCANNED_VALUES = 100_000
#: How deep those values may nest, JSON text decoded in them included (as deep as the relay
#: reads a message: ``proxy.messages.MAX_DEPTH``); deeper, the call's paths are ambiguous.
MAX_NESTING = 200
#: A string that may be an object or an array written as JSON text, which servers decode
#: into the value an argument's type asks for (the mcp SDK's ``MCPServer`` and FastMCP:
#: ``pre_parse_json``): it is scanned as that value too.
_JSON_TEXT = re.compile(r"\s*[\[{]")

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

    tool: str = Field(min_length=1, description="Tool name glob, ASCII-case-insensitive.")
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
    #: No registry entry names the tool: its other arguments are scanned for paths too, and
    #: a loose argument is a path when its value merely contains a slash (``a/b``); for a
    #: registry tool, only when it starts like one (a git ``target`` of ``origin/main`` is
    #: a branch).
    scan_other_arguments: bool = False
    # the two name maps with casefolded keys: an argument name matches whatever its case
    _declared: Mapping[str, PathRole] = attrs.field(init=False, repr=False, eq=False)
    _loose: Mapping[str, PathRole] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        folded = {name.casefold(): role for name, role in self.path_arguments.items()}
        object.__setattr__(self, "_declared", folded)
        loose = {name.casefold(): role for name, role in self.loose_path_arguments.items()}
        object.__setattr__(self, "_loose", loose)


class ToolRegistry:
    """Classifies tools and extracts their path arguments."""

    #: Tool names whose registry facts are remembered (a session calls few tools, often).
    CACHE_SIZE = 1024

    def __init__(self, entries: Sequence[ToolEntry]) -> None:
        # ASCII case only: a look-alike (a dotless i, U+0131) must not get read_file's facts
        self._entries = [
            (compile_glob(e.tool, paths=False, ignore_case=True, ascii_case=True), e)
            for e in entries
        ]
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
                # the entry adds path arguments (or gives a generic name another role); it
                # never hides the generic ones, which a server may read whatever the entry says
                declared = {name.casefold() for name in entry.path_arguments}
                facts = ToolFacts(
                    frozenset(entry.operations),
                    frozenset(entry.side_effects),
                    {**GENERIC_PATH_ARGUMENTS, **entry.path_arguments},
                    f"registry: {entry.tool}",
                    {k: v for k, v in LOOSE_PATH_ARGUMENTS.items() if k not in declared},
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
                scan_other_arguments=True,
            )
        return facts

    def path_arguments(
        self, facts: ToolFacts, arguments: Mapping[str, Any]
    ) -> tuple[PathArgument, ...]:
        """Every path-typed argument of a call, one entry per path (lists are flattened).

        Argument names match whatever their case (a server may well read ``Path`` as
        ``path``). A path-typed argument whose value is not a string (or list of strings)
        is kept as its ``repr``, which the policy will refuse as ambiguous — never silently
        skipped. A loose name (``source``, ``to``) is a path when its value looks like one.
        For a tool no registry entry names, every other string in the arguments, at any
        depth, that starts like a path is a path too (:func:`rooted_strings`).
        """
        found: list[PathArgument] = []
        others: list[tuple[str, Any]] = []
        for name, value in arguments.items():
            folded = name.casefold()
            role = facts._declared.get(folded)
            if role is not None:
                values = value if isinstance(value, list) else [value]
                for item in values:
                    text = item if isinstance(item, str) else repr(item)
                    found.append(PathArgument(argument=name, path=text, role=role))
                continue
            role = facts._loose.get(folded)
            if role is not None and isinstance(value, str):
                if facts.scan_other_arguments:
                    path = value if _PATH_LIKE.search(value) else None
                else:
                    path = _rooted(value)
                if path is not None:
                    found.append(PathArgument(argument=name, path=path, role=role))
                    continue
            if facts.scan_other_arguments:
                others.append((name, value))
        if others:
            found.extend(rooted_strings(others))
        return tuple(found)


def rooted_strings(items: Sequence[tuple[str, Any]]) -> list[PathArgument]:
    """The strings under ``items`` (argument name, value; nested objects and lists too)
    that start like a path, or whose option value (``--output=/etc/x``) or curl-style
    ``@file`` does; each named by where it sits (``config.path``, ``args[1]``). A ``file:``
    URI counts as its path. A string holding an object or an array as JSON text is read as
    that value too (``opts.path`` in ``{"opts": "{\"path\": \"/x\"}"}``): servers decode
    such text for an argument whose type is not a string (text in such text too: each
    layer counts as a level). The call's paths are ambiguous (denied) rather than partly
    read past :data:`MAX_SCANNED_VALUES` values, past :data:`MAX_NESTING` levels, and for
    JSON text this reader refuses (too deep for it, or a number of more than 4,300 digits),
    which a server with other limits may well read."""
    found: list[PathArgument] = []
    stack = [(where, value, 1) for where, value in reversed(items)]
    scanned = 0
    while stack:
        where, value, depth = stack.pop()
        scanned += 1
        if scanned > MAX_SCANNED_VALUES:
            text = f"(more than {MAX_SCANNED_VALUES:,} values: not read)"
            return [*found, PathArgument(argument="arguments", path=text)]
        if depth > MAX_NESTING:
            text = f"(nested more than {MAX_NESTING} levels deep: not read)"
            return [*found, PathArgument(argument=where, path=text)]
        if isinstance(value, str):
            path = _rooted(value)
            if path is not None:
                found.append(PathArgument(argument=where, path=path))
            elif _JSON_TEXT.match(value):
                try:
                    inner = json.loads(value)
                except json.JSONDecodeError:  # not JSON: a server reads a string too
                    continue
                except (ValueError, RecursionError):  # JSON, but not for this reader
                    text = "(JSON text too deep, or with too long a number, to read)"
                    return [*found, PathArgument(argument=where, path=text)]
                if isinstance(inner, dict | list):
                    stack.append((where, inner, depth + 1))
        elif isinstance(value, Mapping):
            stack.extend(
                (f"{where}.{key}", item, depth + 1) for key, item in reversed(list(value.items()))
            )
        elif isinstance(value, list):
            stack.extend(
                (f"{where}[{n}]", item, depth + 1) for n, item in reversed(list(enumerate(value)))
            )
    return found


def _rooted(text: str) -> str | None:
    """The path ``text`` holds, if it starts like one (itself, an option's value, an @file)."""
    candidates = [text]
    if text.startswith("-") and "=" in text:
        candidates.append(text.split("=", 1)[1])
    elif text.startswith("@"):
        candidates.append(text[1:])
    for candidate in candidates:
        if _ROOTED.match(candidate):
            if candidate[:5].lower() != "file:":
                return candidate
            try:
                return file_uri_to_path(candidate)
            except AmbiguousPathError:
                return candidate  # kept as written: the policy refuses it as ambiguous
    return None


def _heuristic_operations(tool_name: str) -> frozenset[str]:
    tokens = {t.lower() for t in _TOKEN.findall(tool_name)}
    return frozenset(op for op, words in _HEURISTICS.items() if tokens & words)


def _raise_by_annotations(facts: ToolFacts, annotations: Mapping[str, Any]) -> ToolFacts:
    operations, side_effects = set(facts.operations), set(facts.side_effects)
    if annotations.get("destructiveHint") is True:
        operations.add("delete")
    if annotations.get("readOnlyHint") is False:
        operations.add("write")
    if annotations.get("openWorldHint") is True:  # it reaches, and reads, the open world
        side_effects.update(("network_egress", UNTRUSTED_CONTENT))
    if operations == facts.operations and side_effects == facts.side_effects:
        return facts
    return attrs.evolve(
        facts,
        operations=frozenset(operations),
        side_effects=frozenset(side_effects),
        source=facts.source + " + annotations",
    )
