"""The config file: one JSON document, validated by pydantic, kept private.

Where it is, first match wins: ``--config PATH``, the ``MCP_ACP_CONFIG`` environment
variable, then ``config.json`` in the platform config directory
(``~/.config/mcp-acp/`` on Linux, ``~/Library/Application Support/mcp-acp/`` on macOS).

Every pluggable component is selected the same way, by the name a plugin registered,
with that plugin's own options under ``config``::

    "identity": {"use": "local", "config": {"subject_id": "alice"}}

The core model below checks the shape; :mod:`mcp_acp.runtime` then validates each
``config`` section with the model its plugin registered.

A file that is writable by group or others, or owned by someone else, is refused, and so
is a path that someone else could make lead elsewhere (a directory on it they can write,
their symlink in ``/tmp``: :func:`~mcp_acp._fs.untrusted_file`): whoever can write the
config decides what the proxy allows. Only a regular file is read, never
more than 1 MiB nor nested more than 100 deep, and a key written twice is an error (JSON
readers disagree on which copy counts).

Paths in the file mean the same from any working directory: ``~`` is expanded and a
relative path is taken from the config file's directory (:data:`ConfigPath` for the core
fields, :func:`anchor_option_paths` for every plugin's options).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mcp_acp._fs import (
    FileTooLargeError,
    NotRegularFileError,
    atomic_write_text,
    broken_link,
    read_regular_file,
    untrusted_file,
)
from mcp_acp._json import (
    DuplicateKeyError,
    NumberTooLongError,
    byte_order_mark,
    deeper_than,
    loads_strict,
)
from mcp_acp.audit.redact import SECRET_WORDS, redact
from mcp_acp.errors import ConfigError, one_line
from mcp_acp.tools import ToolEntry

__all__ = [
    "CONFIG_DIR",
    "CONFIG_ENV",
    "MAX_CONFIG_DEPTH",
    "AuditSection",
    "Backend",
    "ComponentRef",
    "Config",
    "ConfigPath",
    "HttpBackend",
    "PluginsSection",
    "PostureSection",
    "ProxySection",
    "RateLimits",
    "StdioBackend",
    "ToolsSection",
    "absolute_path",
    "anchor_option_paths",
    "anchor_path",
    "config_error_from_validation",
    "config_problems",
    "default_config_path",
    "default_log_dir",
    "entry_exists",
    "load_config",
    "read_config_json",
    "redact_prose",
    "redact_text",
    "redacted",
    "resolve_config_path",
    "save_config",
]

log = logging.getLogger(__name__)

CONFIG_ENV = "MCP_ACP_CONFIG"
APP_NAME = "mcp-acp"
MAX_CONFIG_BYTES = 1 << 20

#: How deep arrays and objects may nest in a config file (or options given to ``init``):
#: far more than any setting needs, well within what pydantic writes out (255 levels).
MAX_CONFIG_DEPTH = 100
_NAME = r"^[a-z0-9][a-z0-9-]*$"
_SECRET_WORDS = SECRET_WORDS  # what makes a name look secret
#: Sections whose every value is redacted whatever its name: a header or an environment
#: variable of the backend is there to carry credentials more often than not.
_SECRET_SECTIONS = ("headers", "env")
#: mcp-acp's own settings whose names hold a secret word but whose values are none: a
#: switch (``proxy.outbound_secrets``: ask or off) and the *name* of the environment
#: variable that holds a passphrase. Shown, so a user can see what is set.
_NOT_SECRET_KEYS = frozenset({"outbound_secrets", "passphrase_env"})


def default_config_path() -> Path:
    return platformdirs.user_config_path(APP_NAME, appauthor=False) / "config.json"


def is_relative_to(path: Path, directory: Path) -> bool:
    """Whether ``path`` is ``directory`` or inside it, once both are resolved: ``..`` and
    symlinks (as far as they exist) cannot hide that one is inside the other."""
    resolved = Path(os.path.realpath(path))
    return resolved.is_relative_to(os.path.realpath(directory))


def default_log_dir() -> Path:
    return platformdirs.user_log_path(APP_NAME, appauthor=False)


def resolve_config_path(
    cli_value: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """``--config`` beats ``MCP_ACP_CONFIG`` beats the platform default."""
    env = os.environ if environ is None else environ
    if cli_value:
        return absolute_path(cli_value, f"--config (or {CONFIG_ENV})")
    if env.get(CONFIG_ENV):
        return absolute_path(env[CONFIG_ENV], CONFIG_ENV)
    return default_config_path()


def _path_error(path: object, exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return one_line(str(exc)).rstrip(".")  # RuntimeError: a symlink loop, an unknown ~user


def absolute_path(value: str | os.PathLike[str], what: str) -> Path:
    """``value`` with ``~`` expanded, made absolute against the working directory.

    Raises ``ConfigError`` naming ``what`` (an option, a variable, a field) when that
    cannot be done: ``~nosuchuser``, a deleted working directory."""
    try:
        return Path(value).expanduser().absolute()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(
            f"{what} = {one_line(os.fspath(value))!r}: cannot make it a path: "
            f"{_path_error(value, exc)}",
            fix="give an absolute path, or ~ for your own home directory",
        ) from None


def entry_exists(path: Path) -> bool:
    """Whether anything is at ``path`` — a file, a directory, or a symlink even if it leads
    nowhere. Raises ``ConfigError`` when that cannot be told (a directory on the way that
    you may not search, a name too long)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(
            f"cannot check {path}: {_path_error(path, exc)}",
            fix="check the path and the permissions of the directories on it",
        ) from None
    return True


