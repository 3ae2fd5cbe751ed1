"""Plugin loading: allowlist, fail-closed errors, attribution, commands — with real modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint
from pathlib import Path

import click
import pytest
from proxy_helpers import on_a_terminal, site_path

from mcp_acp.config import ComponentRef
from mcp_acp.errors import ConfigError, PluginError
from mcp_acp.plugins import (
    ALLOW_ENV,
    DEFAULT_PLUGINS,
    add_plugin_commands,
    allowed_plugin_names,
    load_plugins,
)
from mcp_acp.registry import Kind
from mcp_acp.runtime import resolve_component

FIXTURES = Path(__file__).parent / "plugin_fixtures"
#: Where an allowlist comes from, as messages name it (``allowed_plugin_names``).
CONFIG_ALLOW = "config plugins.allow"
ENV_ALLOW = f"environment variable {ALLOW_ENV}"


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> list[EntryPoint]:
    """Entry points for the fixture plugins (real modules, imported by the real loader)."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    names = [
        "good",
        "broken-import",
        "typo-hook",
        "clash",
        "raising",
        "bad-signature",
        "steal-command",
        "bad-model",
        "bad-factory",
    ]
    return [
        EntryPoint(name=n, value=f"fixture_{n.replace('-', '_')}", group="mcp_acp") for n in names
    ]


def test_builtins_register_through_the_hooks() -> None:
    plugins = load_plugins(set(), entry_points=[])
    assert [p.module for p in plugins.loaded] == list(DEFAULT_PLUGINS)
    local = plugins.registry.get(Kind.IDENTITY_PROVIDER, "local")
    assert local is not None
    assert local.plugin == "local-identity"
    assert plugins.registry.get(Kind.APPROVER, "deny") is not None


def test_plugin_not_in_allowlist_is_not_imported(entry_points: list[EntryPoint]) -> None:
    sys.modules.pop("fixture_good", None)
    plugins = load_plugins(set(), entry_points=entry_points)
    assert "fixture_good" not in sys.modules
    statuses = {p.name: p.status for p in plugins.plugins}
    assert statuses["good"] == "not allowed"
    assert statuses["broken-import"] == "not allowed"  # never imported, so no error
    assert plugins.registry.get(Kind.IDENTITY_PROVIDER, "fixed") is None


def test_allowed_plugin_registers_and_is_recorded(entry_points: list[EntryPoint]) -> None:
    plugins = load_plugins({"good"}, entry_points=entry_points)
    fixed = plugins.registry.get(Kind.IDENTITY_PROVIDER, "fixed")
    assert fixed is not None
    assert (fixed.plugin, fixed.summary) == ("good", "a fixed subject")
    assert ("good", "loaded") in [(p.name, p.status) for p in plugins.loaded]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("broken-import", r"plugin 'broken-import' .*failed to import.*mcp_acp_no_such_dependency"),
        ("typo-hook", r"plugin 'typo-hook' implements a hook .*register_identity_provider"),
        (
            "clash",
            r"identity provider 'local' is registered by both plugin 'local-identity' "
            r"and plugin 'clash'",
        ),
        ("raising", r"plugin 'raising' failed in register_approvers: RuntimeError: database"),
        (
            "bad-signature",
            r"plugin 'bad-signature' implements hook 'register_approvers' with parameter\(s\) "
            r"secret_key, which the hook does not pass \(it passes: register\) — fix: write it "
            r"as def register_approvers\(register\)",
        ),
        ("bad-model", r"plugin 'bad-model' registered posture check 'odd' with a config model"),
        (
            "bad-factory",
            r"plugin 'bad-factory' registered approver 'one-argument' with a factory that "
            r"cannot be called as factory\(options, context\): it takes \(options\): too many "
            r"positional arguments",
        ),
    ],
)
def test_faulty_plugin_stops_start_up(
    entry_points: list[EntryPoint], name: str, expected: str
) -> None:
    with pytest.raises(PluginError, match=expected) as caught:
        load_plugins({name}, entry_points=entry_points)
    line = caught.value.user_line()
    assert "\n" not in line
    assert "\\n" not in line  # one line, not several with their breaks escaped
    assert caught.value.exit_code == 11


