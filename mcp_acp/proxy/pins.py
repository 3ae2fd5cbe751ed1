"""Tool pins: trust on first use for tool definitions, against the rug pull.

A backend can define a tool one way when it is first seen and another way later (its
description rewritten to carry instructions, its schema given a new field) — after the
user or the policy author has looked. The relay pins each tool's definition (its
``title``, ``description``, ``inputSchema``, ``outputSchema`` and ``annotations``) the first
time a ``tools/list`` shows it, per backend. A later list with a different definition
leaves the tool out and its calls are denied (``builtin-tool-changed``) until someone
approves the new definition with ``mcp-acp tools approve NAME``; ``mcp-acp tools show
NAME`` shows what changed first, and ``approve`` shows what it approved.

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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcp_acp._fs import atomic_write_text, ensure_private_dir, unsafe_permissions
from mcp_acp.audit.events import payload_digest
from mcp_acp.config import Backend, HttpBackend
from mcp_acp.errors import ConfigError, printable

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


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Record(_Strict):
    """A definition as the file keeps it: its digest, when, each field's digest, and the
    definition itself (or ``None`` when it is kept only by digest)."""

    sha256: str
    at: str
    fields: dict[str, str]
    definition: dict[str, Any] | None = None
    size: int = Field(default=0, ge=0)


class _Pin(_Strict):
    """One tool's pin: a record (approved), a ``pending`` record waiting for approval, or
    both (a changed definition)."""

    sha256: str | None = None
    at: str | None = None
    fields: dict[str, str] | None = None
    definition: dict[str, Any] | None = None
    size: int = Field(default=0, ge=0)
    pending: _Record | None = None


class _PinsFile(_Strict):
    """The whole file, checked before any part of it is used."""

    version: int
    backends: dict[str, dict[str, _Pin]]


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
        try:
            ensure_private_dir(self.path.parent)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot lock the tool pins file {printable(str(self.lock_path))}: "
                f"{exc.strerror or exc}",
                fix=f"check that you can write to {printable(str(self.path.parent))}",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _damaged(self, why: str) -> ConfigError:
        return ConfigError(
            f"tool pins file {printable(str(self.path))} is damaged: {why}",
            fix=f"move the file aside (mv {printable(str(self.path))} "
            f"{printable(str(self.path))}.bad); tools are pinned again at the next tools/list",
        )

    def _read(self) -> dict[str, Any]:
        """The file's contents (empty if there is none; reading creates nothing).
        ``ConfigError`` if it is not ours to trust, cannot be read or is not a pins file
        in every part."""
        shown = printable(str(self.path))
        try:
            problem = unsafe_permissions(self.path)
            raw = self.path.read_bytes() if problem is None else b""
        except FileNotFoundError:
            return {"version": _VERSION, "backends": {}}
        except OSError as exc:
            raise ConfigError(
                f"cannot read the tool pins file {shown}: {exc.strerror or exc}",
                fix=f"check the permissions of {shown} and its directory",
            ) from exc
        if problem is not None:
            raise ConfigError(
                f"tool pins file refused: {problem}",
                fix=f"chmod 600 {shown} (and check who changed it)",
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise self._damaged(f"not UTF-8 text (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise self._damaged(f"not JSON (line {exc.lineno} column {exc.colno})") from None
        except RecursionError:
            raise self._damaged("arrays or objects nested too deeply") from None
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            raise self._damaged(f"not a version-{_VERSION} pins file")
        try:
            _PinsFile.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            raise self._damaged(printable(f"{where}: {first['msg']}")) from None
        return data

    def _transaction(
        self, change: Callable[[dict[str, Any]], bool], *, create: bool = True
    ) -> None:
        """Read the pins under the lock, let ``change`` edit them; write if it says so.
        Without ``create``, a missing file is shown to ``change`` as empty and nothing is
        created (no directory, no lock file): for changes that need pins to be there."""
        if not create and not self.path.exists():
            change({"version": _VERSION, "backends": {}})
            return
        with self._locked():
            data = self._read()
            if change(data):
                try:
                    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
                    atomic_write_text(self.path, text)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot write the tool pins file {printable(str(self.path))}: "
                        f"{exc.strerror or exc}; it is unchanged",
                        fix="make room on the disk or check its permissions",
                    ) from exc

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
        data = self._read()  # replaced whole (atomic_write_text): no lock needed to read
        return [
            (backend, name, pin)
            for backend, pins in sorted(data["backends"].items())
            for name, pin in sorted(pins.items())
        ]

    def approve(
        self, tool: str, backend: str | None = None, *, sha256: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Make the pending definition of ``tool`` (changed, or new and unreviewed) its pin;
        return the backend and the pin as it was (with its ``pending``). ``ConfigError`` if
        there is nothing to approve, or the tool waits for several backends and ``backend``
        names none — or, with ``sha256`` (the start of the digest :meth:`waiting` showed),
        if what waits now is another definition: the backend changed it again since."""
        approved = self._approve(backend, tool, sha256)
        return approved[0][0], approved[0][2]

    def approve_all(self, backend: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        """Approve every definition waiting for one backend (``backend``, or the only one
        with any waiting): ``(backend, tool, pin as it was)`` for each. ``ConfigError`` if
        none waits, or several backends have some and ``backend`` names none."""
        return self._approve(backend, None)

    def waiting(self, tool: str, backend: str | None = None) -> tuple[str, dict[str, Any]]:
        """The backend and the pin of ``tool`` whose new or changed definition waits for
        approval, changing nothing: what :meth:`approve` would approve now. ``ConfigError``
        as for :meth:`approve`."""
        key, pins = _waiting_in(self._read(), backend, tool)
        return key, pins[tool]

    def _approve(
        self, backend: str | None, tool: str | None, sha256: str | None = None
    ) -> list[tuple[str, str, dict[str, Any]]]:
        approved: list[tuple[str, str, dict[str, Any]]] = []

        def change(data: dict[str, Any]) -> bool:
            key, pins = _waiting_in(data, backend, tool)
            for name, before in sorted(pins.items()):
                if tool in (None, name) and "pending" in before:
                    now = str(before["pending"].get("sha256"))
                    if sha256 is not None and not now.startswith(sha256.lower()):
                        raise ConfigError(
                            f"the definition of tool '{printable(name)}' waiting now (sha256 "
                            f"{now[:12]}) is not the one shown (sha256 {printable(sha256)}): "
                            "the backend changed it again; nothing was approved",
                            fix=f"read it with 'mcp-acp tools show {printable(name)}', then "
                            "approve it with the --sha256 that shows",
                        )
                    pins[name] = before["pending"]
                    approved.append((key, name, before))
            return True

        self._transaction(change, create=False)
        return approved


def _waiting_in(
    data: dict[str, Any], backend: str | None, tool: str | None
) -> tuple[str, dict[str, Any]]:
    """The one backend (``backend``, its key or ``sha256:`` reference, or any) with a
    definition of ``tool`` (or of any tool) waiting for approval, and its pins.
    ``ConfigError`` if there is none, or several and ``backend`` names none."""
    what = f"tool {tool!r}" if tool is not None else "any tool"
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
    return candidates[0]


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