#: The key of the validation context that holds the config file's directory.
CONFIG_DIR = "config_dir"


def anchor_path(value: Path, base: Path | None) -> Path:
    """``value`` as the config means it: ``~`` expanded, and a relative path taken from
    ``base`` (the config file's directory; the working directory when ``None``, as for
    paths given on the command line). Raises ``ValueError`` saying why it cannot be."""
    text = os.fspath(value)
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        expanded = value.expanduser()
    except RuntimeError as exc:  # ~nosuchuser
        raise ValueError(f"cannot expand {text.split('/')[0]!r}: {exc}") from None
    if expanded.is_absolute():
        return expanded
    try:
        return (base or Path.cwd()) / expanded
    except OSError as exc:  # the working directory was removed
        raise ValueError(f"is relative and the working directory is gone: {exc}") from None


def _anchored(value: Path, info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, dict) else {}
    return anchor_path(value, context.get(CONFIG_DIR))


#: A path in the config file: ``~`` is expanded and a relative path is taken from the
#: config file's directory, so the file means the same from any working directory.
ConfigPath = Annotated[Path, AfterValidator(_anchored)]


def anchor_option_paths(options: BaseModel, base: Path, field: str) -> BaseModel:
    """A plugin's validated ``options`` with every path in them anchored like a
    :data:`ConfigPath` (``~`` expanded, relative to ``base``), nested models and lists
    of paths included. Raises ``ConfigError`` naming the option."""

    def anchor(value: Any, where: str) -> Any:
        if isinstance(value, Path):
            try:
                return anchor_path(value, base)
            except ValueError as exc:
                raise ConfigError(
                    f"{where} = {one_line(json.dumps(os.fspath(value)))}: {exc}",
                    fix="give an absolute path, or one relative to the config file",
                ) from None
        if isinstance(value, BaseModel):
            return anchor_option_paths(value, base, where)
        if isinstance(value, (list, tuple)):
            items = [anchor(item, f"{where}[{i}]") for i, item in enumerate(value)]
            return type(value)(items) if isinstance(value, tuple) else items
        return value

    updates = {}
    for name in type(options).model_fields:
        value = getattr(options, name)
        new = anchor(value, f"{field}.{name}")
        if new != value:
            updates[name] = new
    return options.model_copy(update=updates) if updates else options


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentRef(_Section):
    """Selects a registered implementation by name and carries its options."""

    use: str = Field(pattern=_NAME, description="Name a plugin registered, e.g. 'local'.")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Options, validated by the model the plugin registered for this name.",
    )


