"""``mcp-acp policy …``: validate, show, hash, explain and test policies.

Every command works on the configured policy (``policy.config.path``, default
``policy.json`` beside the config file) or on ``--policy FILE``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mcp_acp._fs import FileTooLargeError, NotRegularFileError, read_regular_file
from mcp_acp._json import NumberTooLongError, loads
from mcp_acp.backend_identity import canonical_name
from mcp_acp.config import CONFIG_DIR, Config, entry_exists, load_config, resolve_config_path
from mcp_acp.errors import ConfigError, PolicyError, printable
from mcp_acp.models import DecisionRequest, Effect, PostureStatus, Provenance, Subject
from mcp_acp.policy.engine import AcpConfig, AcpPolicyEngine
from mcp_acp.policy.load import policy_errors, read_policy_text
from mcp_acp.registry import PluginContext
from mcp_acp.request import build_decision_request
from mcp_acp.tools import ToolRegistry

__all__ = ["CaseRequest", "policy_group"]

#: The methods whose ``arguments`` a case's request carries (and the proxy reads paths in).
_WITH_ARGUMENTS = frozenset({"tools/call", "prompts/get"})


class CaseRequest(BaseModel):
    """A request described for ``policy explain`` and ``policy test`` cases."""

    model_config = ConfigDict(extra="forbid")

    method: str = "tools/call"
    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    uri: str | None = None
    subject: str = "alice"
    subject_provenance: str = "token"
    issuer: str | None = None
    audience: list[str] = Field(default_factory=list)
    client_id: str | None = None
    scopes: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    client_name: str | None = None
    client_version: str | None = None
    posture: dict[str, PostureStatus] = Field(default_factory=dict)
    annotations: dict[str, Any] = Field(default_factory=dict)
    backend_id: str = "backend"
    backend_identity: list[str] = Field(
        default_factory=list,
        description="Names of the backend's verified certificate, e.g. 'DNS:mcp.internal' "
        "(as the proxy reads them with mTLS; provenance mtls).",
    )
    time: datetime | None = None
    untrusted_content_seen: bool = False

    @field_validator("backend_identity")
    @classmethod
    def _canonical(cls, names: list[str]) -> list[str]:
        return sorted({canonical_name(name) for name in names})

    @field_validator("time")
    @classmethod
    def _instant(cls, value: datetime | None) -> datetime | None:
        # without an offset it would be read in the zone of the machine running the test
        if value is not None and value.utcoffset() is None:
            raise ValueError(
                f"{value.isoformat()} has no UTC offset; write the instant it means, "
                f"e.g. {value.isoformat()}Z or {value.isoformat()}+01:00"
            )
        return value

    @model_validator(mode="after")
    def _arguments_are_read(self) -> CaseRequest:
        # arguments the request would not carry would be left out of the decision, which
        # then differs from the proxy's on the real message
        if self.arguments and self.method not in _WITH_ARGUMENTS:
            raise ValueError(
                f"arguments are given, but a {self.method} request has none here: only "
                f"{' and '.join(sorted(_WITH_ARGUMENTS))} carry them"
            )
        return self

    def build(self, registry: ToolRegistry) -> DecisionRequest:
        try:
            provenance = Provenance[self.subject_provenance.upper()]
        except KeyError:
            names = ", ".join(p.name.lower() for p in Provenance)
            raise PolicyError(
                f"unknown provenance {self.subject_provenance!r}", fix=f"use one of: {names}"
            ) from None
        subject = Subject(
            subject_id=self.subject,
            provenance=provenance,
            issuer=self.issuer,
            audience=tuple(self.audience),
            client_id=self.client_id,
            scopes=frozenset(self.scopes),
            groups=frozenset(self.groups),
            roles=frozenset(self.roles),
        )
        params: dict[str, Any] = {}
        if self.method in _WITH_ARGUMENTS:  # a prompt's arguments may name files too
            params = {"name": self.tool, "arguments": self.arguments}
        elif self.uri is not None:
            params = {"uri": self.uri}
        elif self.tool is not None:
            params = {"name": self.tool}
        return build_decision_request(
            method=self.method,
            params=params,
            subject=subject,
            registry=registry,
            backend_id=self.backend_id,
            session_id="policy-cli",
            request_id="policy-cli",
            client_name=self.client_name,
            client_version=self.client_version,
            posture=self.posture,
            annotations=self.annotations or None,
            backend_identity=tuple(self.backend_identity),
            now=self.time,
            untrusted_content_seen=self.untrusted_content_seen,
        )


class _Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effect: Effect
    rule: str | None = None


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    request: CaseRequest
    expect: _Expectation


class _Cases(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cases: list[_Case] = Field(min_length=1)


def _config(ctx: click.Context) -> tuple[Path, Config | None]:
    path = resolve_config_path(ctx.find_root().params.get("config"))
    return path, (load_config(path) if entry_exists(path) else None)


def _policy_path(ctx: click.Context, given: Path | None) -> Path:
    if given is not None:
        return given
    config_path, config = _config(ctx)
    if config is None:
        raise ConfigError(
            f"no config file at {config_path}, so no configured policy",
            fix="pass --policy FILE, or run 'mcp-acp init'",
        )
    if config.policy.use != "acp":
        raise PolicyError(
            f"the configured policy engine is {config.policy.use!r}; these "
            "commands read 'acp' policies",
            fix="pass --policy FILE",
        )
    options = AcpConfig.model_validate(
        config.policy.config, context={CONFIG_DIR: config_path.parent}
    )
    return options.path or config_path.parent / "policy.json"


def _engine(ctx: click.Context, given: Path | None) -> tuple[AcpPolicyEngine, ToolRegistry]:
    path = _policy_path(ctx, given)
    _, config = _config(ctx)
    protected: Mapping[str, Path] = {}
    registry = ToolRegistry.default()
    if config is not None:
        config_path = resolve_config_path(ctx.find_root().params.get("config"))
        context = PluginContext(
            config_path, config.audit.log_dir, fallback_path=config.audit.fallback_path
        )
        protected = context.protected_dirs  # as the proxy's engine has them
        registry = ToolRegistry.default(config.tools.registry)
    return AcpPolicyEngine.from_file(path, protected=protected), registry


_policy_option = click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file to use instead of the configured one.",
)


@click.group("policy")
def policy_group() -> None:
    """Validate, inspect, explain and test policies."""


@policy_group.command("validate")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_policy_option
@click.pass_context
def validate(ctx: click.Context, file: Path | None, policy_file: Path | None) -> None:
    """Report every problem in a policy file with its JSON path and line."""
    path = _policy_path(ctx, file or policy_file)
    errors = policy_errors(read_policy_text(path), str(path))
    if errors:
        for line in errors:
            click.echo(line, err=True)
        raise PolicyError(
            f"{path}: {len(errors)} problem(s)", fix="correct the lines above, then validate again"
        )
    engine = AcpPolicyEngine.from_file(path)
    click.echo(f"ok: {path}: {len(engine.policy.rules)} rules, {engine.policy_id}")


@policy_group.command("show")
@_policy_option
@click.pass_context
def show(ctx: click.Context, policy_file: Path | None) -> None:
    """Print the policy as the engine reads it (generated rule ids filled in)."""
    engine, _ = _engine(ctx, policy_file)
    click.echo(engine.policy.model_dump_json(indent=2, exclude_none=True))


@policy_group.command("hash")
@_policy_option
@click.pass_context
def hash_command(ctx: click.Context, policy_file: Path | None) -> None:
    """Print the policy id (SHA-256 of the canonical policy) recorded with decisions."""
    engine, _ = _engine(ctx, policy_file)
    click.echo(engine.policy_id)


def _json_value(option: str, key: str, raw: str) -> Any:
    """``raw`` as JSON, or as the string it is if it is not JSON."""
    try:
        return loads(raw)
    except NumberTooLongError as exc:
        raise PolicyError(
            f"{option} {printable(key)}: in the JSON value, {exc.msg}",
            fix="give a value a request could carry (a number that long as a string)",
        ) from None
    except json.JSONDecodeError:
        return raw
    except RecursionError:
        raise PolicyError(
            f"{option} {printable(key)}: the JSON value nests arrays or objects too deeply",
            fix="give a value a request could carry",
        ) from None


def _annotations(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise PolicyError(
                f"--annotation {printable(pair)} is not NAME=VALUE",
                fix="write --annotation destructiveHint=true",
            )
        out[key] = _json_value("--annotation", key, raw)
    return out


def _arguments(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise PolicyError(f"--arg {pair!r} is not NAME=VALUE", fix="write --arg path=/x/y")
        value = _json_value("--arg", key, raw) if raw[:1] in "[{" else raw
        if key in out:  # a repeated name builds a list: --arg paths=/a --arg paths=/b
            out[key] = [*(out[key] if isinstance(out[key], list) else [out[key]]), value]
        else:
            out[key] = value
    return out


@policy_group.command("explain")
@click.option("--method", default="tools/call", show_default=True, help="MCP method.")
@click.option("--tool", help="Tool name (tools/call) or prompt name.")
@click.option(
    "--arg",
    "args",
    multiple=True,
    metavar="NAME=VALUE",
    help="Tool argument (repeat; JSON values allowed).",
)
@click.option("--uri", help="Resource URI (resources/read).")
@click.option("--subject", default="alice", show_default=True, help="Subject id.")
@click.option(
    "--provenance",
    "subject_provenance",
    default="token",
    show_default=True,
    help="Where the subject came from: token, mtls, config, request, derived, client_hint.",
)
@click.option("--scope", "scopes", multiple=True, help="Token scope (repeat).")
@click.option("--group", "groups", multiple=True, help="Group (repeat).")
@click.option("--role", "roles", multiple=True, help="Role (repeat).")
@click.option("--issuer", help="Token issuer (iss).")
@click.option("--audience", "audience", multiple=True, help="Token audience (repeat).")
@click.option("--client-id", help="OAuth client id the token was issued to.")
@click.option("--client-name", help="MCP client name (clientInfo.name).")
@click.option("--client-version", help="MCP client version.")
@click.option(
    "--annotation",
    "annotation",
    multiple=True,
    metavar="NAME=VALUE",
    help="The tool's annotation as its server lists it, a JSON value, e.g. "
    "destructiveHint=true (repeat).",
)
@click.option(
    "--time",
    "time",
    metavar="INSTANT",
    help="When the request is made, with its UTC offset, e.g. 2026-11-24T22:30:00+01:00 "
    "(default: now).",
)
@click.option(
    "--untrusted-content-seen",
    is_flag=True,
    default=None,
    help="The session has already read untrusted content (a web page, an issue).",
)
@click.option(
    "--posture",
    "posture",
    multiple=True,
    metavar="CHECK=STATUS",
    help="Posture result, e.g. disk-encryption=pass (repeat).",
)
@click.option("--backend-id", default="backend", show_default=True)
@click.option(
    "--backend-identity",
    "backend_identity",
    multiple=True,
    metavar="KIND:NAME",
    help="A name of the backend's verified TLS certificate, e.g. DNS:mcp.internal (repeat).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as one JSON object.")
@_policy_option
@click.pass_context
def explain(
    ctx: click.Context,
    /,
    args: Sequence[str],
    posture: Sequence[str],
    annotation: Sequence[str],
    as_json: bool,
    policy_file: Path | None,
    **fields: Any,
) -> None:
    """Decide one request and show why, rule by rule."""
    engine, registry = _engine(ctx, policy_file)
    try:
        case = CaseRequest(
            arguments=_arguments(args),
            posture=dict(item.partition("=")[::2] for item in posture),
            annotations=_annotations(annotation),
            **{
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in fields.items()
                if v is not None
            },
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(map(str, first["loc"]))  # none for the request as a whole
        raise PolicyError(
            f"{loc + ': ' if loc else ''}{first['msg'].removeprefix('Value error, ')}",
            fix="see 'mcp-acp policy explain --help'",
        ) from exc
    request = case.build(registry)
    decision = engine.decide(request)
    if as_json:
        click.echo(json.dumps(decision.to_json()))
        return
    click.echo(f"{decision.effect.value.upper()}: {decision.reason}")
    click.echo(f"policy {decision.policy_id}  ({decision.eval_us:.1f} µs)")
    subject = request.subject
    click.echo(  # what was assumed: the proxy's own subject may differ (--subject, --provenance)
        f"subject {subject.subject_id} (provenance {subject.provenance.name.lower()})"
    )
    action = request.action
    if action.tool_name is not None:
        ops = ", ".join(sorted(action.operations)) or "unknown"
        effects = ", ".join(sorted(action.side_effects)) or "none"
        click.echo(f"tool {action.tool_name}: operations {ops}; side effects {effects}")
    if request.resource.backend_identity:
        click.echo(f"backend identity (mtls): {', '.join(request.resource.backend_identity)}")
    for path in request.resource.paths:
        real = f" -> {path.resolved}" if path.resolved and path.resolved != path.path else ""
        click.echo(f"{path.role} argument {path.argument}: {path.path}{real}")
    click.echo("rules:")
    for trace in engine.trace(request):
        mark = "match" if trace.matched else "  -  "
        click.echo(
            f"  [{mark}] {trace.rule_id} ({trace.effect.value}): " + "; ".join(trace.details)
        )


#: The most a ``policy test`` cases file may hold (some 50,000 cases).
MAX_CASES_BYTES = 16 << 20


@policy_group.command("test")
@click.argument("cases_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_policy_option
@click.pass_context
def test_command(ctx: click.Context, cases_file: Path, policy_file: Path | None) -> None:
    """Run golden cases (request -> expected effect and rule); exit 1 on any mismatch.

    CASES_FILE is a regular JSON file of at most 16 MiB."""
    engine, registry = _engine(ctx, policy_file)
    shown = printable(str(cases_file))
    try:  # a FIFO would block for ever, /dev/zero never end: a regular file, and capped
        cases = _Cases.model_validate_json(
            read_regular_file(cases_file, MAX_CASES_BYTES).decode("utf-8")
        )
    except NotRegularFileError as exc:
        raise PolicyError(
            f"{shown} is {exc.kind}, not a regular file", fix="give the cases as a JSON file"
        ) from None
    except FileTooLargeError as exc:
        raise PolicyError(
            f"{shown} is {exc.size} bytes, over the {MAX_CASES_BYTES >> 20} MiB limit of a "
            "cases file",
            fix="split the cases into several files",
        ) from None
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"{shown} is not UTF-8 text (byte {exc.start})",
            fix="save the cases file as UTF-8",
        ) from None
    except OSError as exc:
        raise PolicyError(
            f"cannot read {shown}: {exc.strerror or exc}",
            fix="check the file's permissions",
        ) from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(map(str, first["loc"]))  # none for JSON it could not read
        raise PolicyError(
            f"{shown}: {loc + ': ' if loc else ''}{first['msg'].removeprefix('Value error, ')}",
            fix="correct the cases file (each case needs name, request and expect.effect)",
        ) from exc
    failed = 0
    for case in cases.cases:
        decision = engine.decide(case.request.build(registry))
        want = case.expect
        ok = decision.effect is want.effect and (want.rule is None or decision.rule_id == want.rule)
        if ok:
            click.echo(f"PASS {case.name}")
            continue
        failed += 1
        click.echo(f"FAIL {case.name}")
        click.echo(f"  - expected: {want.effect.value}" + (f" by {want.rule}" if want.rule else ""))
        click.echo(
            f"  + got:      {decision.effect.value} by {decision.rule_id}: {decision.reason}"
        )
    click.echo(f"{len(cases.cases) - failed} of {len(cases.cases)} cases as expected")
    if failed:
        ctx.exit(1)
