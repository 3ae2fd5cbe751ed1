"""The path protections that come before any policy: whatever engine decides, a request is
denied if a path or URI in it could be read two ways (``builtin-ambiguous-path``), or if it
names a path inside mcp-acp's own directories — the config directory and the audit log
directory — or its audit fallback files (``builtin-protected-path``): an agent must never
reach the policy that governs it or the trail that records it through the backend it is
given. What the guard sees is what the request builder found to be a path (a path-typed
argument, a resource URI, a path-like string in an unknown tool's or a prompt's arguments
or in what a completion names); see ``docs/security.md`` for what it does not.

The ``acp`` engine applies :class:`PathGuard` first in every decision (so a program that
uses the engine alone is protected too); the proxy's enforcement point applies it before
asking any engine (so a plugin engine is).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mcp_acp.models import DecisionRequest
from mcp_acp.policy.glob import deny_skeleton
from mcp_acp.policy.paths import AmbiguousPathError, is_within, normalise_path, resolve_symlinks
from mcp_acp.policy.view import RequestView

__all__ = ["PathGuard", "Protected", "protected_overlap"]

Protected = Mapping[str, Path] | Sequence[Path]
"""What a :class:`PathGuard` protects: paths by what they are (``{"config directory":
…}``, as :attr:`PluginContext.protected_dirs <mcp_acp.registry.PluginContext.protected_dirs>`
has them), or bare paths (each called a "directory" in denials)."""


def _protected_forms(protected: Protected) -> tuple[tuple[str, str, str], ...]:
    """Each protected path as written and as resolved (normal forms), in the form a deny
    rule compares paths in (case and compatibility forms folded: :attr:`PathView.deny_views
    <mcp_acp.policy.view.PathView>`), with what it is and its name as given."""
    named = (
        protected.items()
        if isinstance(protected, Mapping)
        else (("directory", path) for path in protected)
    )
    forms: dict[str, tuple[str, str]] = {}
    for what, path in named:
        try:
            written = normalise_path(os.path.abspath(path))
        except AmbiguousPathError:
            continue  # such a path cannot be named by a request either
        forms.setdefault(deny_skeleton(written), (what, str(path)))
        with contextlib.suppress(AmbiguousPathError):
            forms.setdefault(deny_skeleton(resolve_symlinks(written)), (what, str(path)))
    return tuple((form, what, label) for form, (what, label) in forms.items())


def protected_overlap(directory: Path, protected: Path) -> str | None:
    """How ``directory`` (one a backend works in) meets the ``protected`` one, compared as
    :class:`PathGuard` compares paths (as written and as resolved, case folded):
    ``"inside"`` when it is that directory or below it, so that every path in it is denied;
    ``"holds"`` when the protected directory is below it; else ``None``."""
    served = [form for form, _, _ in _protected_forms([directory])]
    guarded = [form for form, _, _ in _protected_forms([protected])]
    if any(is_within(s, g) for s in served for g in guarded):
        return "inside"
    if any(is_within(g, s) for s in served for g in guarded):
        return "holds"
    return None


class PathGuard:
    """Denies ambiguous paths and paths in ``protected`` (as written and as resolved): a
    protected directory with everything below it, a protected file itself.

    A protected path is a deny, so it is compared as a deny rule compares: each path's
    deny views against the directories folded the same way — ``/X/.CONFIG/MCP-ACP`` is
    the config directory ``/x/.config/mcp-acp`` on a case-insensitive file system (the
    default on macOS), and is denied on every system, as ``**/secrets/**`` stops
    ``/x/SECRETS/a`` (``docs/policies.md``, *Case*)."""

    __slots__ = ("_forms",)

    def __init__(self, protected: Protected = ()) -> None:
        self._forms = _protected_forms(protected)

    def check(self, view: RequestView) -> tuple[str, str] | None:
        """``(rule id, reason)`` if the request ``view`` shows must be denied, else None."""
        if view.ambiguous is not None:
            return (
                "builtin-ambiguous-path",
                f"denied: {view.ambiguous} (ambiguous paths and URIs are never guessed)",
            )
        for path_view in view.paths if self._forms else ():
            for candidate in path_view.deny_views:
                for form, what, label in self._forms:
                    if is_within(candidate, form):
                        where = "is" if candidate == form else "is inside"
                        return (
                            "builtin-protected-path",
                            f"denied: path {path_view.shown} {where} mcp-acp's protected "
                            f"{what} {label}",
                        )
        return None

    def check_request(self, request: DecisionRequest) -> tuple[str, str] | None:
        """:meth:`check` for a whole request; one without paths or a URI passes at once."""
        resource = request.resource
        if not resource.paths and resource.uri is None:
            return None
        return self.check(RequestView(request))