class StdioBackend(_Section):
    """An MCP server the proxy starts as a child process and talks to over stdio."""

    transport: Literal["stdio"] = "stdio"
    command: str = Field(min_length=1, description="Executable to run, e.g. 'npx'.")
    args: list[str] = Field(default_factory=list, description="Arguments, one per item.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")
    cwd: ConfigPath | None = Field(default=None, description="Working directory.")

    @field_validator("command", "args")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        if any("\x00" in item for item in items):
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
            if "\x00" in text:  # the value is not echoed: it is often a credential
                raise ValueError(f"the value of {name!r} must not contain NUL characters")
        return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpBackend(_Section):
    """An MCP server reached over streamable HTTP."""

    transport: Literal["http"] = "http"
    url: str = Field(description="Endpoint URL, e.g. 'https://mcp.example.com/mcp'.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds that connecting, and each wait for an answer to start, may take; "
        "also the start-up check as a whole (connecting, TLS handshake, the answer's head).",
    )
    request_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="Seconds one request may take from being sent to the end of its answer, "
        "however busy the answer keeps the connection (subscriptions/listen excepted); "
        "beyond, the client gets an error and the backend a cancellation. At least "
        "timeout_seconds.",
    )
    tls: ComponentRef | None = Field(
        default=None,
        description="A TLS provider for an https:// backend, e.g. {'use': 'mtls', 'config': "
        "{...}} (plugin 'mtls'); without one the server is verified against the system's "
        "trust store.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; put them in 'headers'")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("plain http:// is allowed only to a loopback host; use https://")
        return value

    @model_validator(mode="after")
    def _tls_needs_https(self) -> HttpBackend:
        if self.tls is not None and urlsplit(self.url).scheme != "https":
            raise ValueError("'tls' is set, so the url must be https://")
        return self

    @model_validator(mode="after")
    def _whole_request_outlasts_its_parts(self) -> HttpBackend:
        if self.request_timeout_seconds < self.timeout_seconds:
            raise ValueError(
                f"request_timeout_seconds ({self.request_timeout_seconds:g}) is shorter than "
                f"timeout_seconds ({self.timeout_seconds:g}); raise it"
            )
        return self

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():  # never echo a value: it is often a credential
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if not re.fullmatch(r"[\t\x20-\x7e]*", text):
                raise ValueError(f"the value of {name!r} must be printable ASCII on one line")
        return value


def _transport(value: Any) -> str:
    """The union's tag. ``transport`` may be left out: a backend with a ``url`` and no
    ``command`` is reached over HTTP, any other over stdio."""
    if isinstance(value, dict):
        implied = "http" if "url" in value and "command" not in value else "stdio"
        return str(value.get("transport", implied))
    return str(getattr(value, "transport", "stdio"))


Backend = Annotated[
    Annotated[StdioBackend, Tag("stdio")] | Annotated[HttpBackend, Tag("http")],
    Discriminator(_transport),
]


class PluginsSection(_Section):
    """Which installed plugins may load (built-ins always do)."""

    allow: list[Annotated[str, Field(pattern=_NAME)]] = Field(
        default_factory=list,
        description="Entry-point names of installed plugins to load. "
        "MCP_ACP_PLUGINS (comma-separated) overrides this list.",
    )


def default_fallback_path() -> Path:
    return platformdirs.user_state_path(APP_NAME, appauthor=False) / "audit-fallback.jsonl"


class AuditSection(_Section):
    """Where and how the audit trail is written."""

    log_dir: ConfigPath = Field(
        default_factory=default_log_dir,
        description="Directory of the audit logs (created 0700).",
    )
    sinks: list[ComponentRef] = Field(
        default_factory=lambda: [ComponentRef(use="jsonl")],
        min_length=1,
        description="Audit sinks; every one must take a record before a request proceeds.",
    )
    fallback_path: ConfigPath = Field(
        default_factory=default_fallback_path,
        description="Where events go when the trail cannot take them (outside log_dir).",
    )
    health_check_seconds: float = Field(
        default=30.0, ge=1, le=3600, description="How often the trail's files are checked."
    )
    write_timeout_seconds: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="How long records may wait with none written (a hung disk or network "
        "mount) before the trail fails and the proxy shuts down (exit 13); also the limit "
        "on each write at shutdown.",
    )
    record_payloads: bool = Field(
        default=False,
        description="Record full tool arguments (secrets redacted) instead of hash + size.",
    )

    @model_validator(mode="after")
    def _fallback_outside(self) -> AuditSection:
        if is_relative_to(self.fallback_path, self.log_dir):
            raise ValueError(
                "fallback_path must be outside log_dir (it is used when log_dir fails)"
            )
        return self


