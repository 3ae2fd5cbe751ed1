"""A seeded random client against the real ``mcp-acp run`` in front of
``peers/recording_server.py`` (which writes every line it receives to a file: what is not
there never reached the backend), and the relay's invariants checked after each session.

The client interleaves requests the policy allows and denies (tools, unknown methods),
many in flight at once, ``notifications/cancelled`` for requests in flight, answered or
unknown, reused ids (``3`` and ``"3"``) both while the first is in progress and after it
was answered, answers to the backend's own requests (``roots/list`` from ``flood``) given,
given twice or never given, malformed lines, notifications and pings — with the proxy's rate
limits off, or low enough to deny and drop. After a clean close (waiting for the answers, or
closing at once: the proxy drains) and the proxy's exit 0, or the backend crashing mid-burst
(exit 17):

1. every request the proxy took gets exactly one answer, with its id — a request the
   client cancelled while it was being decided gets none (docs/approvals.md: "nothing is
   sent on"), its denial is on record; a cancellation that comes once the decision is on
   its way to the record changes nothing;
2. nothing denied or refused reached the backend;
3. every request that reached the backend has an ``allow`` decision record, and every
   allowed (forwarded) one reached it; every request has exactly one decision record and
   one ``client_to_server`` operation record (AU-11), with the effect it was answered with;
4. every stream verifies;
5. every answer is the backend's answer to that request, or the proxy's own error;
6. the proxy's stderr has no traceback.

``MCP_ACP_FUZZ_SEEDS`` (``"0-199"`` or ``"3,17"``) and ``MCP_ACP_FUZZ_STEPS`` run other
seeds (exploration, outside CI)."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from proxy_helpers import DENIED, Proxy, configure, proxy_env, records

from mcp_acp.audit.chain import verify_stream

PEER = Path(__file__).parent / "peers" / "recording_server.py"
STREAMS = ("decisions", "operations", "auth", "system")
ALLOWED_TOOLS = ["echo", "slow", "chatty", "flood", "ask_then_cancel", "answer_when", "crash"]
POLICY = {
    "version": "1",
    "rules": [
        {"id": "no-frobnicate", "effect": "deny", "conditions": {"tool_name": "frobnicate"}},
        {
            "id": "no-progress",
            "effect": "deny",
            "conditions": {"mcp_method": "notifications/progress"},
        },
        {"id": "tools", "effect": "allow", "conditions": {"tool_name": ALLOWED_TOOLS}},
        {"id": "roots", "effect": "allow", "conditions": {"mcp_method": "roots/list"}},
    ],
}
#: What the backend answers each allowed tool with (``echo``: its text).
TOOL_TEXT = {
    "slow": "slow done",
    "chatty": "chatty done",
    "ask_then_cancel": "cancelled it",
    "answer_when": "answered",
}
BACKEND_FAILED = -32000
INVALID_REQUEST = -32600
PARSE_ERROR = -32700
IN_USE = "already used by a request in progress"
#: The proxy's own limits: in "limits" sessions they may deny any request.
RATE_RULES = ("builtin-rate-flood", "builtin-rate-limit")


def key(request_id: Any) -> tuple[str, Any]:
    """An id as JSON tells it apart: ``3`` and ``"3"`` are two ids."""
    return (type(request_id).__name__, request_id)


@dataclass
class Sent:
    """One request the client sent."""

    n: int  # its tag: params._meta.fuzz
    id: int | str
    method: str
    params: dict[str, Any]
    allow: bool  # what the policy says
    malformed: bool = False  # refused as it was read (invalid, ambiguous): no decision
    cancelled: bool = False
    #: sent while a request with the same id (as text) had not been answered yet: the proxy
    #: may refuse it (-32600) or, if the first was done on its side, take it
    maybe_in_use: bool = False
    answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return str(self.id)

    def fits(self, answer: dict[str, Any], crashed: bool, limited: bool = False) -> bool:
        """Whether ``answer`` can be this request's (``crashed``: the backend crashed;
        ``limited``: the proxy's rate limits may deny anything)."""
        error = answer.get("error")
        if self.malformed:
            return isinstance(error, dict) and error.get("code") in (INVALID_REQUEST, PARSE_ERROR)
        if isinstance(error, dict):
            message = str(error.get("message"))
            if error.get("code") == INVALID_REQUEST and IN_USE in message:
                return self.maybe_in_use
            if error.get("code") == DENIED:
                rule = (error.get("data") or {}).get("rule")
                return f"(request {self.id})" in message and (
                    not self.allow
                    or (crashed and rule == "builtin-cut-short")
                    or (limited and rule in RATE_RULES)
                )
            if error.get("code") == BACKEND_FAILED:
                return crashed and self.allow
            return False  # the backend's own errors: no request here earns one
        if not self.allow or "result" not in answer:
            return False
        result = answer["result"]
        if self.method == "ping":
            return result == {}
        if self.method == "tools/list":
            names = [t.get("name") for t in result.get("tools", [])]
            return "frobnicate" not in names and "echo" in names
        tool = self.params["name"]
        said = (result.get("content") or [{}])[0].get("text")
        if tool == "echo":
            return bool(said == self.params["arguments"]["text"])
        if tool == "flood":
            return said in ("flooded", "flood cancelled")
        return bool(said == TOOL_TEXT[tool])


