"""Plugin loading: built-ins first, then the *allowed* installed plugins, nothing else.

Installed distributions announce plugins under the ``mcp_acp`` entry-point group. pluggy's
own ``load_setuptools_entrypoints`` would import every one of them — and a stray
``entry_points.txt`` on ``sys.path`` is enough to get code run — so we iterate the entry
points ourselves and import only those named in the allowlist:

* ``plugins.allow`` in the config file, or
* the ``MCP_ACP_PLUGINS`` environment variable (comma-separated; set it empty to load
  none), which overrides the config.

Anything that goes wrong — an allowed plugin that is not installed or fails to import
(``SystemExit`` and ``KeyboardInterrupt`` raised by its code included), a hook with a
misspelled name (``check_pending``) or written as ``async def``, a name registered
twice — stops start-up
with a :class:`~mcp_acp.errors.PluginError` naming the plugin. Every entry point is looked
at before any is imported, so a plugin name two distributions claim (or one a built-in
has) stops start-up with neither imported, both named with where they are installed. A
distribution whose ``METADATA`` cannot be read (not UTF-8, say) is listed as ``?`` with a
warning naming its path when it is not allowed — what any installed distribution holds
never fails a command — and is a ``PluginError`` when it is. Every loaded plugin's name,
distribution and version is kept in :attr:`PluginSet.plugins` for the audit log and
``mcp-acp plugins``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import logging
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs
import click
import pluggy

from mcp_acp import __version__, hookspecs
from mcp_acp.errors import McpAcpError, PluginError, exception_text
from mcp_acp.registry import Kind, Registration, Registry

__all__ = [
    "ALLOW_ENV",
    "CONFIG_ALLOW_SOURCE",
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "ENV_ALLOW_SOURCE",
    "PluginInfo",
    "PluginSet",
    "add_plugin_commands",
    "allow_advice",
    "allowed_plugin_names",
    "load_plugins",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mcp_acp"
ALLOW_ENV = "MCP_ACP_PLUGINS"
#: Where the allowlist came from, as messages and the audit log name it.
CONFIG_ALLOW_SOURCE = "config plugins.allow"
ENV_ALLOW_SOURCE = f"environment variable {ALLOW_ENV}"

#: In-tree plugins, registered exactly like third-party ones and always loaded.
#: Each module is a short, complete example of a plugin.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "mcp_acp.builtins.local_identity",
    "mcp_acp.builtins.deny_approver",
    "mcp_acp.builtins.cli_approver",
    "mcp_acp.builtins.acp_policy",
    "mcp_acp.builtins.jsonl_audit",
    "mcp_acp.builtins.encrypted_file_tokens",
)

_REGISTRATION_HOOKS: Mapping[Kind, str] = {
    Kind.IDENTITY_PROVIDER: "register_identity_providers",
    Kind.TOKEN_STORAGE: "register_token_storages",
    Kind.POSTURE_CHECK: "register_posture_checks",
    Kind.POLICY_ENGINE: "register_policy_engines",
    Kind.APPROVER: "register_approvers",
    Kind.AUDIT_SINK: "register_audit_sinks",
    Kind.TLS_PROVIDER: "register_tls_providers",
}

Status = Literal["builtin", "loaded", "not allowed"]


@attrs.frozen(slots=True)
class PluginInfo:
    """One plugin: where it comes from and whether it was loaded."""

    name: str
    distribution: str
    version: str
    module: str
    status: Status


def allowed_plugin_names(
    config_allow: Sequence[str],
    environ: Mapping[str, str] | None = None,
    *,
    config_source: str = CONFIG_ALLOW_SOURCE,
) -> tuple[frozenset[str], str]:
    """Return the allowlist in force and where it came from (for messages and audit):
    the environment variable, else ``config_allow`` — which ``config_source`` names (the
    config file's ``plugins.allow``; ``--plugin`` for ``mcp-acp init``'s flags)."""
    env = os.environ if environ is None else environ
    if ALLOW_ENV in env:
        names = frozenset(n.strip() for n in env[ALLOW_ENV].split(",") if n.strip())
        return names, ENV_ALLOW_SOURCE
    return frozenset(config_allow), config_source


def allow_advice(source: str, name: str | None = None, *, remove: bool = False) -> str:
    """How to add plugin ``name`` (``None``: one not named yet) to the allowlist that came
    from ``source`` — or, with ``remove``, take it out: ``add 'x' to plugins.allow``,
    ``add x to MCP_ACP_PLUGINS``, ``pass --plugin x``."""
    if source.startswith("--"):  # a command-line flag, e.g. init's --plugin
        return f"drop {source} {name}" if remove else f"pass {source} {name or 'NAME'}"
    if source == ENV_ALLOW_SOURCE:  # comma-separated names: no quotes
        shown, where = name or "its name", ALLOW_ENV
    else:
        shown, where = repr(name) if name else "its name", "plugins.allow"
    return f"remove {shown} from {where}" if remove else f"add {shown} to {where}"


class PluginSet:
    """The result of loading: the pluggy manager, the registry, and what was loaded."""

    def __init__(
        self,
        manager: pluggy.PluginManager,
        registry: Registry,
        plugins: Sequence[PluginInfo],
        allow_source: str,
    ) -> None:
        self.manager = manager
        self.registry = registry
        self.plugins = tuple(plugins)
        self.allow_source = allow_source

    @property
    def loaded(self) -> tuple[PluginInfo, ...]:
        """Built-in and allowed plugins, in load order."""
        return tuple(p for p in self.plugins if p.status != "not allowed")

    def registrations(self, plugin: str) -> list[Registration]:
        return self.registry.by_plugin(plugin)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """Every entry point in group ``mcp_acp``, of the first distribution of each name on
    ``sys.path`` (a later copy is shadowed), as ``importlib.metadata.entry_points`` finds
    them — but a distribution whose files cannot be read is skipped with a warning naming
    its path, where ``entry_points()`` raises for all (it reads ``METADATA`` to name a
    distribution whose folder does not)."""
    found: list[importlib.metadata.EntryPoint] = []
    names: set[str] = set()
    for dist in importlib.metadata.distributions():
        where = _location(dist)
        name = _name_from_folder(where) or _read_distribution(dist)[0]
        key = _normalize(name) if name else where
        if key in names:
            continue
        names.add(key)
        try:
            found.extend(dist.entry_points.select(group=ENTRY_POINT_GROUP))
        except Exception as exc:  # its entry_points.txt: any bytes at all
            log.warning(
                "ignoring the distribution at %s: its entry_points.txt cannot be read (%s: %s)",
                where,
                type(exc).__name__,
                exc,
            )
    return sorted(found, key=lambda e: e.name)


def _location(dist: importlib.metadata.Distribution) -> str:
    """The ``.dist-info`` (or ``.egg-info``) folder ``dist`` was read from, for messages."""
    path = getattr(dist, "_path", None)  # PathDistribution's; no public name for it
    return str(path) if path is not None else "an unknown location"


def _name_from_folder(where: str) -> str | None:
    """The distribution name in a ``name-version.dist-info`` folder's name, as importlib
    takes it (without reading ``METADATA``); ``None`` if the folder does not say."""
    folder, ext = os.path.splitext(os.path.basename(where))
    if ext not in (".dist-info", ".egg-info"):
        return None
    return folder.partition("-")[0] or None


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _read_distribution(dist: importlib.metadata.Distribution) -> tuple[str | None, str, str]:
    """``dist``'s name and version from its ``METADATA`` — ``(None, "?", why)`` when that
    cannot be read (not UTF-8, missing, no ``Name``): any installed distribution's file,
    read before the allowlist is consulted, so nothing in it may fail the command."""
    try:
        metadata = dist.metadata  # parses METADATA on each access: read it once for both
        name, version = metadata["Name"], metadata["Version"]
    except Exception as exc:
        return None, "?", f"its METADATA cannot be read ({type(exc).__name__}: {exc})"
    if not isinstance(name, str) or not name:
        return None, "?", "its METADATA names no distribution (no Name field)"
    return name, version if isinstance(version, str) and version else "?", ""


@attrs.frozen(slots=True)
class _Claim:
    """One entry point in group ``mcp_acp`` and what is known of its distribution."""

    entry_point: importlib.metadata.EntryPoint
    distribution: str
    version: str
    where: str
    problem: str  # why its METADATA could not be read; "" when it could

    @classmethod
    def of(cls, ep: importlib.metadata.EntryPoint) -> _Claim:
        dist = ep.dist
        if dist is None:  # an EntryPoint made by hand (tests): no distribution to read
            return cls(ep, "?", "?", "", "")
        name, version, problem = _read_distribution(dist)
        return cls(ep, name or "?", version, _location(dist), problem)

    def describe(self) -> str:
        """``name version (path)``: who claims the name, told apart from a namesake."""
        who = f"{self.distribution} {self.version}"
        return f"{who} ({self.where})" if self.where else who


def load_plugins(
    allow: Collection[str],
    *,
    allow_source: str = CONFIG_ALLOW_SOURCE,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
) -> PluginSet:
    """Register built-ins, then the allowed entry-point plugins; validate; collect.

    Every entry point is looked at before any is imported: a name two distributions (or a
    distribution and a built-in) claim stops start-up with nothing imported. Raises
    :class:`PluginError` for that, for any plugin that cannot be loaded, and for allowed
    names that no installed distribution provides.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    builtin_names = {
        module_name.rsplit(".", 1)[-1].replace("_", "-") for module_name in DEFAULT_PLUGINS
    }

    claims = [_Claim.of(ep) for ep in (_entry_points() if entry_points is None else entry_points)]
    seen: dict[str, _Claim] = {}
    for claim in claims:
        name = claim.entry_point.name
        if name in builtin_names or name in seen:
            other = "mcp-acp (built-in)" if name in builtin_names else seen[name].describe()
            uninstall = " or ".join(
                f"pip uninstall {c.distribution}"
                for c in (seen.get(name), claim)
                if c is not None and c.distribution != "?"
            )
            raise PluginError(
                f"plugin name {name!r} is claimed by both {other} and {claim.describe()}; "
                "neither was imported",
                fix="remove the distribution that should not provide it"
                + (f" ({uninstall})" if uninstall else ""),
            )
        seen[name] = claim

    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        name = module_name.rsplit(".", 1)[-1].replace("_", "-")
        _register(manager, module, name)
        infos.append(PluginInfo(name, "mcp-acp", __version__, module_name, "builtin"))

    for claim in claims:
        ep, dist_name, version = claim.entry_point, claim.distribution, claim.version
        if ep.name not in allow:
            if claim.problem:
                log.warning(
                    "installed plugin %r (not allowed, not imported): the distribution at "
                    "%s is broken: %s",
                    ep.name,
                    claim.where,
                    claim.problem,
                )
            infos.append(PluginInfo(ep.name, dist_name, version, ep.value, "not allowed"))
            continue
        if claim.problem:
            raise PluginError(
                f"plugin {ep.name!r} comes from a broken distribution at {claim.where}: "
                f"{claim.problem}; not imported",
                fix=f"reinstall the distribution that provides it, or "
                f"{allow_advice(allow_source, ep.name, remove=True)}",
            )
        try:
            plugin = ep.load()
        except BaseException as exc:  # sys.exit() or KeyboardInterrupt in its code too
            raise PluginError(
                f"plugin {ep.name!r} ({dist_name} {version}) failed to import "
                f"{ep.value!r}: {exception_text(exc)}",
                fix=f"reinstall {dist_name}, or remove {ep.name!r} from the allowlist "
                f"({allow_source})",
            ) from exc
        _register(manager, plugin, ep.name)
        infos.append(PluginInfo(ep.name, dist_name, version, ep.value, "loaded"))
        log.info("loaded plugin %s (%s %s)", ep.name, dist_name, version)

    missing = sorted(set(allow) - set(seen))
    if missing:
        raise PluginError(
            f"plugin {missing[0]!r} is allowed by {allow_source} but no installed "
            f"distribution provides it; installed: {', '.join(sorted(seen)) or 'none'}",
            fix="check the spelling, install the distribution that provides it into mcp-acp's "
            "environment (by path or wheel file: see the README, 'Extras and plugins'), or "
            + allow_advice(allow_source, missing[0], remove=True),
        )

    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"plugin {manager.get_name(exc.plugin)!r} implements a hook mcp-acp does not "
            f"define: {_flat(str(exc))}",
            fix="check the hook name against mcp_acp.hookspecs",
        ) from exc

    registry = Registry()
    for kind, hook_name in _REGISTRATION_HOOKS.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            # Each plugin gets a ``register`` bound to its own name, so every
            # registration (and every clash) is attributed to the plugin that made it.
            register = registry.register_for(kind, impl.plugin_name)
            _call_plugin(impl, hook_name, register=register)
    return PluginSet(manager, registry, infos, allow_source)