class PostureSection(_Section):
    """Device posture checks: a gate at start and a periodic monitor."""

    checks: list[ComponentRef] = Field(default_factory=list)
    interval_seconds: float = Field(
        default=300.0, ge=1, le=86_400, description="How often the monitor re-runs the checks."
    )
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="A check that takes longer is 'unknown'."
    )
    failure_threshold: int = Field(
        default=1, ge=1, le=100, description="Unhealthy rounds in a row before shutting down."
    )


class RateLimits(_Section):
    """Limits on how fast one session may send requests."""

    tool_calls_per_minute: int = Field(
        default=30,
        ge=0,
        le=100_000,
        description="Calls of one tool in one session within 60 s; each call beyond this "
        "needs a human's approval even where the policy allows it. 0 = no limit.",
    )
    requests_per_second: float = Field(
        default=50.0,
        ge=0,
        le=100_000,
        description="Global token bucket: sustained client requests per second; a request "
        "that finds the bucket empty is denied. 0 = no limit.",
    )
    burst: int = Field(
        default=100, ge=1, le=1_000_000, description="Token bucket size: the largest burst."
    )
    notifications_per_second: float = Field(
        default=100.0,
        ge=0,
        le=100_000,
        description="Token bucket per side: sustained notifications per second from the "
        "client, and separately notifications and requests (sampling, elicitation, roots) "
        "per second from the backend. Beyond it they are dropped (a backend request is "
        "answered with a denial), counted, and recorded together in one messages_dropped "
        "system record a second. 0 = no limit.",
    )
    notification_burst: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="Size of each side's notification bucket: the largest burst.",
    )


class ProxySection(_Section):
    """How ``mcp-acp run`` handles approvals, denials, limits and its control socket."""

    approval_timeout_seconds: float = Field(
        default=60.0,
        ge=5,
        le=300,
        description="Deny an 'ask' nobody answers in this time, unless the policy's "
        "hitl.timeout_seconds sets another.",
    )
    approval_cache_seconds: float = Field(
        default=600.0,
        ge=0,
        le=86_400,
        description="How long an approval given with --remember holds (same subject, tool "
        "and paths; never for code-executing tools; cleared on policy reload), unless the "
        "policy's rule approval or hitl section sets another. 0 = never.",
    )
    tool_denial: Literal["error", "result"] = Field(
        default="error",
        description="A denied tools/call answered as a JSON-RPC error ('error') or as a "
        "tool result with isError that the model can read ('result').",
    )
    tool_screening: Literal["quarantine", "off"] = Field(
        default="quarantine",
        description="'quarantine': a tool, resource, resource template or prompt the backend "
        "lists with hidden-instruction markers (tags such as <IMPORTANT>, control or invisible "
        "characters, a string over 8 KiB) is left out of its list, and calls of the tool, "
        "reads of the resource and gets of the prompt are denied. 'off': not screened.",
    )
    tool_pinning: bool = Field(
        default=True,
        description="Pin each tool's definition the first time a tools/list shows it "
        "(tool-pins.json beside this file); a tool whose definition later differs is left "
        "out of tools/list and its calls are denied until 'mcp-acp tools approve NAME'.",
    )
    new_tools: Literal["pin", "review"] = Field(
        default="pin",
        description="With tool_pinning: 'pin': a tool seen for the first time is pinned and "
        "usable at once (trust on first use). 'review': it is left out of tools/list and its "
        "calls are denied until 'mcp-acp tools approve NAME' (or --all) pins it; so are calls "
        "of tools no tools/list of the session showed approved.",
    )
    outbound_secrets: Literal["ask", "off"] = Field(
        default="ask",
        description="'ask': a tools/call the policy allows whose arguments carry what looks "
        "like a credential (a private key, a JWT, a GitHub token, an AWS key id, a bearer "
        "credential) goes to the approver first, and is never remembered. 'off': it does not.",
    )
    untrusted_content: Literal["ask", "off"] = Field(
        default="ask",
        description="'ask': once the session has seen untrusted content (a call of a tool "
        "with the side effect untrusted_content was forwarded, or hidden-instruction markers "
        "reached the client in a tools/call, resources/read or prompts/get answer or a "
        "sampling request of the backend's), a tools/call the policy allows that writes, deletes, "
        "executes or has the side effect network_egress goes to the approver first, and is "
        "never remembered. 'off': it does not (recorded at start).",
    )
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    socket_dir: ConfigPath | None = Field(
        default=None,
        description="Directory of the control socket (approvals, status); default: the "
        "user's runtime dir.",
    )
    desktop_notifications: bool = Field(
        default=True,
        description="Show a desktop notification when the proxy refuses to start or shuts "
        "down (osascript on macOS, notify-send on Linux when installed).",
    )

    @model_validator(mode="after")
    def _review_needs_pins(self) -> ProxySection:
        if self.new_tools == "review" and not self.tool_pinning:
            raise ValueError("new_tools 'review' needs tool_pinning: true (reviews are pins)")
        return self