@pytest.mark.parametrize(
    ("source", "advice"),
    [
        (CONFIG_ALLOW, "remove 'goood' from plugins.allow"),
        (ENV_ALLOW, "remove goood from MCP_ACP_PLUGINS"),
        ("--plugin", "drop --plugin goood"),
    ],
)
def test_allowed_but_not_installed_is_an_error(
    entry_points: list[EntryPoint], source: str, advice: str
) -> None:
    """Named with where the allowlist came from, and how to take the name out of it."""
    with pytest.raises(PluginError) as caught:
        load_plugins({"good", "goood"}, allow_source=source, entry_points=entry_points)
    message, fix = str(caught.value).split(" — fix: ")
    assert message.startswith(f"plugin 'goood' is allowed by {source} but no installed ")
    assert fix.endswith(advice)


@pytest.mark.parametrize(
    ("source", "advice"),
    [
        (CONFIG_ALLOW, "add 'good' to plugins.allow"),
        (ENV_ALLOW, "add good to MCP_ACP_PLUGINS"),
        ("--plugin", "pass --plugin good"),
    ],
)
def test_a_name_nobody_registered_points_at_the_installed_plugin_not_allowed(
    entry_points: list[EntryPoint], source: str, advice: str
) -> None:
    """``identity.use = 'fixed'`` with plugin ``good`` installed but not allowed: the error
    names it, and how to allow it — without importing it (what a plugin registers is not
    known until it is), so only "if it provides" the name."""
    sys.modules.pop("fixture_good", None)
    good = [ep for ep in entry_points if ep.name == "good"]
    plugins = load_plugins(set(), allow_source=source, entry_points=good)
    with pytest.raises(ConfigError) as caught:
        resolve_component(
            plugins, Kind.IDENTITY_PROVIDER, ComponentRef(use="fixed"), "identity", "c.json"
        )
    assert str(caught.value) == (
        "c.json: identity.use = 'fixed': no identity provider of that name is registered "
        "(available: local); installed but not allowed: good — fix: "
        f"{advice} if it provides 'fixed', or pick an available name ('mcp-acp plugins' "
        "lists what each registers)"
    )
    assert "fixture_good" not in sys.modules


def test_two_distributions_claiming_one_name(entry_points: list[EntryPoint]) -> None:
    twice = [*entry_points, EntryPoint(name="good", value="fixture_clash", group="mcp_acp")]
    with pytest.raises(PluginError, match="plugin name 'good' is claimed by both"):
        load_plugins(set(), entry_points=twice)


def test_entry_point_cannot_shadow_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES))
    shadow = EntryPoint(name="deny-approver", value="fixture_good", group="mcp_acp")
    with pytest.raises(PluginError, match="'deny-approver' is claimed by both mcp-acp"):
        load_plugins(set(), entry_points=[shadow])


def test_environment_overrides_config_allowlist() -> None:
    assert allowed_plugin_names(["a"], {}) == (frozenset({"a"}), "config plugins.allow")
    assert allowed_plugin_names(["a"], {ALLOW_ENV: " b, c ,"})[0] == frozenset({"b", "c"})
    names, source = allowed_plugin_names(["a"], {ALLOW_ENV: ""})
    assert names == frozenset()
    assert ALLOW_ENV in source


def test_plugin_commands_are_added_and_attributed(entry_points: list[EntryPoint]) -> None:
    plugins = load_plugins({"good"}, entry_points=entry_points)
    group = click.Group(commands={"init": click.Command("init")})
    assert add_plugin_commands(group, plugins) == {"hello": "good"}
    assert "hello" in group.commands


def test_plugin_cannot_replace_a_builtin_command(entry_points: list[EntryPoint]) -> None:
    plugins = load_plugins({"steal-command"}, entry_points=entry_points)
    original = click.Command("init")
    group = click.Group(commands={"init": original})
    with pytest.raises(PluginError, match="tried to replace command 'init'"):
        add_plugin_commands(group, plugins)
    assert group.commands["init"] is original


