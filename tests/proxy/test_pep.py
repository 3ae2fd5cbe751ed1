"""The enforcement point with real parts: the acp engine on a real policy file, the JSONL
audit trail on disk, and the ``cli`` approver answered over a real control socket from
another thread (as ``mcp-acp approvals`` would). Only time is injected, where a limit is
measured in minutes."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import pwd
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mcp_acp.audit.chain import verify_stream
from mcp_acp.audit.events import OperationEvent
from mcp_acp.audit.jsonl import JsonlAuditSink
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.builtins.cli_approver import MAX_LISTED_ARGUMENTS, CliApprover
from mcp_acp.builtins.deny_approver import DenyApprover
from mcp_acp.builtins.local_identity import LocalIdentityProvider
from mcp_acp.control import ControlServer, ask
from mcp_acp.errors import AuditError, AuthenticationError, PostureError, SessionBindingError
from mcp_acp.models import (
    ApprovalOutcome,
    ApprovalResult,
    Decision,
    Effect,
    Provenance,
    Subject,
)
from mcp_acp.policy.engine import AcpPolicyEngine
from mcp_acp.proxy.limits import ApprovalCache, Dropped, TokenBucket, ToolRateLimit
from mcp_acp.proxy.pep import EnforcementPoint, Limits, Session
from mcp_acp.shutdown import ShutdownCoordinator
from mcp_acp.tools import ToolEntry, ToolRegistry

POLICY = {
    "version": "1",
    "rules": [
        {
            "id": "read-data",
            "effect": "allow",
            "conditions": {"path_pattern": "/data/**", "operations": "read"},
        },
        {"id": "ask-writes", "effect": "ask", "conditions": {"tool_name": "write_file"}},
        {"id": "ask-shell", "effect": "ask", "conditions": {"tool_name": "run_command"}},
        {"id": "ask-reads", "effect": "ask", "conditions": {"mcp_method": "resources/read"}},
    ],
}


class Exited(Exception):
    """The shutdown coordinator's exit, in a test: the process goes on."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Setup:
    def __init__(
        self,
        tmp: Path,
        limits: Limits,
        identity: Any = None,
        registry: ToolRegistry | None = None,
        policy: dict[str, Any] | None = None,
        *,
        shutdown: bool = False,
        sink: JsonlAuditSink | None = None,
    ) -> None:
        self.log_dir = tmp / "log"
        self.policy = tmp / "policy.json"
        self.policy.write_text(json.dumps(policy or POLICY))
        self.engine = AcpPolicyEngine.from_file(self.policy)
        self.exits: list[int] = []  # with shutdown: the codes the coordinator exited with
        self.coordinator = ShutdownCoordinator(
            log_dir=self.log_dir, fallback_path=tmp / "fallback.jsonl", exit=self._exit
        )
        self.trail = AuditTrail([sink or JsonlAuditSink(self.log_dir)], self.coordinator)
        self.approver = CliApprover()
        self.control = ControlServer(tmp / "run")
        for name, op in self.approver.control_ops().items():
            self.control.register(name, op)
        self.identity = identity or LocalIdentityProvider("alice")
        self.session = Session()
        self.pep = EnforcementPoint(
            engine=self.engine,
            trail=self.trail,
            identity=self.identity,
            approver=self.approver,
            registry=registry or ToolRegistry.default(),
            backend_id="fs",
            session=self.session,
            approval_timeout=5,
            limits=limits,
            shutdown=self.coordinator if shutdown else None,
        )

    def _exit(self, code: int) -> Any:
        self.exits.append(code)
        raise Exited(code)

    async def pending(self) -> dict[str, Any]:
        """The first pending approval, as ``mcp-acp approvals list --json`` shows it."""
        for _ in range(200):
            listed = await asyncio.to_thread(ask, self.control.path, {"op": "list"})
            if listed["pending"]:
                return listed["pending"][0]  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)
        raise AssertionError("no approval became pending")

    async def answer(self, op: str, **fields: Any) -> dict[str, Any]:
        """Wait for one pending approval and answer it over the socket, from a thread."""
        command = {"op": op, "id": (await self.pending())["id"], **fields}
        return await asyncio.to_thread(ask, self.control.path, command)

    def decisions(self) -> list[dict[str, Any]]:
        lines = (self.log_dir / "decisions.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if '"event":"decision"' in line]

    def companion(self, request_id: int) -> Any:
        """What the relay hands :meth:`EnforcementPoint.check` for a client request: its
        operation record, forwarded or denied."""

        def operation(allowed: bool) -> OperationEvent:
            return OperationEvent(
                session_id=self.session.id,
                request_id=str(request_id),
                direction="client_to_server",
                mcp_method="tools/call",
                outcome="forwarded" if allowed else "denied",
                error_code=None if allowed else -32003,
            )

        return operation

    def operations(self) -> list[dict[str, Any]]:
        """The operation records, in the order written."""
        lines = (self.log_dir / "operations.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if '"event":"operation"' in line]


@pytest.fixture
async def clock_setup(tmp_path: Path) -> AsyncIterator[tuple[Setup, Clock]]:
    clock = Clock()
    limits = Limits(
        approvals=ApprovalCache(600, clock),
        tool_calls=ToolRateLimit(3, clock),
        flood=TokenBucket(0, 1, clock),
    )
    setup = Setup(tmp_path, limits)
    await setup.trail.start()
    await setup.control.start()
    yield setup, clock
    await setup.control.close()
    await setup.trail.close()
    assert verify_stream(setup.log_dir, "decisions").ok


def write(path: str) -> dict[str, Any]:
    return {"name": "write_file", "arguments": {"path": path, "content": "x"}}


async def test_remembered_approval_is_reused_until_ttl_or_reload(
    clock_setup: tuple[Setup, Clock],
) -> None:
    setup, clock = clock_setup
    pep = setup.pep
    first = asyncio.create_task(pep.check("tools/call", write("/data/a.txt"), 1))
    assert (await setup.answer("approve", remember=True))["result"] == "allow_and_cache"
    assert (await first).allowed

    # same subject, tool and path — written differently — no human needed
    assert (await pep.check("tools/call", write("/data/./a.txt"), 2)).allowed
    # another path is asked again; the human says no
    other = asyncio.create_task(pep.check("tools/call", write("/data/b.txt"), 3))
    await setup.answer("deny")
    assert not (await other).allowed

    clock.now += 601  # the TTL ran out
    expired = asyncio.create_task(pep.check("tools/call", write("/data/a.txt"), 4))
    await setup.answer("approve", remember=True)
    assert (await expired).allowed
    pep.policy_reloaded()  # a new policy forgets every remembered approval
    assert len(pep.limits.approvals) == 0
    reloaded = asyncio.create_task(pep.check("tools/call", write("/data/a.txt"), 5))
    await setup.answer("approve")
    assert (await reloaded).allowed

    records = {r["request_id"]: r for r in setup.decisions()}
    assert records["1"]["approval_remembered"] is True
    assert records["1"]["approved_by"]
    assert records["2"]["approval_cached"] is True
    assert records["2"]["approver"] == "cache"
    assert records["2"]["approved_by"] == records["1"]["approved_by"]
    assert records["3"]["final_effect"] == "deny"
    assert records["4"].get("approval_cached") is None  # asked a human, not the cache
    assert records["5"].get("approval_cached") is None


ASK_ALL = {
    "version": "1",
    "rules": [{"id": "ask-all", "effect": "ask", "conditions": {"mcp_method": "tools/call"}}],
}


async def test_a_remembered_approval_covers_the_same_call_only(tmp_path: Path) -> None:
    """The same call again: the same tool, each path under the same argument name (written
    differently, normalised, is the same), every other argument the same (in any key
    order). Another URL, other SQL, swapped paths or the same path behind another option
    are asked again."""
    setup = Setup(tmp_path, Limits(), policy=ASK_ALL)
    # the approval key alone: fetch returns untrusted content, and after it a remembered
    # egress is asked again (test_a_remembered_approval_is_asked_again_after_untrusted_content)
    setup.pep.untrusted_content = "off"
    await setup.trail.start()
    await setup.control.start()

    def call(name: str, **arguments: Any) -> dict[str, Any]:
        return {"name": name, "arguments": arguments}

    fetch = call("fetch", url="https://docs.python.org/3/", headers={"a": 1, "b": 2})
    await approve_remembering(setup, fetch, 1)
    assert await remembered(setup, fetch, 2)
    reordered = call("fetch", headers={"b": 2, "a": 1}, url="https://docs.python.org/3/")
    assert await remembered(setup, reordered, 3)
    assert not await remembered(setup, call("fetch", url="https://attacker.example/?d=k"), 4)
    assert not await remembered(setup, call("fetch", url="https://docs.python.org/3/"), 5)

    query = call("write_query", query="INSERT INTO notes VALUES ('hi')")
    await approve_remembering(setup, query, 6)
    assert not await remembered(setup, call("write_query", query="DROP TABLE users"), 7)

    convert = call("convert", file="/data/in.txt", output_path="/data/out.txt")
    await approve_remembering(setup, convert, 8)
    assert await remembered(
        setup, call("convert", file="/data/./in.txt", output_path="/data/out.txt"), 9
    )
    swapped = call("convert", file="/data/out.txt", output_path="/data/in.txt")
    assert not await remembered(setup, swapped, 10)

    frob = call("frob", option="--output=/data/x")  # a path behind an option
    await approve_remembering(setup, frob, 11)
    assert await remembered(setup, frob, 12)
    assert not await remembered(setup, call("frob", option="--delete=/data/x"), 13)
    await setup.control.close()
    await setup.trail.close()
    cached = [r["request_id"] for r in setup.decisions() if r.get("approval_cached")]
    assert cached == ["2", "3", "9", "12"]


ASK_EVERYTHING = {
    "version": "1",
    "rules": [
        {"id": f"ask-{n}", "effect": "ask", "conditions": {"mcp_method": method}}
        for n, method in enumerate(["tools/call", "resources/read", "prompts/get"])
    ],
}


async def test_the_human_sees_what_is_asked(tmp_path: Path) -> None:
    """The summary shows each argument by name — every path whole, any other value cut
    after 200 characters —, a resource's URI, a prompt's name and arguments; ``list``
    gives the whole of them. An argument name that could pass for more is quoted."""
    setup = Setup(tmp_path, Limits(), policy=ASK_EVERYTHING)
    await setup.trail.start()
    await setup.control.start()
    long_path = "/data/" + "d" * 250 + "/a.txt"
    arguments = {
        "path": long_path,
        "content": "x" * 300,
        "flags": {"b": [1, 2], "a": None},
        'mode="safe", z': "on",
    }
    call = asyncio.create_task(
        setup.pep.check("tools/call", {"name": "write_file", "arguments": arguments}, 1)
    )
    pending = await setup.pending()
    assert pending["summary"] == (
        f'alice wants tools/call write_file (path="{long_path}", '
        f'content="{"x" * 199}… (302 characters), flags={{"b":[1,2],"a":null}}, '
        '"mode=\\"safe\\", z"="on"); rule ask-0'
    )
    assert pending["method"] == "tools/call"
    assert pending["name"] == "write_file"
    assert pending["arguments"] == arguments  # whole
    assert pending["uri"] is None
    await setup.answer("deny")
    await call

    read = asyncio.create_task(
        setup.pep.check("resources/read", {"uri": "note://payroll/all-salaries"}, 2)
    )
    pending = await setup.pending()
    assert (
        pending["summary"] == "alice wants resources/read note://payroll/all-salaries; rule ask-1"
    )
    assert pending["uri"] == "note://payroll/all-salaries"
    await setup.answer("deny")
    await read

    get = {"name": "summarise", "arguments": {"text": "anything"}}
    prompt = asyncio.create_task(setup.pep.check("prompts/get", get, 3))
    pending = await setup.pending()
    assert pending["summary"] == 'alice wants prompts/get summarise (text="anything"); rule ask-2'
    assert (pending["name"], pending["arguments"]) == ("summarise", {"text": "anything"})
    await setup.answer("deny")
    await prompt

    bare = asyncio.create_task(setup.pep.check("tools/call", {"name": "ping_all"}, 4))
    assert (await setup.pending())["summary"] == (
        "alice wants tools/call ping_all (no arguments); rule ask-0"
    )
    await setup.answer("deny")
    await bare
    await setup.control.close()
    await setup.trail.close()


def canonical(arguments: Any) -> bytes:
    """The arguments' canonical JSON, as the audit trail digests it."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


async def test_list_leaves_out_large_arguments_and_show_gives_them_whole(
    tmp_path: Path,
) -> None:
    """Twenty approvals of 2 MiB each: ``list`` answers in a few kilobytes, not 40 MiB —
    each large item says the size and SHA-256 of the arguments it leaves out; arguments of
    at most ``MAX_LISTED_ARGUMENTS`` are listed whole, one byte more are not. ``show``
    gives one approval's arguments whole; an id not pending is an error."""
    setup = Setup(tmp_path, Limits())
    await setup.trail.start()
    await setup.control.start()
    sent = {
        f"/data/big-{n}.txt": {"path": f"/data/big-{n}.txt", "content": f"{n}" + "x" * (2 << 20)}
        for n in range(20)
    }
    edge = len(canonical({"path": "/data/edge.txt", "content": ""}))
    for name, size in (
        ("edge", MAX_LISTED_ARGUMENTS - edge),
        ("over", 1 + MAX_LISTED_ARGUMENTS - edge),
    ):
        path = f"/data/{name}.txt"
        sent[path] = {"path": path, "content": "y" * size}
    sent["/data/small.txt"] = {"path": "/data/small.txt", "content": "small"}
    assert len(canonical(sent["/data/edge.txt"])) == MAX_LISTED_ARGUMENTS
    calls = [
        asyncio.create_task(
            setup.pep.check("tools/call", {"name": "write_file", "arguments": arguments}, n)
        )
        for n, arguments in enumerate(sent.values())
    ]
    for _ in range(500):
        listed = await asyncio.to_thread(ask, setup.control.path, {"op": "list"}, 60)
        if len(listed["pending"]) == len(sent):
            break
        await asyncio.sleep(0.02)
    # as the socket sends it: the one approval listed at the bound, and 1 KiB or so per
    # approval (a summary, a digest) — 40 MiB before
    assert len(json.dumps(listed)) < MAX_LISTED_ARGUMENTS + 32 * 1024
    items = {item["paths"][0]: item for item in listed["pending"]}
    assert items.keys() == sent.keys()
    for path, arguments in sent.items():
        item = items[path]
        if path in ("/data/edge.txt", "/data/small.txt"):
            assert (item["arguments"], item["arguments_omitted"]) == (arguments, None)
            continue
        body = canonical(arguments)
        assert item["arguments"] is None
        assert item["arguments_omitted"] == {
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    big = items["/data/big-7.txt"]
    shown = await asyncio.to_thread(ask, setup.control.path, {"op": "show", "id": big["id"]})
    assert shown["pending"]["arguments"] == sent["/data/big-7.txt"]
    assert shown["pending"]["arguments_omitted"] is None
    assert shown["pending"].keys() == big.keys()
    assert (shown["pending"]["id"], shown["pending"]["summary"]) == (big["id"], big["summary"])
    unknown = await asyncio.to_thread(ask, setup.control.path, {"op": "show", "id": "nope"})
    assert unknown == {"error": "no pending approval 'nope'"}
    for item in items.values():
        command = {"op": "deny", "id": item["id"]}
        assert (await asyncio.to_thread(ask, setup.control.path, command))["ok"]
    assert not any(verdict.allowed for verdict in await asyncio.gather(*calls))
    ended = await asyncio.to_thread(ask, setup.control.path, {"op": "show", "id": big["id"]})
    assert ended["error"] == f"approval {big['id']!r} has ended"
    await setup.control.close()
    await setup.trail.close()


async def test_the_engine_swapped_before_the_proxy_hears_of_it(
    clock_setup: tuple[Setup, Clock],
) -> None:
    """SIGHUP reloads the engine on a thread; the enforcement point hears of it after. In
    between, an approval of the old policy's question is not remembered, and one remembered
    under the old policy answers nothing."""
    setup, _ = clock_setup
    pep = setup.pep
    remembered = asyncio.create_task(pep.check("tools/call", write("/data/a.txt"), 1))
    await setup.answer("approve", remember=True)
    assert (await remembered).allowed
    pending = asyncio.create_task(pep.check("tools/call", write("/data/b.txt"), 2))
    for _ in range(200):
        if setup.approver.pending_count:
            break
        await asyncio.sleep(0.01)
    renamed = json.dumps(POLICY).replace('"ask-writes"', '"ask-writes-2"')
    setup.policy.write_text(renamed)
    assert setup.engine.reload() == []  # and no pep.policy_reloaded()
    await setup.answer("approve", remember=True)
    assert (await pending).allowed  # the new policy asks too: this request passes
    assert len(pep.limits.approvals) == 1  # only the first, given under the old policy
    again = asyncio.create_task(pep.check("tools/call", write("/data/a.txt"), 3))
    await setup.answer("deny")  # asked: the old policy's approval answers nothing
    assert not (await again).allowed

    records = {r["request_id"]: r for r in setup.decisions()}
    assert records["2"]["rule_id"] == "ask-writes-2"
    assert records["2"]["policy_id"] == setup.engine.policy_id
    assert records["2"]["approval_remembered"] is False
    assert records["3"].get("approval_cached") is None


async def test_a_remembered_approval_of_one_resource_is_not_one_of_all(
    clock_setup: tuple[Setup, Clock],
) -> None:
    setup, _ = clock_setup
    pep = setup.pep
    first = asyncio.create_task(pep.check("resources/read", {"uri": "note://a"}, 1))
    assert (await setup.answer("approve", remember=True))["result"] == "allow_and_cache"
    assert (await first).allowed
    assert (await pep.check("resources/read", {"uri": "note://a"}, 2)).allowed  # remembered
    other = asyncio.create_task(pep.check("resources/read", {"uri": "note://secrets"}, 3))
    await setup.answer("deny")  # asked again: another resource
    assert not (await other).allowed
    records = {r["request_id"]: r for r in setup.decisions()}
    assert records["2"]["approval_cached"] is True
    assert records["3"].get("approval_cached") is None
    assert records["3"]["final_effect"] == "deny"


async def test_code_executing_tools_are_never_remembered(
    clock_setup: tuple[Setup, Clock],
) -> None:
    setup, _ = clock_setup
    pep = setup.pep
    shell = {"name": "run_command", "arguments": {"command": "make", "cwd": "/data"}}
    first = asyncio.create_task(pep.check("tools/call", shell, 1))
    answer = await setup.answer("approve", remember=True)
    assert answer["result"] == "allow_once"  # --remember refused for code execution
    assert (await first).allowed
    again = asyncio.create_task(pep.check("tools/call", shell, 2))
    await setup.answer("deny")  # asked again: nothing was remembered
    assert not (await again).allowed
    assert len(pep.limits.approvals) == 0
    listed = [r for r in setup.decisions() if r["tool_name"] == "run_command"]
    assert [r.get("approval_remembered") for r in listed] == [False, False]


@pytest.mark.parametrize(
    "side_effect", ["code_exec", "process_spawn", "sudo_elevate", "container_exec"]
)
async def test_the_cache_never_holds_an_approval_of_code_execution(
    tmp_path: Path, side_effect: str
) -> None:
    """Whoever asks it to: the cache itself refuses, not only the approver."""
    entry = ToolEntry(tool="deploy", operations=["execute"], side_effects=[side_effect, "fs_read"])
    setup = Setup(tmp_path, Limits(), registry=ToolRegistry.default([entry]))
    params = {"name": "deploy", "arguments": {}}
    request = await setup.pep.build("tools/call", params, 1)
    decision = Decision(Effect.ASK, setup.engine.policy_id, rule_id="ask-deploy")
    assert not setup.pep.limits.approvals.remember(request, "alice", decision, params=params)
    assert setup.pep.limits.approvals.get(request, decision, params=params) is None
    assert len(setup.pep.limits.approvals) == 0


async def test_rate_limit_escalates_to_a_human(clock_setup: tuple[Setup, Clock]) -> None:
    setup, clock = clock_setup
    pep = setup.pep
    read = {"name": "read_file", "arguments": {"path": "/data/a.txt"}}
    for n in range(3):
        assert (await pep.check("tools/call", read, n)).allowed
    fourth = asyncio.create_task(pep.check("tools/call", read, 3))
    await setup.answer("approve", remember=True)
    assert (await fourth).allowed
    fifth = asyncio.create_task(pep.check("tools/call", read, 4))
    await setup.answer("deny")  # escalations are never remembered
    verdict = await fifth
    assert not verdict.allowed
    assert verdict.rule_id == "builtin-rate-limit"
    # another tool has its own window
    other = {"name": "list_directory", "arguments": {"path": "/data"}}
    assert (await pep.check("tools/call", other, 5)).allowed
    clock.now += 61  # the window slid past the first calls
    assert (await pep.check("tools/call", read, 6)).allowed

    records = {r["request_id"]: r for r in setup.decisions()}
    assert records["3"]["effect"] == "ask"
    assert records["3"]["rule_id"] == "builtin-rate-limit"
    assert "4 calls" not in records["3"]["reason"]
    assert "3 calls" in records["3"]["reason"]
    assert "allowed by rule read-data" in records["3"]["reason"]
    assert records["4"]["final_effect"] == "deny"
    assert records["6"]["effect"] == "allow"


async def test_token_bucket_rejects_a_flood(tmp_path: Path) -> None:
    clock = Clock()
    setup = Setup(tmp_path, Limits(flood=TokenBucket(rate=2, burst=3, clock=clock)))
    await setup.trail.start()
    read = {"name": "read_file", "arguments": {"path": "/data/a.txt"}}
    verdicts = [await setup.pep.check("tools/call", read, n) for n in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert verdicts[3].rule_id == "builtin-rate-flood"
    # notifications never spend the requests' tokens (they have buckets of their own)
    note = await setup.pep.check("notifications/cancelled", {}, "n", flood_guard=False)
    assert note.allowed
    clock.now += 0.5  # one token back
    assert (await setup.pep.check("tools/call", read, 9)).allowed
    assert not (await setup.pep.check("tools/call", read, 10)).allowed
    await setup.trail.close()
    floods = [r for r in setup.decisions() if r["rule_id"] == "builtin-rate-flood"]
    assert len(floods) == 3
    assert all(r["effect"] == "deny" for r in floods)
    assert setup.pep.counts == {"allowed": 5, "denied": 3, "asked": 0}


async def test_notifications_beyond_their_bucket_are_dropped_and_recorded_together(
    tmp_path: Path,
) -> None:
    clock = Clock()
    limits = Limits(
        client_notifications=TokenBucket(rate=1, burst=2, clock=clock),
        backend_messages=TokenBucket(rate=1, burst=1, clock=clock),
    )
    setup = Setup(tmp_path, limits)
    await setup.trail.start()
    client = [setup.pep.admit("client", "notifications/progress") for _ in range(4)]
    assert client == [True, True, False, False]
    # the backend's bucket is its own: the client's flood does not spend it
    assert setup.pep.admit("backend", "notifications/message")
    assert not setup.pep.admit("backend", "roots/list")
    clock.now += 1.0  # one token back on each side
    assert setup.pep.admit("client", "notifications/progress")
    assert not setup.pep.admit("client", "notifications/progress")
    setup.pep.report_dropped()
    setup.pep.report_dropped()  # nothing new: no second record
    await setup.trail.close()
    lines = (setup.log_dir / "system.jsonl").read_text().splitlines()
    dropped = [json.loads(line) for line in lines if '"messages_dropped"' in line]
    assert len(dropped) == 1
    assert dropped[0]["detail"]["dropped"] == {
        "backend": {"roots/list": 1},
        "client": {"notifications/progress": 3},
    }
    assert dropped[0]["detail"]["limits"] == {
        "client": {"per_second": 1, "burst": 2},
        "backend": {"per_second": 1, "burst": 1},
    }
    assert setup.decisions() == []  # a dropped message has no decision record of its own
    assert verify_stream(setup.log_dir, "system").ok


async def test_dropped_messages_are_recorded_a_second_after_the_first(tmp_path: Path) -> None:
    setup = Setup(tmp_path, Limits(backend_messages=TokenBucket(rate=0.001, burst=1)))
    await setup.trail.start()
    assert setup.pep.admit("backend", "notifications/message")
    assert not setup.pep.admit("backend", "notifications/message")
    system = setup.log_dir / "system.jsonl"
    for _ in range(500):  # the timer (1 s) writes it; the session has not ended
        if '"messages_dropped"' in system.read_text():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("no messages_dropped record while the session went on")
    assert not setup.pep.admit("backend", "notifications/message")
    await setup.trail.close()


def test_dropped_counts_cannot_grow_with_made_up_methods() -> None:
    dropped = Dropped()
    for n in range(1_000):
        dropped.add("backend", f"notifications/x-{n}")
    dropped.add("client", "notifications/" + "y" * 10_000)
    counts = dropped.take()
    named = [m for m in counts["backend"] if m != Dropped.OTHER]
    assert len(named) == Dropped.MAX_METHODS
    assert sum(counts["backend"].values()) == 1_000  # none lost, the rest under "(other)"
    assert counts["client"] == {Dropped.OTHER: 1}  # the table was full by then
    assert not dropped
    assert dropped.take() == {}
    dropped.add("client", "notifications/" + "y" * 10_000)
    assert list(dropped.take()["client"]) == ["notifications/" + "y" * 50]  # 64 characters


class SwitchingIdentity:
    """An identity provider whose subject changes — as a token for someone else would."""

    def __init__(self) -> None:
        self.subject = Subject(
            subject_id="alice", provenance=Provenance.TOKEN, issuer="https://idp"
        )

    async def current_subject(self) -> Subject:
        return self.subject


async def test_subject_change_is_a_binding_violation(tmp_path: Path) -> None:
    identity = SwitchingIdentity()
    setup = Setup(tmp_path, Limits(), identity)
    await setup.trail.start()
    setup.session.bind(await identity.current_subject())
    read = {"name": "read_file", "arguments": {"path": "/data/a.txt"}}
    assert (await setup.pep.check("tools/call", read, 1)).allowed
    identity.subject = Subject(
        subject_id="mallory", provenance=Provenance.TOKEN, issuer="https://idp"
    )
    verdict = await setup.pep.check("tools/call", read, 2)
    assert not verdict.allowed
    assert isinstance(verdict.fatal, SessionBindingError)
    assert verdict.fatal.exit_code == 16
    # same id from another issuer is someone else too
    identity.subject = Subject(
        subject_id="alice", provenance=Provenance.TOKEN, issuer="https://evil"
    )
    assert (await setup.pep.check("tools/call", read, 3)).fatal is not None
    await setup.trail.close()
    record = next(r for r in setup.decisions() if r["request_id"] == "2")
    assert record["effect"] == "deny"
    assert record["rule_id"] == "builtin-session-binding"
    assert "'alice'" in record["reason"]
    assert "'mallory'" in record["reason"]
    assert record["subject_id"] == "alice"  # the bound subject, not the newcomer


class RaisingIdentity:
    """An identity provider that fails with ``error`` on every request — as the ``oidc``
    provider does when saving a refreshed token hits a full disk (OSError) or a claim is out
    of range (OverflowError)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def current_subject(self) -> Subject:
        raise self.error


READ = {"name": "read_file", "arguments": {"path": "/data/a.txt"}}


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (RuntimeError("token cache corrupted"), "RuntimeError: token cache corrupted"),
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (OverflowError("timestamp out of range"), "OverflowError: timestamp out of range"),
    ],
)
async def test_an_identity_provider_error_is_a_recorded_denial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: Exception, words: str
) -> None:
    """Not AuthenticationError, yet no identity: denied, recorded, logged — and the session
    goes on (the next request asks the provider again)."""
    identity = RaisingIdentity(error)
    setup = Setup(tmp_path, Limits(), identity)
    await setup.trail.start()
    with caplog.at_level(logging.ERROR, logger="mcp_acp.proxy.pep"):
        verdict = await setup.pep.check("tools/call", READ, 1)
    assert not verdict.allowed
    assert verdict.rule_id == "builtin-identity-error"
    assert verdict.fatal is None
    assert verdict.reason.startswith("denied: identity provider error: ")
    assert words in verdict.reason
    assert any(words in r.getMessage() for r in caplog.records)
    identity.error = AuthenticationError("not logged in", fix="run 'mcp-acp auth login'")
    assert (await setup.pep.check("tools/call", READ, 2)).rule_id == "builtin-no-identity"
    await setup.trail.close()
    records = {r["request_id"]: r for r in setup.decisions()}
    assert records["1"]["effect"] == "deny"
    assert records["1"]["rule_id"] == "builtin-identity-error"
    assert records["1"]["reason"] == verdict.reason
    assert records["1"]["subject_id"] == "(none)"
    assert setup.pep.counts == {"allowed": 0, "denied": 2, "asked": 0}
    assert verify_stream(setup.log_dir, "decisions").ok


async def test_a_session_nobody_bound_is_bound_to_its_first_subject(tmp_path: Path) -> None:
    """A program of one's own that forgets ``session.bind()``: the point binds the session
    to the first subject it decides for, so a later change is still a binding violation —
    before, an unbound session let any subject through, each request as someone else."""
    identity = SwitchingIdentity()
    setup = Setup(tmp_path, Limits(), identity)
    await setup.trail.start()
    read = {"name": "read_file", "arguments": {"path": "/data/a.txt"}}
    assert (await setup.pep.check("tools/call", read, 1)).allowed
    assert setup.session.subject == identity.subject
    identity.subject = Subject(
        subject_id="mallory", provenance=Provenance.TOKEN, issuer="https://idp"
    )
    verdict = await setup.pep.check("tools/call", read, 2)
    await setup.trail.close()
    assert not verdict.allowed
    assert isinstance(verdict.fatal, SessionBindingError)
    record = next(r for r in setup.decisions() if r["request_id"] == "2")
    assert (record["effect"], record["rule_id"]) == ("deny", "builtin-session-binding")


async def test_an_approver_that_edits_the_arguments_it_is_shown_changes_nothing(
    tmp_path: Path,
) -> None:
    """The arguments an approver gets are its own copy: one that edits them (a value
    redacted for its dialog, a path rewritten) leaves the caller's request — what a program
    of its own forwards after ``check()`` — as it was decided."""

    class Editing:
        name = "editing"

        async def request_approval(self, request: Any) -> ApprovalOutcome:
            request.arguments["path"] = "/etc/shadow"
            request.arguments["content"] = "<redacted>"
            return ApprovalOutcome(ApprovalResult.ALLOW_ONCE, approver=self.name)

    setup = Setup(tmp_path, Limits())
    setup.pep.approver = Editing()
    await setup.trail.start()
    call = write("/data/a.txt")
    verdict = await setup.pep.check("tools/call", call, 1)
    await setup.trail.close()
    assert verdict.allowed
    assert call == write("/data/a.txt")


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (
            Decision(effect="allow", policy_id="p", rule_id="r", reason="x"),  # type: ignore[arg-type]
            "decide() returned a Decision whose effect is str 'allow', not an Effect",
        ),
        (None, "decide() returned NoneType, not a Decision"),
    ],
    ids=["a string effect", "None"],
)
async def test_an_engine_answer_that_is_no_decision_is_denied_saying_what_is_wrong(
    tmp_path: Path, answer: Any, words: str
) -> None:
    """A decision whose effect is the string ``"allow"`` is denied with a reason that
    says so — not "returned Decision(...), not a Decision", which reads as a contradiction."""

    class Engine:
        policy_id = "p"

        def decide(self, request: Any) -> Any:
            return answer

    setup = Setup(tmp_path, Limits())
    setup.pep.engine = Engine()
    await setup.trail.start()
    verdict = await setup.pep.check("tools/call", write("/data/a.txt"), 1)
    await setup.trail.close()
    assert not verdict.allowed
    assert verdict.reason == f"denied: policy engine error: TypeError: {words}"
    (record,) = setup.decisions()
    assert record["rule_id"] == "builtin-engine-error"


async def test_an_identity_provider_that_returns_no_subject_is_denied(tmp_path: Path) -> None:
    class NoSubject:
        async def current_subject(self) -> Any:
            return {"subject_id": "alice"}  # a dict, not a Subject

    setup = Setup(tmp_path, Limits(), NoSubject())
    await setup.trail.start()
    verdict = await setup.pep.check("tools/call", READ, 1)
    await setup.trail.close()
    assert verdict.rule_id == "builtin-identity-error"
    assert "returned dict, not a Subject" in verdict.reason
    assert setup.decisions()[0]["rule_id"] == "builtin-identity-error"


async def test_no_identity_is_a_recorded_denial(tmp_path: Path) -> None:
    error = AuthenticationError("not logged in to https://idp", fix="run 'mcp-acp auth login'")
    setup = Setup(tmp_path, Limits(), RaisingIdentity(error))
    await setup.trail.start()
    verdict = await setup.pep.check("tools/call", READ, 1)
    await setup.trail.close()
    assert not verdict.allowed
    assert verdict.rule_id == "builtin-no-identity"
    assert verdict.fatal is None
    (record,) = setup.decisions()
    assert record["effect"] == "deny"
    assert record["rule_id"] == "builtin-no-identity"
    assert record["reason"] == str(error)
    assert "run 'mcp-acp auth login'" in record["reason"]
    assert record["subject_id"] == "(none)"


class WaitingIdentity:
    """An identity provider that answers only once ``answer`` is set."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def current_subject(self) -> Subject:
        self.asked.set()
        await self.answer.wait()
        return Subject(subject_id="alice", provenance=Provenance.TOKEN)


async def test_the_clients_cancellation_and_an_audit_failure_pass_through_the_identity(
    tmp_path: Path,
) -> None:
    """A request cancelled while the identity provider works is the client's (nothing to
    answer; its denial is on record as cut short); an audit failure is the trail's own
    fail-closed path (the relay denies and the proxy shuts down). Neither is turned into an
    identity error."""
    identity = WaitingIdentity()
    setup = Setup(tmp_path, Limits(), identity)
    await setup.trail.start()
    checking = asyncio.ensure_future(setup.pep.check("tools/call", READ, 1))
    await identity.asked.wait()
    checking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await checking
    (tmp_path / "audit").mkdir()
    failing = Setup(tmp_path / "audit", Limits(), RaisingIdentity(AuditError("disk gone")))
    await failing.trail.start()
    with pytest.raises(AuditError):
        await failing.pep.check("tools/call", READ, 2)
    for done in (setup, failing):
        await done.trail.close()
    recorded = [(r["rule_id"], r["reason"]) for r in setup.decisions()]
    reason = "denied: cancelled by the client before the request was decided"
    assert recorded == [("builtin-cut-short", reason)]
    assert failing.decisions() == []


async def test_an_identity_providers_own_cancelled_error_is_its_failure(tmp_path: Path) -> None:
    """A ``CancelledError`` the provider raises when nothing cancelled the request is not
    the client's cancellation: it is the provider's failure, a recorded denial."""
    setup = Setup(tmp_path, Limits(), RaisingIdentity(asyncio.CancelledError()))
    await setup.trail.start()
    verdict = await setup.pep.check("tools/call", READ, 1)
    await setup.trail.close()
    assert (verdict.allowed, verdict.rule_id) == (False, "builtin-identity-error")
    assert "CancelledError (raised by the plugin; nothing cancelled the request)" in (
        verdict.reason
    )
    assert [r["rule_id"] for r in setup.decisions()] == ["builtin-identity-error"]


async def test_a_request_that_cannot_be_prepared_is_a_recorded_denial(tmp_path: Path) -> None:
    """Arguments the request builder cannot read (a key that is not a string) must not
    leave the request unanswered. (A URI ``urlsplit`` refuses, ``http://[x``, is no
    longer one: the policy denies it as ambiguous.)"""
    setup = Setup(tmp_path, Limits())
    await setup.trail.start()
    odd = {"name": "read_file", "arguments": {1: "/data/a.txt"}}
    verdict = await setup.pep.check("tools/call", odd, 1)
    await setup.trail.close()
    assert not verdict.allowed
    assert verdict.rule_id == "builtin-request-error"
    assert verdict.reason.startswith("denied: the request could not be prepared: AttributeError")
    (record,) = setup.decisions()
    assert record["rule_id"] == "builtin-request-error"
    assert record["subject_id"] == "alice"


async def test_cancelled_approval_is_recorded_as_denied(clock_setup: tuple[Setup, Clock]) -> None:
    setup, _ = clock_setup
    task = asyncio.create_task(setup.pep.check("tools/call", write("/data/c.txt"), 7))
    for _ in range(200):
        if setup.approver.pending_count:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = next(r for r in setup.decisions() if r["request_id"] == "7")
    assert record["final_effect"] == "deny"
    assert record["reason"].endswith("cancelled by the client")
    assert setup.approver.pending_count == 0


class HeldSink(JsonlAuditSink):
    """The ``jsonl`` sink, except that once ``hold`` is set, the writer of the next decision
    record is held after the record is durable, until it is cancelled: the moment a
    decision is on record and its request not yet forwarded."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir)
        self.hold = False
        self.holding = asyncio.Event()

    async def write(self, event: Any) -> None:
        await super().write(event)
        if self.hold and event.stream == "decisions":
            self.holding.set()
            await asyncio.Event().wait()


async def test_a_request_cancelled_while_its_allow_is_recorded_is_on_record_as_not_forwarded(
    tmp_path: Path,
) -> None:
    """The client cancels a request whose decision (allow) is being written, its operation
    record (forwarded) handed over with it: the request is not forwarded, and a second
    operation record says so — the last record of the request is true."""
    sink = HeldSink(tmp_path / "log")
    setup = Setup(tmp_path, Limits(), sink=sink)
    await setup.trail.start()
    assert (await setup.pep.check("tools/call", READ, 1, companion=setup.companion(1))).allowed
    sink.hold = True
    task = asyncio.create_task(setup.pep.check("tools/call", READ, 2, companion=setup.companion(2)))
    await asyncio.wait_for(sink.holding.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await setup.trail.close()
    assert [(r["request_id"], r["effect"]) for r in setup.decisions()] == [
        ("1", "allow"),
        ("2", "allow"),
    ]
    written = [
        (r["request_id"], r["outcome"], r.get("error_code"), r.get("reason"))
        for r in setup.operations()
    ]
    assert written == [
        ("1", "forwarded", None, None),
        ("2", "forwarded", None, None),
        (
            "2",
            "denied",
            -32003,
            "not forwarded: cancelled by the client while its decision was being recorded",
        ),
    ]
    assert setup.pep.counts == {"allowed": 1, "denied": 1, "asked": 0}
    assert verify_stream(setup.log_dir, "operations").ok


async def test_a_fail_closed_shutdown_while_an_allow_is_recorded_says_it_was_not_forwarded(
    tmp_path: Path,
) -> None:
    """The process ends (the coordinator's callback, synchronous) while an allow is being
    recorded: the request will not be forwarded, and a second operation record says so."""
    sink = HeldSink(tmp_path / "log")
    setup = Setup(tmp_path, Limits(), shutdown=True, sink=sink)
    await setup.trail.start()
    sink.hold = True
    task = asyncio.create_task(setup.pep.check("tools/call", READ, 1, companion=setup.companion(1)))
    await asyncio.wait_for(sink.holding.wait(), timeout=10)
    with pytest.raises(Exited):
        setup.coordinator.trigger(PostureError("device posture lost: x", fix="fix it"))
    task.cancel()  # the process would be gone; nothing more is recorded
    with pytest.raises(asyncio.CancelledError):
        await task
    await setup.trail.close()
    assert [r["effect"] for r in setup.decisions()] == ["allow"]
    why = "the proxy shut down (posture failure: device posture lost: x)"
    assert [(r["outcome"], r.get("reason")) for r in setup.operations()] == [
        ("forwarded", None),
        ("denied", f"not forwarded: {why} while its decision was being recorded"),
    ]


async def test_whoever_answers_is_told_what_became_of_the_request(tmp_path: Path) -> None:
    """``approve`` and ``deny`` answer once the request is decided and on record, with what
    became of it: remembered or not, asked about again (the rate limit), denied, or not
    forwarded after all (the client cancelled it while its allow was being recorded)."""
    sink = HeldSink(tmp_path / "log")
    limits = Limits(tool_calls=ToolRateLimit(2), flood=TokenBucket(0, 1))
    setup = Setup(tmp_path, limits, sink=sink)
    await setup.trail.start()
    await setup.control.start()
    pep = setup.pep
    first = asyncio.create_task(pep.check("tools/call", write("/data/a.txt"), 1))
    answer = await setup.answer("approve", remember=True)
    assert (answer["result"], answer["outcome"]) == ("allow_and_cache", "allowed; remembered")
    assert (await first).allowed
    denied = asyncio.create_task(pep.check("tools/call", write("/data/b.txt"), 2))
    answer = await setup.answer("deny")
    assert answer["outcome"] == f"denied: {(await denied).reason}"
    assert "; not approved: denied by " in answer["outcome"]

    assert (await pep.check("tools/call", write("/data/a.txt"), 3)).allowed  # remembered
    limited = asyncio.create_task(pep.check("tools/call", write("/data/c.txt"), 4))
    answer = await setup.answer("approve")  # the third call in a minute: asked again
    assert answer["outcome"] == "approved; another approval is asked for (rule builtin-rate-limit)"
    assert (await setup.pending())["rule"] == "builtin-rate-limit"
    assert (await setup.answer("approve"))["outcome"] == "allowed"
    assert (await limited).allowed

    pep.limits.tool_calls = ToolRateLimit(0)
    cancelled = asyncio.create_task(pep.check("tools/call", write("/data/d.txt"), 5))
    pending = await setup.pending()
    sink.hold = True
    approving = asyncio.create_task(
        asyncio.to_thread(ask, setup.control.path, {"op": "approve", "id": pending["id"]})
    )
    await asyncio.wait_for(sink.holding.wait(), timeout=10)  # the allow is being recorded
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    answer = await approving
    assert answer["outcome"] == "not forwarded: cancelled by the client"
    await setup.control.close()
    await setup.trail.close()


async def test_a_caller_that_forwards_says_what_became_of_an_approved_request(
    tmp_path: Path,
) -> None:
    """``check(..., forwards=True)``: an approved request's answerer waits until the caller
    says whether it forwarded the request (``settled``) — if the process ends meanwhile,
    the approver notes that nobody can tell; a refusal after the decision is what it is
    told."""
    setup = Setup(tmp_path, Limits())
    await setup.trail.start()
    await setup.control.start()
    pep, why = setup.pep, "the proxy shut down (audit failure: gone)"
    ended: list[str] = []
    for refused in (None, "denied: the audit trail cannot be written (gone)"):
        deciding = asyncio.create_task(
            pep.check("tools/call", write("/data/a.txt"), 1, forwards=True)
        )
        pending = await setup.pending()
        approving = asyncio.create_task(
            asyncio.to_thread(ask, setup.control.path, {"op": "approve", "id": pending["id"]})
        )
        verdict = await deciding
        assert verdict.allowed
        me = pwd.getpwuid(os.geteuid()).pw_name
        assert setup.approver.ended_at_exit(why)[pending["id"]] == {
            "answer": "allow_once",
            "by": me,
            "outcome": f"not known: {why} before it said what became of the request",
        }
        pep.settled(verdict, refused)
        told = (await approving)["outcome"]
        assert told == (refused or "allowed and forwarded")
        ended.append(pending["id"])
    # both remembered, for answers that come too late, with what became of each
    assert setup.approver.ended_at_exit(why) == {
        ended[0]: {"answer": "allow_once", "by": me, "outcome": "allowed and forwarded"},
        ended[1]: {
            "answer": "allow_once",
            "by": me,
            "outcome": "denied: the audit trail cannot be written (gone)",
        },
    }
    await setup.control.close()
    await setup.trail.close()


async def test_a_fail_closed_exit_notes_what_became_of_each_approval(tmp_path: Path) -> None:
    """At a fail-closed exit the enforcement point settles what it cuts short, and the
    approver says what became of every approval it held, for the note answers that come
    too late read: one nobody answered (denied), one approved whose allow was being
    recorded (not forwarded)."""
    sink = HeldSink(tmp_path / "log")
    setup = Setup(tmp_path, Limits(), sink=sink)
    await setup.trail.start()
    await setup.control.start()
    pep, why = setup.pep, "the proxy shut down (posture failure: lost)"
    unanswered = asyncio.create_task(pep.check("tools/call", write("/data/a.txt"), 1))
    first = (await setup.pending())["id"]
    sink.hold = True
    recording = asyncio.create_task(pep.check("tools/call", write("/data/b.txt"), 2))
    for _ in range(200):
        listed = await asyncio.to_thread(ask, setup.control.path, {"op": "list"})
        if len(listed["pending"]) == 2:
            break
        await asyncio.sleep(0.02)
    (second,) = [p["id"] for p in listed["pending"] if p["id"] != first]
    approving = asyncio.create_task(
        asyncio.to_thread(ask, setup.control.path, {"op": "approve", "id": second})
    )
    await asyncio.wait_for(sink.holding.wait(), timeout=10)  # the allow is being recorded
    pep.record_cut_short(why)
    not_forwarded = f"not forwarded: {why} while its decision was being recorded"
    ended = setup.approver.ended_at_exit(why)
    assert ended[first] == {
        "answer": None,
        "by": None,
        "outcome": f"{why}; the request was denied",
    }
    assert (ended[second]["answer"], ended[second]["outcome"]) == ("allow_once", not_forwarded)
    assert (await approving)["outcome"] == not_forwarded
    for task in (unanswered, recording):
        task.cancel()
    await asyncio.gather(unanswered, recording, return_exceptions=True)
    await setup.control.close()
    await setup.trail.close()


class BrokenApprover:
    """An approver plugin that breaks its contract: it raises, or answers with something
    that is not an :class:`ApprovalOutcome` (or one whose result is not an
    :class:`ApprovalResult`)."""

    name = "broken"

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def request_approval(self, request: Any) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (None, "TypeError: request_approval() returned NoneType, not an ApprovalOutcome"),
        (
            ApprovalOutcome(result="allow_once", approver="broken"),  # type: ignore[arg-type]
            "TypeError: its result is 'allow_once', not an ApprovalResult",
        ),
        (RuntimeError("the dialog crashed"), "RuntimeError: the dialog crashed"),
    ],
    ids=["None", "a string result", "raises"],
)
async def test_an_approver_that_fails_or_answers_nonsense_is_a_recorded_denial(
    tmp_path: Path, answer: Any, words: str
) -> None:
    """Whatever the approver does wrong, the request is denied like one whose approver
    raises: a decision record and an operation record, both saying so."""
    setup = Setup(tmp_path, Limits())
    setup.pep.approver = BrokenApprover(answer)
    await setup.trail.start()
    call = write("/data/a.txt")
    verdict = await setup.pep.check("tools/call", call, 1, companion=setup.companion(1))
    await setup.trail.close()
    assert not verdict.allowed
    assert words in verdict.reason
    (record,) = setup.decisions()
    assert (record["effect"], record["final_effect"]) == ("ask", "deny")
    assert record["approver"] == "broken"
    assert [r["outcome"] for r in setup.operations()] == ["denied"]
    assert setup.pep.counts == {"allowed": 0, "denied": 1, "asked": 1}


class DeafApprover:
    """An approver plugin that catches its cancellation and goes on waiting: it never
    answers, and lets go only once ``released`` (the test's end: a task that ignores its
    cancellation would hold the event loop's own shutdown)."""

    name = "deaf"

    def __init__(self) -> None:
        self.cancels = 0
        self.released = asyncio.Event()

    async def request_approval(self, request: Any) -> Any:
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                self.cancels += 1
        return None


async def test_an_approver_that_ignores_its_cancellation_still_times_out(
    tmp_path: Path,
) -> None:
    """The approval timeout holds against an approver that swallows the ``CancelledError``
    it is stopped with: the request is denied on record at the timeout, and the approver is
    left behind — before, ``wait_for`` waited for it to end, and the request waited for
    ever."""
    setup = Setup(tmp_path, Limits())
    deaf = DeafApprover()
    setup.pep.approver = deaf
    setup.pep.approval_timeout = 0.1
    await setup.trail.start()
    verdict = await setup.pep.check(
        "tools/call", write("/data/a.txt"), 1, companion=setup.companion(1)
    )
    await setup.trail.close()
    assert not verdict.allowed
    assert "not approved: timeout after 0.1 s" in verdict.reason
    assert deaf.cancels == 1  # told to stop, once; not waited for
    deaf.released.set()
    (record,) = setup.decisions()
    assert (record["effect"], record["final_effect"]) == ("ask", "deny")
    assert [r["outcome"] for r in setup.operations()] == ["denied"]


class ExitingWhenTold:
    """An approver that allows, and calls ``sys.exit(0)`` when told what became of the
    request (``approval_settled``) — or when a control command reaches one of its ops."""

    name = "exiting"

    def __init__(self) -> None:
        self.told: list[str] = []

    async def request_approval(self, request: Any) -> ApprovalOutcome:
        return ApprovalOutcome(ApprovalResult.ALLOW_ONCE, approver=self.name, answered_by="bob")

    def approval_settled(self, approval_id: str, outcome: str) -> None:
        self.told.append(outcome)
        raise SystemExit(0)

    def control_ops(self) -> dict[str, Any]:
        def leave(command: Any, who: str) -> Any:
            raise SystemExit(0)

        return {"leave": leave}


async def test_an_approvers_sys_exit_when_told_or_commanded_is_contained(
    tmp_path: Path,
) -> None:
    """``approval_settled`` and a control op calling ``sys.exit()``: logged as the
    approver's failure, and the session goes on — before, the proxy ended with exit 0, the
    forwarded request's answer never relayed."""
    setup = Setup(tmp_path, Limits())
    approver = ExitingWhenTold()
    setup.pep.approver = approver
    for name, op in approver.control_ops().items():
        setup.control.register(name, op)
    await setup.trail.start()
    verdict = await setup.pep.check("tools/call", write("/data/a.txt"), 1, forwards=True)
    assert verdict.allowed
    setup.pep.settled(verdict)
    assert approver.told == ["allowed and forwarded"]
    assert await setup.control.handle({"op": "leave"}, "alice") == {"error": "SystemExit: 0"}
    await setup.trail.close()


async def test_the_record_of_an_ask_not_approved_says_why(
    clock_setup: tuple[Setup, Clock],
) -> None:
    """A human's deny, a timeout, an approver that fails, the headless approver: each
    decision record's reason is the rule's, then "not approved: " and why — the sentence
    the client is told."""
    setup, _ = clock_setup
    pep = setup.pep
    me = pwd.getpwuid(os.geteuid()).pw_name
    denied = asyncio.create_task(pep.check("tools/call", write("/data/a.txt"), 1))
    await setup.answer("deny")
    verdicts = [await denied]
    pep.approval_timeout = 0.5
    verdicts.append(await pep.check("tools/call", write("/data/a.txt"), 2))
    pep.approver = BrokenApprover(RuntimeError("the dialog crashed"))
    verdicts.append(await pep.check("tools/call", write("/data/a.txt"), 3))
    pep.approver = DenyApprover()
    verdicts.append(await pep.check("tools/call", write("/data/a.txt"), 4))

    records = setup.decisions()
    assert [r["final_effect"] for r in records] == ["deny"] * 4
    assert [r["reason"] for r in records] == [v.reason for v in verdicts]
    rule_reason = records[0]["reason"].partition("; not approved: ")[0]
    assert "ask-writes" in rule_reason
    assert [r["reason"].partition("; not approved: ")[::2] for r in records] == [
        (rule_reason, f"denied by {me}"),
        (rule_reason, "timeout after 0.5 s"),
        (rule_reason, "the approver failed: RuntimeError: the dialog crashed"),
        (
            rule_reason,
            "denied by the deny approver (headless approver: no human can be asked, "
            "so the request is denied)",
        ),
    ]


async def test_control_socket_refuses_garbage_and_unknown_ops(
    clock_setup: tuple[Setup, Clock],
) -> None:
    setup, _ = clock_setup
    path = setup.control.path
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    unknown = await asyncio.to_thread(ask, path, {"op": "shutdown"})
    assert "unknown op 'shutdown'" in unknown["error"]
    missing = await asyncio.to_thread(ask, path, {"op": "approve", "id": "0123"})
    assert "no pending approval" in missing["error"]


async def test_decision_records_carry_the_backend_identity(
    clock_setup: tuple[Setup, Clock],
) -> None:
    """What the backend proved (set by the relay once the channel is up) reaches the policy
    and the record, with its provenance; without it the record has neither field."""
    setup, _ = clock_setup
    read = {"name": "read_file", "arguments": {"path": "/data/a.txt"}}
    assert (await setup.pep.check("tools/call", read, 1, flood_guard=False)).allowed
    setup.pep.backend_identity = ("DNS:notes.internal", "IP:10.0.0.7")
    assert (await setup.pep.check("tools/call", read, 2, flood_guard=False)).allowed
    without, with_identity = setup.decisions()
    assert "backend_identity" not in without
    assert "backend_identity_provenance" not in without
    assert with_identity["backend_identity"] == ["DNS:notes.internal", "IP:10.0.0.7"]
    assert with_identity["backend_identity_provenance"] == "mtls"


#: what a GitHub token looks like
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n", "a private key (PEM)"),
        ("token: ghp_" + "A1b2" * 9, "a GitHub token"),
        ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl", "a JWT"),
    ],
)
async def test_a_credential_going_out_in_allowed_arguments_needs_a_human(
    clock_setup: tuple[Setup, Clock], content: str, kind: str
) -> None:
    setup, _ = clock_setup
    pep = setup.pep
    read = {"name": "read_file", "arguments": {"path": "/data/a.txt", "note": content}}
    asked = asyncio.create_task(pep.check("tools/call", read, 1))
    await setup.answer("deny")
    verdict = await asked
    assert not verdict.allowed
    assert verdict.rule_id == "builtin-secret-outbound"
    assert f"looks like {kind}" in verdict.reason
    approved = asyncio.create_task(pep.check("tools/call", read, 2))
    await setup.answer("approve", remember=True)
    assert (await approved).allowed
    again = asyncio.create_task(pep.check("tools/call", read, 3))  # never remembered
    await setup.answer("approve")
    assert (await again).allowed
    plain = {"name": "read_file", "arguments": {"path": "/data/a.txt", "note": "hello"}}
    assert (await pep.check("tools/call", plain, 4)).allowed  # nothing to ask about
    records = {r["request_id"]: r for r in setup.decisions()}
    assert [records[i]["rule_id"] for i in "123"] == ["builtin-secret-outbound"] * 3
    assert [records[i]["final_effect"] for i in "123"] == ["deny", "allow", "allow"]
    assert records["4"]["rule_id"] == "read-data"
    assert content not in (setup.log_dir / "decisions.jsonl").read_text()


async def test_a_remembered_approval_does_not_skip_the_credential_check(
    clock_setup: tuple[Setup, Clock],
) -> None:
    """The check applies to every allowed call no human saw: the policy's allow, and a
    remembered approval too. A human asked by an ask rule is told what the arguments carry,
    and is not asked twice; the same call answered from memory is asked about again."""
    setup, _ = clock_setup
    pep = setup.pep
    call = {"name": "write_file", "arguments": {"path": "/data/a.txt", "content": GITHUB}}
    first = asyncio.create_task(pep.check("tools/call", call, 1))
    pending = await setup.pending()
    assert pending["rule"] == "ask-writes"
    assert "the arguments carry what looks like a GitHub token" in pending["summary"]
    await setup.answer("approve", remember=True)
    assert (await first).allowed
    again = asyncio.create_task(pep.check("tools/call", call, 2))
    pending = await setup.pending()  # remembered, yet a human is asked
    assert pending["rule"] == "builtin-secret-outbound"
    await setup.answer("deny")
    verdict = await again
    assert not verdict.allowed
    assert verdict.rule_id == "builtin-secret-outbound"
    plain = asyncio.create_task(pep.check("tools/call", write("/data/b.txt"), 3))
    assert "the arguments carry" not in (await setup.pending())["summary"]
    await setup.answer("approve", remember=True)
    assert (await plain).allowed
    assert (await pep.check("tools/call", write("/data/b.txt"), 4)).allowed  # nothing to ask
    records = {r["request_id"]: r for r in setup.decisions()}
    assert [records[i]["rule_id"] for i in "1234"] == [
        "ask-writes",
        "builtin-secret-outbound",
        "ask-writes",
        "ask-writes",
    ]
    assert records["1"]["approval_remembered"] is True
    assert "approval required by rule ask-writes" in records["2"]["reason"]
    assert records["4"]["approval_cached"] is True
    assert setup.pep.counts["asked"] == 3


async def test_a_credential_hidden_behind_more_strings_than_are_scanned_needs_a_human(
    clock_setup: tuple[Setup, Clock],
) -> None:
    """A credential placed where the scan would reach it only after its budget of strings
    (a long list beside it) is not waved through: arguments not scanned to their end
    need a human, as a credential's shape does."""
    setup, _ = clock_setup
    arguments = {"path": "/data/a.txt", "note": "AKIAIOSFODNN7EXAMPLE", "pad": ["x"] * 100_000}
    asked = asyncio.create_task(
        setup.pep.check("tools/call", {"name": "read_file", "arguments": arguments}, 1)
    )
    await setup.answer("deny")
    verdict = await asked
    assert not verdict.allowed
    assert verdict.rule_id == "builtin-secret-outbound"
    assert "the arguments carry more than 100,000 strings, not all scanned" in verdict.reason
    assert [r["final_effect"] for r in setup.decisions()] == ["deny"]


async def test_a_denied_call_with_a_credential_is_denied_without_asking(
    clock_setup: tuple[Setup, Clock],
) -> None:
    setup, _ = clock_setup
    outside = {"name": "read_file", "arguments": {"path": "/etc/x", "note": "AKIAIOSFODNN7EXAMPLE"}}
    verdict = await setup.pep.check("tools/call", outside, 1)  # the policy's deny stands
    assert not verdict.allowed
    assert verdict.rule_id != "builtin-secret-outbound"
    assert setup.pep.counts["asked"] == 0


async def test_with_the_check_off_allowed_arguments_go_out_as_the_policy_says(
    clock_setup: tuple[Setup, Clock],
) -> None:
    setup, _ = clock_setup
    setup.pep.outbound_secrets = "off"
    read = {"name": "read_file", "arguments": {"path": "/data/a.txt", "k": "AKIAIOSFODNN7EXAMPLE"}}
    verdict = await setup.pep.check("tools/call", read, 1)
    assert verdict.allowed
    assert verdict.rule_id == "read-data"


# ------------------------------------------------------------ the policy's approval terms


def ask_policy(approval: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """``ask-writes`` on write_file and the notes tools (with ``approval`` if given), and
    ``read-data``; ``top`` adds top-level sections (``hitl``)."""
    rule: dict[str, Any] = {
        "id": "ask-writes",
        "effect": "ask",
        "conditions": {"tool_name": ["write_file", "touch_note", "post_note"]},
    }
    if approval is not None:
        rule["approval"] = approval
    return {"version": "1", "rules": [POLICY["rules"][0], rule], **top}


#: a tool with no side effects, and one that writes files and sends them out
NOTES = ToolRegistry.default(
    [
        ToolEntry(tool="touch_note", operations=["write"]),
        ToolEntry(tool="post_note", operations=["write"], side_effects=["fs_write", "email_send"]),
    ]
)


@pytest.fixture
async def terms_setup(tmp_path: Path) -> AsyncIterator[Any]:
    """``start(policy, remember=600)``: an enforcement point on ``policy`` whose config
    remembers approvals for ``remember`` seconds and waits 60 s for an answer; the clock is
    injected."""
    clock = Clock()
    started: list[Setup] = []

    async def start(policy: dict[str, Any], remember: float = 600) -> tuple[Setup, Clock]:
        limits = Limits(approvals=ApprovalCache(remember, clock), flood=TokenBucket(0, 1))
        setup = Setup(tmp_path, limits, registry=NOTES, policy=policy)
        setup.pep.approval_timeout = 60
        await setup.trail.start()
        await setup.control.start()
        started.append(setup)
        return setup, clock

    yield start
    for setup in started:
        await setup.control.close()
        await setup.trail.close()


async def approve_remembering(setup: Setup, call: dict[str, Any], n: int) -> dict[str, Any]:
    """Ask about ``call``, approve it with --remember; what was pending."""
    task = asyncio.create_task(setup.pep.check("tools/call", call, n))
    pending = await setup.pending()
    await setup.answer("approve", remember=True)
    assert (await task).allowed
    return pending


async def remembered(setup: Setup, call: dict[str, Any], n: int) -> bool:
    """Whether ``call`` is answered from memory (else a human is asked, and says no)."""
    task = asyncio.create_task(setup.pep.check("tools/call", call, n))
    for _ in range(200):
        if task.done():
            return (await task).allowed
        if setup.approver.pending_count:
            await setup.answer("deny")
            assert not (await task).allowed
            return False
        await asyncio.sleep(0.01)
    raise AssertionError("neither answered nor asked")


async def test_a_rule_with_cache_ttl_0_is_never_remembered(terms_setup: Any) -> None:
    setup, _ = await terms_setup(ask_policy({"cache_ttl_seconds": 0}), remember=600)
    pending = await approve_remembering(setup, write("/data/a.txt"), 1)
    assert pending["cacheable"] is False
    assert pending["not_remembered"] == (
        "never remembered: rule ask-writes's approval.cache_ttl_seconds is 0"
    )
    assert not await remembered(setup, write("/data/a.txt"), 2)
    assert [r["approval_remembered"] for r in setup.decisions()] == [False, False]


async def test_a_rules_ttl_replaces_the_proxys(terms_setup: Any) -> None:
    approval = {"cache_ttl_seconds": 60, "cacheable_side_effects": ["fs_write"]}
    setup, clock = await terms_setup(ask_policy(approval), remember=600)
    assert (await approve_remembering(setup, write("/data/a.txt"), 1))["cacheable"]
    clock.now += 59
    assert await remembered(setup, write("/data/a.txt"), 2)
    clock.now += 2  # 61 s: past the rule's 60, long before the proxy's 600
    assert not await remembered(setup, write("/data/a.txt"), 3)


async def test_a_rules_side_effects_decide_what_is_remembered(terms_setup: Any) -> None:
    approval = {"cache_ttl_seconds": 60, "cacheable_side_effects": ["fs_write"]}
    setup, _ = await terms_setup(ask_policy(approval))
    post = {"name": "post_note", "arguments": {"path": "/data/n.txt"}}
    pending = await approve_remembering(setup, post, 1)
    assert pending["not_remembered"] == (
        "never remembered: side effect email_send is not in "
        "rule ask-writes's approval.cacheable_side_effects (fs_write)"
    )
    assert not await remembered(setup, post, 2)
    touch = {"name": "touch_note", "arguments": {"path": "/data/n.txt"}}  # no side effects
    await approve_remembering(setup, touch, 3)
    assert await remembered(setup, touch, 4)
    await approve_remembering(setup, write("/data/a.txt"), 5)  # fs_write only
    assert await remembered(setup, write("/data/a.txt"), 6)


async def test_the_hitl_sections_ttl_applies_where_a_rule_sets_none(terms_setup: Any) -> None:
    hitl = {"approval_ttl_seconds": 30, "cache_side_effects": ["fs_write"]}
    setup, clock = await terms_setup(ask_policy(hitl=hitl), remember=600)
    await approve_remembering(setup, write("/data/a.txt"), 1)
    clock.now += 29
    assert await remembered(setup, write("/data/a.txt"), 2)
    clock.now += 2
    assert not await remembered(setup, write("/data/a.txt"), 3)


async def test_the_policy_remembers_where_the_config_would_not(terms_setup: Any) -> None:
    hitl = {"approval_ttl_seconds": 30, "cache_side_effects": ["fs_write"]}
    setup, _ = await terms_setup(ask_policy(hitl=hitl), remember=0)
    await approve_remembering(setup, write("/data/a.txt"), 1)
    assert await remembered(setup, write("/data/a.txt"), 2)


async def test_the_hitl_sections_ttl_0_is_never_remembered(terms_setup: Any) -> None:
    setup, _ = await terms_setup(ask_policy(hitl={"approval_ttl_seconds": 0}), remember=600)
    pending = await approve_remembering(setup, write("/data/a.txt"), 1)
    assert pending["not_remembered"] == (
        "never remembered: the policy's hitl.approval_ttl_seconds is 0"
    )
    assert not await remembered(setup, write("/data/a.txt"), 2)


async def test_a_hitl_section_without_cache_side_effects_remembers_only_tools_without(
    terms_setup: Any,
) -> None:
    """As docs/policies.md and mcp-acp-extended have it: ``cache_side_effects`` null."""
    setup, _ = await terms_setup(ask_policy(hitl={"timeout_seconds": 60}), remember=600)
    pending = await approve_remembering(setup, write("/data/a.txt"), 1)
    assert pending["not_remembered"] == (
        "never remembered: side effect fs_write is not in the policy's "
        "hitl.cache_side_effects (none)"
    )
    assert not await remembered(setup, write("/data/a.txt"), 2)
    touch = {"name": "touch_note", "arguments": {"path": "/data/n.txt"}}
    await approve_remembering(setup, touch, 3)
    assert await remembered(setup, touch, 4)  # with the proxy's TTL


async def test_a_rules_approval_replaces_the_hitl_section(terms_setup: Any) -> None:
    approval = {"cache_ttl_seconds": 60, "cacheable_side_effects": ["fs_write"]}
    hitl = {"approval_ttl_seconds": 0}
    setup, _ = await terms_setup(ask_policy(approval, hitl=hitl), remember=0)
    await approve_remembering(setup, write("/data/a.txt"), 1)
    assert await remembered(setup, write("/data/a.txt"), 2)


async def test_the_hitl_sections_timeout_applies_to_every_approval(terms_setup: Any) -> None:
    """The policy's 7 s, not the config's 60: for an ask rule and a built-in escalation."""
    setup, _ = await terms_setup(ask_policy(hitl={"timeout_seconds": 7}))
    setup.pep.limits.tool_calls = ToolRateLimit(1)
    asked = asyncio.create_task(setup.pep.check("tools/call", write("/data/a.txt"), 1))
    assert 0 < (await setup.pending())["expires_in"] <= 7
    await setup.answer("approve")
    assert (await asked).allowed
    read = {"name": "read_file", "arguments": {"path": "/data/a.txt"}}
    assert (await setup.pep.check("tools/call", read, 2)).allowed
    limited = asyncio.create_task(setup.pep.check("tools/call", read, 3))
    pending = await setup.pending()
    assert pending["rule"] == "builtin-rate-limit"
    assert 0 < pending["expires_in"] <= 7
    await setup.answer("deny")
    assert not (await limited).allowed


class SlowIdentity:
    """An identity provider that, once ``slow`` is set, does not answer (a token refresh
    that hangs)."""

    def __init__(self) -> None:
        self.slow = False
        self.waiting = asyncio.Event()

    async def current_subject(self) -> Subject:
        if self.slow:
            self.waiting.set()
            await asyncio.Event().wait()
        return Subject(subject_id="alice", provenance=Provenance.CONFIG, issuer=None)


async def test_a_fail_closed_shutdown_records_every_decision_in_progress(tmp_path: Path) -> None:
    """The shutdown coordinator ends the process from a synchronous callback: the event loop
    never resumes the requests being decided. Before it exits, each is denied on record —
    the one waiting for a human as a denied approval, the one not yet decided as a
    ``builtin-cut-short`` denial — with the caller's companion record, naming the shutdown
    (without its fix)."""
    identity = SlowIdentity()
    setup = Setup(tmp_path, Limits(), identity, shutdown=True)
    setup.session.bind(await identity.current_subject())  # as the start-up gate does
    await setup.trail.start()
    await setup.control.start()

    asked = asyncio.create_task(
        setup.pep.check("tools/call", write("/data/a.txt"), 1, companion=setup.companion(1))
    )
    await setup.pending()
    identity.slow = True
    deciding = asyncio.create_task(
        setup.pep.check("tools/call", READ, 2, companion=setup.companion(2))
    )
    await asyncio.wait_for(identity.waiting.wait(), timeout=10)

    lost = PostureError("device posture lost: disk is fail: not encrypted", fix="encrypt it")
    with pytest.raises(Exited):
        setup.coordinator.trigger(lost)
    assert setup.exits == [15]
    why = "the proxy shut down (posture failure: device posture lost: disk is fail: not encrypted)"
    found = {r["request_id"]: r for r in setup.decisions()}
    assert set(found) == {"1", "2"}
    assert (found["1"]["effect"], found["1"]["final_effect"]) == ("ask", "deny")
    assert found["1"]["reason"].endswith(f"; not approved: {why}")
    assert (found["2"]["effect"], found["2"]["rule_id"]) == ("deny", "builtin-cut-short")
    assert found["2"]["reason"] == f"denied: {why} before the request was decided"
    assert found["2"]["subject_id"] == "alice"
    lines = (setup.log_dir / "operations.jsonl").read_text().splitlines()
    outcomes = {r["request_id"]: r["outcome"] for r in map(json.loads, lines) if "outcome" in r}
    assert outcomes == {"1": "denied", "2": "denied"}

    for task in (asked, deciding):  # the process would be gone; nothing more is recorded
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await setup.control.close()
    await setup.trail.close()
    assert len(setup.decisions()) == 2
    assert verify_stream(setup.log_dir, "decisions").ok


async def test_a_remembered_approval_is_asked_again_after_untrusted_content(
    tmp_path: Path,
) -> None:
    """A remembered approval is no human seeing this call: once the session has seen
    untrusted content (the first fetch, allowed, exposes it), the same fetch — network
    egress — is asked about again under builtin-untrusted-content, never remembered; a
    read-only call of the same session is answered from memory as before."""
    setup = Setup(tmp_path, Limits(), policy=ASK_ALL)
    await setup.trail.start()
    await setup.control.start()
    read = {"name": "read_file", "arguments": {"path": "/data/a.txt"}}
    await approve_remembering(setup, read, 1)
    fetch = {"name": "fetch", "arguments": {"url": "https://docs.python.org/3/"}}
    assert setup.pep.exposure is None
    await approve_remembering(setup, fetch, 2)
    assert str(setup.pep.exposure) == "fetch, request 2: the tool returns untrusted content"
    assert not await remembered(setup, fetch, 3)  # asked, and denied
    assert await remembered(setup, read, 4)
    records = {r["request_id"]: r for r in setup.decisions()}
    assert records["3"]["rule_id"] == "builtin-untrusted-content"
    assert records["3"]["reason"].startswith(
        "ask: the session has seen untrusted content (fetch, request 2: the tool returns "
        "untrusted content); policy said: "
    )
    assert records["4"]["approval_cached"] is True


@pytest.mark.parametrize(
    ("method", "name", "said", "named"),
    [
        ("tools/call", "fetch", "fetch", {"tool": "fetch"}),
        ("resources/read", "note://x", "resource note://x", {"uri": "note://x"}),
        ("prompts/get", "greet", "prompt greet", {"prompt": "greet"}),
        ("sampling/createMessage", None, "the backend's sampling/createMessage", {}),
    ],
    ids=["tool", "resource", "prompt", "sampling"],
)
async def test_an_exposure_names_what_carried_the_content(
    tmp_path: Path, method: str, name: str | None, said: str, named: dict[str, str]
) -> None:
    """The first cause is kept and recorded once: the method whose message carried the
    content and what it names — the tool, the resource's URI, the prompt; nothing for the
    backend's own request — in the record's detail, and in the sentence a human is asked
    with (the label: a tool by its name alone, as before)."""
    setup = Setup(tmp_path, Limits())
    await setup.trail.start()
    assert setup.pep.expose(method, name, 7, "its result carries a tag") is True
    assert setup.pep.expose("tools/call", "fetch", 8, "the tool returns untrusted content") is False
    assert str(setup.pep.exposure) == f"{said}, request 7: its result carries a tag"
    await setup.trail.close()
    lines = (setup.log_dir / "system.jsonl").read_text().splitlines()
    (exposed,) = [r for r in map(json.loads, lines) if r["event"] == "session_exposed"]
    assert exposed["request_id"] == "7"
    assert exposed["detail"] == {
        "method": method,
        **named,
        "why": "its result carries a tag",
        "escalation": "ask",
    }


def _enveloped(name: str | None) -> dict[str, Any]:
    info = {} if name is None else {"io.modelcontextprotocol/clientInfo": {"name": name}}
    return {"name": "echo", "_meta": {"io.modelcontextprotocol/protocolVersion": "x", **info}}


def test_each_request_is_decided_as_the_client_the_backend_serves_it_as() -> None:
    """Before a handshake, a request's own envelope names the client (the last forwarded
    one's if it has none) — never one another request carried on arrival; a ``clientInfo``
    in a request's params counts only in an ``initialize``, and once the backend answered
    one, every request is its client's."""
    session = Session()
    first, second = _enveloped("first"), _enveloped("second")
    assert session.client_of("tools/call", second) == ("second", None)
    assert session.client_of("tools/call", first) == ("first", None)  # in any order
    hint = {"name": "echo", "clientInfo": {"name": "posing", "version": "9"}}
    assert session.client_of("tools/call", {**first, **hint}) == ("first", None)
    assert session.client_of("tools/call", hint) == (None, None)
    session.forwarded("tools/call", second)
    assert session.client_of("tools/call", _enveloped(None)) == ("second", None)
    assert session.client_of("initialize", hint) == ("posing", "9")
    session.forwarded("initialize", {"clientInfo": {"name": "ide", "version": "1"}})
    session.handshake_answered(None)
    for params in (first, hint, {}):
        assert session.client_of("tools/call", params) == ("ide", "1")
    session.forwarded("tools/call", first)
    assert (session.client_name, session.client_version) == ("ide", "1")


def test_an_initialize_on_its_way_names_the_client_and_a_refused_one_names_none() -> None:
    """A handshake-era backend serves what follows an ``initialize`` as that handshake's
    client, answered or not (its TypeScript SDK takes the handshake before it answers, and
    answers no cancelled one): the era begins when the ``initialize`` goes out, not when
    its answer comes back, so a call sent right behind it is decided as the backend will
    serve it. Meanwhile an envelope naming another client is not decided at all (a backend
    of the 2026-07-28 era would serve the envelope's); a refused ``initialize`` leaves the
    session as it was."""
    session = Session()
    evil = {"clientInfo": {"name": "evil-client", "version": "1"}}
    before = session.forwarded("initialize", evil)
    assert session.client_of("tools/call", {}) == ("evil-client", "1")
    assert session.client_of("tools/call", _enveloped("evil-client")) == ("evil-client", "1")
    with pytest.raises(ValueError, match="an initialize naming 'evil-client' is not answered"):
        session.client_of("tools/call", _enveloped("good"))
    session.handshake_answered(before)  # refused (an error answer): as before it
    assert (session.handshake, session.unanswered_handshakes) == (False, 0)
    assert session.client_of("tools/call", _enveloped("good")) == ("good", None)
    session.forwarded("initialize", evil)  # never answered (cancelled): still its client
    assert session.client_of("tools/call", {}) == ("evil-client", "1")
    with pytest.raises(ValueError, match="envelope names the client 'good'"):
        session.client_of("tools/call", _enveloped("good"))
