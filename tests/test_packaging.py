"""Packaging proof: wheels for every distribution, installed by extra into a clean venv.

Builds the core, every ``plugins/*`` and ``examples/*`` distribution with
``scripts/build_wheels.py`` (the same script ``nox -s build`` runs), gathers their
third-party dependencies into a wheelhouse, then installs ``mcp-acp[example]`` into a fresh
virtualenv with ``--no-index`` and only that wheelhouse — no index, no source tree, no pip
config from the machine — and runs the installed ``mcp-acp plugins`` and ``mcp-acp demo``.
Then ``mcp-acp[keychain]`` the same way, alone: its storage registers and it brings no
plaintext keyring. Then each posture extra alone: its checks register and run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_wheels import build_all, distributions  # noqa: E402

pytestmark = pytest.mark.slow

PLUGIN_EXTRAS = {
    "oidc": "mcp-acp-oidc",
    "keychain": "mcp-acp-keychain",
    "macos-posture": "mcp-acp-macos-posture",
    "linux-posture": "mcp-acp-linux-posture",
    "mtls": "mcp-acp-mtls",
}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return build_all(tmp_path_factory.mktemp("dist"))


def _metadata(wheel: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode()).items()


def test_a_wheel_for_every_distribution(wheels: list[Path]) -> None:
    names = {w.name.split("-")[0] for w in wheels}
    expected = {p.name.replace("-", "_") if p != ROOT else "mcp_acp" for p in distributions()}
    assert names == expected
    with zipfile.ZipFile(next(w for w in wheels if w.name.startswith("mcp_acp-"))) as core:
        assert "mcp_acp/py.typed" in core.namelist()


def test_core_extras_map_to_plugin_distributions(wheels: list[Path]) -> None:
    core = next(w for w in wheels if w.name.startswith("mcp_acp-"))
    items = _metadata(core)
    extras = {v for k, v in items if k == "Provides-Extra"}
    assert {*PLUGIN_EXTRAS, "all", "example"} <= extras
    requires = [v for k, v in items if k == "Requires-Dist"]
    for extra, dist in PLUGIN_EXTRAS.items():
        assert any(r.startswith(dist) and f"extra == '{extra}'" in r for r in requires), extra
        assert any(r.startswith(dist) and "extra == 'all'" in r for r in requires), dist


def _clean_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "MCP_ACP_", "XDG_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(HOME=str(home), PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.fixture(scope="module")
def wheelhouse(wheels: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our wheels plus their third-party dependencies, for ``pip install --no-index``."""
    house = tmp_path_factory.mktemp("wheelhouse")
    # Third-party dependencies come from the package index once, into the wheelhouse;
    # our own distributions are given as files, so the index is never asked for them.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(house),
            *map(str, wheels),
        ],
        check=True,
    )
    return house


