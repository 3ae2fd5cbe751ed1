"""A subject that changes mid-session ends the session: the request is denied, the proxy
exits with the session-binding code (16), and the audit trail says why.

The identity provider is a real plugin, found by the real ``mcp-acp run`` process through
its entry point (a ``.dist-info`` on ``PYTHONPATH``) and allowed by ``MCP_ACP_PLUGINS``. It
reports another subject once a marker file exists — as an identity provider would after
someone else's token replaced the first one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import DENIED, Proxy, records, use_plugin

PLUGIN = """
from pydantic import BaseModel, ConfigDict
from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import Provenance, Subject


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    marker: str


class SwitchingIdentity:
    def __init__(self, options, context):
        self.marker = options.marker

    async def current_subject(self):
        import os
        who = "mallory" if os.path.exists(self.marker) else "alice"
        return Subject(subject_id=who, provenance=Provenance.TOKEN, issuer="https://idp.test")


@hookimpl
def register_identity_providers(register):
    register("switching", SwitchingIdentity, Options, summary="test: subject changes")
"""


@pytest.fixture
def switching(setup: Any, isolated_home: Path, tmp_path: Path) -> Iterator[Any]:
    """The real proxy with the switching provider, initialised; touching the marker makes
    the provider report someone else. Yields the proxy, the marker, the project directory
    and the audit log directory."""
    _, project, log_dir, _ = setup
    marker = tmp_path / "switch"
    env = use_plugin(
        isolated_home,
        tmp_path / "site",
        module="switching_identity",
        source=PLUGIN,
        name="switching",
        use_for="identity",
        config={"marker": str(marker)},
    )
    proxy = Proxy(isolated_home, env)
    try:
        proxy.initialize()
        yield proxy, marker, project, log_dir
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
        proxy.close()


def test_subject_change_denies_and_exits_16(switching: Any) -> None:
    proxy, marker, project, log_dir = switching
    read = {"name": "read_text_file", "arguments": {"path": str(project / "notes.md")}}
    assert "result" in proxy.call("tools/call", read)

    marker.touch()  # from now on the identity provider reports someone else
    denied = proxy.call("tools/call", read)
    assert denied["error"]["code"] == DENIED
    assert "subject changed mid-session" in denied["error"]["message"]
    assert proxy.proc.wait(timeout=30) == 16

    decision = records(log_dir, "decisions")[-1]
    assert decision["rule_id"] == "builtin-session-binding"
    assert decision["effect"] == "deny"
    assert decision["subject_id"] == "alice"
    shutdown = json.loads((log_dir / "shutdowns.jsonl").read_text().splitlines()[-1])
    assert shutdown["failure_class"] == "session"
    assert shutdown["exit_code"] == 16
    ended = [r for r in records(log_dir, "auth") if r["event"] == "session_ended"]
    assert ended
    assert "session failure" in ended[-1]["reason"]


def test_subject_change_seen_on_a_notification_also_exits_16(switching: Any) -> None:
    """The binding is checked for notifications too: the violation ends the session there
    as well (the notification is not forwarded)."""
    proxy, marker, _, log_dir = switching
    assert "result" in proxy.call("ping")  # notifications/initialized was decided before
    marker.touch()
    proxy.send({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
    assert proxy.proc.wait(timeout=30) == 16
    decision = records(log_dir, "decisions")[-1]
    assert decision["mcp_method"] == "notifications/roots/list_changed"
    assert decision["rule_id"] == "builtin-session-binding"