@dataclass
class Asked:
    """A request the backend sent the client (``roots/list`` from ``flood``)."""

    id: str
    plan: str  # "give", "twice" or "never"
    flood: Sent


class FuzzProxy(Proxy):
    """``Proxy`` whose line queue ends with ``b""`` when the proxy's output does."""

    def _pump(self) -> None:
        super()._pump()
        self.lines.put(b"")


@dataclass
class Session:
    """One seeded session and everything it saw."""

    seed: int
    #: "close": wait for the answers, then close; "early": close at once (the proxy drains);
    #: "limits": as "close", with rate limits low enough to deny and drop; "crash": the
    #: backend crashes halfway, a burst of requests behind it
    mode: str
    steps: int
    home: Path
    tmp: Path
    rng: random.Random = field(init=False)
    proxy: FuzzProxy = field(init=False)
    sent: list[Sent] = field(default_factory=list)
    by_key: dict[tuple[str, Any], list[Sent]] = field(default_factory=dict)
    stray: list[dict[str, Any]] = field(default_factory=list)  # answers that fit no request
    null_errors: list[dict[str, Any]] = field(default_factory=list)
    null_expected: int = 0
    notified: list[dict[str, Any]] = field(default_factory=list)
    asked: dict[str, Asked] = field(default_factory=dict)
    seen_asks: set[str] = field(default_factory=set)
    cancelled_floods: set[int] = field(default_factory=set)
    malformed_sent: list[Sent] = field(default_factory=list)
    answered: dict[tuple[str, Any], list[dict[str, Any]]] = field(default_factory=dict)
    slowed: bool = False
    big: bool = False
    floods: dict[int, list[str]] = field(default_factory=dict)  # flood call tag -> its asks
    holds: list[Path] = field(default_factory=list)  # answer_when files not created yet
    next_number: int = 100
    ended: bool = False  # the proxy's output ended
    broken: bool = False  # the proxy's input is closed (crash mode)
    crashed: bool = False
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - a reproducible test, not a secret

    # ------------------------------------------------------------ sending

    def write(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.proxy.send_raw(data)
        except (BrokenPipeError, ValueError):
            self.broken = True

    def fresh_id(self) -> int | str:
        self.next_number += 1
        form = self.rng.random()
        if form < 0.45:
            return self.next_number
        if form < 0.7:
            return str(self.next_number)  # a decimal string: its twin is an integer
        return f"s{self.next_number}"

    def request(
        self,
        method: str,
        params: dict[str, Any],
        allow: bool,
        *,
        request_id: int | str | None = None,
        then: bytes = b"",
    ) -> Sent:
        n = len(self.sent)
        request_id = self.fresh_id() if request_id is None else request_id
        sent = Sent(n, request_id, method, {**params, "_meta": {"fuzz": n}}, allow)
        sent.maybe_in_use = any(
            not s.answers
            for k in {key(request_id), key(twin(request_id))}
            for s in self.by_key.get(k, [])
        )
        self.sent.append(sent)
        self.by_key.setdefault(key(request_id), []).append(sent)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": sent.params}
        self.write(json.dumps(body).encode() + b"\n" + then)
        return sent

    def call(self, tool: str, arguments: dict[str, Any], **options: Any) -> Sent:
        allow = tool in ALLOWED_TOOLS
        return self.request("tools/call", {"name": tool, "arguments": arguments}, allow, **options)

    def cancel(self, request_id: Any, n: int) -> bytes:
        """A cancellation of ``request_id``: it cancels whichever request in progress has
        that id, so each one not answered yet counts as cancelled."""
        for sent in self.by_key.get(key(request_id), []):
            sent.cancelled = sent.cancelled or not sent.answers
        note = {"requestId": request_id, "reason": f"fuzz {n}"}
        return json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": note})

    def answer_asked(self, ask_id: str, *, error: bool = False) -> None:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": ask_id, "result": {"roots": []}}
        if error:
            body = {"jsonrpc": "2.0", "id": ask_id, "error": {"code": -1, "message": "no roots"}}
        self.write(json.dumps(body).encode() + b"\n")

    # ------------------------------------------------------------ receiving

    def take(self, timeout: float = 0.0) -> bool:
        """Handle one line from the proxy, waiting up to ``timeout``; whether there was one."""
        try:
            raw = (
                self.proxy.lines.get(timeout=timeout) if timeout else self.proxy.lines.get_nowait()
            )
        except Empty:
            return False
        if raw == b"":
            self.ended = True
            return True
        try:
            message = json.loads(raw)
        except ValueError:
            self.problems.append(f"not JSON from the proxy: {raw[:200]!r}")
            return True
        if "method" in message and "id" in message:
            self.backend_asked(message)
        elif "method" in message:
            self.notified.append(message)
        elif message.get("id") is None:
            self.null_errors.append(message)
        else:
            self.route(message)
        return True

    def take_all(self) -> None:
        while not self.ended and self.take():
            pass

    def route(self, answer: dict[str, Any]) -> None:
        """Who an answer is for, as far as the client can tell now (what it sends next
        depends on it); :meth:`match` settles it at the end."""
        self.answered.setdefault(key(answer["id"]), []).append(answer)
        candidates = [
            s
            for s in self.by_key.get(key(answer["id"]), [])
            if s.fits(answer, self.crashed, self.mode == "limits")
        ]
        unanswered = [s for s in candidates if not s.answers]
        if unanswered and IN_USE in str(answer.get("error", {}).get("message")):
            unanswered.reverse()  # a refusal is for the later of two requests
        chosen = (unanswered or candidates or [None])[0]
        if chosen is not None:
            chosen.answers.append(answer)

    def match(self) -> None:
        """Each answer given to one request it fits, as many as can be (a maximum matching
        per id); answers left over are stray."""
        self.stray = []
        for sent in [*self.sent, *self.malformed_sent]:
            sent.answers = []
        for request_key, answers in self.answered.items():
            requests = self.by_key.get(request_key, [])
            fits = [
                [s.fits(answer, self.crashed, self.mode == "limits") for s in requests]
                for answer in answers
            ]
            owner = matching(fits)
            for r, a in owner.items():
                requests[r].answers.append(answers[a])
            self.stray += [answers[a] for a in range(len(answers)) if a not in owner.values()]

    def backend_asked(self, message: dict[str, Any]) -> None:
        ask = self.asked.get(message["id"])
        if ask is None:  # ask_then_cancel's c1: answered now and then, late or not
            if self.rng.random() < 0.5:
                self.answer_asked(message["id"])
            return
        self.seen_asks.add(ask.id)
        if ask.plan in ("give", "twice"):
            self.answer_asked(ask.id, error=self.rng.random() < 0.2)
        if ask.plan == "twice":
            self.answer_asked(ask.id)
        flood, asks = ask.flood, self.floods[ask.flood.n]
        if (
            all(a in self.seen_asks for a in asks)
            and any(self.asked[a].plan == "never" for a in asks)
            and flood.n not in self.cancelled_floods
        ):  # the backend would wait for ever: the call is taken back
            self.cancelled_floods.add(flood.n)
            flood.cancelled = True
            self.write(self.cancel(flood.id, flood.n).encode() + b"\n")

    # ------------------------------------------------------------ one session

    def step(self) -> None:
        rng = self.rng
        choice = rng.choices(
            [
                "echo",
                "denied",
                "ping",
                "list",
                "chatty",
                "flood",
                "ask_then_cancel",
                "hold",
                "release",
                "cancel",
                "race_cancel",
                "twin",
                "reuse",
                "malformed",
                "notify",
                "pause",
                "cancel_twin",
                "slow",
                "big",
            ],
            weights=[14, 8, 4, 2, 3, 4, 2, 2, 3, 5, 5, 4, 3, 5, 3, 6, 2, 1, 1],
        )[0]
        early = self.mode == "early"
        if choice == "echo":
            self.call("echo", {"text": f"t{len(self.sent)}-{rng.randrange(10**6)}"})
        elif choice == "denied":
            what = rng.random()
            if what < 0.4:
                self.call("frobnicate", {})
            elif what < 0.7:
                self.call("no_such_tool", {"x": 1})
            else:
                self.request(f"x/unknown-{rng.randrange(3)}", {}, False)
        elif choice == "ping":
            self.request("ping", {}, True)
        elif choice == "list":
            self.request("tools/list", {}, True)
        elif choice == "chatty":
            self.call("chatty", {})
        elif choice == "flood" and not early:
            count = rng.randrange(1, 4)
            prefix = f"f{len(self.sent)}-"
            arguments = {"requests": count, "notifications": rng.randrange(3), "prefix": prefix}
            flood = self.call("flood", arguments)
            self.floods[flood.n] = [f"{prefix}{i}" for i in range(count)]
            for ask_id in self.floods[flood.n]:
                # with limits, a cancellation may be dropped: no answer is left owed for ever
                never = 0 if self.mode == "limits" else 1
                plan = rng.choices(["give", "twice", "never"], weights=[6, 2, never])[0]
                self.asked[ask_id] = Asked(ask_id, plan, flood)
        elif choice == "ask_then_cancel":
            self.call("ask_then_cancel", {})
        elif choice == "hold" and not early and len(self.holds) < 2:
            path = self.tmp / f"release-{len(self.sent)}"
            self.holds.append(path)
            self.call("answer_when", {"path": str(path)})
        elif choice == "release" and self.holds:
            self.holds.pop(rng.randrange(len(self.holds))).touch()
        elif choice == "cancel":
            target = rng.random()
            open_ = [s for s in self.sent if not s.answers and not s.cancelled]
            done = [s for s in self.sent if s.answers]
            if target < 0.5 and open_:
                sent = rng.choice(open_)
                self.write(self.cancel(sent.id, sent.n).encode() + b"\n")
            elif target < 0.8 and done:
                sent = rng.choice(done)
                self.write(self.cancel(sent.id, -1).encode() + b"\n")
            else:
                self.write(self.cancel(f"nobody-{rng.randrange(100)}", -1).encode() + b"\n")
        elif choice == "race_cancel":  # the request and its cancellation in one write
            n = len(self.sent)
            request_id = self.fresh_id()
            line = self.cancel(request_id, n).encode() + b"\n"
            if rng.random() < 0.7:
                text = f"t{n}-{rng.randrange(10**6)}"
                sent = self.call("echo", {"text": text}, request_id=request_id, then=line)
            else:
                sent = self.call("frobnicate", {}, request_id=request_id, then=line)
            sent.cancelled = True
        elif choice == "twin":  # the same id (or its twin) while the first may be in progress
            open_ = [s for s in self.sent if not s.answers and isinstance(s.id, int | str)]
            if open_:
                first = rng.choice(open_)
                request_id = first.id if rng.random() < 0.3 else twin(first.id)
                text = f"t{len(self.sent)}-{rng.randrange(10**6)}"
                self.call("echo", {"text": text}, request_id=request_id)
        elif choice == "reuse":  # an id whose every request was answered
            done = [
                s
                for s in self.sent
                if s.answers
                and all(
                    o.answers for k in (key(s.id), key(twin(s.id))) for o in self.by_key.get(k, [])
                )
            ]
            if done:
                first = rng.choice(done)
                request_id = first.id if rng.random() < 0.5 else twin(first.id)
                text = f"t{len(self.sent)}-{rng.randrange(10**6)}"
                self.call("echo", {"text": text}, request_id=request_id)
        elif choice == "malformed":
            self.malformed()
        elif choice == "notify":
            n = len(self.sent)
            method = rng.choice(["notifications/roots/list_changed", "notifications/progress"])
            params = {"progressToken": f"fuzz {n}", "progress": 1} if "progress" in method else {}
            params["_meta"] = {"fuzz-note": n}
            self.write(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode())
            self.write(b"\n")
        elif choice == "pause":
            time.sleep(rng.random() * 0.03)
        elif choice == "cancel_twin":  # "3" names another request than 3: nothing cancelled
            open_ = [s for s in self.sent if not s.answers and twin(s.id) != s.id]
            if open_:
                sent = rng.choice(open_)
                self.write(self.cancel(twin(sent.id), -1).encode() + b"\n")
        elif choice == "slow" and not self.slowed:
            self.slowed = True  # the backend sleeps a second: once a session
            self.call("slow", {})
        elif choice == "big" and not self.big:  # over 10 MiB: refused as it is read
            self.big = True
            self.null_expected += 1
            self.write(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"')
            self.write(b"a" * (10 * 1024 * 1024 + 10) + b'"}}\n')
        self.take_all()

    def malformed(self) -> None:
        rng = self.rng
        self.next_number += 1
        number = self.next_number
        lines: list[tuple[bytes, bool, int | str | None]] = [  # line, answered, answer id
            (b"this is not json", True, None),
            (b"[1, 2, 3]", True, None),
            (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', True, None),
            (b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}', True, None),
            (b"[" * 300 + b"]" * 300, True, None),
            (b"", False, None),
            (b'{"jsonrpc":"2.0","method":"ping","method":"x"}', False, None),  # a notification
            (b'{"jsonrpc":"2.0","id":"nobody","result":{}}', False, None),  # an answer to nothing
            (
                b'{"jsonrpc":"2.0","id":%d,"method":"tools/call",'
                b'"params":{"name":"echo","name":"frobnicate","arguments":{}}}' % number,
                True,
                number,
            ),
            (b'{"jsonrpc":"1.0","id":"m%d","method":"ping"}' % number, True, f"m{number}"),
            (b'{"jsonrpc":"2.0","id":"m%d","method":7}' % number, True, f"m{number}"),
        ]
        line, answered, answer_id = rng.choice(lines)
        if answered and answer_id is None:
            self.null_expected += 1
        elif answered:
            # a request the proxy refuses before any decision: answered, never recorded
            sent = Sent(-1, answer_id, "(malformed)", {}, False, malformed=True)
            self.by_key.setdefault(key(answer_id), []).append(sent)
            self.malformed_sent.append(sent)
        self.write(line + b"\n")

    def run(self) -> int:
        received = self.tmp / "received.jsonl"
        log_dir = configure(self.home, sys.executable, [str(PEER), str(received)], POLICY)
        config_file = self.home / ".config" / "mcp-acp" / "config.json"
        settings = json.loads(config_file.read_text())
        settings.setdefault("proxy", {})["rate_limits"] = (
            {  # low enough to deny some requests and drop some notifications
                "tool_calls_per_minute": 20,
                "requests_per_second": 30,
                "burst": 15,
                "notifications_per_second": 20,
                "notification_burst": 10,
            }
            if self.mode == "limits"
            else {
                "tool_calls_per_minute": 0,
                "requests_per_second": 0,
                "notifications_per_second": 0,
            }
        )
        config_file.write_text(json.dumps(settings))
        self.log_dir, self.received = log_dir, received
        self.proxy = FuzzProxy(self.home, proxy_env(self.home))
        try:
            self.proxy.initialize()
            for index in range(self.steps):
                if self.mode == "crash" and index == self.steps // 2:
                    self.crashed = True
                    self.call("crash", {})
                    for _ in range(self.rng.randrange(12)):  # a burst behind it
                        self.call("echo", {"text": f"t{len(self.sent)}"})
                self.step()
                if self.broken:
                    break
            return self.finish()
        finally:
            if self.proxy.proc.poll() is None:
                self.proxy.proc.kill()
                self.proxy.proc.wait()

    def finish(self) -> int:
        for path in self.holds:
            path.touch()
        self.holds.clear()
        deadline = time.monotonic() + 60
        if self.mode in ("close", "limits"):  # every answer owed, then a clean close
            while not self.ended and self.owed():
                assert time.monotonic() < deadline, self.report("answers still owed after 60 s")
                self.take(timeout=0.1)
        if self.mode != "crash" and self.proxy.proc.stdin is not None:
            self.proxy.proc.stdin.close()
        while not self.ended:
            assert time.monotonic() < deadline, self.report("the proxy's output did not end")
            self.take(timeout=0.1)
        code = self.proxy.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        self.proxy.stderr.close()
        return code

    def owed(self) -> list[Sent]:
        """The requests still owed an answer: all but the answered ones and those cancelled
        before they were decided (or, with limits, denied by them: a cancellation may have
        been dropped) — which the decision records tell."""
        self.match()
        if all(s.answers for s in self.sent):
            return []
        written = (self.log_dir / "decisions.jsonl").read_text()
        # while the proxy runs, its last line may be half written
        decisions = [json.loads(line) for line in written.split("\n")[:-1]]
        cut = {
            r["request_id"]
            for r in decisions
            if r.get("rule_id") == "builtin-cut-short" or r.get("rule_id") in RATE_RULES
        }
        return [s for s in self.sent if not s.answers and not (s.cancelled and s.text in cut)]

    def report(self, what: str) -> str:
        owed = [(s.n, s.id, s.method, s.params.get("name")) for s in self.sent if not s.answers]
        return f"seed {self.seed} ({self.mode}): {what}; unanswered: {owed[:20]}"

    # ------------------------------------------------------------ the invariants

    def check(self, code: int) -> list[str]:
        self.match()
        problems = list(self.problems)
        want = 17 if self.mode == "crash" else 0
        if code != want:
            problems.append(f"exit code {code}, not {want}")
        stderr = (self.home / "proxy-stderr.txt").read_text()
        if "Traceback" in stderr:
            problems.append("a traceback on stderr:\n" + stderr[-3000:])
        for stream in STREAMS:
            verified = verify_stream(self.log_dir, stream)
            if not verified.ok:
                problems.append(f"{stream} does not verify: {verified}")
        decisions = [r for r in records(self.log_dir, "decisions") if r["event"] == "decision"]
        operations = records(self.log_dir, "operations")
        sessions = {r["session_id"] for r in decisions}
        if len(sessions) != 1:
            problems.append(f"decisions of {len(sessions)} sessions")
        by_text: dict[str, list[dict[str, Any]]] = {}
        for record in decisions:
            by_text.setdefault(record["request_id"], []).append(record)
        sent_ops: dict[str, list[dict[str, Any]]] = {}
        for record in operations:
            if record.get("direction") == "client_to_server":
                sent_ops.setdefault(record["request_id"], []).append(record)
        reached = self.reached(problems)
        # the requests of each id as text (3 and "3" are recorded alike) against the records
        texts: dict[str, list[Sent]] = {}
        for sent in self.sent:
            texts.setdefault(sent.text, []).append(sent)
        for text, group in texts.items():
            taken = [s for s in group if not refused(s)]
            effects = sorted(effect(r) for r in by_text.get(text, []))
            ops = sorted(r["outcome"] for r in sent_ops.get(text, []))
            if self.mode == "crash":  # the proxy may have read none of the last ones
                if len(effects) > len(taken) or len(ops) != len(effects):
                    problems.append(f"id {text!r}: {len(taken)} taken, records {effects} {ops}")
                continue
            if len(effects) != len(taken) or len(ops) != len(taken):
                problems.append(
                    f"id {text!r}: {len(taken)} request(s) taken, decisions {effects}, "
                    f"operations {ops} (AU-11: exactly one of each per request)"
                )
            outcome = {"allow": "forwarded", "deny": "denied"}
            if sorted(outcome[e] for e in effects) != ops:
                problems.append(f"id {text!r}: decisions {effects} but operations {ops}")
            if effects.count("allow") != sum(1 for s in taken if s.n in reached):
                problems.append(
                    f"id {text!r}: {effects.count('allow')} allowed, "
                    f"{sum(1 for s in taken if s.n in reached)} reached the backend"
                )
        for sent in self.sent:
            problems += self.check_one(sent, reached, by_text.get(sent.text, []))
        crash = self.mode == "crash"  # the proxy may not have read the last lines sent
        for sent in self.malformed_sent:
            if len(sent.answers) > 1 or (not sent.answers and not crash):
                problems.append(f"malformed request {sent.id!r}: {len(sent.answers)} answers")
        if self.stray:
            problems.append(f"answers that fit no request: {self.stray[:5]}")
        if len(self.null_errors) > self.null_expected or (
            len(self.null_errors) < self.null_expected and not crash
        ):
            problems.append(
                f"{len(self.null_errors)} errors with a null id for "
                f"{self.null_expected} unreadable lines"
            )
        if [m for m in self.notified if m.get("method") == "notifications/progress"]:
            problems.append("a denied notification (notifications/progress) reached the client")
        return problems

    def check_one(
        self, sent: Sent, reached: dict[int, int], records_of: list[dict[str, Any]]
    ) -> list[str]:
        problems = []
        where = f"request {sent.n} (id {sent.id!r}, {sent.method} {sent.params.get('name', '')})"
        if len(sent.answers) > 1:
            problems.append(f"{where}: answered {len(sent.answers)} times: {sent.answers}")
        if reached.get(sent.n, 0) > 1:
            problems.append(f"{where}: reached the backend {reached[sent.n]} times")
        if sent.n in reached and not sent.allow:
            problems.append(f"{where}: denied by the policy, yet it reached the backend")
        if self.mode == "crash":
            if (
                records_of
                and len(records_of) == sum(1 for s in self.sent if s.text == sent.text)
                and not sent.answers
                and not sent.cancelled
            ):
                problems.append(f"{where}: recorded, never answered (backend crashed)")
            return problems + self.agrees(sent, where, records_of)
        if refused(sent):
            if sent.n in reached:
                problems.append(f"{where}: refused (id in use), yet it reached the backend")
            return problems
        problems += self.agrees(sent, where, records_of)
        cut_short = [
            r
            for r in records_of
            if (
                r.get("rule_id") == "builtin-cut-short" and "cancelled by the client" in r["reason"]
            )
            or (self.mode == "limits" and r.get("rule_id") in RATE_RULES)
        ]
        if not sent.answers and not (sent.cancelled and cut_short):
            problems.append(f"{where}: never answered")
        rate_denied = any(r.get("rule_id") in RATE_RULES for r in records_of)
        if sent.allow and sent.answers and "result" in sent.answers[0] and sent.n not in reached:
            problems.append(f"{where}: answered with a result, yet it never reached the backend")
        if (
            sent.allow
            and sent.n not in reached
            and not (sent.cancelled and cut_short)
            and not (self.mode == "limits" and rate_denied)
        ):
            problems.append(f"{where}: allowed by the policy, never reached the backend")
        return problems

    def agrees(self, sent: Sent, where: str, records_of: list[dict[str, Any]]) -> list[str]:
        """The answer says what the record says: an allowed request is not answered with a
        denial, a denied one is (for an id used once)."""
        if len(records_of) != 1 or len(self.by_text(sent.text)) != 1 or not sent.answers:
            return []
        error = sent.answers[0].get("error") or {}
        denied = error.get("code") == DENIED
        if (effect(records_of[0]) == "deny") != denied:
            return [f"{where}: recorded {effect(records_of[0])}, answered {sent.answers[0]}"]
        return []

    def by_text(self, text: str) -> list[Sent]:
        return [s for s in self.sent if s.text == text]

    def reached(self, problems: list[str]) -> dict[int, int]:
        """Which tagged requests reached the backend, how many times each; anything else
        there that the client did not send through the proxy is a problem."""
        counts: dict[int, int] = {}
        if not self.received.exists():
            return counts
        for line in self.received.read_text().splitlines():
            message = json.loads(line)
            params = message.get("params") or {}
            meta = params.get("_meta") or {}
            if "fuzz" in meta and "method" in message:
                counts[meta["fuzz"]] = counts.get(meta["fuzz"], 0) + 1
            elif "fuzz-note" in meta:
                if message.get("method") == "notifications/progress":
                    problems.append("a denied notification (notifications/progress) reached it")
            elif message.get("method") in (
                "initialize",
                "notifications/initialized",
                "notifications/cancelled",
            ):
                pass
            elif "method" not in message:  # an answer to the backend's own request
                if message.get("id") not in self.asked and message.get("id") != "c1":
                    problems.append(f"an answer to nothing reached the backend: {message}")
            else:
                problems.append(f"an untagged request reached the backend: {message}")
        return counts


def matching(fits: list[list[bool]]) -> dict[int, int]:
    """A maximum matching of answers to requests (``fits[answer][request]``): request index
    -> answer index (Kuhn's augmenting paths; a handful of each)."""
    owner: dict[int, int] = {}

    def place(a: int, seen: set[int]) -> bool:
        for r, fit in enumerate(fits[a]):
            if fit and r not in seen:
                seen.add(r)
                if r not in owner or place(owner[r], seen):
                    owner[r] = a
                    return True
        return False

    for a in range(len(fits)):
        place(a, set())
    return owner


def twin(request_id: int | str) -> int | str:
    """The id recorded as the same text: ``3`` for ``"3"`` and the reverse."""
    if isinstance(request_id, int):
        return str(request_id)
    if request_id.lstrip("-").isdigit() and request_id.isascii():
        return int(request_id)
    return request_id


def refused(sent: Sent) -> bool:
    """Refused before any decision: its id was in use."""
    return any(
        a.get("error", {}).get("code") == INVALID_REQUEST
        and IN_USE in a.get("error", {}).get("message", "")
        for a in sent.answers
    )


def effect(record: dict[str, Any]) -> str:
    return str(record.get("final_effect") or record["effect"])


def seeds() -> list[int]:
    spec = os.environ.get("MCP_ACP_FUZZ_SEEDS")
    if not spec:
        return [1, 2, 3, 4]
    if "-" in spec:
        low, high = spec.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in spec.split(",")]


STEPS = int(os.environ.get("MCP_ACP_FUZZ_STEPS", "60"))


def run_session(seed: int, mode: str, home: Path, tmp: Path, steps: int = STEPS) -> list[str]:
    session = Session(seed, mode, steps, home, tmp)
    code = session.run()
    return [f"seed {seed} ({mode}): {p}" for p in session.check(code)]


@pytest.mark.parametrize("seed", seeds())
@pytest.mark.parametrize("mode", ["close", "early", "limits"])
def test_random_sessions_keep_the_relays_invariants(
    isolated_home: Path, tmp_path: Path, seed: int, mode: str
) -> None:
    assert run_session(seed, mode, isolated_home, tmp_path) == []


@pytest.mark.parametrize("seed", seeds())
def test_a_backend_crashing_mid_burst_answers_every_request_it_took(
    isolated_home: Path, tmp_path: Path, seed: int
) -> None:
    assert run_session(seed, "crash", isolated_home, tmp_path) == []
