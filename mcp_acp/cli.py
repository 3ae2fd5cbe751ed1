"""The ``mcp-acp`` command line.

Every failure a user can cause ends in one line on stderr — ``<kind> error: <what> — fix:
<how>`` — and the exit code of its class (see :mod:`mcp_acp.errors`); ``--debug`` adds the
traceback before it. ``config validate`` and ``init``, which check a whole config, first
print each of its problems on a line of its own. Plugins add commands through the
``register_commands`` hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import re
import shlex
import sys
import traceback
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
from pydantic import BaseModel, ValidationError

from mcp_acp import __version__
from mcp_acp._fs import atomic_write_text, untrusted_place
from mcp_acp._json import NumberTooLongError, deeper_than, loads
from mcp_acp.audit.chain import line_schema
from mcp_acp.audit.events import EVENT_MODELS, without_secrets
from mcp_acp.config import (
    CONFIG_DIR,
    MAX_CONFIG_DEPTH,
    Backend,
    Config,
    HttpBackend,
    absolute_path,
    config_error_from_validation,
    default_config_path,
    default_log_dir,
    entry_exists,
    is_relative_to,
    load_config,
    redacted,
    resolve_config_path,
    save_config,
)
from mcp_acp.errors import (
    ConfigError,
    McpAcpError,
    PolicyError,
    exception_text,
    one_line,
    printable,
)
from mcp_acp.plugins import PluginSet, add_plugin_commands
from mcp_acp.policy.engine import AcpConfig
from mcp_acp.policy.load import load_policy
from mcp_acp.policy.model import PolicyFile
from mcp_acp.policy.protected import protected_overlap
from mcp_acp.registry import Kind, Registration
from mcp_acp.runtime import (
    Runtime,
    anchor_component_paths,
    load_runtime,
    plugins_for,
    resolve_runtime,
)
from mcp_acp.startup import resume_collection

__all__ = ["cli", "main"]

DEBUG_ENV = "MCP_ACP_DEBUG"


#: Built-in commands that live in modules of their own, imported when the command is run
#: or listed: ``mcp-acp run`` should not load them before it starts the backend.
LAZY_COMMANDS: Mapping[str, str] = {
    "approvals": "mcp_acp.control_cli:approvals_group",
    "audit": "mcp_acp.audit.cli:audit_group",
    "logs": "mcp_acp.audit.cli:logs_group",
    "policy": "mcp_acp.policy.cli:policy_group",
    "status": "mcp_acp.control_cli:status_command",
    "tools": "mcp_acp.proxy.pins_cli:tools_group",
}


class _Cli(click.Group):
    """A group that imports the :data:`LAZY_COMMANDS` and adds the allowed plugins'
    commands when it is asked for them."""

    def _builtin(self, name: str) -> click.Command | None:
        if name not in self.commands and name in LAZY_COMMANDS:
            module, _, attr = LAZY_COMMANDS[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return self.commands.get(name)

    def builtin_commands(self) -> dict[str, click.Command]:
        """Every built-in command by name (the lazy ones imported)."""
        for name in LAZY_COMMANDS:
            self._builtin(name)
        return dict(self.commands)

    def _plugin_commands(self, ctx: click.Context, *, strict: bool) -> dict[str, click.Command]:
        if "plugin_commands" not in ctx.meta:
            try:
                plugins = _load_plugins(ctx)
                builtins = self.builtin_commands()
                scratch = click.Group(commands=dict(builtins))
                add_plugin_commands(scratch, plugins)
                ctx.meta["plugin_commands"] = {
                    name: cmd for name, cmd in scratch.commands.items() if name not in builtins
                }
            except McpAcpError:
                if strict:
                    raise
                return {}  # listing commands for --help must not fail on a broken config
        commands: dict[str, click.Command] = ctx.meta["plugin_commands"]
        return commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = {*self.commands, *LAZY_COMMANDS, *self._plugin_commands(ctx, strict=False)}
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._builtin(cmd_name) or self._plugin_commands(ctx, strict=True).get(cmd_name)


def _config_path(ctx: click.Context) -> Path:
    root = ctx.find_root()
    return resolve_config_path(root.params.get("config"))


def _load_plugins(ctx: click.Context) -> PluginSet:
    """Plugins as the config allows them; with no config file yet, as the env allows."""
    path = _config_path(ctx)
    config = load_config(path) if entry_exists(path) else None
    return plugins_for(config)


@click.group(cls=_Cli)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MCP_ACP_CONFIG",
    help="Config file (default: config.json in the platform config dir).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="mcp-acp")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, debug: bool) -> None:
    """mcp-acp: Zero Trust access control between MCP clients and servers."""
    if ctx.invoked_subcommand != "run":
        resume_collection()  # start-up is over; `run` resumes once its backend has started


# ---------------------------------------------------------------- init


#: Where ``init``'s config comes from, in its error messages (no file has been written).
INIT_FLAGS = "mcp-acp init flags"


def _nth(index: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``11th`` … (which of a repeated flag is meant)."""
    suffix = "th" if 10 <= index % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(index % 10, "th")
    return f"{index}{suffix}"


