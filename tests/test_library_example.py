"""``examples/library/gate.py``, the README's "build your own on the library" example, run
as a user would: on a config ``mcp-acp init`` wrote, against real files and a real audit
trail. It decides, records the decision durably, and fails closed when it cannot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import (
    configure,
    engine_plugin,
    install_plugin,
    proxy_env,
    records,
    site_path,
    use_plugin,
)

from mcp_acp.audit.chain import verify_stream

GATE = Path(__file__).resolve().parent.parent / "examples" / "library" / "gate.py"


def gate(
    home: Path, params: dict[str, object], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GATE), "tools/call", json.dumps(params)],
        env=env or proxy_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_library_gate_decides_and_records_before_it_answers(
    isolated_home: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.md").write_text("hi\n")
    policy = {
        "version": "1",
        "rules": [
            {
                "id": "read-project",
                "effect": "allow",
                "conditions": {"operations": "read", "path_pattern": f"{project}/**"},
            }
        ],
    }
    log_dir = configure(isolated_home, "true", [], policy)

    allowed = gate(
        isolated_home, {"name": "read_file", "arguments": {"path": str(project / "notes.md")}}
    )
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("allow: ")
    denied = gate(isolated_home, {"name": "read_file", "arguments": {"path": "/etc/shadow"}})
    assert denied.returncode == 1, denied.stderr
    assert denied.stdout.startswith("deny: ")

    decided = [r for r in records(log_dir, "decisions") if r.get("event") == "decision"]
    assert [(r["tool_name"], r["effect"], r.get("rule_id")) for r in decided] == [
        ("read_file", "allow", "read-project"),
        ("read_file", "deny", None),
    ]
    assert verify_stream(log_dir, "decisions").ok


def test_the_library_gate_fails_closed_without_its_audit_trail(
    isolated_home: Path, tmp_path: Path
) -> None:
    policy = {
        "version": "1",
        "rules": [{"id": "all", "effect": "allow", "conditions": {"tool_name": "*"}}],
    }
    log_dir = configure(isolated_home, "true", [], policy)
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    log_dir.symlink_to("/dev/full")  # the log directory cannot be made or written
    refused = gate(isolated_home, {"name": "echo", "arguments": {}})
    assert refused.returncode == 13, refused.stderr  # the audit failure class
    assert "allow" not in refused.stdout
    assert refused.stderr.startswith("audit error: ")


POINT = GATE.parent / "point.py"


def point(
    home: Path, root: Path, params: dict[str, object], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(POINT), str(root), "tools/call", json.dumps(params)],
        env=env or proxy_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_your_own_engine_behind_the_enforcement_point(isolated_home: Path) -> None:
    """``examples/library/point.py``: an engine that is a plain Python object, used through
    ``EnforcementPoint.check``. Its allow is enforced and recorded; what it does not allow is
    denied; and the enforcement point's own protections hold over it — the engine allows
    every read under the home, but mcp-acp's config file there stays protected."""
    policy = {"version": "1", "rules": []}  # the configured engine is not the one used
    log_dir = configure(isolated_home, "true", [], policy)
    notes = isolated_home / "notes.md"
    notes.write_text("hi\n")
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    assert config_file.is_file()

    allowed = point(isolated_home, isolated_home, _read(notes))
    assert (allowed.returncode, allowed.stdout) == (0, "allowed: read in root\n"), allowed.stderr
    outside = point(isolated_home, isolated_home, _read(Path("/etc/hostname")))
    assert outside.returncode == 1, outside.stderr
    assert outside.stdout.startswith(f"denied: only reads under {isolated_home.resolve()}")
    protected = point(isolated_home, isolated_home, _read(config_file))
    assert protected.returncode == 1, protected.stderr
    assert "protected" in protected.stdout

    decided = [r for r in records(log_dir, "decisions") if r.get("event") == "decision"]
    assert [(r["effect"], r.get("rule_id")) for r in decided] == [
        ("allow", "read-under-root"),
        ("deny", None),
        ("deny", "builtin-protected-path"),
    ]
    assert {r["policy_id"] for r in decided[:2]} == {f"reads-under:{isolated_home.resolve()}"}
    assert verify_stream(log_dir, "decisions").ok


def _read(path: Path) -> dict[str, object]:
    return {"name": "read_file", "arguments": {"path": str(path)}}


#: A posture check plugin: the device passes while the file ``DEVICE_OK`` names exists.
POSTURE_PLUGIN = """
import os
from datetime import UTC, datetime
from pathlib import Path
from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import PostureResult, PostureStatus


class FileCheck:
    name = "device-ok"

    async def check(self):
        ok = Path(os.environ["DEVICE_OK"]).exists()
        status = PostureStatus.PASS if ok else PostureStatus.FAIL
        now = datetime.now(UTC)
        return PostureResult(check=self.name, status=status, detail="marker", checked_at=now)


@hookimpl
def register_posture_checks(register):
    register("device-ok", lambda options, context: FileCheck())
"""


def _with_plugin(
    home: Path,
    tmp_path: Path,
    policy: dict[str, Any],
    module: str,
    source: str,
    name: str,
    settings: dict[str, Any],
) -> tuple[Path, dict[str, str]]:
    """A config (``policy``, the backend ``true``) that allows plugin ``name`` — installed
    from ``source`` — and uses it as ``settings`` say; its log directory and the
    environment that finds the plugin."""
    log_dir = configure(home, "true", [], policy)
    config_file = home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config.update({"plugins": {"allow": [name]}, **settings})
    config_file.write_text(json.dumps(config))
    site = tmp_path / "site"
    install_plugin(site, module=module, source=source, name=name)
    return log_dir, {**proxy_env(home), "PYTHONPATH": site_path(site)}


