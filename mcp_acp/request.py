"""Building a :class:`DecisionRequest` from an MCP message: the policy information step.

This is where I/O that the pure policy engine may not do happens — following the symlinks
of every path argument — and where every attribute gets its provenance. The proxy calls
:func:`build_decision_request` once per message; ``mcp-acp policy explain`` and
``policy test`` call it too, so what you test is what the proxy decides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from mcp_acp.models import (
    Action,
    DecisionRequest,
    Environment,
    PathArgument,
    PostureStatus,
    Provenance,
    Resource,
    ResourceType,
    Subject,
)
from mcp_acp.policy.paths import (
    AmbiguousPathError,
    file_uri_to_path,
    normalise_path,
    resolve_symlinks,
)
from mcp_acp.policy.uris import uri_scheme
from mcp_acp.tools import ToolRegistry, rooted_strings

__all__ = ["build_decision_request", "resolve_path_arguments", "resource_type_of"]

#: The methods whose ``uri`` names the resource they are about: the backend's update of a
#: resource too, so that a deny rule naming it holds for its updates as for its reads.
_URI_METHODS = frozenset(
    {
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "notifications/resources/updated",
    }
)

#: Where each attribute comes from. The subject's own provenance covers ``subject.*``.
PROVENANCE: Mapping[str, Provenance] = {
    "action.mcp_method": Provenance.REQUEST,
    "action.tool_name": Provenance.REQUEST,
    "action.operations": Provenance.DERIVED,
    "action.side_effects": Provenance.DERIVED,
    "resource.paths": Provenance.REQUEST,
    "resource.uri": Provenance.REQUEST,
    "resource.resource_type": Provenance.DERIVED,
    "resource.backend_id": Provenance.CONFIG,
    "environment.time": Provenance.DERIVED,
    "environment.posture": Provenance.DERIVED,
    "environment.mcp_client_name": Provenance.CLIENT_HINT,
    "environment.mcp_client_version": Provenance.CLIENT_HINT,
    "environment.untrusted_content_seen": Provenance.DERIVED,
}
#: The same, for a backend that proved its identity in a verified TLS handshake. Without
#: one, ``resource.backend_identity`` has no entry and counts as a client hint.
_WITH_BACKEND_IDENTITY: Mapping[str, Provenance] = {
    **PROVENANCE,
    "resource.backend_identity": Provenance.MTLS,
}


def resource_type_of(method: str) -> ResourceType:
    prefix = method.split("/", 1)[0]
    return {
        "tools": ResourceType.TOOL,
        "resources": ResourceType.RESOURCE,
        "prompts": ResourceType.PROMPT,
    }.get(prefix, ResourceType.SERVER)


def resolve_path_arguments(paths: tuple[PathArgument, ...]) -> tuple[PathArgument, ...]:
    """Fill in where each path really leads. Paths that are already ambiguous are left
    as they are (the engine refuses them); paths whose links cannot be followed are marked."""
    out = []
    for arg in paths:
        try:
            normal = normalise_path(arg.path)
        except AmbiguousPathError:
            out.append(arg)
            continue
        try:
            out.append(attrs.evolve(arg, resolved=resolve_symlinks(normal)))
        except AmbiguousPathError as exc:
            out.append(attrs.evolve(arg, unresolvable=exc.reason))
    return tuple(out)


def _completion_paths(params: Mapping[str, Any]) -> tuple[PathArgument, ...]:
    """What a ``completion/complete`` names that starts like a path: the resource template
    it completes for (``ref.uri``, a ``file:`` URI template such as
    ``file:///srv/{name}``), the value being completed (``argument.value``: the backend
    lists the names that begin with it) and the arguments already given
    (``context.arguments``)."""
    items: list[tuple[str, Any]] = []
    for member, inner in (("ref", "uri"), ("argument", "value"), ("context", "arguments")):
        value = params.get(member)
        if isinstance(value, Mapping) and inner in value:
            items.append((f"{member}.{inner}", value[inner]))
    return tuple(rooted_strings(items))


def build_decision_request(
    *,
    method: str,
    params: Mapping[str, Any] | None,
    subject: Subject,
    registry: ToolRegistry,
    backend_id: str,
    session_id: str,
    request_id: str,
    client_name: str | None = None,
    client_version: str | None = None,
    posture: Mapping[str, PostureStatus] | None = None,
    annotations: Mapping[str, Any] | None = None,
    backend_identity: tuple[str, ...] = (),
    now: datetime | None = None,
    resolve_paths: bool = True,
    untrusted_content_seen: bool = False,
) -> DecisionRequest:
    """Everything the policy engine needs about one MCP message, with provenance.

    ``backend_identity`` is the names of the certificate the backend proved in a verified
    TLS handshake (canonical, see :mod:`mcp_acp.backend_identity`); only the backend
    channel that verified it may supply them, and they get the provenance ``mtls``."""
    params = params or {}
    tool_name: str | None = None
    operations: frozenset[str] = frozenset()
    side_effects: frozenset[str] = frozenset()
    paths: tuple[PathArgument, ...] = ()
    name: str | None = None
    if method == "tools/call":
        raw_name = params.get("name")
        # the proxy denies a call without a string name before it gets here
        # (EnforcementPoint.build); policy explain shows one as its repr
        tool_name = raw_name if isinstance(raw_name, str) else repr(raw_name)
        name = tool_name
        arguments = params.get("arguments")
        facts = registry.facts(tool_name, annotations)
        operations, side_effects = facts.operations, facts.side_effects
        if isinstance(arguments, Mapping):
            paths = registry.path_arguments(facts, arguments)
    elif method == "prompts/get" and isinstance(params.get("name"), str):
        name = params["name"]
        arguments = params.get("arguments")
        if isinstance(arguments, Mapping):  # a prompt may open a file an argument names
            paths = tuple(rooted_strings([("arguments", arguments)]))
    elif method == "completion/complete":
        paths = _completion_paths(params)
    uri = params.get("uri") if method in _URI_METHODS else None
    if uri is not None and not isinstance(uri, str):
        uri = repr(uri)
    scheme = uri_scheme(uri) if uri is not None else None
    if uri is not None and scheme == "file":
        # an undecodable URI is left to the engine, which refuses it as ambiguous
        with contextlib.suppress(AmbiguousPathError):
            paths = (*paths, PathArgument(argument="uri", path=file_uri_to_path(uri)))
    if resolve_paths and paths:
        paths = resolve_path_arguments(paths)
    return DecisionRequest(
        subject=subject,
        action=Action(
            mcp_method=method,
            tool_name=tool_name,
            operations=operations,
            side_effects=side_effects,
        ),
        resource=Resource(
            resource_type=resource_type_of(method),
            backend_id=backend_id,
            name=name,
            uri=uri,
            scheme=scheme,
            paths=paths,
            backend_identity=backend_identity,
        ),
        environment=Environment(
            time=now or datetime.now(UTC),
            session_id=session_id,
            request_id=request_id,
            mcp_client_name=client_name,
            mcp_client_version=client_version,
            posture=posture or {},
            untrusted_content_seen=untrusted_content_seen,
        ),
        provenance=_WITH_BACKEND_IDENTITY if backend_identity else PROVENANCE,
    )