class ToolsSection(_Section):
    """Extra tool-registry entries, consulted before the shipped registry."""

    registry: list[ToolEntry] = Field(
        default_factory=list,
        description="Tool name glob -> operations, side effects and path arguments.",
    )


class Config(_Section):
    """The whole config file."""

    version: Literal[1] = 1
    backend: Backend
    plugins: PluginsSection = Field(default_factory=PluginsSection)
    identity: ComponentRef = Field(default_factory=lambda: ComponentRef(use="local"))
    token_storage: ComponentRef | None = None
    approver: ComponentRef = Field(default_factory=lambda: ComponentRef(use="deny"))
    policy: ComponentRef = Field(default_factory=lambda: ComponentRef(use="acp"))
    tools: ToolsSection = Field(default_factory=ToolsSection)
    audit: AuditSection = Field(default_factory=AuditSection)
    posture: PostureSection = Field(default_factory=PostureSection)
    proxy: ProxySection = Field(default_factory=ProxySection)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True) + "\n"


def _loc(loc: tuple[int | str, ...]) -> str:
    parts = list(loc)
    # A tagged union puts the tag into the location ("backend.stdio.command"); users
    # wrote "backend.command", so drop it.
    if len(parts) > 1 and parts[0] == "backend" and parts[1] in ("stdio", "http"):
        del parts[1]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _shown(field: str, value: Any) -> str:
    if any(word in field.lower() for word in _SECRET_WORDS) or any(
        part in _SECRET_SECTIONS for part in field.split(".")
    ):
        return "<redacted>"
    if isinstance(value, str):
        value = redact_text(value)
    text = json.dumps(value, default=str) if not isinstance(value, dict) else "{…}"
    return text if len(text) <= 60 else text[:57] + "…"


def config_error_from_validation(
    exc: ValidationError,
    source: Path | str,
    *,
    prefix: str = "",
    plugin: str | None = None,
) -> ConfigError:
    """Turn pydantic's report into errors naming the file, the field and the value: one
    per problem, summed up by :func:`config_problems`."""
    if plugin:
        fix = f"correct that option (plugin {plugin!r} documents it)"
    else:
        fix = "correct that field ('mcp-acp schema config' lists every field)"
    problems = []
    for error in exc.errors(include_url=False):
        field = _loc(tuple(error["loc"]))
        if prefix:
            field = f"{prefix}.{field}" if field != "(top level)" else prefix
        where = f"{field} (plugin {plugin!r})" if plugin else field
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            text = f"{source}: {where}: {message}"
        else:
            text = f"{source}: {where} = {_shown(field, error.get('input'))}: {message}"
        problems.append(ConfigError(text, fix=fix))
    return config_problems(problems)


def config_problems(problems: Sequence[ConfigError]) -> ConfigError:
    """One error for one or more ``problems``, as every command shows it but ``config
    validate`` (which prints each): the first one's line, ``(and N more)``, and its fix
    followed by running ``config validate`` — to check again, or to see them all."""
    first, more = problems[0], len(problems) - 1
    then = f"{first.fix}, then run" if first.fix else "run"
    if not more:
        fix = f"{then} 'mcp-acp config validate'"
        return ConfigError(first.message, fix=fix, problems=problems)
    return ConfigError(
        f"{first.message} (and {more} more)",
        fix=f"{then} 'mcp-acp config validate' to see them all",
        problems=problems,
    )


