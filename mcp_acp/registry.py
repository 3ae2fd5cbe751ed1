"""What plugins register: named factories, each with the pydantic model of its config.

A plugin's registration hook receives a :class:`Register` callable::

    @hookimpl
    def register_posture_checks(register):
        register("marker-file", MarkerFileCheck.from_config, MarkerFileConfig,
                 summary="passes while a marker file exists")

The config file then selects the implementation by name, and the section under
``config`` is validated by the registered model before the factory is called::

    "posture": {"checks": [{"use": "marker-file", "config": {"path": "/etc/mdm"}}]}

A factory is called as ``factory(options, context)`` with the validated model instance
and a :class:`PluginContext`, and returns the implementation (for example a
:class:`~mcp_acp.protocols.PostureCheck`). One whose signature cannot take those two
arguments is refused when it is registered, and so is a config model that lets a key it
does not know pass (pydantic's default drops it): each model, and every one nested in it,
must say ``extra="forbid"``, so that a misspelt option is an error, not a default kept.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Protocol,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

import attrs
from pydantic import BaseModel, ConfigDict, RootModel

from mcp_acp.errors import ConfigError, PluginError
from mcp_acp.shutdown import fallback_shutdowns

if TYPE_CHECKING:
    from mcp_acp.audit.events import AuthEvent
    from mcp_acp.protocols import TokenStorage

__all__ = [
    "AuthRecorder",
    "Kind",
    "NoOptions",
    "PluginContext",
    "Register",
    "Registration",
    "Registry",
    "SecretEnv",
    "SecretEnvName",
    "secret_env_names",
]


class Kind(enum.StrEnum):
    """The kinds of component a plugin can register; one registration hook each."""

    IDENTITY_PROVIDER = "identity_provider"
    TOKEN_STORAGE = "token_storage"  # noqa: S105 - a component kind, not a secret
    POSTURE_CHECK = "posture_check"
    POLICY_ENGINE = "policy_engine"
    APPROVER = "approver"
    AUDIT_SINK = "audit_sink"
    TLS_PROVIDER = "tls_provider"

    @property
    def label(self) -> str:
        """Human wording, e.g. ``"identity provider"``."""
        return self.value.replace("_", " ")


class NoOptions(BaseModel):
    """Config model for components that take no options: any key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretEnv:
    """Marks an option whose value names an environment variable that holds a secret given
    to mcp-acp (a passphrase, a client secret). ``mcp-acp run`` withholds every variable so
    named from a stdio backend's environment, and ``mcp-acp auth login`` from the browser it
    opens. Use it through :data:`SecretEnvName`."""

    def __repr__(self) -> str:
        return "SecretEnv()"


SecretEnvName = Annotated[str, SecretEnv()]
"""The type of such an option, alone or inside ``| None`` or ``list[...]``::

    class MyIdpConfig(BaseModel):
        client_secret_env: SecretEnvName | None = None
"""


def _marks_secret_env(annotation: Any) -> bool:
    """Whether ``annotation`` is, or contains, ``Annotated[..., SecretEnv()]``."""
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        return any(isinstance(e, SecretEnv) for e in extras) or _marks_secret_env(base)
    return any(_marks_secret_env(arg) for arg in get_args(annotation))


def secret_env_names(options: BaseModel) -> Iterator[str]:
    """The values of every :data:`SecretEnvName` option in ``options`` and in the option
    models nested in it (fields holding a model, or a list of models)."""
    for name, field in type(options).model_fields.items():
        value = getattr(options, name)
        values = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(m, SecretEnv) for m in field.metadata) or _marks_secret_env(
            field.annotation
        ):
            yield from (v for v in values if isinstance(v, str))
            continue
        for item in values:
            if isinstance(item, BaseModel):
                yield from secret_env_names(item)


AuthRecorder = Callable[["AuthEvent"], Awaitable[None]]
"""Records an auth event in the session's audit trail; raises ``AuditError`` if it cannot."""


