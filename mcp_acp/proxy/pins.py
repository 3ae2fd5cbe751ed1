"""Tool pins: trust on first use for tool definitions, against the rug pull.

A backend can define a tool one way when it is first seen and another way later (its
description rewritten to carry instructions, its schema given a new field) — after the
user or the policy author has looked. The relay pins each tool's definition (its
``title``, ``description``, ``inputSchema``, ``outputSchema`` and ``annotations``) the first
time a ``tools/list`` shows it, per backend. A later list with a different definition
leaves the tool out and its calls are denied (``builtin-tool-changed``) until someone
approves the new definition with ``mcp-acp tools approve NAME``, which shows what
changed.

With ``review`` (config ``proxy.new_tools: "review"``) nothing is trusted on first use: a
tool seen for the first time is kept *unreviewed* — its definition waiting, as a changed
one does — and held back the same way (``builtin-tool-unreviewed``) until it is approved.

The pins live in ``tool-pins.json`` next to the config file (0600; refused if others can
write it, like the config). Every list is one transaction under an ``flock`` on
``tool-pins.json.lock``: read, compare, write if anything changed — so a proxy and
``mcp-acp tools approve`` (or two proxies) never lose each other's changes. Definitions
up to :data:`MAX_KEPT_DEFINITION` bytes are kept in the file, to show the change (up to
:data:`MAX_KEPT_PER_BACKEND` for all of a backend's); others only by digest.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import attrs

from mcp_acp._fs import atomic_write_text, ensure_private_dir, unsafe_permissions
from mcp_acp.audit.events import payload_digest
from mcp_acp.config import Backend, HttpBackend
from mcp_acp.errors import ConfigError

__all__ = [
    "PINNED_FIELDS",
    "PINS_FILE_NAME",
    "Seen",
    "ToolPins",
    "backend_key",
    "backend_ref",
    "definition_diff",
]

PINS_FILE_NAME = "tool-pins.json"
PINNED_FIELDS = ("title", "description", "inputSchema", "outputSchema", "annotations")
MAX_KEPT_DEFINITION = 16 * 1024
#: Definitions kept per backend, in bytes (pinned and pending together); past it, new ones
#: are kept as digests only — the file stays small whatever a backend lists.
MAX_KEPT_PER_BACKEND = 1024 * 1024
#: Tools pinned per backend; a list's tools beyond it are neither pinned nor compared.
MAX_PINNED_TOOLS = 10_000
_VERSION = 1


@attrs.frozen(slots=True)
class Seen:
    """What the pins say of one listed tool: ``pinned`` (first seen: pinned now), ``same``,
    ``changed`` (with the fields that differ from the pin) or ``unreviewed`` (never
    approved, with ``review``: no pin yet, ``pinned_digest`` empty)."""

    state: Literal["pinned", "same", "changed", "unreviewed"]
    digest: str
    pinned_digest: str
    changed_fields: tuple[str, ...] = ()


def backend_key(backend: Backend) -> str:
    """Whose tools these are: the URL of an HTTP backend (without its query), or a stdio
    backend's command line — ``npx -y @modelcontextprotocol/server-filesystem /srv`` and
    ``npx -y mcp-server-git`` are different backends though both run ``npx``."""
    if isinstance(backend, HttpBackend):
        return str(backend.url).split("?", 1)[0]
    return json.dumps([backend.command, *backend.args], ensure_ascii=False)


def backend_ref(key: str) -> str:
    """How audit records name a backend: a digest of its key, never the key itself — a
    command line may carry a credential (``--token=…``, a header argument). ``mcp-acp
    tools pins`` shows each key with its reference."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _definition(tool: Mapping[str, Any]) -> dict[str, Any]:
    return {field: tool[field] for field in PINNED_FIELDS if field in tool}


