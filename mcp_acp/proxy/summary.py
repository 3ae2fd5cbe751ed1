"""What a human is shown before approving a request: one line, :func:`approval_summary`.

A human who approves must see what they approve: for a ``tools/call`` the tool and every
argument by name (``path="/data/a.txt", content="…"``), for a ``resources/read`` the URI,
for a ``prompts/get`` the prompt's name and its arguments. Every path is shown whole, as is
any argument a path was found in; any other value is cut after :data:`MAX_VALUE_CHARS`
characters, saying how long it was (the approver's ``list`` gives it whole); a path that
goes through a symlink is followed by where it leads. Values are
compact JSON — a string in quotes, control characters escaped —, and a name that could pass
for more than a name (``mode="safe", z``) is quoted too. What is left to a terminal to show
(a bidi override, say) the ``mcp-acp approvals`` CLI escapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from mcp_acp.models import DecisionRequest
from mcp_acp.policy.paths import AmbiguousPathError, normalise_path

__all__ = ["MAX_VALUE_CHARS", "approval_arguments", "approval_summary"]

#: An argument's value (other than a path) is shown up to this many characters.
MAX_VALUE_CHARS = 200

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:/@+-]+")
_PLAIN_URI = re.compile(r"[!#-~]+")  # printable ASCII, no space, no quote
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def approval_arguments(method: str, params: Mapping[str, Any]) -> Any:
    """The arguments of a request as its client sent them: a ``tools/call``'s or a
    ``prompts/get``'s ``arguments``; for other methods but ``resources/read`` (whose URI
    is all), the params without ``_meta``; ``None`` if there are none."""
    if method in ("tools/call", "prompts/get"):
        return params.get("arguments")
    rest = {k: v for k, v in params.items() if k not in ("_meta", "uri")}
    return rest or None


def approval_summary(
    request: DecisionRequest, params: Mapping[str, Any], rule_id: str | None, also: str = ""
) -> str:
    """``alice wants tools/call write_file (path="/data/a.txt", content="x"); rule
    ask-writes``, then ``; {also}`` if given (what the arguments carry that looks like a
    credential). Before the rule, where each path that goes through a symlink leads
    (``"/data/notes.txt" leads to "/data/report.txt"``)."""
    method = request.action.mcp_method
    parts = [f"{request.subject.subject_id} wants {method}"]
    if method == "tools/call":
        parts.append(_name(request.action.tool_name or ""))
    elif method == "prompts/get":
        parts.append(_name(request.resource.name or ""))
    if request.resource.uri is not None:
        uri = request.resource.uri
        parts.append(uri if _PLAIN_URI.fullmatch(uri) else _compact(uri))
    if method in ("tools/call", "prompts/get") or request.resource.uri is None:
        parts.append(f"({_arguments(request, approval_arguments(method, params))})")
    summary = "; ".join([" ".join(parts), *_leading_elsewhere(request), f"rule {rule_id}"])
    return f"{summary}; {also}" if also else summary


def _arguments(request: DecisionRequest, arguments: Any) -> str:
    if arguments is None:
        return "no arguments"
    if not isinstance(arguments, Mapping):
        return f"arguments={_cut(_compact(arguments))}"
    holding_paths = [p.argument for p in request.resource.paths]
    shown = []
    for name, value in arguments.items():
        text = _compact(value)
        if not any(_within(where, str(name)) for where in holding_paths):
            text = _cut(text)
        shown.append(f"{_name(str(name))}={text}")
    return ", ".join(shown) or "no arguments"


def _leading_elsewhere(request: DecisionRequest) -> list[str]:
    """Where each path that goes through a symlink leads: ``"/data/notes.txt" leads to
    "/data/report.txt"`` — the human approves what the path names now, not its spelling."""
    said: list[str] = []
    for path in request.resource.paths:
        if path.resolved is None:
            continue
        try:
            written = normalise_path(path.path)
        except AmbiguousPathError:
            written = path.path
        line = f"{_compact(path.path)} leads to {_compact(path.resolved)}"
        if path.resolved != written and line not in said:
            said.append(line)
    return said


def _within(where: str, name: str) -> bool:
    """Whether a path found at ``where`` (``path``, ``config.path``, ``args[1]``) was found
    in the argument ``name``."""
    return where == name or where.startswith((f"{name}.", f"{name}["))


def _name(name: str) -> str:
    return name if _PLAIN_NAME.fullmatch(name) else _compact(name)


def _cut(text: str) -> str:
    if len(text) <= MAX_VALUE_CHARS:
        return text
    return f"{text[:MAX_VALUE_CHARS]}… ({len(text):,} characters)"
