"""An audit sink's own ``AuditError`` — its word, kept as it is — may quote the URL or
header it sent, credential and all (a remote sink's ingest URL with its token). Through the
real ``mcp-acp run``: the client's denial, the proxy's stderr, the desktop notifier's text
and ``shutdowns.jsonl`` carry it with the credential redacted, and still name the sink's
failure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from proxy_helpers import ALLOW_ECHO, DENIED, E2E, Proxy, configure, use_plugin

ENVIRONMENT_SERVER = E2E / "peers" / "environment_server.py"

#: The jsonl sink, which fails every write once a ``tools/call`` is decided, saying the
#: URL it sent the record to.
LEAKING_SINK = """
from mcp_acp.audit.jsonl import JsonlAuditSink, JsonlConfig
from mcp_acp.errors import AuditError
from mcp_acp.hookspecs import hookimpl


class LeakingSink(JsonlAuditSink):
    broken = False

    async def write(self, event):
        if getattr(event, "mcp_method", None) == "tools/call":
            type(self).broken = True
        if self.broken:
            raise AuditError(
                "ingest refused: POST https://logs.test/in?token=tk-CANARY-1 "
                "X-Api-Key: ak-CANARY-2"
            )
        await super().write(event)


@hookimpl
def register_audit_sinks(register):
    register("leaking-jsonl", LeakingSink.from_config, JsonlConfig, summary="test: leaks")
"""


def _behind_leaking_sink(home: Path, tmp_path: Path, source: str) -> Proxy:
    """The configured proxy, started with ``source`` installed as its audit sink."""
    env = use_plugin(
        home,
        tmp_path / "site",
        module="leaking_sink",
        source=source,
        name="leaking-jsonl",
        use_for="audit.sinks",
    )
    return Proxy(home, env)


def test_an_audit_sinks_error_quoting_credentials_reaches_no_one(
    isolated_home: Path, tmp_path: Path
) -> None:
    backend = [str(ENVIRONMENT_SERVER), str(tmp_path / "env.json"), str(tmp_path / "got.jsonl")]
    log_dir = configure(isolated_home, sys.executable, backend, ALLOW_ECHO)
    proxy = _behind_leaking_sink(isolated_home, tmp_path, LEAKING_SINK)
    try:
        proxy.initialize()
        denied = proxy.call("tools/call", {"name": "echo", "arguments": {}})
        assert proxy.close() == 13
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.close()
    assert denied["error"]["code"] == DENIED
    message = denied["error"]["message"]
    stderr = (isolated_home / "proxy-stderr.txt").read_text()
    shutdowns = (log_dir / "shutdowns.jsonl").read_text()
    (shutdown,) = [json.loads(line) for line in shutdowns.splitlines()]
    fallback = (isolated_home / ".local/state/mcp-acp/audit-fallback.jsonl").read_text()
    texts = {"client": message, "stderr": stderr, "shutdowns": shutdowns, "fallback": fallback}
    for where, text in texts.items():
        assert "CANARY" not in text, (where, text)
        assert "ingest refused: POST https://logs.test/in?token=<redacted>" in text, (where, text)
    assert shutdown["failure_class"] == "audit"


RECORDING_SERVER = E2E / "peers" / "recording_server.py"

#: The same sink failing on the decision record of the backend's own request.
LEAKING_ON_SAMPLING = LEAKING_SINK.replace(
    'if getattr(event, "mcp_method", None) == "tools/call":',
    'if getattr(event, "mcp_method", None) == "sampling/createMessage":',
)


def test_a_backend_request_denied_for_the_sinks_error_gets_it_redacted(
    isolated_home: Path, tmp_path: Path
) -> None:
    """The backend asks the client for sampling while a tool call is in flight; the
    record of that request's decision fails with the sink's error quoting its token. The
    backend is denied — and the denial it reads, like every other, names the failure with
    the credential redacted (it went to the backend whole)."""
    received = tmp_path / "received.jsonl"
    policy = {
        "version": "1",
        "rules": [
            {"id": "ask", "effect": "allow", "conditions": {"tool_name": "ask_sampling"}},
            {"id": "sampling", "effect": "allow", "conditions": {"mcp_method": "sampling/*"}},
        ],
    }
    configure(isolated_home, sys.executable, [str(RECORDING_SERVER), str(received)], policy)
    proxy = _behind_leaking_sink(isolated_home, tmp_path, LEAKING_ON_SAMPLING)
    try:
        proxy.initialize()
        proxy.request("tools/call", {"name": "ask_sampling", "arguments": {"text": "hi"}})
        assert proxy.proc.wait(timeout=60) == 13
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.close()
    answers = [json.loads(line) for line in received.read_text().splitlines()]
    (denial,) = [a for a in answers if str(a.get("id", "")).startswith("m") and "error" in a]
    message = denial["error"]["message"]
    assert "CANARY" not in message, message
    assert "ingest refused: POST https://logs.test/in?token=<redacted>" in message, message