def _component_option(value: str | None, flag: str) -> dict[str, Any] | None:
    """Parse ``NAME`` or ``NAME=JSON`` (the component's options) from a flag.

    An error names the flag and what is wrong with it, never its value: the options may
    hold a client secret."""
    if value is None:
        return None
    name, sep, raw = value.partition("=")
    if not sep:
        return {"use": name}
    fix = f"""write it as {flag} 'NAME={{"option": "value"}}'"""
    try:
        options = loads(raw)
    except NumberTooLongError as exc:
        raise ConfigError(
            f"{flag}: in the options after '=', {exc.msg} (character {exc.pos + 1} of them); "
            "the value is not shown, it may hold a secret",
            fix="no option takes a number that long; give it as a string if it is one",
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{flag}: the options after '=' are not valid JSON "
            f"(character {exc.pos + 1} of them: {exc.msg}); the value is not shown, it may "
            "hold a secret",
            fix=fix,
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{flag}: the options after '=' nest arrays or objects too deeply", fix=fix
        ) from None
    if deeper_than(options, MAX_CONFIG_DEPTH):
        raise ConfigError(
            f"{flag}: the options after '=' nest arrays or objects more than "
            f"{MAX_CONFIG_DEPTH} deep",
            fix=fix,
        )
    if not isinstance(options, dict):
        raise ConfigError(
            f"{flag}: the options after '=' must be a JSON object, not {type(options).__name__}",
            fix=fix,
        )
    return {"use": name, "config": options}


def _pairs(values: Sequence[str], flag: str, sep: str = "=") -> dict[str, str]:
    """``KEY<sep>VALUE`` flags as a dict. An error names the flag and which of them (the
    value may be a credential: it is never shown)."""
    out: dict[str, str] = {}
    for index, item in enumerate(values, start=1):
        key, found, value = item.partition(sep)
        if not found or not key.strip():
            problem = f"no {sep!r} in it" if not found else f"nothing before the {sep!r}"
            raise ConfigError(
                f"the {_nth(index)} {flag} is not NAME{sep}VALUE ({problem}; the value is "
                "not shown, it may hold a secret)",
                fix=f"write it as {flag} NAME{sep}VALUE",
            )
        out[key.strip()] = value.strip() if sep == ":" else value
    return out


def _prompt_command_line() -> list[str]:
    """Ask for the backend's command line until it splits (as a shell would) into at least
    a command; say what is wrong with an answer that does not."""
    while True:
        line = click.prompt(
            "Backend command line (e.g. npx -y @modelcontextprotocol/"
            "server-filesystem /home/me/project)"
        )
        try:
            argv = shlex.split(line)
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            click.echo(
                f"error: the command line cannot be split into words: {str(exc).lower()}; "
                "close every quote (or quote a trailing backslash) and enter it again",
                err=True,
            )
            continue
        if argv:
            return argv
        click.echo("error: the command line is empty; enter the command to start", err=True)


def _own_log_dir(config_path: Path) -> Path:
    """The audit directory ``init`` suggests for a config file: the platform's for the
    default config file, a directory of its own beside it for any other (each backend gets
    a config file, and two proxies cannot share one log directory)."""
    if config_path == default_config_path():
        return default_log_dir()
    return default_log_dir() / config_path.stem


def _prompt_missing(
    values: dict[str, Any], plugins_installed: Sequence[str], log_dir: Path
) -> None:
    """Interactive init: ask for what the flags did not give."""
    if values["backend_command"] is None and values["backend_url"] is None:
        transport = click.prompt(
            "Backend transport", type=click.Choice(["stdio", "http"]), default="stdio"
        )
        if transport == "stdio":
            argv = _prompt_command_line()
            values["backend_command"], values["backend_arg"] = argv[0], tuple(argv[1:])
        else:
            values["backend_url"] = click.prompt("Backend URL (https://…/mcp)")
    if not values["plugin"] and plugins_installed:
        answer = click.prompt(
            f"Plugins to allow (installed: {', '.join(plugins_installed)}; comma-separated)",
            default="",
            show_default=False,
        )
        values["plugin"] = tuple(p.strip() for p in answer.split(",") if p.strip())
    if values["identity"] is None:
        values["identity"] = click.prompt("Identity provider", default="local")
    if values["approver"] is None:
        values["approver"] = click.prompt("Approver for 'ask' rules", default="deny")
    if values["log_dir"] is None:
        values["log_dir"] = Path(click.prompt("Audit log directory", default=str(log_dir)))


#: Where ``init``'s errors say the config came from.