def _register(manager: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        manager.register(plugin, name=name)
    except BaseException as exc:  # attribute look-ups can run the plugin's code
        mismatch = _parameter_mismatch(manager, plugin, name)
        if mismatch is not None:
            raise mismatch from exc
        raise PluginError(
            f"plugin {name!r} cannot be registered: {type(exc).__name__}: {_flat(str(exc))}",
            fix="check its hook signatures against mcp_acp.hookspecs",
        ) from exc
    # every hook is called synchronously: an async one would be "loaded" and do nothing
    for caller in manager.get_hookcallers(plugin) or ():
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and (
                inspect.iscoroutinefunction(impl.function)
                or inspect.isasyncgenfunction(impl.function)
            ):
                manager.unregister(plugin)
                raise PluginError(
                    f"plugin {name!r} implements hook {caller.name!r} with async def, "
                    "and mcp-acp calls hooks synchronously",
                    fix=f"make {caller.name} a plain def (do async work later, in the "
                    "registered object's methods)",
                )


def _parameter_mismatch(
    manager: pluggy.PluginManager, plugin: object, name: str
) -> PluginError | None:
    """The error for a hook of ``plugin`` that takes a parameter its spec does not pass
    (``register_approvers(reg)``), which pluggy reports over three lines; ``None`` if
    there is none (or looking for it fails: the caller then reports pluggy's words)."""
    try:
        for hook_name, caller in vars(manager.hook).items():
            spec = getattr(caller, "spec", None)
            if spec is None or manager.parse_hookimpl_opts(plugin, hook_name) is None:
                continue
            taken = list(inspect.signature(getattr(plugin, hook_name)).parameters)
            extra = [p for p in taken if p not in spec.argnames]
            if extra:
                passed = ", ".join(spec.argnames)
                return PluginError(
                    f"plugin {name!r} implements hook {hook_name!r} with parameter(s) "
                    f"{', '.join(extra)}, which the hook does not pass (it passes: {passed})",
                    fix=f"write it as def {hook_name}({passed}) (see mcp_acp.hookspecs)",
                )
    except Exception:  # a plugin object whose attributes misbehave
        return None
    return None


def _flat(text: str) -> str:
    """``text`` (pluggy's messages have several lines) as one line: its lines joined."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _call_plugin(impl: pluggy.HookImpl, hook_name: str, **kwargs: object) -> None:
    """Call one plugin's hook. Whatever it raises is a :class:`PluginError` naming the
    plugin and the hook — an error of mcp-acp's own kind (``AuditError``, a ``PluginError``
    it made up) too: the plugin's code raised it, not the proxy. Only the errors its
    ``register`` raised pass as they are: they name the plugin already."""
    from_register: list[PluginError] = []
    register = kwargs.get("register")
    if callable(register):
        kwargs["register"] = _noting_errors(register, from_register)
    try:
        result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
    except BaseException as exc:  # sys.exit() or KeyboardInterrupt in its code too
        if any(exc is own for own in from_register):
            raise
        text = exc.message if isinstance(exc, McpAcpError) else str(exc)
        raise PluginError(
            f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {text}",
            fix=f"report it to the plugin's authors, or remove {impl.plugin_name!r} "
            f"from the allowlist",
        ) from exc
    if inspect.isawaitable(result):  # e.g. a sync wrapper around a coroutine function
        if inspect.iscoroutine(result):
            result.close()
        raise PluginError(
            f"plugin {impl.plugin_name!r} returned an awaitable from {hook_name}, "
            "and mcp-acp calls hooks synchronously",
            fix=f"make {hook_name} a plain def that registers before returning",
        )


def _noting_errors(
    register: Callable[..., object], noted: list[PluginError]
) -> Callable[..., object]:
    """``register``, noting each :class:`PluginError` it raises in ``noted``."""

    @functools.wraps(register)
    def noting(*args: Any, **kwargs: Any) -> object:
        try:
            return register(*args, **kwargs)
        except PluginError as exc:
            noted.append(exc)
            raise

    return noting


def add_plugin_commands(cli: click.Group, plugins: PluginSet) -> dict[str, str]:
    """Let each loaded plugin add CLI commands; return ``{command: plugin}``.

    A plugin that replaces a built-in or another plugin's command is a ``PluginError``.
    """
    owners = {name: "mcp-acp" for name in cli.commands}
    for impl in plugins.manager.hook.register_commands.get_hookimpls():
        before = dict(cli.commands)
        _call_plugin(impl, "register_commands", cli=cli)
        for name, command in cli.commands.items():
            if name in before and before[name] is not command:
                cli.commands[name] = before[name]
                raise PluginError(
                    f"plugin {impl.plugin_name!r} tried to replace command {name!r} "
                    f"of {owners[name]}",
                    fix="rename the plugin's command",
                )
            if name not in before:
                owners[name] = impl.plugin_name
    return {name: owner for name, owner in owners.items() if owner != "mcp-acp"}
