"""The per-request value types: immutability, provenance ordering, no secret in reprs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest

from mcp_acp.errors import (
    AuditError,
    AuthenticationError,
    BackendError,
    ConfigError,
    McpAcpError,
    PluginError,
    PolicyError,
    PostureError,
    SessionBindingError,
    one_line,
)
from mcp_acp.models import (
    Action,
    ApprovalResult,
    Decision,
    DecisionRequest,
    Effect,
    Environment,
    PostureResult,
    PostureStatus,
    Provenance,
    Resource,
    ResourceType,
    StoredToken,
    Subject,
)
from mcp_acp.protocols import (
    Approver,
    AuditSink,
    IdentityProvider,
    PolicyEngine,
    PostureCheck,
    TokenStorage,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def request(**provenance: Provenance) -> DecisionRequest:
    return DecisionRequest(
        subject=Subject(subject_id="alice", provenance=Provenance.TOKEN, claims={"sub": "alice"}),
        action=Action(mcp_method="tools/call", tool_name="read_file"),
        resource=Resource(resource_type=ResourceType.TOOL, backend_id="fs"),
        environment=Environment(
            time=NOW, session_id="s1", request_id="r1", mcp_client_name="claude"
        ),
        provenance=provenance,
    )


def test_provenance_order_is_the_documented_one() -> None:
    assert sorted(Provenance, reverse=True) == [
        Provenance.TOKEN,
        Provenance.MTLS,
        Provenance.CONFIG,
        Provenance.REQUEST,
        Provenance.DERIVED,
        Provenance.CLIENT_HINT,
    ]


def test_unknown_attribute_provenance_is_the_lowest() -> None:
    req = request(**{"action.tool_name": Provenance.REQUEST})
    assert req.provenance_of("action.tool_name") is Provenance.REQUEST
    assert req.provenance_of("environment.mcp_client_name") is Provenance.CLIENT_HINT
    assert req.provenance_of("subject.subject_id") is Provenance.TOKEN  # the subject's own


def test_values_are_frozen_including_their_mappings() -> None:
    req = request()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        req.subject.subject_id = "mallory"  # type: ignore[misc]
    with pytest.raises(TypeError):
        req.subject.claims["sub"] = "mallory"  # type: ignore[index]
    claims = {"sub": "alice"}
    subject = Subject(subject_id="alice", provenance=Provenance.TOKEN, claims=claims)
    claims["sub"] = "mallory"  # the caller's dict changes; the subject must not
    assert subject.claims["sub"] == "alice"


def test_stored_token_repr_hides_every_secret() -> None:
    token = StoredToken(
        issuer="https://idp.test",
        access_token="eyJ-access-canary",
        refresh_token="refresh-canary",
        id_token="id-canary",
        expires_at=NOW,
    )
    text = repr(token) + str(token)
    for secret in ("eyJ-access-canary", "refresh-canary", "id-canary"):
        assert secret not in text
    assert "https://idp.test" in text


def test_decision_deny_shortcut_and_effects() -> None:
    decision = Decision.deny("engine failed", policy_id="sha256:x")
    assert decision.effect is Effect.DENY
    assert Effect("ask") is Effect.ASK
    assert [r for r in ApprovalResult if r.allows] == [
        ApprovalResult.ALLOW_ONCE,
        ApprovalResult.ALLOW_AND_CACHE,
    ]


def test_posture_unknown_is_not_passing() -> None:
    for status, passed in (
        (PostureStatus.PASS, True),
        (PostureStatus.FAIL, False),
        (PostureStatus.UNKNOWN, False),
    ):
        assert PostureResult("disk", status, "d", NOW).passed is passed


def test_builtins_satisfy_their_protocols() -> None:
    from mcp_acp.builtins.deny_approver import DenyApprover
    from mcp_acp.builtins.local_identity import LocalIdentityProvider

    assert isinstance(LocalIdentityProvider("alice"), IdentityProvider)
    assert isinstance(DenyApprover(), Approver)
    # the other protocols are runtime-checkable, so plugin authors can assert theirs too
    for protocol in (TokenStorage, PostureCheck, PolicyEngine, AuditSink):
        assert not isinstance(object(), protocol)


async def test_deny_approver_denies() -> None:
    from mcp_acp.builtins.deny_approver import DenyApprover
    from mcp_acp.models import ApprovalRequest

    approval = ApprovalRequest(
        approval_id="a1",
        request=request(),
        decision=Decision(Effect.ASK, "sha256:x", reason="ask rule"),
        summary="read_file /etc/passwd",
        timeout_seconds=60,
    )
    outcome = await DenyApprover().request_approval(approval)
    assert outcome.result is ApprovalResult.DENY
    assert not outcome.result.allows


async def test_the_cli_approver_remembers_the_last_ended_approvals_for_late_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Approvals that end are remembered for answers that come too late — the last
    ``MAX_ENDED`` only, so a long session's memory stays bounded — and listed for the note
    left at the session's end, with what became of each."""
    from mcp_acp.builtins import cli_approver
    from mcp_acp.models import ApprovalRequest

    monkeypatch.setattr(cli_approver, "MAX_ENDED", 2)
    approver = cli_approver.CliApprover()
    for number in range(3):
        approval = ApprovalRequest(
            approval_id=f"a{number}",
            request=request(),
            decision=Decision(Effect.ASK, "sha256:x", reason="ask rule"),
            summary="read_file /etc/passwd",
            timeout_seconds=60,
        )
        asking = asyncio.ensure_future(approver.request_approval(approval))
        await asyncio.sleep(0)
        assert approver.pending_count == 1
        asking.cancel()  # cut short, as the session's end or the client's cancel does
        with pytest.raises(asyncio.CancelledError):
            await asking
        approver.approval_settled(f"a{number}", f"not forwarded: reason {number}")
    assert approver.pending_count == 0
    assert approver.ended_at_exit("the session ended") == {
        "a1": {"answer": None, "by": None, "outcome": "not forwarded: reason 1"},
        "a2": {"answer": None, "by": None, "outcome": "not forwarded: reason 2"},
    }
    late = await approver.control_ops()["approve"]({"id": "a2"}, "bob")
    assert late == {
        "error": "approval 'a2' has ended",
        "ended": {"answer": None, "by": None, "outcome": "not forwarded: reason 2"},
    }
    forgotten = await approver.control_ops()["approve"]({"id": "a0"}, "bob")
    assert forgotten == {"error": "no pending approval 'a0'"}
    # an outcome that quotes the request at length is kept short
    approver.approval_settled("a2", "denied: path " + "x" * 5000)
    kept = approver.ended_at_exit("the session ended")["a2"]["outcome"]
    assert kept == ("denied: path " + "x" * 5000)[: cli_approver.MAX_OUTCOME] + "…"