@pytest.mark.parametrize("example", ["gate", "point"])
def test_the_library_examples_gate_on_the_configured_posture(
    isolated_home: Path, tmp_path: Path, example: str
) -> None:
    """A config with a posture check the device fails: the examples refuse, as ``mcp-acp
    run`` refuses to start — exit 15, the posture error, ``device_health_failed`` on record,
    no decision — where they used to ignore ``posture.checks`` and allow. Passing, they
    decide as before."""
    everything = {
        "version": "1",
        "rules": [{"id": "all", "effect": "allow", "conditions": {"tool_name": "*"}}],
    }
    log_dir, env = _with_plugin(
        isolated_home,
        tmp_path,
        everything,
        "device_ok",
        POSTURE_PLUGIN,
        "device-ok",
        {"posture": {"checks": [{"use": "device-ok"}]}},
    )
    marker = tmp_path / "device-ok"
    env["DEVICE_OK"] = str(marker)
    notes = isolated_home / "notes.md"
    notes.write_text("hi\n")

    def run() -> subprocess.CompletedProcess[str]:
        if example == "gate":
            return gate(isolated_home, _read(notes), env)
        return point(isolated_home, isolated_home, _read(notes), env)

    refused = run()
    assert refused.returncode == 15, refused.stderr
    assert "allow" not in refused.stdout
    assert refused.stderr.splitlines()[-1].startswith(
        "posture error: device posture: device-ok is fail: marker — fix: "
    )
    assert [r["event"] for r in records(log_dir, "auth") if "health" in r["event"]] == [
        "device_health_failed"
    ]
    assert not [r for r in records(log_dir, "decisions") if r.get("event") == "decision"]

    marker.touch()
    allowed = run()
    assert allowed.returncode == 0, allowed.stderr
    decided = [r for r in records(log_dir, "decisions") if r.get("event") == "decision"]
    assert [r["effect"] for r in decided] == ["allow"]


#: An identity provider plugin that ends the program it runs in: ``sys.exit(0)``.
EXITING_IDENTITY = """
import sys
from mcp_acp.hookspecs import hookimpl


class Leaves:
    async def current_subject(self):
        sys.exit(0)


@hookimpl
def register_identity_providers(register):
    register("leaves", lambda options, context: Leaves())
"""


@pytest.mark.parametrize("example", ["gate", "point"])
def test_an_identity_provider_that_exits_is_an_authentication_error(
    isolated_home: Path, tmp_path: Path, example: str
) -> None:
    """An identity provider calling ``sys.exit(0)``: the examples end with exit 14 and one
    line naming it, nothing decided — before, the gate ended with status 0, which it
    documents as "allow", and printed nothing."""
    everything = {
        "version": "1",
        "rules": [{"id": "all", "effect": "allow", "conditions": {"tool_name": "*"}}],
    }
    log_dir, env = _with_plugin(
        isolated_home,
        tmp_path,
        everything,
        "leaves",
        EXITING_IDENTITY,
        "leaves",
        {"identity": {"use": "leaves"}},
    )
    read = _read(isolated_home / "notes.md")
    if example == "gate":
        result = gate(isolated_home, read, env)
    else:
        result = point(isolated_home, isolated_home, read, env)
    assert result.returncode == 14, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "authentication error: the identity provider failed: SystemExit: 0 — fix: see the "
        "provider's documentation; 'mcp-acp --debug run' shows the traceback"
    ]
    assert not [r for r in records(log_dir, "decisions") if r.get("event") == "decision"]


def test_an_engine_that_exits_is_a_recorded_denial_at_the_gate(
    isolated_home: Path, tmp_path: Path
) -> None:
    """A policy engine plugin calling ``sys.exit(0)``: the gate denies (exit 1) and records
    the denial (``builtin-engine-error``) — before, it ended with status 0, "allow", having
    recorded nothing."""
    log_dir = configure(isolated_home, "true", [], {"version": "1", "rules": []})
    env = use_plugin(
        isolated_home,
        tmp_path / "site",
        module="quits",
        source=engine_plugin("quits", "raise SystemExit(0)", "test: exits"),
        name="quits",
        use_for="policy",
    )
    result = gate(isolated_home, _read(isolated_home / "notes.md"), env)
    assert result.returncode == 1, result.stderr
    assert result.stdout == "deny: denied: policy engine error: SystemExit: 0\n"
    decided = [r for r in records(log_dir, "decisions") if r.get("event") == "decision"]
    assert [(r["effect"], r["rule_id"]) for r in decided] == [("deny", "builtin-engine-error")]


def test_building_a_component_the_config_does_not_select_is_a_one_line_error(
    isolated_home: Path,
) -> None:
    """``runtime.build("token_storage")`` with no ``token_storage`` section (or a misspelt
    field): a ``ConfigError`` naming the field and those selected — not a bare
    ``KeyError: 'token_storage'``."""
    configure(isolated_home, "true", [], {"version": "1", "rules": []})
    program = (
        "from mcp_acp.config import resolve_config_path\n"
        "from mcp_acp.errors import McpAcpError\n"
        "from mcp_acp.runtime import load_runtime\n"
        "try:\n"
        "    load_runtime(resolve_config_path()).build('token_storage')\n"
        "except McpAcpError as error:\n"
        "    print(error.user_line())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        env=proxy_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    assert result.stdout.startswith(
        f"config error: {config_file}: no component is selected at 'token_storage' "
        "(selected: identity, approver, policy, audit.sinks[0]) — fix: "
    ), result.stdout