def test_installed_example_plugin_is_imported_only_when_allowed() -> None:
    """The real entry point of the installed example distribution, in a fresh interpreter."""
    probe = (
        "import json, sys\n"
        "from mcp_acp.plugins import load_plugins\n"
        "p = load_plugins(set(sys.argv[1:]))\n"
        "print(json.dumps({'imported': 'mcp_acp_example_posture' in sys.modules,"
        " 'status': {i.name: [i.status, i.distribution] for i in p.plugins}}))\n"
    )
    denied = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
    )
    assert denied["imported"] is False
    assert denied["status"]["example-posture"] == ["not allowed", "mcp-acp-example-posture"]
    allowed = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe, "example-posture"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert allowed["imported"] is True
    assert allowed["status"]["example-posture"] == ["loaded", "mcp-acp-example-posture"]


def _install(site: Path, name: str, source: str) -> dict[str, str]:
    """A plugin found the way a real one is: module ``source`` and an entry point ``name``
    in a ``.dist-info`` on ``PYTHONPATH``, and allowed."""
    module = "fixture_" + name.replace("-", "_")
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mcp_acp]\n{name} = {module}\n")
    return {"PYTHONPATH": site_path(site), ALLOW_ENV: name}


HOOK = "from mcp_acp.hookspecs import hookimpl\n\n@hookimpl\n"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import sys\nsys.exit(0)\n", "failed to import 'fixture_leaver': SystemExit: 0"),
        ("raise KeyboardInterrupt\n", "failed to import 'fixture_leaver': KeyboardInterrupt"),
        (
            HOOK + "def register_approvers(register):\n    raise SystemExit(3)\n",
            "plugin 'leaver' failed in register_approvers: SystemExit: 3",
        ),
        (
            HOOK + "def register_commands(cli):\n    raise KeyboardInterrupt\n",
            "plugin 'leaver' failed in register_commands: KeyboardInterrupt",
        ),
        (
            HOOK + "async def register_posture_checks(register):\n    pass\n",
            "plugin 'leaver' implements hook 'register_posture_checks' with async def",
        ),
        (
            HOOK + "def register_approvers(register):\n"
            "    async def later():\n        pass\n    return later()\n",
            "plugin 'leaver' returned an awaitable from register_approvers",
        ),
    ],
    ids=[
        "exit-on-import",
        "interrupt-on-import",
        "exit-in-hook",
        "interrupt-in-hook",
        "async",
        "returns-coroutine",
    ],
)
def test_a_plugin_leaving_or_async_is_a_plugin_error(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    source: str,
    expected: str,
) -> None:
    """A plugin cannot end start-up with its own exit status, nor register nothing quietly."""
    result = run_cli("plugins", env=_install(tmp_path / "site", "leaver", source))
    assert result.returncode == 11, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("plugin error: plugin 'leaver'")
    assert expected in lines[0]


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (
            'AuditError("audit log is corrupt", fix="run mcp-acp audit verify")',
            "plugin error: plugin 'leaver' failed in register_approvers: AuditError: audit log "
            "is corrupt — fix: report it to the plugin's authors, or remove 'leaver' from the "
            "allowlist",
        ),
        (
            'PluginError("plugin \'good\' is broken", fix="uninstall good")',
            "plugin error: plugin 'leaver' failed in register_approvers: PluginError: plugin "
            "'good' is broken — fix: report it to the plugin's authors, or remove 'leaver' "
            "from the allowlist",
        ),
    ],
    ids=["audit-error", "plugin-error-blaming-another"],
)
def test_a_hook_raising_an_mcp_acp_error_is_its_plugin_error(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    raised: str,
    expected: str,
) -> None:
    """An error of mcp-acp's own kind raised by a hook is the plugin's failure: exit 11,
    the plugin named, not the exit status and fix the plugin chose (an ``AuditError`` was
    exit 13 "audit error: audit log is corrupt — fix: run mcp-acp audit verify")."""
    source = (
        "from mcp_acp.errors import AuditError, PluginError\n"
        + HOOK
        + f"def register_approvers(register):\n    raise {raised}\n"
    )
    result = run_cli("plugins", env=_install(tmp_path / "site", "leaver", source))
    assert result.returncode == 11, (result.returncode, result.stderr)
    assert result.stderr.splitlines() == [expected]