def read_config_json(path: Path) -> dict[str, Any]:
    """Read and parse ``path`` after checking it is safe to trust. Raises ``ConfigError``."""
    if not entry_exists(path):
        raise ConfigError(
            f"no config file at {path}",
            fix=f"run 'mcp-acp init', or point --config / {CONFIG_ENV} at your file",
        )
    try:
        broken = broken_link(path) or broken_link(path.parent)
        problem = untrusted_file(path) if broken is None else None
    except FileNotFoundError:  # removed or renamed since the check above
        raise ConfigError(
            f"config file {path} disappeared while it was being read",
            fix="check what is replacing it, then run again",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot check config {path}: {_path_error(path, exc)}",
            fix="check the permissions of the file and of the directories on its path",
        ) from None
    if broken is not None:
        raise ConfigError(
            f"refusing to use config: {broken}",
            fix="point the link at your config file, or remove it and run 'mcp-acp init'",
        )
    if problem is not None:
        raise ConfigError(
            f"refusing to use config: {problem}",
            fix="chmod go-w it (and make sure you own it): whoever can change the config "
            "decides what passes",
        )
    if not path.is_file():
        raise ConfigError(
            f"config path {path} is not a regular file", fix="point --config at a JSON file"
        )
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES)
    except NotRegularFileError as exc:
        raise ConfigError(
            f"config path {path} is {exc.kind}, not a regular file",
            fix="point --config at a JSON file",
        ) from None
    except FileTooLargeError as exc:
        raise ConfigError(
            f"{path} is {exc.size} bytes, over the 1 MiB limit",
            fix="check that this is really the config file",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", fix="check the file's permissions"
        ) from exc
    bom = byte_order_mark(raw)
    if bom is not None:
        raise ConfigError(f"{path} {bom}", fix="save it as UTF-8 without a byte order mark")
    try:
        data = loads_strict(raw.decode("utf-8"))
    except DuplicateKeyError as exc:
        line = f"line {exc.line}: " if exc.line else ""
        raise ConfigError(
            f"{path}: {line}{exc.path}: key {exc.key!r} appears twice in one object",
            fix="keep one copy of it (JSON readers disagree on which copy counts)",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start})", fix="save the file as UTF-8"
        ) from exc
    except NumberTooLongError as exc:
        raise ConfigError(
            f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}",
            fix="no setting takes a number that long: check that this is really the config file",
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}",
            fix="fix the JSON syntax (a trailing comma or a missing quote is typical)",
        ) from exc
    except RecursionError:
        raise ConfigError(
            f"{path} nests arrays or objects too deeply to be a config file",
            fix="check that this is really the config file",
        ) from None
    if deeper_than(data, MAX_CONFIG_DEPTH):
        raise ConfigError(
            f"{path} nests arrays or objects more than {MAX_CONFIG_DEPTH} deep, too deeply "
            "to be a config file",
            fix="check that this is really the config file",
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a JSON object, not {type(data).__name__}",
            fix="start the file with '{'; 'mcp-acp init' writes a valid one",
        )
    return data


def load_config(path: Path) -> Config:
    """Read, check and validate the core shape of the config at ``path``."""
    data = read_config_json(path)
    try:
        config = Config.model_validate(data, context={CONFIG_DIR: path.parent})
    except ValidationError as exc:
        raise config_error_from_validation(exc, path) from exc
    _warn_if_others_read_secrets(path, data)
    return config


#: Configs warned about in this process (``policy show`` reads the config twice).
_warned_readable: set[str] = set()


def _readable_by_others(path: Path) -> int | None:
    """The mode of the file ``path`` leads to if the group or other users may read it —
    its read bit for them, and the search bit of every directory above it (a 0644 file in
    a 0700 directory is readable by no one else) — else ``None``."""
    real = Path(os.path.realpath(path))
    mode = stat.S_IMODE(real.stat().st_mode)
    reach = mode & 0o044
    for directory in real.parents:
        searchable = directory.stat().st_mode
        if not searchable & 0o001:
            reach &= ~0o004
        if not searchable & 0o010:
            reach &= ~0o040
    return mode if reach else None


