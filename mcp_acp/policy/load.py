"""Reading policy files, with errors that name the JSON path *and* the line.

Only a regular file is read, never more than 4 MiB, and only one that nobody but its owner
(you, or root) can change — the file, its directory, and where a link leads
(:func:`~mcp_acp._fs.untrusted_file`); a key written twice, or nesting too
deep to parse, is a problem reported like any other (never an exception of another kind).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mcp_acp._fs import (
    FileTooLargeError,
    NotRegularFileError,
    read_regular_file,
    untrusted_file,
)
from mcp_acp._json import (
    DuplicateKeyError,
    NumberTooLongError,
    byte_order_mark,
    json_path,
    loads_strict,
    value_lines,
)
from mcp_acp.errors import PolicyError, one_line
from mcp_acp.policy.model import PolicyFile

__all__ = [
    "MAX_POLICY_BYTES",
    "check_policy",
    "load_policy",
    "parse_policy",
    "policy_errors",
    "read_policy_text",
]

MAX_POLICY_BYTES = 4 << 20
_FIX = "correct the policy file ('mcp-acp schema policy' documents every field)"


def _read(path: Path) -> str:
    try:
        raw = read_regular_file(path, MAX_POLICY_BYTES)
    except NotRegularFileError as exc:
        raise PolicyError(
            f"policy {path} is {exc.kind}, not a regular file",
            fix="point policy.config.path (or --policy) at a JSON file",
        ) from None
    except FileTooLargeError as exc:
        raise PolicyError(
            f"policy {path} is {exc.size} bytes, over the 4 MiB limit",
            fix="split or shorten the policy",
        ) from None
    except FileNotFoundError:
        raise PolicyError(
            f"no policy file at {path}",
            fix="create one ('mcp-acp init' writes a starter policy) or set "
            "policy.config.path in the config",
        ) from None
    except OSError as exc:
        raise PolicyError(
            f"cannot read policy {path}: {exc.strerror}", fix="check the file's permissions"
        ) from exc
    try:
        problem = untrusted_file(path)
    except FileNotFoundError:
        problem = f"{path} disappeared while it was being read"
    except OSError as exc:
        raise PolicyError(
            f"cannot check policy {path}: {exc.strerror}",
            fix="check the permissions of the file and of the directories on its path",
        ) from exc
    if problem is not None:
        raise PolicyError(
            f"refusing to use policy: {problem}",
            fix="keep the policy in a directory of yours, writable by you alone "
            "(chmod go-w the file and its directory)",
        )
    bom = byte_order_mark(raw)
    if bom is not None:
        raise PolicyError(f"policy {path} {bom}", fix="save it as UTF-8 without a byte order mark")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"policy {path} is not UTF-8 (byte {exc.start})", fix="save the file as UTF-8"
        ) from exc


def _validate(text: str, source: str) -> tuple[PolicyFile | None, list[str]]:
    try:
        return _validate_unguarded(text, source)
    except RecursionError:  # parsing, validating or locating lines went too deep
        return None, [f"{source}:1: nests arrays or objects too deeply to be a policy"]


def _validate_unguarded(text: str, source: str) -> tuple[PolicyFile | None, list[str]]:
    try:
        data: Any = loads_strict(text)
    except NumberTooLongError as exc:
        return None, [f"{source}:{exc.lineno}: column {exc.colno}: {exc.msg}"]
    except json.JSONDecodeError as exc:
        return None, [f"{source}:{exc.lineno}: not valid JSON at column {exc.colno}: {exc.msg}"]
    except DuplicateKeyError as exc:
        at = f"{source}:{exc.line}:" if exc.line else f"{source}:"
        return None, [one_line(f"{at} {exc.path}: key {exc.key!r} appears twice in one object")]
    try:
        return PolicyFile.model_validate(data), []
    except ValidationError as exc:
        lines = value_lines(text)  # a valid document: no key twice
        errors = []
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            found = loc
            while found and found not in lines:  # e.g. "x" given where a list is expected
                found = found[:-1]
            line = lines.get(found, 1)
            message = error["msg"].removeprefix("Value error, ")
            errors.append(one_line(f"{source}:{line}: {json_path(loc)}: {message}"))
        return None, errors


def check_policy(text: str, source: str) -> tuple[PolicyFile | None, list[str]]:
    """The policy in ``text`` and no problems, or ``None`` and every problem, one line each."""
    return _validate(text, source)


def policy_errors(text: str, source: str) -> list[str]:
    """Every problem in a policy document, one line each (empty if it is valid)."""
    return _validate(text, source)[1]


def parse_policy(text: str, source: str) -> PolicyFile:
    """Validate policy ``text``; raise :class:`PolicyError` with the first problem."""
    policy, errors = _validate(text, source)
    if policy is None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PolicyError(errors[0] + more, fix=_FIX + ", then run 'mcp-acp policy validate'")
    return policy


def load_policy(path: Path) -> PolicyFile:
    """Read and validate the policy file at ``path``."""
    return parse_policy(_read(path), str(path))


def read_policy_text(path: Path) -> str:
    """The text of a policy file, with the same checks as :func:`load_policy`."""
    return _read(path)