def _config_from_flags(values: dict[str, Any]) -> Config:
    if values["backend_command"] and values["backend_url"]:
        raise ConfigError(
            "--backend-command and --backend-url both given",
            fix="a proxy has one backend: pass only one of them",
        )
    backend: dict[str, Any]
    if values["backend_url"]:
        backend = {
            "transport": "http",
            "url": values["backend_url"],
            "headers": _pairs(values["backend_header"], "--backend-header", ":"),
        }
        if values["backend_timeout"] is not None:
            backend["timeout_seconds"] = values["backend_timeout"]
        if values["backend_request_timeout"] is not None:
            backend["request_timeout_seconds"] = values["backend_request_timeout"]
    elif values["backend_command"]:
        backend = {
            "transport": "stdio",
            "command": values["backend_command"],
            "args": list(values["backend_arg"]),
            "env": _pairs(values["backend_env"], "--backend-env"),
        }
        if values["backend_cwd"] is not None:
            backend["cwd"] = str(values["backend_cwd"])
    else:
        raise ConfigError(
            "no backend given",
            fix="pass --backend-command CMD [--backend-arg ARG …] or --backend-url URL",
        )
    data: dict[str, Any] = {"backend": backend, "plugins": {"allow": list(values["plugin"])}}
    for field, flag in (
        ("identity", "--identity"),
        ("approver", "--approver"),
        ("token_storage", "--token-storage"),
    ):
        ref = _component_option(values[field], flag)
        if ref is not None:
            data[field] = ref
    posture: dict[str, Any] = {
        "checks": [_component_option(v, "--posture-check") for v in values["posture_check"]]
    }
    if values["posture_interval"] is not None:
        posture["interval_seconds"] = values["posture_interval"]
    data["posture"] = posture
    if values["log_dir"] is not None:
        data["audit"] = {"log_dir": str(Path(values["log_dir"]).expanduser().absolute())}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, INIT_FLAGS) from exc


@cli.command()
@click.option("--non-interactive", is_flag=True, help="Never prompt; take every field from flags.")
@click.option("--force", is_flag=True, help="Replace an existing config file.")
@click.option("--backend-command", metavar="CMD", help="stdio backend: executable to start.")
@click.option(
    "--backend-arg", multiple=True, metavar="ARG", help="stdio backend: one argument (repeat)."
)
@click.option(
    "--backend-env", multiple=True, metavar="KEY=VALUE", help="stdio backend: environment (repeat)."
)
@click.option(
    "--backend-cwd", type=click.Path(path_type=Path), help="stdio backend: working directory."
)
@click.option("--backend-url", metavar="URL", help="streamable-HTTP backend URL.")
@click.option(
    "--backend-header", multiple=True, metavar="NAME:VALUE", help="HTTP backend: header (repeat)."
)
@click.option(
    "--backend-timeout",
    type=float,
    metavar="SECONDS",
    help="HTTP backend: how long connecting, and each wait for an answer to begin or go "
    "on, may take (backend.timeout_seconds).",
)
@click.option(
    "--backend-request-timeout",
    type=float,
    metavar="SECONDS",
    help="HTTP backend: how long one request may take as a whole "
    "(backend.request_timeout_seconds).",
)
@click.option("--identity", metavar="NAME[=JSON]", help="Identity provider (default: local).")
@click.option("--approver", metavar="NAME[=JSON]", help="Approver for 'ask' rules (default: deny).")
@click.option("--token-storage", metavar="NAME[=JSON]", help="Token storage (default: none).")
@click.option(
    "--posture-check", multiple=True, metavar="NAME[=JSON]", help="Posture check (repeat)."
)
@click.option("--posture-interval", type=float, metavar="SECONDS", help="Posture monitor period.")
@click.option(
    "--log-dir", type=click.Path(file_okay=False, path_type=Path), help="Audit log directory."
)
@click.option("--plugin", multiple=True, metavar="NAME", help="Installed plugin to allow (repeat).")
@click.pass_context
def init(ctx: click.Context, /, non_interactive: bool, force: bool, **values: Any) -> None:
    """Write a new config file (interactively, or entirely from flags)."""
    path = _config_path(ctx)
    if entry_exists(path) and not force:
        raise ConfigError(
            f"a config file already exists at {path}; nothing was changed",
            fix="pass --force to replace it, or edit it and run 'mcp-acp config validate'",
        )
    _refuse_untrusted_place(path, "config")  # before any question: 'run' would refuse it
    if not non_interactive:
        if not sys.stdin.isatty():
            raise ConfigError(
                "init needs answers but standard input is not a terminal",
                fix="pass --non-interactive with the flags (see 'mcp-acp init --help')",
            )
        installed = [
            p.name
            for p in plugins_for(None, {"MCP_ACP_PLUGINS": ""}).plugins
            if p.status == "not allowed"
        ]
        _prompt_missing(values, installed, _own_log_dir(path))
    if values["log_dir"] is None and path != default_config_path():
        values["log_dir"] = _own_log_dir(path)
    try:
        config = _config_from_flags(values)
        plugins = plugins_for(config, allow_source="--plugin")
        # paths given on the command line mean the working directory; written absolute
        here = absolute_path(".", "the working directory")
        config = anchor_component_paths(config, plugins, here)
        runtime = resolve_runtime(config, path, source=INIT_FLAGS, plugins=plugins)
    except ConfigError as exc:  # nothing is written, so 'config validate' cannot show more
        raise _every_problem(exc, INIT_FLAGS, suffix="; nothing was written") from exc
    # The policy first: a config that names a policy not written would leave a proxy that
    # cannot start and an init that refuses to run again. Either both are written or
    # neither is. A policy already there is kept, if 'run' would use it.
    kept = _existing_policy(config, path)
    starter = None if kept is not None else _write_starter_policy(config, path)
    try:
        save_config(config, path, replace=force)  # a file made since the check: kept
    except ConfigError as exc:
        if starter is not None:
            with contextlib.suppress(OSError):
                starter.unlink()
        raise ConfigError(f"{exc.message}; nothing was written", fix=exc.fix) from exc
    click.echo(f"wrote {path}")
    if starter is not None:
        click.echo(
            f"wrote {starter} (starter policy: reads allowed, changes need approval, "
            "secrets and code execution denied)"
        )
    if kept is not None:
        click.echo(f"kept existing policy {kept}")
    click.echo(_summary(runtime.config, runtime.plugins))
    for warning in _protected_warnings(runtime):
        click.echo(warning, err=True)


