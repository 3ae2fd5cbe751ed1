"""pydantic's own plugins (entry-point group ``pydantic``) never load into mcp-acp: a real
throwaway distribution declaring one, on ``PYTHONPATH``, and the real executable — or a
fresh interpreter importing the library. A stdio backend gets the variable as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from proxy_helpers import site_path

DISABLE = "PYDANTIC_DISABLE_PLUGINS"

#: A pydantic plugin that leaves a mark when imported, and writes every input pydantic
#: validates for a model named Config (what the review's reproduction did).
SPY = """
import pathlib
MARK = pathlib.Path({mark!r})
MARK.write_text("imported\\n")


class Spy:
    def __init__(self, name):
        self.name = name

    def on_enter(self, input, **kwargs):
        if self.name == "Config":
            with MARK.open("a") as out:
                out.write(repr(input) + "\\n")


class Plugin:
    def new_schema_validator(self, schema, schema_type, *args, **kwargs):
        return Spy(getattr(schema_type, "__name__", "")), None, None


plugin = Plugin()
"""


def _pydantic_plugin(tmp_path: Path) -> tuple[Path, Path]:
    """Install the spy as a distribution (not an mcp-acp plugin, nothing allows it);
    return its site directory and the file it writes when imported."""
    site, mark = tmp_path / "site", tmp_path / "spy-imported"
    info = site / "spy-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: spy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pydantic]\nspy = spy_plugin:plugin\n")
    (site / "spy_plugin.py").write_text(SPY.format(mark=str(mark)))
    return site, mark


@pytest.mark.parametrize("host", [None, "", "other-plugin"], ids=["unset", "empty", "one-name"])
def test_the_executable_imports_no_pydantic_plugin(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host: str | None,
) -> None:
    """Whatever the environment says — not set, or set to let pydantic load plugins — no
    command imports one: it saw the config's ``backend.env`` secret before."""
    monkeypatch.delenv(DISABLE, raising=False)  # this process imported mcp_acp: it is set
    run_cli(
        "init",
        "--non-interactive",
        "--backend-command",
        "cat",
        "--backend-env",
        "API_TOKEN=s3cr3t",
        check=True,
    )
    site, mark = _pydantic_plugin(tmp_path)
    env = {"PYTHONPATH": site_path(site)}
    if host is not None:
        env[DISABLE] = host
    for args in (["plugins"], ["config", "validate"], ["run"]):
        result = run_cli(*args, env=env, input="")
        assert result.returncode == 0, (args, result.stderr)
        assert not mark.exists(), (args, mark.read_text())


LIBRARY = """
import json, os, sys
before = os.environ.get({name!r})
from mcp_acp.config import Config
Config.model_validate({{"backend": {{"transport": "stdio", "command": "cat"}}}})
print(json.dumps([before, os.environ.get({name!r})]))
"""


@pytest.mark.parametrize(
    ("host", "after", "imported"),
    [(None, "__all__", False), ("", "", True), ("__all__", "__all__", False)],
    ids=["unset", "host-enabled-them", "host-disabled-them"],
)
def test_the_library_disables_them_unless_the_host_said_otherwise(
    tmp_path: Path, host: str | None, after: str, imported: bool
) -> None:
    """``import mcp_acp`` sets the variable only when it is not set: a program that set it
    (empty: load pydantic plugins) keeps its choice, and its plugins then see mcp-acp's
    models — as docs/plugins.md says."""
    site, mark = _pydantic_plugin(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": site_path(site)}
    if host is not None:
        env[DISABLE] = host
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY.format(name=DISABLE)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == [host, after]
    assert mark.exists() is imported


#: A stdio backend that writes what it got as PYDANTIC_DISABLE_PLUGINS (``unset``, or the
#: value in brackets), then echoes its input.
REPORTER = (
    'if [ "${PYDANTIC_DISABLE_PLUGINS+set}" = set ]; then printf "[%s]" '
    '"$PYDANTIC_DISABLE_PLUGINS"; else printf unset; fi > {seen}; exec cat'
)


@pytest.mark.parametrize(
    ("host", "backend_env", "expected"),
    [
        (None, [], "unset"),
        ("", [], "[]"),
        ("logfire", [], "[logfire]"),
        (None, ["--backend-env", f"{DISABLE}=__all__"], "[__all__]"),
    ],
    ids=["unset", "empty", "one-name", "backend-env-sets-it"],
)
def test_a_stdio_backend_gets_the_variable_as_it_was(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host: str | None,
    backend_env: list[str],
    expected: str,
) -> None:
    """The backend is another program: mcp-acp's ``__all__`` is its own, not handed on (a
    Python backend's pydantic plugins would have been switched off); ``backend.env`` still
    sets it, as any variable."""
    monkeypatch.delenv(DISABLE, raising=False)  # this process imported mcp_acp: it is set
    seen = tmp_path / "seen"
    script = REPORTER.replace("{seen}", str(seen))
    run_cli(
        "init",
        "--non-interactive",
        "--backend-command",
        "sh",
        "--backend-arg",
        "-c",
        "--backend-arg",
        script,
        *backend_env,
        check=True,
    )
    env = {} if host is None else {DISABLE: host}
    result = run_cli("run", env=env, input="")
    assert result.returncode == 0, result.stderr
    assert seen.read_text() == expected
