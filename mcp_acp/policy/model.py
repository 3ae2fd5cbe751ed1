"""The policy file users write (``policy.json``), validated by pydantic.

::

    {"version": "1", "default_action": "deny", "rules": [
      {"id": "read-project", "effect": "allow",
       "conditions": {"tool_name": "read_*", "path_pattern": "/home/me/project/**"}}]}

Conditions AND together; a list value means any-of; an empty list never matches. A rule
without conditions is an error (it would match everything by accident). Combining is
deny-overrides: deny beats ask beats allow, and no match means deny.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import time
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from mcp_acp.backend_identity import canonical_name
from mcp_acp.models import NEVER_CACHED
from mcp_acp.policy.paths import hidden_character, normalise_path_pattern
from mcp_acp.policy.uris import normalise_uri_pattern

__all__ = [
    "FIELD_ATTRIBUTES",
    "NEVER_CACHED",
    "ApprovalSettings",
    "Conditions",
    "HitlSettings",
    "PolicyFile",
    "Rule",
    "TimeWindow",
]

#: The request attribute each condition field tests (names as in DecisionRequest.provenance).
FIELD_ATTRIBUTES: dict[str, str] = {
    "mcp_method": "action.mcp_method", "tool_name": "action.tool_name",
    "operations": "action.operations", "side_effects": "action.side_effects",
    "path_pattern": "resource.paths", "source_path": "resource.paths",
    "dest_path": "resource.paths", "extension": "resource.paths", "scheme": "resource.uri",
    "uri": "resource.uri", "backend_id": "resource.backend_id",
    "backend_identity": "resource.backend_identity",
    "resource_type": "resource.resource_type", "subject_id": "subject.subject_id",
    "issuer": "subject.issuer", "audience": "subject.audience",
    "client_id": "subject.client_id", "scopes": "subject.scopes",
    "scopes_all": "subject.scopes", "groups": "subject.groups", "roles": "subject.roles",
    "mcp_client_name": "environment.mcp_client_name",
    "mcp_client_version": "environment.mcp_client_version", "time": "environment.time",
    "posture": "environment.posture",
    "untrusted_content_seen": "environment.untrusted_content_seen",
}  # fmt: skip
_GROUPS = ("subject", "action", "resource", "environment")

_RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ProvenanceName = Literal["token", "mtls", "config", "request", "derived", "client_hint"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_EVERY_DAY: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _shown(value: str) -> str:
    """``value``, refused if it holds a character that does not show as itself: a rule whose
    tool name, extension or method had a pasted zero-width space denied (or allowed)
    nothing, and ``policy validate`` said ok."""
    if (hidden := hidden_character(value)) is not None:
        raise ValueError(
            f"{value!r} contains U+{ord(hidden):04X}, a control or invisible character: a "
            "rule naming it would not match what it seems to; remove it"
        )
    return value


#: A string or a list of strings (any-of). Always stored as a list.
AnyOf = Annotated[
    list[Annotated[str, Field(min_length=1), AfterValidator(_shown)]], BeforeValidator(_as_list)
]


def _check_double_star(pattern: str) -> str:
    _shown(pattern)
    for segment in pattern.split("/"):
        if "**" in segment and segment != "**":
            raise ValueError(f"pattern {pattern!r}: '**' must be a whole segment ('/a/**/b')")
    return pattern


#: A glob or a list of globs (any-of) where ``**`` must be a whole segment.
SegmentGlobs = Annotated[
    list[Annotated[str, Field(min_length=1), AfterValidator(_check_double_star)]],
    BeforeValidator(_as_list),
]


def _check_uri_pattern(pattern: str) -> str:
    return normalise_uri_pattern(_check_double_star(pattern))


#: URI globs, stored in the normal form of the URIs they are compared with (policy.uris).
UriPatterns = Annotated[
    list[Annotated[str, Field(min_length=1), AfterValidator(_check_uri_pattern)]],
    BeforeValidator(_as_list),
]


PathPatterns = Annotated[
    list[Annotated[str, Field(min_length=1), AfterValidator(normalise_path_pattern)]],
    BeforeValidator(_as_list),
]


def _check_identity_pattern(pattern: str) -> str:
    """A ``backend_identity`` pattern, checked and written in canonical form."""
    name = canonical_name(pattern)
    kind, _, value = name.partition(":")
    if kind == "DNS":
        if not value.isascii() or not re.fullmatch(r"[a-z0-9_*?-]+(?:\.[a-z0-9_*?-]+)*", value):
            raise ValueError(
                f"{pattern!r} is not a DNS name or glob (letters, digits, '-', '_', '*', '?' "
                "in labels separated by '.')"
            )
        if any("**" in label and label != "**" for label in value.split(".")):
            raise ValueError(f"{pattern!r}: '**' must be a whole label ('**.example.org')")
    elif kind == "URI":
        if re.search(r"[\x00-\x20\x7f]", value):
            raise ValueError(f"{pattern!r} contains a space or a control character")
        _check_double_star(value)
    return name


#: ``DNS:<glob>``, ``URI:<glob>`` or ``IP:<address>``, or a list of them (any-of).
IdentityPatterns = Annotated[
    list[Annotated[str, Field(min_length=1), AfterValidator(_check_identity_pattern)]],
    BeforeValidator(_as_list),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeWindow(_Strict):
    """When a rule applies: days of the week and a daily time range, in a time zone."""

    days: list[Day] = Field(default_factory=lambda: list(_EVERY_DAY))
    start: time = Field(default=time(0, 0), description="Inclusive, e.g. '09:00'.")
    end: time = Field(
        default=time(23, 59, 59),
        description="Inclusive, e.g. '17:30' (in whole minutes: to 17:30:59).",
    )
    timezone: str = Field(default="UTC", description="IANA name, e.g. 'Europe/Vienna'.")

    @field_validator("start", "end")
    @classmethod
    def _local(cls, value: time) -> time:
        # compared with the local time in `timezone`, which has no offset of its own
        if value.tzinfo is not None:
            raise ValueError(
                f"{value.isoformat()} has a UTC offset; give the local time ('22:00') and "
                "the zone in 'timezone'"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value == "localtime":  # tzdata's link to /etc/localtime: differs by machine
            raise ValueError(
                "'localtime' is whatever zone the machine running the proxy is set to; name "
                "the zone, like 'Europe/Vienna'"
            )
        if value != "UTC" and value not in available_timezones():
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like 'Europe/Vienna'")
        return value


class Conditions(_Strict):
    """What a request must look like for the rule to match. All fields AND together."""

    # action
    mcp_method: SegmentGlobs | None = Field(default=None, description="Glob, e.g. 'tools/*'.")
    tool_name: AnyOf | None = Field(default=None, description="Glob, case-insensitive.")
    operations: AnyOf | None = Field(default=None, description="read, write, delete, execute …")
    side_effects: AnyOf | None = None
    # resource
    path_pattern: PathPatterns | None = Field(
        default=None, description="Every path argument must match ('*' stays in one segment)."
    )
    source_path: PathPatterns | None = None
    dest_path: PathPatterns | None = None
    extension: AnyOf | None = None
    scheme: AnyOf | None = None
    uri: UriPatterns | None = Field(
        default=None, description="Glob on the resource URI in normal form ('file:///srv/**')."
    )
    backend_id: AnyOf | None = None
    backend_identity: IdentityPatterns | None = Field(
        default=None,
        description="Names of the backend's verified TLS certificate (mTLS): 'DNS:<glob>', "
        "'URI:<glob>' or 'IP:<address>'; matches when any name matches. Never matches a "
        "backend without one.",
    )
    resource_type: list[Literal["tool", "resource", "prompt", "server"]] | None = Field(
        default=None
    )
    # subject
    subject_id: AnyOf | None = None
    issuer: AnyOf | None = None
    audience: AnyOf | None = None
    client_id: AnyOf | None = None
    scopes: AnyOf | None = Field(default=None, description="Any of these scopes.")
    scopes_all: AnyOf | None = Field(default=None, description="All of these scopes.")
    groups: AnyOf | None = None
    roles: AnyOf | None = None
    # environment
    mcp_client_name: AnyOf | None = None
    mcp_client_version: AnyOf | None = None
    time: TimeWindow | None = None
    posture: AnyOf | None = Field(default=None, description="Checks that must have passed.")
    untrusted_content_seen: bool | None = Field(
        default=None,
        description="Whether the session has seen untrusted content (a tool returning it "
        "was called, or hidden-instruction markers reached the client: in a tools/call, "
        "resources/read or prompts/get answer, or a sampling request of the backend's).",
    )
    # provenance
    min_provenance: dict[str, ProvenanceName] | None = Field(
        default=None,
        description="Minimum trust of what this rule relies on, per condition field or per "
        'group (subject, action, resource, environment), e.g. {"subject": "token"}.',
    )

    @field_validator("resource_type", mode="before")
    @classmethod
    def _resource_type_list(cls, value: Any) -> Any:
        value = _as_list(value)
        return [v.lower() if isinstance(v, str) else v for v in value] if value else value

    def used_fields(self) -> list[str]:
        """Condition fields this rule tests, in declaration order."""
        return [k for k, v in self if v is not None and k != "min_provenance"]

    def provenance_requirements(self) -> list[tuple[str, ProvenanceName]]:
        """``(attribute, minimum level)`` for every attribute ``min_provenance`` covers."""
        out: list[tuple[str, ProvenanceName]] = []
        for key, level in (self.min_provenance or {}).items():
            fields = [
                f for f in self.used_fields() if key in (f, FIELD_ATTRIBUTES[f].split(".")[0])
            ]
            out += [(FIELD_ATTRIBUTES[f], level) for f in fields]
        return out

    @model_validator(mode="after")
    def _not_empty(self) -> Conditions:
        used = self.used_fields()
        if not used:
            raise ValueError("a rule needs at least one condition (it would match everything)")
        for key in self.min_provenance or {}:
            if key not in FIELD_ATTRIBUTES and key not in _GROUPS:
                raise ValueError(
                    f"min_provenance key {key!r} is neither a condition field nor one of "
                    f"{', '.join(_GROUPS)}"
                )
            if not any(key in (f, FIELD_ATTRIBUTES[f].split(".")[0]) for f in used):
                raise ValueError(
                    f"min_provenance names {key!r} but the rule tests no such attribute"
                )
        return self


def _cacheable(value: list[str] | None) -> list[str] | None:
    refused = sorted(NEVER_CACHED.intersection(value or ()))
    if refused:
        raise ValueError(f"approvals for code execution ({', '.join(refused)}) are never cached")
    return value


class ApprovalSettings(_Strict):
    """For ``ask`` rules: whether and how long a human's 'allow' may be remembered. They
    replace the policy's ``hitl`` terms and the proxy's for this rule (not the timeout)."""

    cache_ttl_seconds: int = Field(
        default=0,
        ge=0,
        le=86400,
        description="How long an approval given with --remember holds; 0 (the default) = "
        "never remember.",
    )
    cacheable_side_effects: Annotated[list[str], AfterValidator(_cacheable)] = Field(
        default_factory=list,
        description="An approval is remembered only if every side effect of the tool is "
        "listed; a tool without side effects always may be. Never code_exec, "
        "process_spawn, sudo_elevate or container_exec.",
    )

    @model_validator(mode="after")
    def _used(self) -> ApprovalSettings:
        if self.cacheable_side_effects and self.cache_ttl_seconds == 0:
            raise ValueError(
                "cacheable_side_effects is never used with cache_ttl_seconds 0 (never "
                "remember): set cache_ttl_seconds, or drop cacheable_side_effects"
            )
        return self


class HitlSettings(_Strict):
    """Policy-wide approval terms (the ``hitl`` section of mcp-acp-extended policies). A
    field left out is the proxy's setting; a rule's ``approval`` replaces the remembering
    terms for that rule."""

    timeout_seconds: int | None = Field(
        default=None,
        ge=5,
        le=300,
        description="How long a request waits for an answer before it is denied, for every "
        "approval the proxy asks for; default: proxy.approval_timeout_seconds.",
    )
    approval_ttl_seconds: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="How long an approval given with --remember holds; 0 = never "
        "remember; default: proxy.approval_cache_seconds.",
    )
    cache_side_effects: Annotated[list[str] | None, AfterValidator(_cacheable)] = Field(
        default=None,
        description="An approval is remembered only if every side effect of the tool is "
        "listed; null: only tools without side effects are remembered. Never code_exec, "
        "process_spawn, sudo_elevate or container_exec.",
    )

    @model_validator(mode="after")
    def _used(self) -> HitlSettings:
        if self.cache_side_effects and self.approval_ttl_seconds == 0:
            raise ValueError(
                "cache_side_effects is never used with approval_ttl_seconds 0 (never "
                "remember): set approval_ttl_seconds, or drop cache_side_effects"
            )
        return self


class Rule(_Strict):
    """One rule. ``id`` is generated from the rule's content when left out."""

    id: str | None = Field(default=None, pattern=_RULE_ID)
    description: str = ""
    effect: Literal["allow", "deny", "ask"]
    conditions: Conditions
    approval: ApprovalSettings | None = None

    @field_validator("effect", mode="before")
    @classmethod
    def _hitl_alias(cls, value: Any) -> Any:
        return "ask" if value == "hitl" else value

    @model_validator(mode="after")
    def _approval_only_for_ask(self) -> Rule:
        if self.approval is not None and self.effect != "ask":
            raise ValueError("'approval' settings are only valid on effect 'ask' rules")
        if self.effect == "deny" and self.conditions.min_provenance is not None:
            raise ValueError(
                "min_provenance is not allowed on deny rules: deny rules match on any evidence"
            )
        return self

    def content_id(self) -> str:
        """A stable id from the rule's effect and conditions."""
        body = json.dumps(
            {
                "effect": self.effect,
                "conditions": self.conditions.model_dump(mode="json", exclude_none=True),
            },
            sort_keys=True,
        )
        return f"rule-{hashlib.sha256(body.encode()).hexdigest()[:12]}"


class PolicyFile(_Strict):
    """The whole policy file."""

    version: Literal["1"] = "1"
    default_action: Literal["deny"] = Field(
        default="deny", description="Always deny: what no rule allows is refused."
    )
    rules: list[Rule] = Field(default_factory=list)
    hitl: HitlSettings | None = Field(
        default=None, description="Approval defaults; a rule's 'approval' overrides them."
    )

    @model_validator(mode="after")
    def _ids(self) -> PolicyFile:
        rules = [r if r.id else r.model_copy(update={"id": r.content_id()}) for r in self.rules]
        seen: set[str] = set()
        for index, rule in enumerate(rules):
            assert rule.id is not None  # noqa: S101 - set just above
            if rule.id in seen:
                raise ValueError(f"rules[{index}]: duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        object.__setattr__(self, "rules", rules)
        return self

    def policy_id(self) -> str:
        """Content hash of the policy: the id recorded with every decision."""
        body = self.model_dump_json(exclude_none=True)
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()
