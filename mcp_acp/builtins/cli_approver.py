"""Built-in ``cli`` approver: pending approvals answered from another terminal.

The approver keeps its pending approvals in memory and offers four operations on the
proxy's control socket (:mod:`mcp_acp.control`): ``list``, ``show`` (one approval, its
arguments whole), ``approve`` (with ``"remember": true`` to let the proxy cache the
approval) and ``deny``. They are what ``mcp-acp approvals list | show ID | approve ID
[--remember] | deny ID`` sends. The answer is tied to the user name from the socket's peer
credentials.

``list`` stays small whatever the requests carry: an approval's arguments are in it whole
only if their JSON takes at most :data:`MAX_LISTED_ARGUMENTS`; larger ones are left out,
with their size and SHA-256 in their stead (``arguments_omitted``), and ``show`` gives them.
Both are worked out once, as the approval becomes pending — the proxy encodes every
answer on its event loop, and relays nothing meanwhile: a hundred approvals of 10 MiB
each made a ``list`` of a gigabyte.

``approve`` and ``deny`` answer once the proxy has decided the request and forwarded it or
refused it (:meth:`CliApprover.approval_settled`), with what became of it under
``"outcome"``: an approval answers the question the policy asked, and a policy reloaded
meanwhile decides again — the request may be denied, or passed without being remembered —
and an audit trail that fails before the request is sent on denies it.

An approval that has ended — answered, timed out, cancelled by the client, cut short by
the session's end — is remembered (the last :data:`MAX_ENDED`), so that an answer that comes
too late is told what became of it rather than that there is no such approval: by the
running proxy, and, once the session is over, by the note the control socket leaves behind
(:meth:`CliApprover.ended_at_exit`, at every end of the session, fail closed or not).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import attrs
from pydantic import BaseModel, ConfigDict

from mcp_acp.audit.events import payload_digest
from mcp_acp.control import Operation
from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import ApprovalOutcome, ApprovalRequest, ApprovalResult
from mcp_acp.registry import PluginContext, Register

__all__ = ["CliApprover", "CliApproverConfig"]

#: How long ``approve``/``deny`` wait to hear what became of the request (the CLI waits 5 s).
SETTLE_SECONDS = 4.0
#: How many ended approvals a proxy remembers for answers that come too late (oldest go).
MAX_ENDED = 256
#: How much of each remembered outcome is kept: a reason may quote the request (a path, a
#: name) at any length, and the memory, and the note, must stay small.
MAX_OUTCOME = 1000
#: The most an approval's arguments may take, as canonical JSON (UTF-8, keys sorted, no
#: whitespace), to be listed whole by ``list``; larger ones are shown only by ``show``.
#: The socket sends them escaped (``\u00e9``): at most six times this, for each approval.
MAX_LISTED_ARGUMENTS = 64 * 1024

#: What an ended approval is remembered as: ``answer`` (what was answered, None if nobody
#: did), ``by`` (who), ``outcome`` (what became of the request; None if not said yet).
Ended = dict[str, str | None]


class CliApproverConfig(BaseModel):
    """The ``cli`` approver has no options of its own: the timeout is
    ``proxy.approval_timeout_seconds`` and the socket lives in ``proxy.socket_dir``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@attrs.define
class _Pending:
    request: ApprovalRequest
    answer: asyncio.Future[tuple[ApprovalResult, str]]
    created: float
    #: what ``list`` says in place of arguments larger than :data:`MAX_LISTED_ARGUMENTS`:
    #: ``{"bytes": size, "sha256": hex}`` of their canonical JSON; None if listed whole
    omitted: dict[str, Any] | None


def _omitted(arguments: Any) -> dict[str, Any] | None:
    """``{"bytes": …, "sha256": …}`` of ``arguments``' canonical JSON — for a
    ``tools/call``, the ``arguments_size`` and ``arguments_sha256`` of the request's
    operation record — if it is larger than :data:`MAX_LISTED_ARGUMENTS`, else None:
    listed whole."""
    digest, size = payload_digest(arguments)
    return {"bytes": size, "sha256": digest} if size > MAX_LISTED_ARGUMENTS else None