def _refuse_untrusted_place(path: Path, what: str) -> None:
    """Refuse, as reading it would (``config validate``, ``policy validate``, ``run``), to
    write the config or the policy at ``path`` where another user could change it."""
    error = ConfigError if what == "config" else PolicyError
    try:
        problem = untrusted_place(path)
    except OSError as exc:
        raise error(
            f"cannot check where the {what} goes ({path}): {exc.strerror or exc}; nothing "
            "was written",
            fix="check the permissions of the directories on its path",
        ) from None
    if problem is not None:
        raise error(
            f"refusing to use {what}: {problem}; nothing was written",
            fix="choose a directory of yours that nobody else can write (--config), or "
            "chmod go-w it; whoever can change the config or the policy decides what passes",
        )


def _policy_target(config: Config, config_path: Path) -> Path | None:
    """Where the acp engine will look for the policy (None: another engine)."""
    if config.policy.use != "acp":
        return None
    target = AcpConfig.model_validate(
        config.policy.config, context={CONFIG_DIR: config_path.parent}
    ).path
    return target or config_path.parent / "policy.json"


def _existing_policy(config: Config, config_path: Path) -> Path | None:
    """The policy file already where the config will point, if there is one — checked as
    'run' reads it (owner, mode, the directories on the way, a valid policy): a file
    another user planted, or one 'run' would refuse, is not silently kept."""
    target = _policy_target(config, config_path)
    if target is None:
        return None
    if not target.exists():
        _refuse_untrusted_place(target, "policy")
        return None
    try:
        load_policy(target)
    except PolicyError as exc:
        raise PolicyError(f"{exc.message}; nothing was written", fix=exc.fix) from exc
    return target


def _write_starter_policy(config: Config, config_path: Path) -> Path | None:
    """Write the starter policy where the acp engine will look (no file is there)."""
    target = _policy_target(config, config_path)
    if target is None:
        return None
    text = resources.files("mcp_acp.data").joinpath("starter_policy.json").read_text("utf-8")
    try:
        atomic_write_text(target, text, replace=False)  # none was there: none is replaced
    except FileExistsError:
        raise ConfigError(
            f"a policy file appeared at {target} while init ran; nothing was written",
            fix="run 'mcp-acp init' again: a valid policy there is kept",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot write the starter policy {target}: {exc.strerror or exc}; nothing was written",
            fix="make room or choose a writable place (--config), then run 'mcp-acp init' again",
        ) from exc
    return target


# ---------------------------------------------------------------- config


@cli.group("config")
def config_group() -> None:
    """Show, check or locate the config file."""