@attrs.frozen(slots=True)
class PluginContext:
    """What a factory may need besides its options. Passed to every factory.

    * ``config_path`` / ``log_dir`` / ``fallback_path`` — where the config file, the audit
      trail and the events it could not take live (:attr:`protected_dirs`: what no request
      may name);
    * :meth:`token_storage` — the ``token_storage`` component the config selects (for an
      identity provider that keeps tokens);
    * :meth:`record_auth` — the auth stream of the running session's audit trail (for an
      identity provider's ``token_*`` events). Outside ``mcp-acp run`` (``auth status``,
      tests) there is no session and the event is dropped.
    """

    config_path: Path
    log_dir: Path
    fallback_path: Path | None = attrs.field(default=None, kw_only=True)
    storage_factory: Callable[[], TokenStorage] | None = attrs.field(default=None, kw_only=True)
    recorder: AuthRecorder | None = attrs.field(default=None, kw_only=True)

    @property
    def config_dir(self) -> Path:
        return self.config_path.parent

    @property
    def protected_dirs(self) -> dict[str, Path]:
        """mcp-acp's own directories and files, by what they are, which no request through
        the proxy may name a path in (``builtin-protected-path``: see
        :mod:`mcp_acp.policy.protected`): the config file's directory and the audit log
        directory, whole; and, with a ``fallback_path``, the audit fallback file and the
        shutdown record the coordinator writes beside it when the log directory fails —
        those files only, since their directory may be shared (``/tmp``)."""
        protected = {"config directory": self.config_dir, "audit log directory": self.log_dir}
        if self.fallback_path is not None:
            protected["audit fallback file"] = self.fallback_path
            protected["audit fallback shutdown record"] = fallback_shutdowns(self.fallback_path)
        return protected

    def token_storage(self) -> TokenStorage:
        """Build the configured token storage; ``ConfigError`` when the config has none."""
        if self.storage_factory is None:
            raise ConfigError(
                f"{self.config_path}: this component needs a token_storage section",
                fix='add "token_storage": {"use": "<name>"} (\'mcp-acp plugins\' lists them)',
            )
        return self.storage_factory()

    async def record_auth(self, event: AuthEvent) -> None:
        """Record ``event`` durably in the session's auth stream (fail closed: an
        ``AuditError`` propagates, so the request in flight is denied)."""
        if self.recorder is not None:
            await self.recorder(event)


Factory = Callable[[Any, PluginContext], Any]

#: A name a config's ``"use"`` can select (:class:`mcp_acp.config.ComponentRef`'s pattern).
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


