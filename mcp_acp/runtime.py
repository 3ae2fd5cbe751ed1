"""From a config file to ready-to-build components: the start-up path shared by every command.

``load_runtime`` reads the config, loads the allowed plugins, and validates every
component section (``identity``, ``approver``, ``posture.checks[i]``, …) against the model
its plugin registered. Nothing is instantiated yet — factories may do I/O — but every
mistake a user can make in the file has been reported by then, as one line naming the
field and the plugin. :meth:`Component.build` later checks what a factory returns against
its contract in :mod:`mcp_acp.protocols` (:data:`CONTRACTS`), so a plugin's mistake is
reported the same way, as the plugin's, before the object is used.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import types
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import attrs
from pydantic import BaseModel, ValidationError

from mcp_acp.audit.trail import AuditTrail
from mcp_acp.config import (
    CONFIG_DIR,
    ComponentRef,
    Config,
    HttpBackend,
    anchor_option_paths,
    anchor_path,
    config_error_from_validation,
    config_problems,
    load_config,
)
from mcp_acp.errors import ConfigError, McpAcpError, PluginError, exception_text
from mcp_acp.models import PostureStatus
from mcp_acp.notify import desktop_notify
from mcp_acp.plugins import (
    CONFIG_ALLOW_SOURCE,
    PluginSet,
    allow_advice,
    allowed_plugin_names,
    load_plugins,
)
from mcp_acp.posture import PostureMonitor
from mcp_acp.protocols import (
    Approver,
    AuditSink,
    IdentityProvider,
    PolicyEngine,
    PostureCheck,
    TlsProvider,
    TokenStorage,
)
from mcp_acp.registry import AuthRecorder, Kind, PluginContext, Registration, secret_env_names
from mcp_acp.shutdown import ShutdownCoordinator

__all__ = [
    "CONTRACTS",
    "OPTIONAL_MEMBERS",
    "Component",
    "Runtime",
    "anchor_component_paths",
    "anchor_raw_paths",
    "load_runtime",
    "plugins_for",
    "resolve_component",
    "resolve_runtime",
]


def anchor_raw_paths(model: type[BaseModel], raw: Any, base: Path) -> Any:
    """``raw`` options for ``model`` with the value of every path-typed field (``Path``,
    also inside ``| None``, lists, tuples and nested models) anchored like a
    :data:`~mcp_acp.config.ConfigPath` — ``~`` expanded, relative to ``base`` — *before*
    validation, so that a plugin's own validators (an "absolute path" check) see the path
    the config means. Anything else is left to the model to judge."""
    if not isinstance(raw, Mapping):
        return raw
    anchored = dict(raw)
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        key = alias if isinstance(alias, str) else (field.alias or name)
        if key in anchored:
            anchored[key] = _anchor_raw(field.annotation, anchored[key], base)
    return anchored


def _anchor_raw(annotation: Any, value: Any, base: Path) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _anchor_raw(args[0], value, base)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return _anchor_raw(members[0], value, base) if len(members) == 1 else value
    if origin in (list, tuple) and isinstance(value, list) and args:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return value  # a fixed-shape tuple: left to the model (and the anchoring after)
        return [_anchor_raw(args[0], item, base) for item in value]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return anchor_raw_paths(annotation, value, base)
    if (
        isinstance(annotation, type)
        and issubclass(annotation, PurePath)
        and isinstance(value, (str, PurePath))
        and os.fspath(value)
    ):
        try:
            anchored = anchor_path(Path(value), base)
        except ValueError:  # NUL, ~nosuchuser: the model or the anchoring after says so
            return value
        return os.fspath(anchored) if isinstance(value, str) else anchored
    return value


#: What a factory of each kind must return: the contracts in :mod:`mcp_acp.protocols`.
CONTRACTS: Mapping[Kind, type] = {
    Kind.IDENTITY_PROVIDER: IdentityProvider,
    Kind.TOKEN_STORAGE: TokenStorage,
    Kind.POSTURE_CHECK: PostureCheck,
    Kind.POLICY_ENGINE: PolicyEngine,
    Kind.APPROVER: Approver,
    Kind.AUDIT_SINK: AuditSink,
    Kind.TLS_PROVIDER: TlsProvider,
}


#: The optional members of each contract, which the proxy finds by name (see each
#: protocol's docstring) and calls without awaiting: where an object has one, it must be a
#: plain ``def`` (``write_soon`` returns a future; an ``async def`` one returns a coroutine
#: nobody runs).
OPTIONAL_MEMBERS: Mapping[type, tuple[str, ...]] = {
    AuditSink: ("write_sync", "write_soon", "check_health"),
    Approver: ("control_ops", "approval_settled", "ended_at_exit"),
    PolicyEngine: ("could_allow",),
    TokenStorage: ("lock_path",),
}


def contract_gaps(obj: object, contract: type) -> list[str]:
    """How ``obj`` falls short of ``contract`` (a protocol of :mod:`mcp_acp.protocols`),
    in words: an attribute or method it lacks, an attribute of another type, a method
    that is ``async def`` where the proxy calls it plainly or the other way round. Empty
    if it meets the contract. An optional member (:data:`OPTIONAL_MEMBERS`) may be
    missing; present, it must be a method the proxy can call plainly."""
    lacks: list[str] = []
    wrong: list[str] = []
    for name, hint in get_type_hints(contract).items():
        try:
            value = getattr(obj, name)
        except Exception:  # a property that raises is as good as missing
            lacks.append(name)
            continue
        if isinstance(hint, type) and not isinstance(value, hint):
            wrong.append(f"its {name} is {type(value).__name__}, not {hint.__name__}")
    for name, spec in vars(contract).items():
        if name.startswith("_") or not inspect.isfunction(spec):
            continue
        try:
            method = getattr(obj, name)
        except Exception:
            method = None
        if not callable(method):
            lacks.append(f"{name}()")
        elif inspect.iscoroutinefunction(spec) and not _is_async(method):
            wrong.append(f"its {name}() is not async def, and mcp-acp awaits it")
        elif not inspect.iscoroutinefunction(spec) and _is_async(method):
            wrong.append(f"its {name}() is async def, and mcp-acp calls it without awaiting")
    for name in OPTIONAL_MEMBERS.get(contract, ()):
        try:
            method = getattr(obj, name, None)
        except Exception:  # a property that raises: the proxy's look-up would raise too
            wrong.append(f"its {name} cannot be read")
            continue
        if method is None:
            continue  # optional: absent
        if not callable(method):
            wrong.append(f"its {name} is {type(method).__name__}, not a method")
        elif _is_async(method):
            wrong.append(f"its {name}() is async def, and mcp-acp calls it without awaiting")
    if lacks:
        listed = lacks[0] if len(lacks) == 1 else f"{', '.join(lacks[:-1])} and {lacks[-1]}"
        wrong.insert(0, f"it lacks {listed}")
    return wrong


def _is_async(method: Callable[..., Any]) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(method) or inspect.iscoroutinefunction(
        getattr(method, "__call__", None)  # noqa: B004 - its colour, not whether it is callable
    )


@attrs.frozen(slots=True)
class Component:
    """A selected implementation with its validated options, ready to build."""

    field: str
    registration: Registration
    options: BaseModel

    @property
    def describe(self) -> str:
        """``posture check 'disk' (plugin 'linux-posture', config field posture.checks[0])``:
        the component as error messages name it."""
        reg = self.registration
        return f"{reg.kind.label} {reg.name!r} (plugin {reg.plugin!r}, config field {self.field})"

    def build(self, context: PluginContext) -> Any:
        """Call the factory and check what it returns against the kind's contract
        (:data:`CONTRACTS`); ``PluginError`` naming the component if either fails."""
        try:
            # the factory gets a copy: options it changes (a model that is not frozen)
            # must not change what mcp-acp reads of them later — the SecretEnvName
            # variables it withholds from a stdio backend, for one
            built = self.registration.factory(self.options.model_copy(deep=True), context)
        except McpAcpError:
            raise  # already says what is wrong and how to fix it
        except BaseException as exc:  # a factory's sys.exit() too: not the command's status
            raise PluginError(
                f"{self.describe} failed to start: {exception_text(exc)}",
                fix=f"check the options under {self.field}.config",
            ) from exc
        contract = CONTRACTS[self.registration.kind]
        gaps = contract_gaps(built, contract)
        if gaps:
            article = "an" if contract.__name__[0] in "AEIOU" else "a"
            raise PluginError(
                f"{self.describe} returned {type(built).__name__}, not {article} "
                f"{contract.__name__} ({'; '.join(gaps)})",
                fix=f"the plugin's factory must return {article} {contract.__name__} (see "
                f"mcp_acp.protocols): report it to the authors of plugin "
                f"{self.registration.plugin!r}, or choose another {self.registration.kind.label} "
                f"at {self.field}.use",
            )
        return built


def resolve_component(
    plugins: PluginSet,
    kind: Kind,
    ref: ComponentRef,
    field: str,
    source: Path | str,
    *,
    config_dir: Path | None = None,
) -> Component:
    """Find the registration ``ref.use`` names and validate ``ref.config`` with its model.

    Every path in the options gets ``~`` expanded and, if relative, is taken from
    ``config_dir`` (the config file's directory; the working directory if ``None``):
    before the model validates them where the model types them as paths
    (:func:`anchor_raw_paths`), and every path in the validated options after.

    A name nobody registered is a ``ConfigError`` listing the names available and the
    installed plugins that are not allowed (what ``mcp-acp plugins`` shows: what they
    register is not known without importing them, and they are not imported)."""
    registration = plugins.registry.get(kind, ref.use)
    if registration is None:
        raise _unregistered(plugins, kind, ref.use, field, source)
    raw = anchor_raw_paths(registration.config_model, ref.config, config_dir or Path.cwd())
    try:
        options = registration.config_model.model_validate(raw, context={CONFIG_DIR: config_dir})
    except ValidationError as exc:
        raise config_error_from_validation(
            exc, source, prefix=f"{field}.config", plugin=registration.plugin
        ) from exc
    options = anchor_option_paths(options, config_dir or Path.cwd(), f"{source}: {field}.config")
    return Component(field=field, registration=registration, options=options)


def _unregistered(
    plugins: PluginSet, kind: Kind, name: str, field: str, source: Path | str
) -> ConfigError:
    available = ", ".join(plugins.registry.names(kind)) or "none"
    message = (
        f"{source}: {field}.use = {name!r}: no {kind.label} of that name is registered "
        f"(available: {available})"
    )
    idle = [p.name for p in plugins.plugins if p.status == "not allowed"]
    allow = plugins.allow_source
    if not idle:
        fix = (
            f"pick an available name, or install the plugin that provides {name!r} and allow "
            f"it ({allow_advice(allow)})"
        )
    elif len(idle) == 1:
        message += f"; installed but not allowed: {idle[0]}"
        fix = f"{allow_advice(allow, idle[0])} if it provides {name!r}, or pick an available name"
    else:
        message += f"; installed but not allowed: {', '.join(idle)}"
        fix = (
            f"allow the one that provides {name!r} ({allow_advice(allow)}), or pick an "
            "available name"
        )
    return ConfigError(message, fix=f"{fix} ('mcp-acp plugins' lists what each registers)")


@attrs.frozen(slots=True)
class Runtime:
    """A validated config, the loaded plugins, and the components the config selects."""

    config_path: Path
    config: Config
    plugins: PluginSet
    components: Mapping[str, Component]

    def context(self, *, record_auth: AuthRecorder | None = None) -> PluginContext:
        """The context factories receive; ``record_auth`` is the session's auth stream."""
        storage = "token_storage" in self.components
        return PluginContext(
            config_path=self.config_path,
            log_dir=self.config.audit.log_dir,
            fallback_path=self.config.audit.fallback_path,
            storage_factory=(lambda: self.build("token_storage")) if storage else None,
            recorder=record_auth,
        )

    @property
    def protected_dirs(self) -> dict[str, Path]:
        """mcp-acp's own directories and files, by what they are, which no request may name
        a path in, for the enforcement point's :class:`~mcp_acp.policy.protected.PathGuard`
        (defined once, with this config's audit fallback file:
        :attr:`PluginContext.protected_dirs <mcp_acp.registry.PluginContext.protected_dirs>`)."""
        return self.context().protected_dirs

    def build(self, field: str, *, record_auth: AuthRecorder | None = None) -> Any:
        """Instantiate the component selected at ``field`` (e.g. ``"identity"``); a field
        the config selects no component at is a ``ConfigError`` listing those it does."""
        component = self.components.get(field)
        if component is None:
            raise ConfigError(
                f"{self.config_path}: no component is selected at {field!r} (selected: "
                f"{', '.join(self.components)})",
                fix=f"add the section for {field} to the config, or build one of those "
                "fields (a program of its own: check the name it passes to Runtime.build)",
            )
        return component.build(self.context(record_auth=record_auth))

    def build_all(self) -> dict[str, Any]:
        """Build every component the config selects, as ``mcp-acp run`` does, without
        starting any: what ``config validate`` calls, so that a config ``run`` would refuse
        for a component's sake (an ``oidc`` identity without ``token_storage``, a policy
        file that does not load) fails validation too."""
        return {field: self.build(field) for field in self.components}

    def audit_trail(self, coordinator: ShutdownCoordinator) -> AuditTrail:
        """Every configured audit sink behind one fail-closed trail (not started yet), each
        named in its failures as :attr:`Component.describe` names it."""
        fields = [f"audit.sinks[{i}]" for i in range(len(self.config.audit.sinks))]
        return AuditTrail(
            [self.build(field) for field in fields],
            coordinator,
            health_interval=self.config.audit.health_check_seconds,
            names=[self.components[field].describe for field in fields],
            write_timeout=self.config.audit.write_timeout_seconds,
        )

    def posture_monitor(
        self,
        trail: AuditTrail,
        *,
        session_id: str,
        posture: dict[str, PostureStatus] | None = None,
    ) -> PostureMonitor:
        """Every posture check the config selects (``posture.checks``), built, behind one
        :class:`~mcp_acp.posture.PostureMonitor` with the config's interval, timeout and
        failure threshold, whose failures end the process through ``trail``'s shutdown
        coordinator (exit 15). ``posture``: the dict the session's decision requests read
        (``Session.posture``), kept up to date by the monitor. ``await monitor.gate()``
        before the first decision — ``PostureError`` unless every check passes, as
        ``mcp-acp run`` refuses to start — then, for a program that serves on,
        ``monitor.start_watching()`` and ``EnforcementPoint(unhealthy=lambda:
        monitor.failed)``. With no checks configured, the gate passes."""
        fields = [f"posture.checks[{i}]" for i in range(len(self.config.posture.checks))]
        settings = self.config.posture
        return PostureMonitor(
            [self.build(field) for field in fields],
            trail,
            session_id=session_id,
            posture=posture if posture is not None else {},
            interval=settings.interval_seconds,
            timeout=settings.timeout_seconds,
            failure_threshold=settings.failure_threshold,
            on_failure=trail.coordinator.trigger,
        )

    def shutdown_coordinator(self, session_id: str | None = None) -> ShutdownCoordinator:
        """The coordinator for this config's log directory and fallback file."""
        return ShutdownCoordinator(
            log_dir=self.config.audit.log_dir,
            fallback_path=self.config.audit.fallback_path,
            session_id=session_id,
            notify=self.notifier(),
            io_timeout=self.config.audit.write_timeout_seconds,
        )

    def secret_env_names(self) -> frozenset[str]:
        """The environment variables that hold a secret given to mcp-acp itself, which a
        stdio backend, the desktop notifier and the browser ``auth login`` opens must not
        inherit: the value of
        every option a plugin's model types :data:`~mcp_acp.registry.SecretEnvName`, in
        every component the config selects (nested option models included) — the
        ``encrypted-file`` token storage's ``passphrase_env``, for one, also as the
        ``keychain`` storage's fallback. mcp-acp's
        other variables (``MCP_ACP_CONFIG``, ``MCP_ACP_PLUGINS``, ``MCP_ACP_DEBUG``) are
        paths and switches, not secrets."""
        return frozenset(
            name
            for component in self.components.values()
            for name in secret_env_names(component.options)
        )

    def notifier(self) -> Callable[[str, str], bool] | None:
        """The desktop notifier, unless ``proxy.desktop_notifications`` is off; it starts
        its process without the secrets in our environment (:meth:`secret_env_names`)."""
        if not self.config.proxy.desktop_notifications:
            return None
        return functools.partial(desktop_notify, withhold=self.secret_env_names())


def load_runtime(config_path: Path, environ: Mapping[str, str] | None = None) -> Runtime:
    """Read the config, load allowed plugins, validate every component section."""
    return resolve_runtime(load_config(config_path), config_path, environ)


def resolve_runtime(
    config: Config,
    config_path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    source: Path | str | None = None,
    plugins: PluginSet | None = None,
    allow_source: str = CONFIG_ALLOW_SOURCE,
) -> Runtime:
    """Load the plugins ``config`` allows (unless ``plugins`` are given, loaded for it) and
    validate every component section.

    ``source`` names where the config came from in error messages (default: the path),
    ``allow_source`` where its ``plugins.allow`` did (``--plugin`` for ``mcp-acp init``).
    """
    plugins = plugins or plugins_for(config, environ, allow_source=allow_source)
    components: dict[str, Component] = {}
    failed: list[ConfigError] = []
    for kind, ref, field in _selected(config):
        try:
            components[field] = resolve_component(
                plugins, kind, ref, field, source or config_path, config_dir=config_path.parent
            )
        except ConfigError as exc:
            failed.append(exc)  # every section is checked: 'config validate' lists them all
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise config_problems([p for exc in failed for p in exc.problems or (exc,)])
    return Runtime(config_path, config, plugins, components)


def anchor_component_paths(config: Config, plugins: PluginSet, base: Path) -> Config:
    """``config`` with the path-typed options of every component it selects anchored at
    ``base`` (:func:`anchor_raw_paths`): what ``mcp-acp init`` does with the options given
    on its command line, whose relative paths mean the working directory, so that the file
    it writes holds them absolute. A component no plugin registers is left as it is, for
    :func:`resolve_runtime` to report."""
    data = config.model_dump(mode="json", exclude_none=True)
    for kind, ref, field in _selected(config):
        registration = plugins.registry.get(kind, ref.use)
        if registration is None or not ref.config:
            continue
        section: Any = data
        for key in re.findall(r"\w+", field):  # "posture.checks[0]" → posture, checks, 0
            section = section[int(key)] if key.isdigit() else section[key]
        section["config"] = anchor_raw_paths(registration.config_model, ref.config, base)
    return Config.model_validate(data)


def _selected(config: Config) -> list[tuple[Kind, ComponentRef, str]]:
    """Every component ``config`` selects: its kind, its section, and the field it is at."""
    selected: list[tuple[Kind, ComponentRef, str]] = [
        (Kind.IDENTITY_PROVIDER, config.identity, "identity"),
        (Kind.APPROVER, config.approver, "approver"),
        (Kind.POLICY_ENGINE, config.policy, "policy"),
    ]
    if config.token_storage is not None:
        selected.append((Kind.TOKEN_STORAGE, config.token_storage, "token_storage"))
    if isinstance(config.backend, HttpBackend) and config.backend.tls is not None:
        selected.append((Kind.TLS_PROVIDER, config.backend.tls, "backend.tls"))
    selected += [
        (Kind.POSTURE_CHECK, ref, f"posture.checks[{i}]")
        for i, ref in enumerate(config.posture.checks)
    ]
    selected += [
        (Kind.AUDIT_SINK, ref, f"audit.sinks[{i}]") for i, ref in enumerate(config.audit.sinks)
    ]
    return selected


def plugins_for(
    config: Config | None,
    environ: Mapping[str, str] | None = None,
    *,
    allow_source: str = CONFIG_ALLOW_SOURCE,
) -> PluginSet:
    """Load the plugins ``config`` allows (or the environment override says);
    ``allow_source`` names where ``config.plugins.allow`` came from."""
    allow, source = allowed_plugin_names(
        config.plugins.allow if config else [], environ, config_source=allow_source
    )
    return load_plugins(allow, allow_source=source)