@config_group.command("path")
@click.pass_context
def config_path(ctx: click.Context) -> None:
    """Print the config file path in use (--config, MCP_ACP_CONFIG or the default)."""
    click.echo(str(_config_path(ctx)))


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective config, defaults filled in, secrets redacted."""
    config = load_config(_config_path(ctx))
    click.echo(json.dumps(redacted(config.model_dump(mode="json", exclude_none=True)), indent=2))


#: Commands that run a package named in their arguments (``npx -y @scope/server-x``).
_LAUNCHERS = frozenset({"npx", "bunx", "pnpx", "uvx", "pipx", "node", "deno", "python", "python3"})


def server_name(config_path: Path, backend: Backend) -> str:
    """The name a client lists this proxy under: the config file's stem when it names the
    backend (``filesystem.json``), else what the backend runs — the package or script a
    launcher starts (``npx -y @modelcontextprotocol/server-filesystem`` →
    ``server-filesystem``), the command's name, or an HTTP backend's host — so that two
    backends behind one launcher get different names."""
    if config_path.stem != "config":
        return _name_part(config_path.stem)
    if isinstance(backend, HttpBackend):
        return _name_part(urlsplit(str(backend.url)).hostname or "mcp")
    command = Path(backend.command).name
    # a URL is no package name, and may carry a credential (uvx --index-url
    # https://user:token@…): the name goes into the client's config file unredacted
    words = [
        a
        for a in backend.args
        if not a.startswith("-") and a not in ("run", "dlx") and "://" not in a
    ]
    if command in _LAUNCHERS and words:
        return _name_part(_package_name(words[0]))
    return _name_part(command)


def _package_name(word: str) -> str:
    """``@scope/name@1.2`` and ``name==1.2`` → ``name``; ``/srv/server.js`` → ``server``."""
    word = re.split(r"[=<>~!]=|\[", word)[0].removeprefix("@").split("@", 1)[0]
    name = Path(word.rstrip("/")).name
    for suffix in (".js", ".mjs", ".cjs", ".ts", ".py"):
        name = name.removesuffix(suffix)
    return name


def _name_part(text: str) -> str:
    """``text`` as a server name: letters, digits, ``_.-``; anything else as ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "mcp"


@config_group.command("export")
@click.option(
    "--claude",
    "claude",
    is_flag=True,
    required=True,
    help="Print the mcpServers entry for Claude Desktop's config file.",
)
@click.option(
    "--name",
    help="Server name in the client (default: the config file's name unless it is "
    "'config', else the backend's package, script or host).",
)
@click.pass_context
def config_export(ctx: click.Context, claude: bool, name: str | None) -> None:
    """Print what an MCP client needs to launch this proxy."""
    path = _config_path(ctx)
    config = load_config(path)
    default = server_name(path, config.backend)
    executable = Path(sys.argv[0]).resolve()
    if executable.name == "mcp-acp" and executable.exists():
        command, prefix = str(executable), []
    else:  # run as "python -m mcp_acp": -P, or the client's working directory comes
        # first on sys.path and a pluggy.py (any module the proxy imports) there runs. Not
        # -I: it would also ignore PYTHONPATH and the user's site-packages, where
        # mcp-acp or its plugins may be installed.
        command, prefix = sys.executable, ["-P", "-m", "mcp_acp"]
    for named in (command, str(path)):
        try:
            named.encode("utf-8")
        except UnicodeEncodeError:  # a file name's bytes that are no UTF-8
            raise ConfigError(
                f"{printable(named)} is not a UTF-8 name: a client's JSON config cannot "
                "name it (it would read another path)",
                fix="move the config (or mcp-acp) to a path whose name is UTF-8, and export again",
            ) from None
    entry = {"command": command, "args": [*prefix, "--config", str(path), "run"]}
    click.echo(json.dumps({"mcpServers": {name or default: entry}}, indent=2))


@config_group.command("validate")
@click.pass_context
def config_validate(ctx: click.Context) -> None:
    """Check the config file and every plugin section in it; exit non-zero if invalid.

    Every problem found is printed, one per line, then a line that counts them."""
    path = _config_path(ctx)
    try:
        runtime = load_runtime(path)
    except ConfigError as exc:
        raise _every_problem(exc, str(path)) from exc
    engine = runtime.build_all()["policy"]  # as run builds them; the policy is compiled
    click.echo(f"ok: {path}")
    click.echo(_summary(runtime.config, runtime.plugins))
    click.echo(f"  policy:   {runtime.config.policy.use} {engine.policy_id}")
    for warning in _protected_warnings(runtime):
        click.echo(warning, err=True)


def _protected_warnings(runtime: Runtime) -> list[str]:
    """A warning for each directory a stdio backend works in — its ``cwd``, an argument
    that is an existing directory — that meets one of mcp-acp's protected directories
    (:attr:`~mcp_acp.registry.PluginContext.protected_dirs`). Inside one, every call on
    its files is denied. Holding one, calls in that directory are, whatever else it
    holds (a config file ``~/work/fs.json`` protects all of ``~/work``) — unless it is
    one of the platform's directories for mcp-acp, which hold nothing else: a backend
    serving ``~`` is not warned about ``~/.config/mcp-acp``. A protected file (the audit
    fallback file) is denied alone, so a directory holding it loses nothing else."""
    backend = runtime.config.backend
    if isinstance(backend, HttpBackend):
        return []
    served: dict[Path, str] = {}
    if backend.cwd is not None:
        served[backend.cwd] = "backend.cwd"
    for index, arg in enumerate(backend.args):
        if not os.path.isabs(arg) and backend.cwd is None:
            continue  # relative to wherever the client starts the proxy: not known here
        path = Path(backend.cwd or "/", arg)
        if os.path.isdir(path):
            served.setdefault(path, f"backend.args[{index}]")
    own = (default_config_path().parent, default_log_dir())
    config_path = runtime.config_path
    fixes = {
        "config directory": "move the config file to a directory of its own, e.g. mcp-acp "
        f"--config {_home_short(own[0] / (config_path.stem + '.json'))} init …",
        "audit log directory": "set audit.log_dir outside it, e.g. "
        f"{_home_short(_own_log_dir(config_path))} (init --log-dir)",
    }
    lines = []
    for path, where in served.items():
        for what, directory in runtime.protected_dirs.items():
            if what not in fixes:
                continue  # a protected file: nothing else in a directory is denied for it
            overlap = protected_overlap(path, directory)
            if overlap == "inside":
                effect = "every call on a path in it will be denied"
            elif overlap == "holds" and not any(is_relative_to(directory, d) for d in own):
                effect = (
                    f"every call on a path in {directory} will be denied, whatever else it holds"
                )
            else:
                continue
            relation = "holds" if overlap == "holds" else "is inside"
            if os.path.abspath(path) == os.path.abspath(directory):
                relation = "is"
            lines.append(
                one_line(
                    f"warning: {where} {path} {relation} mcp-acp's {what} {directory}, which "
                    f"the proxy protects: {effect} (builtin-protected-path) — fix: "
                    f"{fixes[what]}"
                )
            )
    return lines