def _record(definition: dict[str, Any], when: str, room: int) -> dict[str, Any]:
    """A pin of ``definition``, kept whole if it fits in ``room`` bytes and the limit."""
    digest, size = payload_digest(definition)
    kept = size <= min(MAX_KEPT_DEFINITION, room)
    return {
        "sha256": digest,
        "at": when,
        "fields": {field: payload_digest(value)[0] for field, value in definition.items()},
        "definition": definition if kept else None,
        "size": size if kept else 0,
    }


def _kept_bytes(pins: Mapping[str, Any]) -> int:
    """Bytes of definitions a backend's pins keep (pinned and pending)."""
    total = 0
    for pin in pins.values():
        total += int(pin.get("size") or 0) + int((pin.get("pending") or {}).get("size") or 0)
    return total


def _changed(pinned: Mapping[str, Any], fields: Mapping[str, str]) -> tuple[str, ...]:
    before: Mapping[str, str] = pinned.get("fields") or {}
    return tuple(f for f in PINNED_FIELDS if before.get(f) != fields.get(f))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ToolPins:
    """The pins file of one config directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    @classmethod
    def beside(cls, config_path: Path) -> ToolPins:
        return cls(config_path.parent / PINS_FILE_NAME)

    # ---------------------------------------------------------------- transactions

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        ensure_private_dir(self.path.parent)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> dict[str, Any]:
        """The file's contents (empty if there is none). ``ConfigError`` if it is not ours
        to trust or not a pins file."""
        if not self.path.exists():
            return {"version": _VERSION, "backends": {}}
        problem = unsafe_permissions(self.path)
        if problem is not None:
            raise ConfigError(
                f"tool pins file {self.path} {problem}",
                fix=f"chmod 600 {self.path} (and check who changed it)",
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != _VERSION:
                raise ValueError(f"not a version-{_VERSION} pins file")
            if not isinstance(data.get("backends"), dict):
                raise ValueError("'backends' is not an object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(
                f"tool pins file {self.path} cannot be read: {exc}",
                fix="delete it: every tool is pinned again when it is next listed",
            ) from exc
        return data

    def _transaction(self, change: Callable[[dict[str, Any]], bool]) -> None:
        """Read the pins under the lock, let ``change`` edit them; write if it says so."""
        with self._locked():
            data = self._read()
            if change(data):
                atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def check(self) -> None:
        """Raise ``ConfigError`` now if the file is damaged or unsafe (start-up)."""
        self._read()

    # ---------------------------------------------------------------- the relay

    def see(
        self, backend: str, tools: Sequence[Mapping[str, Any]], *, review: bool = False
    ) -> dict[str, Seen]:
        """Compare the tools of one ``tools/list`` with their pins: pin the new ones (with
        ``review``: keep them waiting for approval instead), mark the changed ones pending
        approval (the new definition kept). By tool name."""
        seen: dict[str, Seen] = {}

        def change(data: dict[str, Any]) -> bool:
            pins = data["backends"].setdefault(backend, {})
            dirty = False
            when = _now()
            room = MAX_KEPT_PER_BACKEND - _kept_bytes(pins)
            for tool in tools:
                name = tool.get("name")
                if not isinstance(name, str) or name in seen:
                    continue
                now = _record(_definition(tool), when, room)
                pinned = pins.get(name)
                if pinned is None and len(pins) >= MAX_PINNED_TOOLS:
                    if review:  # cannot be kept for review: held back all the same
                        seen[name] = Seen("unreviewed", now["sha256"], "")
                    continue
                if pinned is None or "sha256" not in pinned:  # never approved
                    waiting = (pinned or {}).get("pending") or {}
                    if review:
                        seen[name] = Seen("unreviewed", now["sha256"], "")
                        if waiting.get("sha256") == now["sha256"]:
                            continue
                        pins[name] = {"pending": now}
                    else:  # trust on first use: this is the first use
                        seen[name] = Seen("pinned", now["sha256"], now["sha256"])
                        pins[name] = now
                    room += int(waiting.get("size") or 0) - now["size"]
                    dirty = True
                elif pinned.get("sha256") == now["sha256"]:
                    seen[name] = Seen("same", now["sha256"], now["sha256"])
                    if "pending" in pinned:  # changed back to what was approved
                        del pinned["pending"]
                        dirty = True
                else:
                    fields = _changed(pinned, now["fields"])
                    seen[name] = Seen("changed", now["sha256"], str(pinned.get("sha256")), fields)
                    if (pinned.get("pending") or {}).get("sha256") != now["sha256"]:
                        room += int((pinned.get("pending") or {}).get("size") or 0)
                        pinned["pending"] = now
                        room -= now["size"]
                        dirty = True
            return dirty

        self._transaction(change)
        return seen

    # ---------------------------------------------------------------- the CLI

    def entries(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(backend, tool, pin)`` for every pin, sorted."""
        with self._locked():
            data = self._read()
        return [
            (backend, name, pin)
            for backend, pins in sorted(data["backends"].items())
            for name, pin in sorted(pins.items())
        ]

    def approve(self, tool: str, backend: str | None = None) -> tuple[str, dict[str, Any]]:
        """Make the pending definition of ``tool`` (changed, or new and unreviewed) its pin;
        return the backend and the pin as it was (with its ``pending``). ``ConfigError`` if
        there is nothing to approve, or the tool waits for several backends and ``backend``
        names none."""
        approved = self._approve(backend, tool)
        return approved[0][0], approved[0][2]

    def approve_all(self, backend: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        """Approve every definition waiting for one backend (``backend``, or the only one
        with any waiting): ``(backend, tool, pin as it was)`` for each. ``ConfigError`` if
        none waits, or several backends have some and ``backend`` names none."""
        return self._approve(backend, None)

    def _approve(
        self, backend: str | None, tool: str | None
    ) -> list[tuple[str, str, dict[str, Any]]]:
        approved: list[tuple[str, str, dict[str, Any]]] = []
        what = f"tool {tool!r}" if tool is not None else "any tool"

        def change(data: dict[str, Any]) -> bool:
            if backend is not None and not any(
                backend in (key, backend_ref(key)) for key in data["backends"]
            ):
                raise ConfigError(
                    f"no backend {backend} has pinned tools",
                    fix="give the backend as 'mcp-acp tools pins' shows it: its key, or "
                    "the sha256: reference audit records use",
                )
            candidates = [
                (key, pins)
                for key, pins in sorted(data["backends"].items())
                if backend in (None, key, backend_ref(key))
                and any("pending" in pin for name, pin in pins.items() if tool in (None, name))
            ]
            if not candidates:
                raise ConfigError(
                    f"no new or changed definition of {what} is waiting for approval"
                    + (f" from backend {backend}" if backend else ""),
                    fix="'mcp-acp tools pins' lists the pins and what waits",
                )
            if len(candidates) > 1:
                keys = ", ".join(key for key, _ in candidates)
                raise ConfigError(
                    f"{what} waits for approval from several backends: {keys}",
                    fix="name one with --backend",
                )
            key, pins = candidates[0]
            for name, before in sorted(pins.items()):
                if tool in (None, name) and "pending" in before:
                    pins[name] = before["pending"]
                    approved.append((key, name, before))
            return True

        self._transaction(change)
        return approved


def definition_diff(pin: Mapping[str, Any], name: str) -> str:
    """The pinned and the pending definition of one tool, as a unified diff of their
    JSON (or why it cannot be shown)."""
    old, new = pin.get("definition"), (pin.get("pending") or {}).get("definition")
    unreviewed = "sha256" not in pin  # new: the whole definition is what there is to read
    if new is None or (old is None and not unreviewed):
        return f"(a definition over {MAX_KEPT_DEFINITION // 1024} KiB is kept only as a digest)"
    lines = difflib.unified_diff(
        []
        if unreviewed
        else json.dumps(old, indent=2, sort_keys=True, ensure_ascii=True).splitlines(),
        json.dumps(new, indent=2, sort_keys=True, ensure_ascii=True).splitlines(),
        f"{name} (new)" if unreviewed else f"{name} (pinned)",
        f"{name} (now)",
        lineterm="",
    )
    return "\n".join(lines)