@attrs.define
class _Settling:
    """An answered approval whose answerer waits to hear what became of the request."""

    result: ApprovalResult
    who: str
    outcome: asyncio.Future[str]


class CliApprover:
    """Queues approvals until they are answered over the control socket, or time out."""

    name = "cli"

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._settling: dict[str, _Settling] = {}
        self._ended: dict[str, Ended] = {}  # oldest first, at most MAX_ENDED

    @classmethod
    def from_config(cls, options: CliApproverConfig, context: PluginContext) -> CliApprover:
        return cls()

    def control_ops(self) -> dict[str, Operation]:
        """The operations this approver serves on the proxy's control socket."""
        return {
            "list": self._list,
            "show": self._show,
            "approve": self._approve,
            "deny": self._deny,
        }

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    async def request_approval(self, request: ApprovalRequest) -> ApprovalOutcome:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[ApprovalResult, str]] = loop.create_future()
        started = time.monotonic()
        omitted = _omitted(request.arguments)  # once: not at every list
        self._pending[request.approval_id] = _Pending(request, answer, started, omitted)
        try:
            result, who = await asyncio.wait_for(
                asyncio.shield(answer), timeout=request.timeout_seconds
            )
        except TimeoutError:
            result, who = ApprovalResult.TIMEOUT, ""
        finally:
            self._pending.pop(request.approval_id, None)
            self._remember(request.approval_id, answer)
        if result is ApprovalResult.ALLOW_AND_CACHE and not request.cacheable:
            result = ApprovalResult.ALLOW_ONCE  # e.g. code execution: never remembered
        return ApprovalOutcome(
            result=result,
            approver=self.name,
            answered_by=who or None,
            elapsed_seconds=time.monotonic() - started,
            detail=None if who else "nobody answered in time",
        )

    def _remember(
        self, approval_id: str, answer: asyncio.Future[tuple[ApprovalResult, str]]
    ) -> None:
        """The approval ``approval_id`` is no longer pending: remember what was answered
        (nothing, if ``answer`` is not done), for answers that come too late; what became
        of the request follows (:meth:`approval_settled`)."""
        answered = answer.done() and not answer.cancelled()
        result, who = answer.result() if answered else (None, "")
        self._ended[approval_id] = {
            "answer": result.value if result is not None else None,
            "by": who or None,
            "outcome": None,
        }
        while len(self._ended) > MAX_ENDED:
            del self._ended[next(iter(self._ended))]

    def approval_settled(self, approval_id: str, outcome: str) -> None:
        """The proxy has decided the request ``approval_id`` asked about: ``outcome`` says
        what became of it (``allowed; remembered``, ``denied: …``), for whoever answered,
        and for whoever answers too late."""
        settling = self._settling.get(approval_id)
        if settling is not None and not settling.outcome.done():
            settling.outcome.set_result(outcome)
        ended = self._ended.get(approval_id)
        if ended is not None:
            ended["outcome"] = (
                outcome if len(outcome) <= MAX_OUTCOME else outcome[:MAX_OUTCOME] + "…"
            )

    def ended_at_exit(self, why: str) -> dict[str, Ended]:
        """At the end of the session (``why``: ``the proxy shut down (…)`` at a fail-closed
        exit, where this is synchronous and the event loop does not run again; else what
        ended it): each approval still pending, answered with its answerer not yet told
        what became of the request, or ended (the last :data:`MAX_ENDED`), and what
        became of it — ``answer`` (None: nobody answered), ``by``, ``outcome`` — for the
        note the control socket leaves (:meth:`mcp_acp.control.ControlServer.record_ended`).
        The enforcement point has settled what it could just before
        (:meth:`approval_settled`)."""
        ended: dict[str, Ended] = {}
        for key, pending in list(self._pending.items()):
            if not pending.answer.done():
                outcome = f"{why}; the request was denied"
                ended[key] = {"answer": None, "by": None, "outcome": outcome}
        unknown = f"not known: {why} before it said what became of the request"
        for key, settling in list(self._settling.items()):
            told = settling.outcome
            # not told yet: allowed, and being forwarded when the process ended
            outcome = told.result() if told.done() and not told.cancelled() else unknown
            answer = settling.result.value
            ended[key] = {"answer": answer, "by": settling.who, "outcome": outcome}
        for key, entry in list(self._ended.items()):
            if key not in ended:
                ended[key] = {**entry, "outcome": entry["outcome"] or unknown}
        return ended

    # ---------------------------------------------------------------- control operations

    def _item(self, key: str, pending: _Pending, *, whole: bool = False) -> dict[str, Any]:
        """One pending approval as ``list`` gives it — or, if ``whole``, as ``show`` does:
        with its arguments, however large."""
        request = pending.request
        omitted = None if whole else pending.omitted
        expires_in = request.timeout_seconds - (time.monotonic() - pending.created)
        return {
            "id": key,
            "summary": request.summary,
            "rule": request.decision.rule_id,
            "subject": request.request.subject.subject_id,
            "method": request.request.action.mcp_method,
            "tool": request.request.action.tool_name,
            "name": request.request.resource.name,
            "uri": request.request.resource.uri,
            "arguments": request.arguments if omitted is None else None,
            "arguments_omitted": omitted,
            "paths": [a.path for a in request.request.resource.paths],
            "cacheable": request.cacheable,
            "not_remembered": request.not_remembered,
            "expires_in": round(expires_in, 1),
        }

    def _list(self, command: Mapping[str, Any], who: str) -> dict[str, Any]:
        return {"pending": [self._item(key, p) for key, p in self._pending.items()]}

    def _show(self, command: Mapping[str, Any], who: str) -> dict[str, Any]:
        """``{"pending": item}``: one pending approval, its arguments whole."""
        approval_id = str(command.get("id"))
        pending = self._pending.get(approval_id)
        if pending is None or pending.answer.done():
            return self._not_pending(approval_id)
        return {"pending": self._item(approval_id, pending, whole=True)}

    def _not_pending(self, approval_id: str) -> dict[str, Any]:
        """The error for an id that is not pending: what became of it if it has ended."""
        ended = self._ended.get(approval_id)
        if ended is not None:  # too late: say what became of it
            return {"error": f"approval {approval_id!r} has ended", "ended": dict(ended)}
        return {"error": f"no pending approval {approval_id!r}"}

    async def _answer(
        self, command: Mapping[str, Any], who: str, result: ApprovalResult
    ) -> dict[str, Any]:
        """Answer a pending approval; then wait (up to :data:`SETTLE_SECONDS`) for the
        proxy to say what became of the request: ``outcome``, or None if it has not yet."""
        approval_id = str(command.get("id"))
        pending = self._pending.get(approval_id)
        if pending is None or pending.answer.done():
            return self._not_pending(approval_id)
        if result is ApprovalResult.ALLOW_AND_CACHE and not pending.request.cacheable:
            result = ApprovalResult.ALLOW_ONCE
        settling: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._settling[approval_id] = _Settling(result, who, settling)
        pending.answer.set_result((result, who))
        try:
            outcome: str | None = await asyncio.wait_for(settling, timeout=SETTLE_SECONDS)
        except TimeoutError:
            outcome = None
        finally:
            self._settling.pop(approval_id, None)
        return {"ok": True, "result": result.value, "outcome": outcome}

    async def _approve(self, command: Mapping[str, Any], who: str) -> dict[str, Any]:
        remember = command.get("remember") is True
        result = ApprovalResult.ALLOW_AND_CACHE if remember else ApprovalResult.ALLOW_ONCE
        return await self._answer(command, who, result)

    async def _deny(self, command: Mapping[str, Any], who: str) -> dict[str, Any]:
        return await self._answer(command, who, ApprovalResult.DENY)


@hookimpl
def register_approvers(register: Register) -> None:
    register(
        "cli",
        CliApprover.from_config,
        CliApproverConfig,
        summary="pending approvals answered with 'mcp-acp approvals' (local socket)",
    )