def _home_short(path: Path) -> str:
    """``path`` with the home directory written ``~``."""
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def _every_problem(exc: ConfigError, source: str, *, suffix: str = "") -> ConfigError:
    """What a command that checks a whole config (``config validate``, ``init``) raises
    for ``exc``, whose fix may say to run ``config validate`` to see every problem: its
    one problem, with that problem's own fix; or each of them printed on a line of its
    own, and an error that counts them."""
    if len(exc.problems) == 1:
        return ConfigError(f"{exc.problems[0].message}{suffix}", fix=exc.problems[0].fix)
    if not exc.problems:
        return ConfigError(f"{exc.message}{suffix}", fix=exc.fix)
    for problem in exc.problems:
        click.echo(_error_line(problem), err=True)
    return ConfigError(
        f"{source}: {len(exc.problems)} problems, one per line above{suffix}",
        fix="correct each as its line says",
    )


def _summary(config: Config, plugins: PluginSet) -> str:
    backend = config.backend
    # as 'config show' shows it: a credential in an argument or the URL is not printed
    shown = redacted(backend.model_dump(mode="json", include={"url", "command", "args"}))
    target = (
        shown["url"]
        if backend.transport == "http"
        else shlex.join([shown["command"], *shown["args"]])
    )
    checks = ", ".join(c.use for c in config.posture.checks) or "none"
    allowed = ", ".join(p.name for p in plugins.loaded if p.status == "loaded") or "none"
    lines = [
        f"  backend:  {backend.transport} {target}",
        f"  identity: {config.identity.use}",
        f"  approver: {config.approver.use}",
        f"  posture:  {checks}",
        f"  audit:    {config.audit.log_dir}",
        f"  plugins:  {allowed} (allowlist from {plugins.allow_source})",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- schema

_SCHEMAS: dict[str, type[BaseModel]] = {"config": Config, "policy": PolicyFile}


@cli.command()
@click.argument("what", type=click.Choice([*sorted(_SCHEMAS), "audit", "plugin"]))
@click.argument("component", required=False)
@click.pass_context
def schema(ctx: click.Context, what: str, component: str | None) -> None:
    """Print the JSON Schema of the config file, policy files or audit records; or, with
    ``plugin NAME`` (or ``plugin KIND:NAME``), of a component's options — what goes under
    its ``config`` key."""
    draft = "https://json-schema.org/draft/2020-12/schema"
    if (what == "plugin") != (component is not None):
        raise click.UsageError(
            "name the component: mcp-acp schema plugin NAME (mcp-acp plugins lists them)"
            if component is None
            else f"only 'schema plugin' takes a component name, not 'schema {what}'"
        )
    if component is not None:
        registration = _component(_load_plugins(ctx), component)
        document: dict[str, object] = {
            "$schema": draft,
            **registration.config_model.model_json_schema(),
            "title": f"options of {registration.kind.label} {registration.name!r} "
            f"(plugin {registration.plugin!r})",
        }
    elif what == "audit":
        document = {
            "$schema": draft,
            "title": "mcp-acp audit records, by stream",
            "description": "One schema per stream, each of a whole line: the record's fields "
            "and the chain (seq, prev_hash, hash). Records the sink itself writes into any "
            "stream (stream_opened, partial_line_quarantined) follow 'chain'.",
            "streams": {name: line_schema(model) for name, model in EVENT_MODELS.items()},
        }
    else:
        document = {"$schema": draft, **_SCHEMAS[what].model_json_schema()}
    click.echo(json.dumps(document, indent=2))


def _component(plugins: PluginSet, component: str) -> Registration:
    """The registration named ``component`` (``NAME`` or ``KIND:NAME``) among the loaded
    plugins' — or a config error naming what there is."""
    kind_text, _, name = component.rpartition(":")
    found = [
        reg
        for reg in plugins.registry
        if reg.name == name and (not kind_text or reg.kind.value == kind_text)
    ]
    if len(found) == 1:
        return found[0]
    if found:
        which = ", ".join(f"{reg.kind.value}:{reg.name}" for reg in found)
        raise ConfigError(
            f"{component!r} names {len(found)} components ({which})",
            fix=f"say which: mcp-acp schema plugin {found[0].kind.value}:{name}",
        )
    known = ", ".join(sorted(f"{reg.kind.value}:{reg.name}" for reg in plugins.registry))
    raise ConfigError(
        f"no loaded plugin registers a component {component!r} (loaded: {known})",
        fix="check the name with 'mcp-acp plugins'; a plugin that is installed but not "
        "allowed registers nothing until it is in plugins.allow",
    )


# ---------------------------------------------------------------- plugins


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool) -> None:
    """List plugins: built-in, loaded (allowed) and installed-but-not-allowed."""
    plugins = _load_plugins(ctx)
    scratch = click.Group(commands=cli.builtin_commands())
    command_owner = add_plugin_commands(scratch, plugins)
    rows = []
    components: list[tuple[str, str, str]] = []  # (kind:name, plugin, summary)
    for info in plugins.plugins:
        registrations = plugins.registrations(info.name)
        registers = [f"{r.kind.value}:{r.name}" for r in registrations]
        registers += [f"command:{c}" for c, owner in command_owner.items() if owner == info.name]
        components += [(f"{r.kind.value}:{r.name}", info.name, r.summary) for r in registrations]
        rows.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "status": info.status,
                "registers": registers,
                "summaries": {f"{r.kind.value}:{r.name}": r.summary for r in registrations},
            }
        )
    if as_json:
        click.echo(
            json.dumps({"allowlist_source": plugins.allow_source, "plugins": rows}, indent=2)
        )
        return
    # Every cell escaped: names, distributions and versions come from any installed
    # distribution's metadata (not-allowed ones too), summaries from plugins.
    headers = ("NAME", "DISTRIBUTION", "VERSION", "STATUS", "REGISTERS")
    table = [headers] + [
        tuple(
            printable(str(cell))
            for cell in (
                r["name"],
                r["distribution"],
                r["version"],
                r["status"],
                ", ".join(r["registers"]) or "-",
            )
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())
    shown = [
        (printable(component), printable(plugin), printable(summary) or "(no summary)")
        for component, plugin, summary in components
    ]
    width = max((len(component) for component, _, _ in shown), default=0)
    click.echo("\ncomponents ('mcp-acp schema plugin NAME' prints the options one takes):")
    for component, plugin, summary in shown:
        click.echo(f"  {component.ljust(width)}  {summary}  [{plugin}]")
    click.echo(
        f"\nallowlist from {plugins.allow_source}; kinds: " + ", ".join(k.value for k in Kind)
    )


@cli.command("run")
@click.pass_context
def run_command(ctx: click.Context) -> None:
    """Run the proxy: an MCP client talks to this process over stdio (Claude Desktop's
    "command"), and every message is checked against the policy and recorded."""
    from mcp_acp.hardening import protect_process
    from mcp_acp.proxy.serve import serve

    for problem in protect_process():  # tokens are about to be loaded into this process
        click.echo(f"warning: {problem}", err=True)
    debug = bool(ctx.find_root().params.get("debug")) or os.environ.get(DEBUG_ENV) == "1"
    try:
        code = _run_loop(serve(_config_path(ctx)))
    except McpAcpError as exc:
        if debug:
            _print_traceback()
        click.echo(_error_line(exc), err=True)
        code = exc.exit_code
    except Exception as exc:
        if debug:
            _print_traceback()
        click.echo(_internal_error(exc), err=True)
        code = 1
    _leave(code)


#: How long tasks still running when the session has ended get to finish, once cancelled.
_LEFTOVER_SECONDS = 2.0


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run(main)``, except that it does not wait for worker threads at the end.

    ``asyncio.run`` joins the loop's default executor with no time limit (and at exit
    ``concurrent.futures`` joins its threads again), so one stuck ``asyncio.to_thread`` call
    (a posture check's I/O, a policy file that is a FIFO) would keep the process alive for
    ever after the session has ended and been recorded. Here the executor is told to stop
    without waiting; :func:`_leave` then ends the process, abandoned threads and all. The
    loop is not closed: its signal handlers stay until then, so that a late SIGTERM cannot
    end the process with another exit code."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    executor = ThreadPoolExecutor(thread_name_prefix="mcp-acp-worker")
    loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()  # one awaiting a stuck thread ends here; only the thread is stuck
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=_LEFTOVER_SECONDS))
            with contextlib.suppress(TimeoutError):
                loop.run_until_complete(
                    asyncio.wait_for(loop.shutdown_asyncgens(), timeout=_LEFTOVER_SECONDS)
                )
        finally:
            executor.shutdown(wait=False, cancel_futures=True)


