"""Packaging proof: wheels for every distribution, installed by extra into a clean venv.

Builds the core, every ``plugins/*`` and ``examples/*`` distribution with
``scripts/build_wheels.py`` (the same script ``nox -s build`` runs), gathers their
third-party dependencies into a wheelhouse, then installs ``mcp-acp[example]`` into a fresh
virtualenv with ``--no-index`` and only that wheelhouse — no index, no source tree, no pip
config from the machine — and runs the installed ``mcp-acp plugins`` and ``mcp-acp demo``.
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


def test_extra_installs_from_wheels_alone_into_a_clean_venv(
    wheels: list[Path], tmp_path: Path, isolated_home: Path
) -> None:
    wheelhouse = tmp_path / "wheelhouse"
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
            str(wheelhouse),
            *map(str, wheels),
        ],
        check=True,
    )

    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    home = isolated_home
    env = _clean_env(home)
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
            "mcp-acp[example]",
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )

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
