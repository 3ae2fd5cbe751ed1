"""A request prepared for matching: computed once per decision, read by every rule.

Paths are normalised here (once), ambiguous ones recorded with the reason, and each path
gets two *views*: the allow view (the normalised path and, when symlinks lead elsewhere,
the resolved path — an allow rule must hold for both) and the deny view (the same, with
case and compatibility forms folded — a deny rule cannot be dodged by ``/X/SECRETS``).

The resource URI gets the same two kinds of view, of its normal form
(:mod:`mcp_acp.policy.uris`): a ``file:`` URI as ``file://`` and each view of its path, so
an allow rule on ``file:///srv/**`` must hold where a symlink under ``/srv`` leads too.
"""

from __future__ import annotations

from typing import NamedTuple

from mcp_acp.models import DecisionRequest, PathArgument, PostureStatus
from mcp_acp.policy.glob import deny_skeleton
from mcp_acp.policy.paths import AmbiguousPathError, extension_of, normalise_path
from mcp_acp.policy.uris import deny_forms, normalise_uri, uri_scheme

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
        "untrusted_content_seen",
        "uri",
        "uri_deny_views",
        "uri_views",
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
            self.scheme = uri_scheme(self.uri)
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
        self.untrusted_content_seen = env.untrusted_content_seen
        self.ambiguous: str | None = None
        #: the URI's normal form (and where a file: URI's path really leads), and the forms
        #: a deny rule sees; both empty without a URI
        self.uri_views: tuple[str, ...] = ()
        self.uri_deny_views: tuple[str, ...] = ()
        paths: list[PathView] = []
        try:
            for arg in resource.paths:
                if arg.unresolvable is not None:
                    raise AmbiguousPathError(arg.path, arg.unresolvable)
                paths.append(_path_view(arg.argument, arg.role, arg.path, arg.resolved))
        except AmbiguousPathError as exc:
            self.ambiguous = f"path {exc.path} {exc.reason}"
        if self.uri is not None and self.ambiguous is None:
            try:
                self._uri(self.uri, resource.paths, paths)
            except AmbiguousPathError as exc:
                self.ambiguous = f"uri {exc.path} {exc.reason}"
        self.paths = tuple(paths)
        self.ascii_paths = all(p.shown.isascii() and p.allow_views[-1].isascii() for p in paths)

    def _uri(self, uri: str, arguments: tuple[PathArgument, ...], paths: list[PathView]) -> None:
        """The URI's views; a ``file:`` URI's path is also a path argument (``uri``), with
        where it leads when the request builder followed its symlinks."""
        normal = normalise_uri(uri)
        if not normal.startswith("file://"):
            self.uri_views = (normal,)
            self.uri_deny_views = tuple(dict.fromkeys(map(deny_skeleton, deny_forms(normal))))
            return
        path = normal.removeprefix("file://")
        view = next((p for p in paths if p.argument == "uri" and p.shown == path), None)
        if view is None:  # a request built without it: the path as requested only
            view = _path_view("uri", "path", path, None)
            paths.append(view)
        self.uri_views = tuple("file://" + v for v in view.allow_views)
        self.uri_deny_views = tuple("file://" + v for v in view.deny_views)


def _path_view(argument: str, role: str, raw: str, resolved: str | None) -> PathView:
    normal = normalise_path(raw)
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