def _warn_if_others_read_secrets(path: Path, data: dict[str, Any]) -> None:
    """Warn if other users (or the group) may read a config that holds what ``config show``
    hides (:func:`redacted`: ``backend.env`` and ``backend.headers`` values, a credential
    in an argument or URL, a secret-looking option). Written by ``init`` it is 0600; one
    copied into place may not be. A warning, not a refusal: reading it gives away a secret,
    not control of the proxy, which is what :func:`read_config_json` refuses."""
    try:
        mode = _readable_by_others(path)
    except OSError:  # gone since it was read: what was read is used, as before
        return
    if mode is not None and str(path) not in _warned_readable and redacted(data) != data:
        _warned_readable.add(str(path))
        log.warning(
            "warning: config %s is readable by other users (mode %04o) and holds values "
            "'config show' hides — fix: chmod 600 %s",
            path,
            mode,
            path,
        )


def save_config(config: Config, path: Path, *, replace: bool = True) -> None:
    """Write ``config`` to ``path`` atomically, mode 0600, in a 0700 directory; with
    ``replace=False``, only if no file is there by then (else ``ConfigError``)."""
    try:
        atomic_write_text(path, config.to_json(), replace=replace)
    except FileExistsError:
        raise ConfigError(
            f"a config file appeared at {path} while init ran",
            fix="pass --force to replace it, or edit it and run 'mcp-acp config validate'",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {one_line(str(exc.strerror or exc))}",
            fix="check that the directory exists and is writable by you",
        ) from exc


#: A name part that says "secret": whole parts only (``api-key``, ``access_token``,
#: ``X-Auth-Token``, ``password``), so ``--author`` or ``--path`` are not taken for one.
#: Or one of the unmistakable words glued to the end of a part (``PGPASSWORD``,
#: ``GITHUBTOKEN``, ``DBSECRET``): not ``key`` or ``auth``, which end ``hotkey`` and
#: ``oauth`` as often as a secret's name.
_SECRET_PART = (
    rf"(?:authorization|apikey|credentials|{'|'.join(_SECRET_WORDS)}"
    r"|[A-Za-z0-9]{1,32}(?:password|passwd|passphrase|secret|token))"
)
#: Its parts are bounded (8 either side, 64 characters each): a match may start after any
#: ``-``, and unbounded parts read the rest of ``a-a-a-…`` from each start — quadratic
#: time, hours for one long argument.
_SECRET_NAME = (
    rf"(?:[A-Za-z0-9]{{1,64}}[-_.]){{0,8}}{_SECRET_PART}(?:[-_.][A-Za-z0-9]{{1,64}}){{0,8}}"
)
#: ``name=value`` (an argument ``--api-key=…``, a URL's query ``?token=…``) whose name
#: looks secret.
_SECRET_PAIR = re.compile(rf"((?:^|(?<=[?&;\s-])){_SECRET_NAME}=)[^&;\s]+", re.IGNORECASE)
#: A header written as one argument (``--header "X-API-Key: …"``, as ``mcp-remote`` and
#: ``curl`` take it) whose name looks secret: its value, to the end of the line.
_SECRET_HEADER = re.compile(
    rf"((?:^|(?<=[\s\"'])){_SECRET_NAME}[ \t]*:[ \t]*)[^\s][^\r\n]*", re.IGNORECASE
)
#: In prose, ``key`` alone is the English word as often as a name (``a private key: keep
#: it …``, ``{"key": "value"}``): not taken for a secret's name there.
_NOT_JUST_KEY = r"(?!key[\"']?[ \t]*[:=])"
#: The same in prose — an error's or a record's text, where ``name:value`` without a space
#: is as often a plugin's name (``token_storage:file``) as a credential: a header written
#: ``Name: value``, its value up to a quote, an em dash (the ``— fix:`` that follows a
#: message) or the end of the line; or a quoted value after a secret name, quoted or not
#: (``"access_token": "…"``, ``{'api_key': '…'}``, ``X-Token: "…"``).
_PROSE_HEADER = re.compile(
    rf"((?:^|(?<=[\s\"'])){_NOT_JUST_KEY}{_SECRET_NAME}[ \t]*:[ \t]+)"
    r"[^\s—\"'](?:[^\r\n—\"']*[^\s—\"'])?",
    re.IGNORECASE,
)
_PROSE_QUOTED = re.compile(
    rf"((?:^|(?<=[\s\"'{{,])){_NOT_JUST_KEY}{_SECRET_NAME}[\"']?[ \t]*[:=][ \t]*)"
    r"(\"[^\"\r\n]*\"?|'[^'\r\n]*'?)",
    re.IGNORECASE,
)