def test_a_component_name_two_kinds_share_must_be_said_with_its_kind() -> None:
    """``mcp-acp schema plugin NAME``: names are unique within a kind only."""
    from types import SimpleNamespace
    from typing import cast

    from mcp_acp.cli import _component
    from mcp_acp.errors import ConfigError
    from mcp_acp.plugins import PluginSet
    from mcp_acp.registry import Registry

    registry = Registry()
    registry.register_for(Kind.APPROVER, "twins")("twin", dict)
    registry.register_for(Kind.POSTURE_CHECK, "twins")("twin", dict)
    plugins = cast(PluginSet, SimpleNamespace(registry=registry))
    with pytest.raises(ConfigError, match="'twin' names 2 components") as raised:
        _component(plugins, "twin")
    assert "approver:twin" in str(raised.value)
    assert "posture_check:twin" in str(raised.value)
    assert (raised.value.fix or "").endswith(":twin")  # a KIND:NAME to use
    assert _component(plugins, "posture_check:twin").kind is Kind.POSTURE_CHECK


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            HOOK + "def register_approvers(reg):\n    pass\n",
            "plugin error: plugin 'leaver' implements hook 'register_approvers' with "
            "parameter(s) reg, which the hook does not pass (it passes: register) — fix: write "
            "it as def register_approvers(register) (see mcp_acp.hookspecs)",
        ),
        (
            HOOK + "def register_approvers(register):\n    register('one', lambda options: None)\n",
            "plugin error: plugin 'leaver' registered approver 'one' with a factory that cannot "
            "be called as factory(options, context): it takes (options): too many positional "
            "arguments — fix: give the factory (or the class's __init__) the two parameters "
            "options and context; report it to the plugin's authors",
        ),
    ],
    ids=["hook-parameter", "factory-signature"],
)
def test_a_plugin_bug_is_one_readable_line_blaming_the_plugin(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    source: str,
    expected: str,
) -> None:
    """A hook or factory written with the wrong parameters is the plugin's mistake, found
    when it loads (not when a config selects it, blaming the user's options), and said in
    one line without pluggy's line breaks."""
    result = run_cli("plugins", env=_install(tmp_path / "site", "leaver", source))
    assert result.returncode == 11, result.stderr
    assert result.stderr.splitlines() == [expected]


def _distribution(site: Path, folder: str, metadata: bytes, entry_points: bytes) -> None:
    """A distribution as found on ``PYTHONPATH``: ``folder`` (``name-1.0.dist-info``) under
    ``site`` with these exact bytes as ``METADATA`` and ``entry_points.txt``."""
    info = site / folder
    info.mkdir(parents=True)
    (info / "METADATA").write_bytes(metadata)
    (info / "entry_points.txt").write_bytes(entry_points)