def _install(requirement: str, wheelhouse: Path, tmp_path: Path, env: dict[str, str]) -> Path:
    """A fresh venv with ``requirement`` installed from the wheelhouse alone."""
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    subprocess.run(
        [
            str(target / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            requirement,
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    return target


def _installed(target: Path, env: dict[str, str], cwd: Path) -> set[str]:
    """The distributions installed in the venv at ``target`` (lower-case names)."""
    out = subprocess.run(
        [str(target / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        check=True,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    ).stdout
    return {row["name"].lower() for row in json.loads(out)}


def _plugin_rows(
    target: Path, env: dict[str, str], cwd: Path, allow: str
) -> dict[str, dict[str, object]]:
    """``mcp-acp plugins --json`` of the venv at ``target`` with ``allow`` allowed."""
    out = subprocess.run(
        [str(target / "bin" / "mcp-acp"), "plugins", "--json"],
        check=True,
        env={**env, "MCP_ACP_PLUGINS": allow},
        cwd=cwd,
        capture_output=True,
        text=True,
    ).stdout
    return {row["name"]: row for row in json.loads(out)["plugins"]}


def test_extra_installs_from_wheels_alone_into_a_clean_venv(
    wheelhouse: Path, tmp_path: Path, isolated_home: Path
) -> None:
    home = isolated_home
    env = _clean_env(home)
    target = _install("mcp-acp[example]", wheelhouse, tmp_path, env)

    cli = str(target / "bin" / "mcp-acp")
    located = subprocess.run(
        [
            str(target / "bin" / "python"),
            "-c",
            "import mcp_acp, mcp_acp_example_posture as e;"
            "print(mcp_acp.__file__); print(e.__file__)",
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    for line in located.stdout.split():
        assert line.startswith(str(target)), f"imported from outside the venv: {line}"

    def plugins(**extra_env: str) -> dict[str, dict[str, object]]:
        out = subprocess.run(
            [cli, "plugins", "--json"],
            check=True,
            env={**env, **extra_env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
        ).stdout
        return {row["name"]: row for row in json.loads(out)["plugins"]}

    not_allowed = plugins()
    assert not_allowed["example-posture"]["status"] == "not allowed"
    assert not_allowed["example-posture"]["registers"] == []

    allowed = plugins(MCP_ACP_PLUGINS="example-posture")
    assert allowed["example-posture"]["status"] == "loaded"
    assert allowed["example-posture"]["version"] == "0.1.0"
    assert "posture_check:marker-file" in allowed["example-posture"]["registers"]

    # allowed through the config file instead of the environment
    config = home / ".config" / "mcp-acp" / "config.json"
    subprocess.run(
        [
            cli,
            "init",
            "--non-interactive",
            "--backend-command",
            "true",
            "--plugin",
            "example-posture",
            "--posture-check",
            'marker-file={"path": "/etc/hostname"}',
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    assert plugins()["example-posture"]["status"] == "loaded"
    validated = subprocess.run(
        [cli, "config", "validate"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert validated.returncode == 0, validated.stderr
    assert "posture:  marker-file" in validated.stdout
    assert config.exists()

    # the README's first command, on the installed wheel: the demo's server and policy ship
    demo = subprocess.run(
        [cli, "demo"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "demo: all steps ended as expected." in demo.stdout


def test_keychain_extra_installs_and_registers_its_storage(
    wheelhouse: Path, tmp_path: Path, isolated_home: Path
) -> None:
    env = _clean_env(isolated_home)
    target = _install("mcp-acp[keychain]", wheelhouse, tmp_path, env)
    python = str(target / "bin" / "python")
    names = _installed(target, env, tmp_path)
    assert {"mcp-acp", "mcp-acp-keychain", "keyring", "cryptography"} <= names
    assert "keyrings.alt" not in names  # the extra never brings a plaintext keyring

    rows = _plugin_rows(target, env, tmp_path, "keychain")
    assert rows["keychain"]["status"] == "loaded"
    assert rows["keychain"]["version"] == "0.1.0"
    assert rows["keychain"]["registers"] == ["token_storage:keychain"]
    assert "token_storage:encrypted-file" in rows["encrypted-file-tokens"]["registers"]

    # no keychain in this clean environment: refused by name, or the explicit fallback
    script = (
        "from pathlib import Path;"
        "from mcp_acp.registry import PluginContext;"
        "from mcp_acp_keychain import KeychainConfig;"
        "from mcp_acp_keychain.storage import token_storage_from_config as f;"
        "c = PluginContext(config_path=Path('cfg/config.json'), log_dir=Path('.'));"
        "print(f(KeychainConfig(fallback='encrypted-file'), c).description)"
    )
    described = subprocess.run(
        [python, "-c", script],
        check=True,
        env={**env, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout
    assert "fallback: keyring backend keyring.backends.fail.Keyring refused" in described


def test_oidc_extra_installs_alone_and_brings_its_commands(
    wheelhouse: Path, tmp_path: Path, isolated_home: Path
) -> None:
    env = _clean_env(isolated_home)
    target = _install("mcp-acp[oidc]", wheelhouse, tmp_path, env)
    names = _installed(target, env, tmp_path)
    assert {"mcp-acp", "mcp-acp-oidc", "pyjwt", "cryptography", "httpx", "filelock"} <= names
    assert "mcp-acp-keychain" not in names  # one extra, one plugin

    cli = str(target / "bin" / "mcp-acp")
    rows = _plugin_rows(target, env, tmp_path, "oidc")
    assert rows["oidc"]["status"] == "loaded"
    assert rows["oidc"]["registers"] == ["identity_provider:oidc", "command:auth"]

    # 'auth' exists only once the plugin is allowed
    hidden = subprocess.run(
        [cli, "auth", "--help"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert hidden.returncode != 0
    shown = subprocess.run(
        [cli, "auth", "--help"],
        env={**env, "MCP_ACP_PLUGINS": "oidc"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    for command in ("login", "logout", "status"):
        assert command in shown.stdout


POSTURE_EXTRAS = {
    "macos-posture": (
        "mcp-acp-macos-posture",
        ["macos-filevault", "macos-sip", "macos-gatekeeper", "macos-firewall"],
    ),
    "linux-posture": (
        "mcp-acp-linux-posture",
        ["linux-disk-encryption", "linux-secure-boot", "linux-kernel-lockdown"],
    ),
}


@pytest.mark.parametrize("extra", POSTURE_EXTRAS)
def test_posture_extra_installs_alone_and_registers_its_checks(
    extra: str, wheelhouse: Path, tmp_path: Path, isolated_home: Path
) -> None:
    dist, checks = POSTURE_EXTRAS[extra]
    env = _clean_env(isolated_home)
    target = _install(f"mcp-acp[{extra}]", wheelhouse, tmp_path, env)
    names = _installed(target, env, tmp_path)
    assert dist in names
    others = {d for d, _ in POSTURE_EXTRAS.values()} - {dist}
    assert not others & names  # the extra brings its own plugin only

    cli = str(target / "bin" / "mcp-acp")
    row = _plugin_rows(target, env, tmp_path, extra)[extra]
    assert (row["status"], row["version"]) == ("loaded", "0.1.0")
    assert row["registers"] == [f"posture_check:{name}" for name in checks]

    # the installed checks run through 'mcp-acp posture'; here none may claim a pass it
    # cannot back (macOS checks off macOS are unknown; this host's disk is not dm-crypt)
    subprocess.run(
        [cli, "init", "--non-interactive", "--backend-command", "true", "--plugin", extra]
        + [arg for name in checks for arg in ("--posture-check", name)],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    ran = subprocess.run(
        [cli, "posture", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert ran.returncode in (0, 15), ran.stderr
    results = {r["check"]: r["status"] for r in json.loads(ran.stdout)}
    assert set(results) == set(checks)
    if sys.platform != "darwin" and extra == "macos-posture":
        assert set(results.values()) == {"unknown"}