def _quoted_redacted(match: re.Match[str]) -> str:
    quote = match.group(2)[0]
    return f"{match.group(1)}{quote}<redacted>{quote}"


#: A URL's password (``//user:password@host``).
_URL_PASSWORD = re.compile(r"(//[^/@:\s]*:)[^@/\s]+@")
#: An argument that says the next one is a secret (``--token X``, ``--api-key X``).
_SECRET_FLAG = re.compile(rf"-{{1,2}}{_SECRET_NAME}", re.IGNORECASE)


#: A URL in a text, up to where it ends; and its query and fragment (from ``?`` or ``#``).
#: The scheme is bounded (64 characters) for the same reason.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,63}://[^\s\"'<>]+")
_URL_TAIL = re.compile(r"[?#].*", re.DOTALL)
#: One piece of a URL's query or fragment: its separator, and ``name=value`` or a bare value.
_URL_PIECE = re.compile(r"([?&;#])([^?&;#]*)")


def _url_tail_redacted(tail: re.Match[str]) -> str:
    """A URL's query and fragment with every value replaced, names kept: a value there is a
    credential often enough under any name (``?sig=``, ``?t%6Fken=``, ``#access_token=``)."""

    def piece(match: re.Match[str]) -> str:
        separator, text = match.groups()
        name, equals, value = text.partition("=")
        if equals:
            return f"{separator}{name}={'<redacted>' if value else ''}"
        return f"{separator}{'<redacted>' if text else ''}"

    return _URL_PIECE.sub(piece, tail.group())


def redact_text(text: str) -> str:
    """``text`` with what looks like a credential replaced: every value of a URL's query
    and fragment, a URL's password, secret ``name=value`` pairs and ``Name: value``
    headers, and the shapes the audit trail redacts (bearer tokens, JWTs, PEM keys, GitHub
    tokens, AWS key ids)."""
    text = _URL.sub(lambda url: _URL_TAIL.sub(_url_tail_redacted, url.group(), count=1), text)
    text = _URL_PASSWORD.sub(r"\1<redacted>@", text)
    text = _SECRET_PAIR.sub(r"\1<redacted>", text)
    text = _SECRET_HEADER.sub(r"\1<redacted>", text)
    return redact(text)  # type: ignore[no-any-return]


def redact_prose(text: str) -> str:
    """:func:`redact_text` for prose — an error's text, a record's reason, a log line: a
    secret-named header's value is redacted only when written ``Name: value``, and up to a
    quote, an em dash or the end of the line (not ``token_storage:file``, nor the ``— fix:``
    after a message)."""
    text = _URL.sub(lambda url: _URL_TAIL.sub(_url_tail_redacted, url.group(), count=1), text)
    text = _URL_PASSWORD.sub(r"\1<redacted>@", text)
    text = _PROSE_QUOTED.sub(_quoted_redacted, text)
    text = _SECRET_PAIR.sub(r"\1<redacted>", text)
    text = _PROSE_HEADER.sub(r"\1<redacted>", text)
    return redact(text)  # type: ignore[no-any-return]


def redacted(value: Any, key: str = "") -> Any:
    """A copy of a config dump with secret-looking values replaced: every value under
    ``headers`` and ``env``, everything under a secret-looking key, the argument after a
    secret-looking flag, and credentials inside any string (:func:`redact_text`)."""
    if isinstance(value, dict):
        if key in _SECRET_SECTIONS:
            return {
                k: "<redacted>" if isinstance(v, str) else redacted(v, k) for k, v in value.items()
            }
        return {k: redacted(v, k) for k, v in value.items()}
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            flag = out[-1] if out and isinstance(out[-1], str) else ""
            secret = isinstance(item, str) and _SECRET_FLAG.fullmatch(flag) is not None
            out.append("<redacted>" if secret else redacted(item, key))
        return out
    if (
        isinstance(value, str)
        and key not in _NOT_SECRET_KEYS
        and any(word in key.lower() for word in _SECRET_WORDS)
    ):
        return "<redacted>"
    if isinstance(value, str):
        return redact_text(value)
    return value
