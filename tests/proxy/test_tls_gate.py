"""The TLS gate of ``mcp-acp run``: every finding of the ``backend.tls`` provider is
audited, a refusal stops start-up, and a provider that fails or hands over a context that
does not verify the server is a refusal too (the provider plugin is tested with real
certificates in ``plugins/mcp-acp-mtls``)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from mcp_acp.audit.events import AuditEvent
from mcp_acp.errors import BackendError
from mcp_acp.models import TlsFinding, TlsSeverity
from mcp_acp.proxy.pep import Session
from mcp_acp.proxy.serve import _tls_gate


class Trail:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)


class Provider:
    def __init__(self, findings: list[TlsFinding], context: ssl.SSLContext | None = None) -> None:
        self.findings = findings
        self.context = context or ssl.create_default_context()

    def check(self) -> list[TlsFinding]:
        return self.findings

    def ssl_context(self) -> ssl.SSLContext:
        return self.context


class Runtime:
    def __init__(self, provider: Any) -> None:
        self.components = {"backend.tls": object()} if provider is not None else {}
        self.provider = provider

    def build(self, field: str) -> Any:
        assert field == "backend.tls"
        return self.provider


OK = TlsFinding("key_match", TlsSeverity.OK, "the key matches")


async def gate(provider: Any) -> tuple[ssl.SSLContext | None, list[dict[str, Any]]]:
    trail = Trail()
    context = await _tls_gate(Runtime(provider), trail, Session())  # type: ignore[arg-type]
    assert {e.model_dump()["event"] for e in trail.events} <= {"tls_check"}
    return context, [e.model_dump()["detail"] for e in trail.events]


async def test_no_backend_tls_no_context() -> None:
    assert await gate(None) == (None, [])


async def test_every_finding_is_audited_and_the_context_returned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    soon = TlsFinding("validity", TlsSeverity.WARNING, "expires in 10 days", {"days_left": 10})
    provider = Provider([OK, soon])
    context, details = await gate(provider)
    assert context is provider.context
    assert [(d["check"], d["severity"]) for d in details] == [
        ("key_match", "ok"),
        ("validity", "warning"),
    ]
    assert details[1]["days_left"] == 10
    assert "expires in 10 days" in caplog.text


async def test_a_refusal_stops_start_up_after_being_audited() -> None:
    trail = Trail()
    bad = TlsFinding("client key_file", TlsSeverity.REFUSE, "mode 0644")
    with pytest.raises(BackendError, match="TLS check 'client key_file' failed: mode 0644"):
        await _tls_gate(Runtime(Provider([OK, bad])), trail, Session())  # type: ignore[arg-type]
    assert [e.model_dump()["detail"]["severity"] for e in trail.events] == ["ok", "refuse"]


class Failing(Provider):
    def check(self) -> list[TlsFinding]:
        raise RuntimeError("cannot read the bundle")


class Exiting(Provider):
    def check(self) -> list[TlsFinding]:
        raise SystemExit(0)  # a provider's sys.exit(): a refusal, on record, not exit 0


def _unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    return context


def _old_protocols() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    return context


@pytest.mark.parametrize(
    ("provider", "check"),
    [
        (Failing([]), "provider"),
        (Exiting([]), "provider"),
        (Provider([OK], _unverified()), "context"),
        (Provider([OK], _old_protocols()), "context"),
    ],
    ids=["provider-fails", "provider-exits", "no-hostname-check", "below-tls-1.2"],
)
async def test_a_failing_or_weak_provider_is_refused(provider: Provider, check: str) -> None:
    trail = Trail()
    with pytest.raises(BackendError, match="refusing to connect"):
        await _tls_gate(Runtime(provider), trail, Session())  # type: ignore[arg-type]
    assert trail.events[-1].model_dump()["detail"]["check"] == check