def test_plugins_escapes_what_any_distribution_says_about_itself(
    isolated_home: Path, tmp_path: Path
) -> None:
    """``mcp-acp plugins`` on a terminal: a distribution that is not even allowed names its
    entry point, itself and its version with terminal escapes (clear the screen, turn the
    text green, set the window title); every one is shown escaped, none reaches the
    terminal."""
    site = tmp_path / "site"
    _distribution(
        site,
        "esc-0.1.dist-info",
        b"Metadata-Version: 2.1\nName: evil\x1b[2J\x1b[32mOK\x1b[0m\n"
        b"Version: 0.1\x1b]0;title\x07\n",
        b"[mcp_acp]\nesc\x1b[31mred = nowhere\n",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env.update(HOME=str(isolated_home), PYTHONPATH=site_path(site))
    code, out = on_a_terminal(["plugins"], env)
    assert code == 0, out
    assert b"\x1b" not in out
    assert b"\x07" not in out
    line = next(line for line in out.splitlines() if line.startswith(b"esc"))
    assert line.split() == [
        b"esc\\x1b[31mred",
        b"evil\\x1b[2J\\x1b[32mOK\\x1b[0m",
        b"0.1\\x1b]0;title\\x07",
        b"not",
        b"allowed",
        b"-",
    ]


def test_a_name_two_distributions_claim_is_refused_before_either_is_imported(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """Two installed distributions declare the allowed entry point ``twin``. Both are
    named, with where each is installed (not only the one to blame: which is genuine is
    not known), and neither module ran — the first claimant was imported before."""
    site = tmp_path / "site"
    for dist in ("twin-a", "twin-b"):
        module = dist.replace("-", "_")
        _distribution(
            site,
            f"{module}-0.1.dist-info",
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n".encode(),
            f"[mcp_acp]\ntwin = {module}\n".encode(),
        )
        marker = tmp_path / f"{module}.imported"
        (site / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    result = run_cli("plugins", env={"PYTHONPATH": site_path(site), ALLOW_ENV: "twin"})
    assert result.returncode == 11, result.stderr
    assert sorted(p.name for p in tmp_path.glob("*.imported")) == []
    [line] = result.stderr.splitlines()
    assert line.startswith("plugin error: plugin name 'twin' is claimed by both twin-")
    for dist in ("twin-a", "twin-b"):
        assert f"{dist} 0.1 ({site / dist.replace('-', '_')}-0.1.dist-info)" in line
        assert f"pip uninstall {dist}" in line
    assert "neither was imported" in line


#: ``METADATA`` that is not UTF-8: the name holds the byte 0xff.
BAD_METADATA = b"Metadata-Version: 2.1\nName: bad\xff\nVersion: 0.1\n"


@pytest.mark.parametrize(
    "folder",
    [
        "badmeta-0.1.dist-info",
        # no name in the folder's: importlib.metadata.entry_points() reads METADATA to name
        # it and fails — pydantic's plugin lookup called it, until pydantic plugins were off
        "-0.1.dist-info",
    ],
    ids=["named-folder", "nameless-folder"],
)
def test_a_broken_distribution_not_allowed_fails_no_command(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, folder: str
) -> None:
    """An installed distribution whose ``METADATA`` is not UTF-8, not on the allowlist:
    ``plugins``, ``config validate`` and ``run`` go on (they ended in "internal error" and
    exit 1), with a warning naming where it is."""
    site = tmp_path / "site"
    _distribution(site, folder, BAD_METADATA, b"[mcp_acp]\nbadmeta = nowhere\n")
    env = {"PYTHONPATH": site_path(site)}
    run_cli("init", "--non-interactive", "--backend-command", "cat", check=True)
    for args in (["plugins"], ["config", "validate"], ["run"]):
        result = run_cli(*args, env=env, input="")
        assert result.returncode == 0, (args, result.stderr)
        warnings = [line for line in result.stderr.splitlines() if "badmeta" in line]
        assert len(warnings) == 1, (args, result.stderr)
        assert (
            f"the distribution at {site / folder} is broken: its METADATA cannot be "
            in (warnings[0])
        )
        assert "UnicodeDecodeError" in warnings[0]
    listed = run_cli("plugins", "--json", env=env)
    rows = {row["name"]: row for row in json.loads(listed.stdout)["plugins"]}
    assert (rows["badmeta"]["distribution"], rows["badmeta"]["status"]) == ("?", "not allowed")


def test_a_broken_distribution_allowed_is_one_plugin_error(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    _distribution(site, "badmeta-0.1.dist-info", BAD_METADATA, b"[mcp_acp]\nbadmeta = os\n")
    result = run_cli("plugins", env={"PYTHONPATH": site_path(site), ALLOW_ENV: "badmeta"})
    assert result.returncode == 11, result.stderr
    assert result.stderr.splitlines() == [
        f"plugin error: plugin 'badmeta' comes from a broken distribution at "
        f"{site / 'badmeta-0.1.dist-info'}: its METADATA cannot be read (UnicodeDecodeError: "
        "'utf-8' codec can't decode byte 0xff in position 31: invalid start byte); not "
        "imported — fix: reinstall the distribution that provides it, or remove badmeta from "
        "MCP_ACP_PLUGINS"
    ]


#: A plugin whose posture check ``tidy`` takes ``options`` (a model the case defines).
LENIENT = (
    "from pydantic import BaseModel, ConfigDict\n"
    "{models}\n" + HOOK + "def register_posture_checks(register):\n"
    "    register('tidy', lambda options, context: None, Options)\n"
)


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        (
            "class Options(BaseModel):\n    require_encryption: bool = True\n",
            "its config model Options ignores unknown keys (extra='ignore')",
        ),
        (
            "class Options(BaseModel):\n"
            "    model_config = ConfigDict(extra='allow')\n"
            "    require_encryption: bool = True\n",
            "its config model Options accepts unknown keys (extra='allow')",
        ),
        (
            "class Inner(BaseModel):\n    strict: bool = True\n"
            "class Options(BaseModel):\n"
            "    model_config = ConfigDict(extra='forbid')\n"
            "    checks: list[Inner | None] = []\n",
            "its config model Options, at option checks, nests Inner, which ignores unknown "
            "keys (extra='ignore')",
        ),
    ],
    ids=["default", "allow", "nested"],
)
def test_a_config_model_that_does_not_refuse_unknown_keys_is_a_plugin_error(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    models: str,
    expected: str,
) -> None:
    """pydantic drops keys a model does not know unless it says ``extra='forbid'``: a
    misspelt option (``require_encrypton: true``) was accepted as if it were not there, and
    the component ran with the default the user meant to change. The plugin's mistake, so
    refused when it loads, on one line naming it."""
    env = _install(tmp_path / "site", "lenient", LENIENT.format(models=models))
    result = run_cli("plugins", env=env)
    assert result.returncode == 11, result.stderr
    assert result.stderr.splitlines() == [
        f"plugin error: plugin 'lenient' registered posture check 'tidy' with a config "
        f"model that does not refuse unknown keys: {expected}, so a misspelt option would "
        "be dropped unseen — fix: give each model model_config = "
        "ConfigDict(extra='forbid'); report it to the plugin's authors"
    ]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            "register('Tidy', Check)",
            "registered a posture check with invalid name 'Tidy' — fix: use lowercase letters, "
            "digits and '-' (not first), as a config's \"use\" takes it",
        ),
        (
            "register('-tidy', Check)",
            "registered a posture check with invalid name '-tidy' — fix: use lowercase letters, "
            "digits and '-' (not first), as a config's \"use\" takes it",
        ),
        (
            "register('t\\u0456dy', Check)",  # a Cyrillic i (U+0456): isalnum() says yes
            "registered a posture check with invalid name 't\\u0456dy' — fix: use lowercase "
            "letters, digits and '-' (not first), as a config's \"use\" takes it",
        ),
        (
            "register('tidy', Check, summary=None)",
            "registered posture check 'tidy' with a summary that is NoneType, not a str — fix: "
            "pass summary='one line on what it does', or leave it out",
        ),
    ],
    ids=["uppercase", "leading-dash", "homoglyph", "summary-none"],
)
def test_a_registration_the_config_cannot_select_or_list_is_a_plugin_error(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    call: str,
    expected: str,
) -> None:
    """A name the config's ``use`` can never match was registered, listed, and unusable
    ("no posture check of that name is registered (available: Tidy)"); a summary that is no
    string ended ``mcp-acp plugins`` in "internal error: AttributeError" (exit 1)."""
    source = (
        "class Check:\n    def __init__(self, options, context):\n        pass\n\n"
        + HOOK
        + f"def register_posture_checks(register):\n    {call}\n"
    )
    result = run_cli("plugins", env=_install(tmp_path / "site", "sloppy", source))
    assert result.returncode == 11, result.stderr
    assert result.stderr.splitlines() == [f"plugin error: plugin 'sloppy' {expected}"]