def _call_error(factory: Factory) -> str | None:
    """Why ``factory(options, context)`` would fail for its signature alone (``it takes
    (options): too many positional arguments``), or ``None`` — also when the signature
    cannot be read (some built-in and extension callables): the call will tell then."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(None, None)
    except TypeError as exc:
        bare = signature.replace(  # the parameters as the plugin wrote them, less the types
            parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
            return_annotation=signature.empty,
        )
        return f"it takes {bare}: {exc}"
    return None


def _lenient_model(model: type[BaseModel]) -> str | None:
    """How ``model``, or a model, dataclass or ``TypedDict`` nested in its options, lets a
    key it does not know pass (pydantic's default drops it, ``extra='allow'`` keeps it):
    ``"Options ignores unknown keys (extra='ignore')"``; ``None`` if every one forbids."""
    seen: set[object] = set()
    todo: list[tuple[Any, str]] = [(model, "")]
    while todo:
        annotation, where = todo.pop()
        config: Any = None
        hints: dict[str, Any] = {}
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                continue
            seen.add(annotation)
            hints = {name: f.annotation for name, f in annotation.model_fields.items()}
            if not issubclass(annotation, RootModel):  # a root model has no keys of its own
                config = annotation.model_config
        elif isinstance(annotation, type) and (
            dataclasses.is_dataclass(annotation) or is_typeddict(annotation)
        ):
            if annotation in seen:
                continue
            seen.add(annotation)
            config = getattr(annotation, "__pydantic_config__", None) or {}
            try:
                hints = get_type_hints(annotation)
            except Exception:  # unresolvable hints: pydantic refuses such a model anyway
                hints = {}
        else:
            todo.extend((arg, where) for arg in get_args(annotation))
            continue
        if config is not None:
            extra = config.get("extra") or "ignore"
            if extra != "forbid":
                verb = "accepts" if extra == "allow" else "ignores"
                name = annotation.__name__
                nested = (
                    f"{model.__name__}, at option {where}, nests {name}, which" if where else name
                )
                return f"{nested} {verb} unknown keys (extra={extra!r})"
        for field, hint in hints.items():
            todo.append((hint, f"{where}.{field}" if where else field))
    return None


class Register(Protocol):
    """The callable a registration hook receives."""

    def __call__(
        self,
        name: str,
        factory: Factory,
        config_model: type[BaseModel] = NoOptions,
        *,
        summary: str = "",
    ) -> None: ...


@attrs.frozen(slots=True)
class Registration:
    """One named factory, who registered it, and how its config is validated."""

    kind: Kind
    name: str
    factory: Factory
    config_model: type[BaseModel]
    plugin: str
    summary: str = ""


class Registry:
    """All registrations, by kind and name. Names are unique within a kind."""

    def __init__(self) -> None:
        self._by_kind: dict[Kind, dict[str, Registration]] = {kind: {} for kind in Kind}

    def register_for(self, kind: Kind, plugin: str) -> Register:
        """Return the ``register`` callable handed to ``plugin``'s hook for ``kind``."""

        def register(
            name: str,
            factory: Factory,
            config_model: type[BaseModel] = NoOptions,
            *,
            summary: str = "",
        ) -> None:
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise PluginError(  # shown with !a: a look-alike letter is told apart
                    f"plugin {plugin!r} registered a {kind.label} with invalid name {name!a}",
                    fix="use lowercase letters, digits and '-' (not first), as a config's "
                    '"use" takes it',
                )
            if not isinstance(summary, str):  # 'mcp-acp plugins' prints it
                raise PluginError(
                    f"plugin {plugin!r} registered {kind.label} {name!r} with a summary that "
                    f"is {type(summary).__name__}, not a str",
                    fix="pass summary='one line on what it does', or leave it out",
                )
            if not callable(factory):
                raise PluginError(
                    f"plugin {plugin!r} registered {kind.label} {name!r} with a "
                    f"factory that is not callable",
                    fix="pass a function or class as the factory",
                )
            wrong_call = _call_error(factory)
            if wrong_call is not None:  # the plugin's bug: not the options a user gave it
                raise PluginError(
                    f"plugin {plugin!r} registered {kind.label} {name!r} with a factory "
                    f"that cannot be called as factory(options, context): {wrong_call}",
                    fix="give the factory (or the class's __init__) the two parameters "
                    "options and context; report it to the plugin's authors",
                )
            if not (isinstance(config_model, type) and issubclass(config_model, BaseModel)):
                raise PluginError(
                    f"plugin {plugin!r} registered {kind.label} {name!r} with a config "
                    f"model that is not a pydantic model",
                    fix="pass a pydantic BaseModel subclass (or leave it out)",
                )
            lenient = _lenient_model(config_model)
            if lenient is not None:  # a misspelt option would be dropped, its default used
                raise PluginError(
                    f"plugin {plugin!r} registered {kind.label} {name!r} with a config model "
                    f"that does not refuse unknown keys: its config model {lenient}, so a "
                    "misspelt option would be dropped unseen",
                    fix="give each model model_config = ConfigDict(extra='forbid'); report it "
                    "to the plugin's authors",
                )
            existing = self._by_kind[kind].get(name)
            if existing is not None:
                raise PluginError(
                    f"{kind.label} {name!r} is registered by both plugin "
                    f"{existing.plugin!r} and plugin {plugin!r}",
                    fix="allow only one of the two plugins, or register under another name "
                    "(a built-in's name cannot be taken)",
                )
            self._by_kind[kind][name] = Registration(
                kind=kind,
                name=name,
                factory=factory,
                config_model=config_model,
                plugin=plugin,
                summary=summary,
            )

        return register

    def get(self, kind: Kind, name: str) -> Registration | None:
        return self._by_kind[kind].get(name)

    def names(self, kind: Kind) -> list[str]:
        return sorted(self._by_kind[kind])

    def __iter__(self) -> Iterator[Registration]:
        for kind in Kind:
            yield from self._by_kind[kind].values()

    def by_plugin(self, plugin: str) -> list[Registration]:
        return [reg for reg in self if reg.plugin == plugin]
