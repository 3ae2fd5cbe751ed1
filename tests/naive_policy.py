"""A deliberately naive reference evaluator for the differential test.

It loops over every rule and every condition of the *uncompiled* policy, matching globs
with a small recursive matcher instead of regular expressions, and no index. It shares
only path and URI normalisation (tested on their own against the checklist) with the real
engine.
If the two ever disagree, one of them misreads docs/policies.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote

from mcp_acp.models import DecisionRequest, Effect, PostureStatus, Provenance
from mcp_acp.policy.glob import deny_skeleton
from mcp_acp.policy.model import FIELD_ATTRIBUTES, Conditions, PolicyFile
from mcp_acp.policy.paths import AmbiguousPathError, normalise_path
from mcp_acp.policy.uris import normalise_uri

DISCOVERY = {
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
}


def chars_match(pattern: str, text: str, star_crosses: bool) -> bool:
    if not pattern:
        return not text
    head = pattern[0]
    if head == "*":
        return any(
            chars_match(pattern[1:], text[i:], star_crosses)
            for i in range(len(text) + 1)
            if star_crosses or "/" not in text[:i]
        )
    if not text:
        return False
    if head == "?":
        return (star_crosses or text[0] != "/") and chars_match(pattern[1:], text[1:], star_crosses)
    return head == text[0] and chars_match(pattern[1:], text[1:], star_crosses)


def segments_match(pattern: list[str], text: list[str]) -> bool:
    if not pattern:
        return not text
    if pattern[0] == "**":
        return any(segments_match(pattern[1:], text[i:]) for i in range(len(text) + 1))
    return (
        bool(text)
        and chars_match(pattern[0], text[0], False)
        and segments_match(pattern[1:], text[1:])
    )


def path_glob(pattern: str, text: str) -> bool:
    return segments_match(pattern.split("/"), text.split("/"))


def ascii_lower(text: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in text)


def name_glob(pattern: str, text: str | None, fold: bool) -> bool:
    """``fold``: ASCII case only (allow rules; deny rules of this suite are ASCII too)."""
    if text is None:
        return False
    if fold:
        pattern, text = ascii_lower(pattern), ascii_lower(text)
    return chars_match(pattern, text, True)


def identity_match(pattern: str, name: str, fold: bool) -> bool:
    """One certificate name against one ``backend_identity`` pattern of the same kind."""
    kind, _, want = pattern.partition(":")
    have_kind, _, have = name.partition(":")
    if kind != have_kind or not have:
        return False
    if fold:
        want, have = deny_skeleton(want), deny_skeleton(have)
    if kind == "DNS":
        return segments_match(want.split("."), have.split("."))
    if kind == "URI":
        return path_glob(want, have)
    return want == have


Views = tuple[list[tuple[str, list[str]]], list[str], list[str]]


def views_of(request: DecisionRequest) -> Views | str:
    """(role, [normalised, resolved]) per path, the URI's allow views and its deny views
    (folded), or the reason the request is ambiguous."""
    out = []
    uri_allow: list[str] = []
    uri_deny: list[str] = []
    try:
        for arg in request.resource.paths:
            if arg.unresolvable:
                return arg.unresolvable
            views = [normalise_path(arg.path)]
            if arg.resolved and normalise_path(arg.resolved) != views[0]:
                views.append(normalise_path(arg.resolved))
            out.append((arg.argument, arg.role, views))
        uri = request.resource.uri
        if uri is not None:
            normal = normalise_uri(uri)
            if normal.startswith("file://"):
                path = normal[len("file://") :]
                found = [v for a, _, v in out if a == "uri" and v[0] == path]
                if not found:
                    out.append(("uri", "path", [path]))
                views = found[0] if found else [path]
                uri_allow = ["file://" + v for v in views]
                uri_deny = [deny_skeleton(v) for v in uri_allow]
            else:
                uri_allow = [normal]
                forms = [normal, normal.split("#")[0].split("?")[0]]
                forms += [unquote(f, errors="replace") for f in forms]
                uri_deny = [deny_skeleton(f) for f in forms]
    except AmbiguousPathError as exc:
        return exc.reason
    return [(role, views) for _, role, views in out], uri_allow, uri_deny


ATTRIBUTE = FIELD_ATTRIBUTES


def ext(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    return extension.lower() if dot and stem and extension else None


def rule_matches(c: Conditions, deny: bool, request: DecisionRequest, seen: Views) -> bool:
    paths, uri_allow, uri_deny = seen
    a, r, s, env = request.action, request.resource, request.subject, request.environment

    def many(listed: Sequence[str], have: frozenset[str]) -> bool:
        if deny:
            return any(x in have for x in listed)
        return len(have) > 0 and all(x in listed for x in have)

    tests = []
    if c.mcp_method is not None:
        tests.append(any(path_glob(p, a.mcp_method) for p in c.mcp_method))
    if c.tool_name is not None:
        tests.append(any(name_glob(p, a.tool_name, True) for p in c.tool_name))
    if c.resource_type is not None:
        tests.append(r.resource_type.value in c.resource_type)
    if c.backend_id is not None:
        tests.append(any(name_glob(p, r.backend_id, True) for p in c.backend_id))
    if c.backend_identity is not None:
        tests.append(
            any(identity_match(p, n, deny) for p in c.backend_identity for n in r.backend_identity)
        )
    if c.operations is not None:
        tests.append(many(c.operations, a.operations))
    if c.side_effects is not None:
        tests.append(many(c.side_effects, a.side_effects))
    if c.subject_id is not None:
        tests.append(any(name_glob(p, s.subject_id, False) for p in c.subject_id))
    if c.scopes is not None:
        tests.append(any(x in s.scopes for x in c.scopes))
    if c.scopes_all is not None:
        tests.append(len(c.scopes_all) > 0 and all(x in s.scopes for x in c.scopes_all))
    if c.groups is not None:
        tests.append(any(x in s.groups for x in c.groups))
    if c.mcp_client_name is not None:
        tests.append(any(name_glob(p, env.mcp_client_name, True) for p in c.mcp_client_name))
    if c.scheme is not None:
        scheme = r.uri.split(":", 1)[0].lower() if r.uri and ":" in r.uri else None
        tests.append(scheme in [x.lower() for x in c.scheme])
    if c.uri is not None:
        if deny:
            tests.append(any(path_glob(deny_skeleton(p), v) for p in c.uri for v in uri_deny))
        else:
            tests.append(
                bool(uri_allow) and all(any(path_glob(p, v) for p in c.uri) for v in uri_allow)
            )
    if c.untrusted_content_seen is not None:
        tests.append(env.untrusted_content_seen is c.untrusted_content_seen)
    if c.posture is not None:
        passed = {k for k, v in env.posture.items() if v == PostureStatus.PASS}
        tests.append(len(c.posture) > 0 and all(x in passed for x in c.posture))
    fields = {"path_pattern": None, "source_path": "source", "dest_path": "dest"}
    used = [f for f in fields if getattr(c, f) is not None]
    if used:
        ok = True
        covered = set()
        for f in used:
            role = fields[f]
            patterns = getattr(c, f)
            governed = [i for i, (rl, _) in enumerate(paths) if role is None or rl == role]
            if deny:
                ok = ok and any(
                    path_glob(deny_skeleton(p), deny_skeleton(v))
                    for i in governed
                    for v in paths[i][1]
                    for p in patterns
                )
            else:
                ok = (
                    ok
                    and bool(governed)
                    and all(
                        any(path_glob(p, v) for p in patterns)
                        for i in governed
                        for v in paths[i][1]
                    )
                )
                covered.update(governed)
        if not deny:
            ok = ok and len(covered) == len(paths)
        tests.append(ok)
    if c.extension is not None:
        wanted = {e.lower().lstrip(".") for e in c.extension}
        exts = [{e for e in (ext(v) for v in views) if e} for _, views in paths]
        if deny:  # a dotfile's name counts too (".env" is "env")
            dotfiles = [
                {n[1:].lower() for n in (v.rsplit("/", 1)[-1] for v in views) if n[:1] == "."}
                - {""}
                for _, views in paths
            ]
            dotfiles = [{d for d in found if "." not in d} for found in dotfiles]
            tests.append(any((e | d) & wanted for e, d in zip(exts, dotfiles, strict=True)))
        else:
            tests.append(bool(paths) and all(e and e <= wanted for e in exts))
    if c.min_provenance is not None and not deny:
        used_fields = [f for f, v in c if v is not None and f != "min_provenance"]
        for key, level in c.min_provenance.items():
            for f in used_fields:
                if key in (f, ATTRIBUTE[f].split(".")[0]):
                    tests.append(request.provenance_of(ATTRIBUTE[f]) >= Provenance[level.upper()])
    return all(tests)


def naive_decide(
    policy: PolicyFile, request: DecisionRequest, protected: Sequence[str] = ()
) -> tuple[Effect, set[str]]:
    seen = views_of(request)
    if isinstance(seen, str):
        return Effect.DENY, set()
    paths = seen[0]
    folded = [deny_skeleton(p) for p in protected]  # a protected path is a deny
    for _, views in paths:
        for v in map(deny_skeleton, views):
            if any(v == p or v.startswith(p + "/") for p in folded):
                return Effect.DENY, set()
    method = request.action.mcp_method
    discovery = method in DISCOVERY or method.startswith("notifications/")
    matched = []
    for rule in policy.rules:
        if discovery and rule.effect != "deny":
            continue
        if rule_matches(rule.conditions, rule.effect == "deny", request, seen):
            matched.append(rule)
    ids = {rule.id for rule in matched if rule.id}
    for effect in ("deny", "ask", "allow"):
        if any(rule.effect == effect for rule in matched):
            return Effect(effect), ids
    return (Effect.ALLOW if discovery else Effect.DENY), set()
