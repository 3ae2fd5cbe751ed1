"""What a stdio backend inherits from the real ``mcp-acp run``: its environment, minus the
secrets mcp-acp was given. With the ``encrypted-file`` token storage reading its passphrase
from a variable, that variable must not reach the backend — or the backend could decrypt
the token file. The same holds for a variable a third-party plugin's options declare
``SecretEnvName``, and for the desktop notifier, the other process ``run`` starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import CANARIES
from proxy_helpers import (
    CLI,
    E2E,
    Proxy,
    configure,
    proxy_env,
    recording_notifier,
    records,
    use_plugin,
    wait_for_text,
)

ENVIRONMENT_SERVER = E2E / "peers" / "environment_server.py"


def _environment_backend(home: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Configure the backend that writes its environment down; where it writes it, and the
    proxy's log directory."""
    seen = tmp_path / "env.json"
    backend_args = [str(ENVIRONMENT_SERVER), str(seen), str(tmp_path / "received.jsonl")]
    return seen, configure(home, sys.executable, backend_args, {"version": "1", "rules": []})


def _session_env(home: Path, env: dict[str, str], seen: Path) -> dict[str, str]:
    """Run one session (initialize, close) through the proxy; the backend's environment."""
    proxy = Proxy(home, env)
    try:
        proxy.initialize()  # answered: the backend wrote its environment before reading
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.close()
    return dict(json.loads(seen.read_text()))


def test_the_token_storage_passphrase_does_not_reach_the_backend(
    isolated_home: Path, tmp_path: Path
) -> None:
    seen, log_dir = _environment_backend(isolated_home, tmp_path)
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["token_storage"] = {
        "use": "encrypted-file",
        "config": {"passphrase_env": "TOKEN_STORAGE_PASSPHRASE"},
    }
    config_file.write_text(json.dumps(config))
    env = proxy_env(isolated_home)
    env["TOKEN_STORAGE_PASSPHRASE"] = CANARIES[0].decode()
    env["UNRELATED_SETTING"] = "passes"

    backend_env = _session_env(isolated_home, env, seen)
    assert "TOKEN_STORAGE_PASSPHRASE" not in backend_env
    assert backend_env["UNRELATED_SETTING"] == "passes"
    assert backend_env["HOME"] == str(isolated_home)
    started = next(r for r in records(log_dir, "system") if r["event"] == "backend_started")
    assert started["detail"]["withheld_env"] == ["TOKEN_STORAGE_PASSPHRASE"]


IDENTITY_PLUGIN = """
from pydantic import BaseModel, ConfigDict
from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import Provenance, Subject
from mcp_acp.registry import SecretEnvName


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_secret_env: SecretEnvName
    region_env: str  # not marked: a setting, passed on


class EnvIdentity:
    def __init__(self, options, context):
        self.options = options

    async def current_subject(self):
        return Subject(subject_id="alice", provenance=Provenance.TOKEN, issuer="https://idp.test")


@hookimpl
def register_identity_providers(register):
    register("env-identity", EnvIdentity, Options, summary="test: reads a secret variable")
"""


def test_a_variable_a_plugin_declares_secret_does_not_reach_the_backend(
    isolated_home: Path, tmp_path: Path
) -> None:
    seen, log_dir = _environment_backend(isolated_home, tmp_path)
    env = use_plugin(
        isolated_home,
        tmp_path / "site",
        module="env_identity",
        source=IDENTITY_PLUGIN,
        name="env-identity",
        use_for="identity",
        config={"client_secret_env": "IDP_CLIENT_SECRET", "region_env": "IDP_REGION"},
    )
    env["IDP_CLIENT_SECRET"] = CANARIES[0].decode()
    env["IDP_REGION"] = "eu-central"

    backend_env = _session_env(isolated_home, env, seen)
    assert "IDP_CLIENT_SECRET" not in backend_env
    assert backend_env["IDP_REGION"] == "eu-central"
    started = next(r for r in records(log_dir, "system") if r["event"] == "backend_started")
    assert started["detail"]["withheld_env"] == ["IDP_CLIENT_SECRET"]


TIDY_SINK_PLUGIN = """
import os
from pydantic import BaseModel, ConfigDict
from mcp_acp.hookspecs import hookimpl
from mcp_acp.registry import SecretEnvName


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")  # not frozen
    api_key_env: SecretEnvName


class TidySink:
    def __init__(self, options, context):
        self.key = os.environ.get(options.api_key_env, "")
        options.api_key_env = "READ"  # tidied away once read: the plugin's own business

    async def start(self):
        pass

    async def write(self, event):
        pass

    async def close(self):
        pass


@hookimpl
def register_audit_sinks(register):
    register("tidy-sink", TidySink, Options, summary="test: changes its options")
"""


def test_a_factory_changing_its_options_does_not_unwithhold_a_secret(
    isolated_home: Path, tmp_path: Path
) -> None:
    """An audit sink's factory that changes its (not frozen) options after reading the
    secret's variable: the variable is still withheld from the backend — the factory gets
    a copy. It used to reach the backend: what is withheld was read from the options the
    factory had changed."""
    seen, log_dir = _environment_backend(isolated_home, tmp_path)
    env = use_plugin(
        isolated_home,
        tmp_path / "site",
        module="tidy_sink",
        source=TIDY_SINK_PLUGIN,
        name="tidy-sink",
        use_for="audit.sinks",
        config={"api_key_env": "SINK_API_KEY"},
    )
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["audit"]["sinks"].insert(0, {"use": "jsonl"})  # beside it: the records read here
    config_file.write_text(json.dumps(config))
    env["SINK_API_KEY"] = CANARIES[0].decode()

    backend_env = _session_env(isolated_home, env, seen)
    assert "SINK_API_KEY" not in backend_env
    started = next(r for r in records(log_dir, "system") if r["event"] == "backend_started")
    assert started["detail"]["withheld_env"] == ["SINK_API_KEY"]


def test_the_token_storage_passphrase_does_not_reach_the_desktop_notifier(
    isolated_home: Path, tmp_path: Path
) -> None:
    """A refused start (here: a control socket path too long) is shown on the desktop by
    ``notify-send``, found on PATH — where any process of the user's, the backend of an
    earlier session included, may have put one (``~/.local/bin``) — and readable in
    ``/proc/PID/environ`` while it runs even when it is the real one. It used to get the
    proxy's whole environment, the token storage's passphrase with it."""
    _environment_backend(isolated_home, tmp_path)
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["token_storage"] = {
        "use": "encrypted-file",
        "config": {"passphrase_env": "TOKEN_STORAGE_PASSPHRASE"},
    }
    config["proxy"]["socket_dir"] = str(tmp_path / ("d" * 120))
    config_file.write_text(json.dumps(config))
    env = proxy_env(isolated_home)
    notifier, notified = recording_notifier(tmp_path)
    env["PATH"] = f"{notifier}:{env['PATH']}"
    env["TOKEN_STORAGE_PASSPHRASE"] = CANARIES[0].decode()
    env["UNRELATED_SETTING"] = "passes"
    refused = subprocess.run(
        [str(CLI), "run"], stdin=subprocess.DEVNULL, env=env, capture_output=True, timeout=60
    )
    assert refused.returncode == 10, refused.stderr
    assert wait_for_text(notified).splitlines()[3] == "mcp-acp did not start"
    shown = (tmp_path / "notified-env.txt").read_text()
    assert "UNRELATED_SETTING=passes" in shown.splitlines()
    assert "TOKEN_STORAGE_PASSPHRASE" not in shown
    assert CANARIES[0].decode() not in shown