async def test_local_identity_is_the_os_user_and_not_token_grade() -> None:
    import getpass

    from mcp_acp.builtins.local_identity import LocalIdentityConfig, LocalIdentityProvider
    from mcp_acp.registry import PluginContext

    context = PluginContext(config_path=Path("/etc/mcp-acp/config.json"), log_dir=Path("/l"))
    provider = LocalIdentityProvider.from_config(LocalIdentityConfig(), context)
    subject = await provider.current_subject()
    assert subject.subject_id == getpass.getuser()
    assert subject.provenance < Provenance.TOKEN


def test_exit_codes_are_distinct_per_failure_class() -> None:
    classes = [
        ConfigError,
        PluginError,
        PolicyError,
        AuditError,
        AuthenticationError,
        PostureError,
        SessionBindingError,
        BackendError,
    ]
    codes = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes)
    assert McpAcpError.exit_code not in codes
    assert 2 not in codes  # reserved for command-line usage errors


def test_error_is_one_line_with_the_fix() -> None:
    error = PolicyError("rule 'x'\nforged line\x1b[31m", fix="edit policy.json")
    line = error.user_line()
    assert line == "policy error: rule 'x'\\nforged line\\u001b[31m — fix: edit policy.json"
    assert "\n" not in line
    assert one_line("a\u2028b\rc") == "a\\u2028b\\rc"