def _leave(code: int) -> NoReturn:
    """End ``mcp-acp run`` with ``code`` once the session is over and recorded: output
    flushed, then ``os._exit``, which does not join threads (see :func:`_run_loop`)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


@cli.command("posture")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def posture_command(ctx: click.Context, as_json: bool) -> None:
    """Run the configured posture checks once and show each result; exit 15 unless every
    check passes (what the proxy's start-up gate would decide)."""
    from mcp_acp.errors import PostureError
    from mcp_acp.posture import run_check

    runtime = load_runtime(_config_path(ctx))
    fields = sorted(f for f in runtime.components if f.startswith("posture.checks"))
    checks = [runtime.build(field) for field in fields]
    timeout = runtime.config.posture.timeout_seconds

    async def run_all() -> list[Any]:
        return list(await asyncio.gather(*(run_check(c, timeout) for c in checks)))

    results = asyncio.run(run_all())
    if as_json:
        rows = [{"check": r.check, "status": r.status.value, "detail": r.detail} for r in results]
        click.echo(json.dumps(rows, indent=2))
    elif not results:
        click.echo("no posture checks configured (posture.checks)")
    else:
        width = max(len(r.check) for r in results)
        for r in results:
            click.echo(f"{r.check.ljust(width)}  {r.status.value:<7}  {r.detail}")
    if not all(r.passed for r in results):
        raise click.exceptions.Exit(PostureError.exit_code)


@cli.command("demo")
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Use DIR (new or empty) as the demo's home and leave it for inspection.",
)
def demo_command(keep: Path | None) -> None:
    """Run the whole path on a bundled example: a real MCP server behind the proxy, one
    allowed, one denied and one approved call, the decision trail, 'audit verify'.

    Everything happens in a temporary home; no network, no prompts, your config untouched."""
    from mcp_acp.demo.driver import run_demo  # the demo's backend imports the mcp SDK

    run_demo(keep)


