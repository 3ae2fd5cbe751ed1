"""A request prepared for matching: computed once per decision, read by every rule.

Paths are normalised here (once), ambiguous ones recorded with the reason, and each path
gets two *views*: the allow view (the normalised path and, when symlinks lead elsewhere,
the resolved path — an allow rule must hold for both) and the deny view (the same, with
case and compatibility forms folded — a deny rule cannot be dodged by ``/X/SECRETS``).
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

from mcp_acp.models import DecisionRequest, PostureStatus
from mcp_acp.policy.glob import deny_skeleton
from mcp_acp.policy.paths import (
    AmbiguousPathError,
    extension_of,
    file_uri_to_path,
    normalise_path,
)

__all__ = ["PathView", "RequestView"]


class PathView(NamedTuple):
    """One path argument, ready for matching."""

    argument: str
    role: str
    shown: str  # the normalised requested path, for explanations
    allow_views: tuple[str, ...]
    deny_views: tuple[str, ...]
    extensions: frozenset[str]


class RequestView:
    """The attributes of a :class:`DecisionRequest` in the form the matchers need."""

    __slots__ = (
        "ambiguous",
        "ascii_paths",
        "backend_id",
        "backend_identity",
        "client_name",
        "client_version",
        "method",
        "operations",
        "passed_posture",
        "paths",
        "request",
        "resource_type",
        "scheme",
        "side_effects",
        "tool",
        "tool_skeleton",
        "uri",
    )

    def __init__(self, request: DecisionRequest) -> None:
        self.request = request
        action, resource, env = request.action, request.resource, request.environment
        self.method = action.mcp_method
        self.tool = action.tool_name
        self.tool_skeleton = deny_skeleton(action.tool_name) if action.tool_name else None
        self.operations = action.operations
        self.side_effects = action.side_effects
        self.uri = resource.uri
        self.scheme = resource.scheme.lower() if resource.scheme else None
        if self.uri is not None and self.scheme is None:
            self.scheme = urlsplit(self.uri).scheme.lower() or None
        self.backend_id = resource.backend_id
        self.backend_identity = resource.backend_identity  # canonical names; () = none
        self.resource_type = resource.resource_type.value
        self.client_name = env.mcp_client_name
        self.client_version = env.mcp_client_version
        self.passed_posture = (
            frozenset(name for name, status in env.posture.items() if status is PostureStatus.PASS)
            if env.posture
            else frozenset()
        )
        self.ambiguous: str | None = None
        paths: list[PathView] = []
        try:
            for arg in resource.paths:
                if arg.unresolvable is not None:
                    raise AmbiguousPathError(arg.path, arg.unresolvable)
                paths.append(_path_view(arg.argument, arg.role, arg.path, arg.resolved))
            if self.uri and self.scheme == "file":
                paths.append(_path_view("uri", "path", None, None, uri=self.uri))
        except AmbiguousPathError as exc:
            self.ambiguous = f"path {exc.path} {exc.reason}"
        self.paths = tuple(paths)
        self.ascii_paths = all(p.shown.isascii() and p.allow_views[-1].isascii() for p in paths)


def _path_view(
    argument: str, role: str, raw: str | None, resolved: str | None, *, uri: str | None = None
) -> PathView:
    normal = file_uri_to_path(uri) if uri is not None else normalise_path(raw or "")
    real = normalise_path(resolved) if resolved is not None else normal
    if real == normal:
        extension = extension_of(normal)
        return PathView(
            argument,
            role,
            normal,
            (normal,),
            (deny_skeleton(normal),),
            frozenset((extension,)) if extension else frozenset(),
        )
    views = (normal, real)
    extensions = frozenset(ext for ext in map(extension_of, views) if ext)
    return PathView(argument, role, normal, views, tuple(map(deny_skeleton, views)), extensions)