# ---------------------------------------------------------------- entry point


def _internal_error(exc: Exception) -> str:
    return f"internal error: {exception_text(exc)} — rerun with --debug and report it"


def _error_line(exc: McpAcpError) -> str:
    """The one line an error is printed as (:meth:`~mcp_acp.errors.McpAcpError.user_line`),
    fit for a terminal (:func:`_shown`): the error may be a plugin's own word (an identity
    provider's ``AuthenticationError``), quoting the token it sent."""
    return _shown(exc.user_line())


def _print_traceback() -> None:
    """``--debug``'s traceback of the exception being handled, each line as :func:`_shown`
    makes it: the exception's text, and the source lines quoted, may hold credentials."""
    lines = traceback.format_exc().rstrip("\n").split("\n")
    sys.stderr.write("\n".join(map(_shown, lines)) + "\n")
    sys.stderr.flush()


def _shown(text: str) -> str:
    """``text`` fit for a terminal and a log file: credentials redacted
    (:func:`~mcp_acp.audit.events.without_secrets`), then every character that does not
    print as itself escaped (:func:`~mcp_acp.errors.printable`)."""
    return printable(without_secrets(text))


class PrintableFormatter(logging.Formatter):
    """Log lines as a terminal shows them, whoever wrote the text in them: every character
    that does not print as itself — an ANSI escape, a bidirectional override, a line break
    — is escaped (:func:`~mcp_acp.errors.printable`), so text a peer sent (a tool's name in
    a plugin's error, an event's name in the ``mcp`` SDK's warning) can neither move the
    cursor, recolour a line nor start a line of its own; and credentials in it are
    redacted, since a plugin's or a library's error may quote the token it sent. A
    traceback keeps its lines, each treated alike."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _shown(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return "\n".join(map(_shown, super().formatException(ei).split("\n")))

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(map(_shown, super().formatStack(stack_info).split("\n")))


class _Stderr(logging.Handler):
    """Writes each record to the ``sys.stderr`` of the moment, as Python's last-resort
    handler does (not the one there was when the handler was made)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _log_to_stderr() -> None:
    """Warnings and errors, mcp-acp's and its libraries', to stderr as Python's default
    handler writes them (the message alone), through :class:`PrintableFormatter`."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, PrintableFormatter) for h in root.handlers):
        return  # main() run again in one process (a test)
    handler = _Stderr(logging.WARNING)
    handler.setFormatter(PrintableFormatter())
    root.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the CLI; print one line per error; exit with the error class's code.

    With ``--debug`` (or ``MCP_ACP_DEBUG=1``) the traceback comes first; the line and the
    exit code are the same."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV) == "1"
    _log_to_stderr()
    try:
        code = cli.main(args=args, prog_name="mcp-acp", standalone_mode=False)
    except McpAcpError as exc:
        if debug:
            _print_traceback()
        click.echo(_error_line(exc), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            _print_traceback()
        click.echo(_internal_error(exc), err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
