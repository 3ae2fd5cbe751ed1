"""Relay benchmark: ``mcp-acp run`` against the same backend run directly and behind FastMCP.

Run from the repository root::

    python bench/relay_bench.py            # full run (3-4.5 minutes on 2 cores), writes
                                           # bench/results/relay.md
    python bench/relay_bench.py --quick    # a smoke run in ~10 s; prints only (unless --out)

One backend, ``bench/echo_server.py`` (the ``mcp`` low-level ``Server`` on stdio, tools
``echo`` and ``rm_rf``), is driven five ways in the same run:

* **direct**: the backend is the child;
* **mcp-acp**: ``mcp-acp run`` in a scratch HOME configured by ``mcp-acp init
  --non-interactive --backend-command …``, a policy allowing ``echo`` and denying ``rm_rf``,
  the default audit trail (``jsonl``, durability ``fsync``), and the session rate limits
  set to 0 (no limit; see :func:`make_acp_home`);
* **FastMCP**: ``bench/fastmcp_proxy.py`` — ``fastmcp.server.create_proxy`` plus a
  middleware denying ``rm_rf``;
* **floor**: ``bench/floor_relay.py`` — not a proxy anyone should run but a yardstick: an
  asyncio line relay that parses each request, denies ``rm_rf`` and makes one record per
  request durable (write + fsync) before forwarding it, and nothing else. What it adds is
  about the least any Python proxy keeping the issue's write-ahead rule can add on this
  machine; the report applies the latency and throughput targets to it too;
* **floor, no fsync**: the same relay with ``--flush`` (records written, never synced), to
  show what the fsync itself costs.

The client is what Claude Desktop speaks: newline-delimited JSON-RPC on the child's stdin
and stdout, ``initialize`` (protocol ``2025-06-18``), ``notifications/initialized``, then
``tools/call echo``. For each path, in each round:

* **ready**: spawn → the answer to ``initialize`` (sent at once after spawn); also, as a
  diagnostic, spawn → the answer to the first ``tools/call``;
* **checks**: ``tools/list`` (the proxies must hide ``rm_rf``), one ``rm_rf`` call (the
  backend runs it; both proxies must deny it), every echo must come back with its own text;
* **sequential**: one call at a time, each call timed (request written → answer read);
* **8-way**: eight requests kept in flight (a new one sent as each answer arrives):
  calls/s = calls ÷ wall time;
* **load**: the same with N = 10 and N = 100 requests in flight (the security checklist's
  "1, 10 and 100 concurrent clients": the front is stdio, one client per proxy process, so
  a session's requests in flight stand for them; N = 1 is the sequential phase). Each call
  sent while the other N - 1 were in flight is timed (request written → its answer read,
  matched by id) → p50/p99 per path and N, and calls/s; reported, no target;
* **RSS**: ``VmRSS`` (and ``VmHWM``) of the child process itself — the proxy, or the
  backend for *direct* — read from ``/proc`` after the 8-way phase; the backend under a
  proxy is reported separately;
* **CPU** (a diagnostic): user + system time of the child, and of the backend under a
  proxy, over the sequential and 8-way calls, per call.

For ``mcp-acp`` the audit trail is checked after each session: the ``decisions`` and
``operations`` streams verify, were opened with durability ``fsync``, and hold one allow
record per ``echo`` call and a deny record for ``rm_rf``.

In each round the five paths are spawned one after another (so each ready time is
measured while nothing else of the benchmark runs) and stay up; then their sequential
calls, then their 8-way calls, then their calls 10 and then 100 in flight, run in blocks
that take turns (``--quick``: 2 blocks per phase, full run: 5), the order rotating by block
and by round, so load from elsewhere on the machine falls on all paths alike. Every figure
is the median over rounds of the per-round value; "added" values and ratios are computed
within a round (proxy against direct) and then the median taken.
Timings are reported, never asserted; failed checks raise ``AssertionError``.
"""

from __future__ import annotations

import compileall
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Final

from bench_scratch import bench_parser, cpu_model, load_text, percentile, publish, scratch_dir
from bench_scratch import check as _check

from mcp_acp.audit.chain import verify_stream

HERE = Path(__file__).resolve().parent
ECHO_SERVER = HERE / "echo_server.py"
FASTMCP_PROXY = HERE / "fastmcp_proxy.py"
FLOOR_RELAY = HERE / "floor_relay.py"
DEFAULT_OUT = HERE / "results" / "relay.md"
PROTOCOL: Final = "2025-06-18"
DENIED_CODE: Final = -32003  # mcp_acp.proxy.messages.DENIED
RAN: Final = "rm_rf ran"  # what the backend answers to rm_rf (bench/echo_server.py)
WIDTH: Final = 8  # requests in flight in the concurrent phase
#: requests in flight in the load phase (the N = 1 row of its table is the sequential phase)
LOAD_WIDTHS: Final = (10, 100)

POLICY: Final = {
    "version": "1",
    "default_action": "deny",
    "rules": [
        {"id": "deny-rm-rf", "effect": "deny", "conditions": {"tool_name": "rm_rf"}},
        {"id": "allow-echo", "effect": "allow", "conditions": {"tool_name": "echo"}},
    ],
}

# Targets from the issue.
TARGET_ADDED_P50_MS = 1.0
TARGET_VS_FASTMCP = 5.0  # FastMCP added p50 / mcp-acp added p50 >= this
TARGET_THROUGHPUT = 0.95  # mcp-acp 8-way calls/s / direct 8-way calls/s >= this
TARGET_READY_S = 0.3  # mcp-acp ready - direct ready <= this
TARGET_RSS_MB = 60.0


# ------------------------------------------------------------------ helpers


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _rate(calls: int, wall_ns: int) -> float:
    """Calls/s, or NaN when nothing was timed."""
    return calls / (wall_ns / 1e9) if wall_ns else math.nan


def proc_status(pid: int, fields: Sequence[str] = ("VmRSS", "VmHWM")) -> dict[str, int]:
    """Numeric ``fields`` of a live process (``VmRSS``/``VmHWM`` in kB by default), from
    ``/proc/<pid>/status``; empty if it is gone."""
    found: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            found[key] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), from ``/proc/<pid>/stat``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[-1].split()  # fields from the 3rd on (state, ppid, ...)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (scans ``/proc/*/stat``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: split after it
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


# ------------------------------------------------------------------ the client


class Peer:
    """A child process spoken to in newline-delimited JSON-RPC, synchronously.

    The clock for *ready* starts just before the process is spawned. A watchdog kills the
    child after ``timeout`` seconds so a stuck peer cannot hang the benchmark."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str], stderr: IO[bytes], timeout: float
    ) -> None:
        self.spawned = time.perf_counter_ns()
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env
        )
        assert self.proc.stdin is not None  # noqa: S101 - PIPE given
        assert self.proc.stdout is not None  # noqa: S101 - PIPE given
        self._fd = self.proc.stdin.fileno()
        self._readline = self.proc.stdout.readline
        self.timed_out = False
        self._watchdog = threading.Timer(timeout, self._kill)
        self._watchdog.daemon = True
        self._watchdog.start()
        self.unsolicited = 0  # notifications and server requests seen (and skipped)

    def _kill(self) -> None:
        self.timed_out = True
        self.proc.kill()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def read(self) -> dict[str, Any]:
        """The next response; notifications are skipped, server requests refused."""
        while True:
            line = self._readline()
            if not line:
                why = "timed out (killed)" if self.timed_out else "closed its output"
                raise AssertionError(f"the peer {why} (exit {self.proc.poll()})")
            message = json.loads(line)
            if "method" not in message:
                return message  # type: ignore[no-any-return]
            self.unsolicited += 1
            if "id" in message:  # e.g. roots/list: this client declared no capabilities
                self.write(
                    encode(
                        {
                            "jsonrpc": "2.0",
                            "id": message["id"],
                            "error": {"code": -32601, "message": "not supported"},
                        }
                    )
                )

    def request(self, request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.write(encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
        answer = self.read()
        _check(answer.get("id") == request_id, f"answer to {request_id} has id {answer.get('id')}")
        return answer

    def close(self) -> int:
        """Close the child's input (the end of the session) and wait for it."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._watchdog.cancel()
        return code


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def echo_call(request_id: int) -> bytes:
    arguments = {"text": f"call-{request_id}"}
    params = {"name": "echo", "arguments": arguments}
    return encode({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})


def echo_text(answer: dict[str, Any]) -> str | None:
    result = answer.get("result")
    if not isinstance(result, dict) or result.get("isError"):
        return None
    content = result.get("content") or [{}]
    text = content[0].get("text") if isinstance(content[0], dict) else None
    return text if isinstance(text, str) else None


def classify_rm_rf(answer: dict[str, Any]) -> str:
    """How a path answered ``rm_rf``: ``ran``, ``denied: error <code>``, ``denied: isError``,
    or ``other``."""
    error = answer.get("error")
    if isinstance(error, dict):
        return f"denied: error {error.get('code')}"
    result = answer.get("result")
    if isinstance(result, dict):
        texts = [c.get("text") for c in result.get("content") or [] if isinstance(c, dict)]
        if RAN in texts:
            return "ran"
        if result.get("isError"):
            return "denied: isError"
    return "other"


# ------------------------------------------------------------------ one session


@dataclass
class Plan:
    rounds: int
    warmup: int  # sequential calls before the clock starts, per session
    sequential: int  # timed sequential calls, per session
    concurrent: int  # calls in the 8-way phase, per session
    blocks: int  # each phase is split into this many blocks; the paths take turns by block
    load: int  # calls per session at each width of LOAD_WIDTHS (N fill calls a block untimed)


FULL = Plan(rounds=5, warmup=200, sequential=1000, concurrent=2000, blocks=5, load=1500)
QUICK = Plan(rounds=1, warmup=10, sequential=40, concurrent=80, blocks=2, load=400)


@dataclass
class Sample:
    """One session of one path."""

    ready_s: float
    first_call_s: float
    listed: list[str]
    rm_rf: str
    sequential_ns: list[int]
    rate: float  # 8-way calls/s
    concurrent_ns: list[int]
    rss_kb: int
    hwm_kb: int
    backend_rss_kb: int | None  # the backend under a proxy (None for direct)
    echo_calls: int  # all echo calls made in the session, warm-up included
    exit_code: int
    cpu_ms: float = math.nan  # the child's CPU time per timed call (sequential + 8-way)
    backend_cpu_ms: float | None = None  # the same for the backend under a proxy
    audit: dict[str, Any] = field(default_factory=dict)
    sequential_rate: float = math.nan  # sequential calls/s (calls ÷ the phase's wall time)
    #: per width of LOAD_WIDTHS: the latencies of the calls sent while the window was full
    load_ns: dict[int, list[int]] = field(default_factory=dict)
    load_rate: dict[int, float] = field(default_factory=dict)  # per width: calls/s
    load_hwm_kb: int = 0  # VmHWM of the child after the load phase

    def p(self, q: float) -> float:
        """Sequential latency percentile in ms."""
        return percentile(sorted(self.sequential_ns), q) / 1e6

    def load_p(self, width: int, q: float) -> float:
        """Latency percentile in ms with ``width`` requests in flight (1: sequential)."""
        if width == 1:
            return self.p(q)
        return percentile(sorted(self.load_ns[width]), q) / 1e6

    def calls_per_s(self, width: int) -> float:
        """Calls/s with ``width`` requests in flight (1: sequential)."""
        return self.sequential_rate if width == 1 else self.load_rate[width]


class Session:
    """One path, spawned once per round and then driven in blocks that take turns with the
    other paths' blocks. Raises ``AssertionError`` (with the child's stderr) on a bad answer."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str], stderr_path: Path, plan: Plan
    ) -> None:
        self.argv = list(argv)
        self.plan = plan
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("ab")
        # the process lives through the whole round: every path's calls, a margin each
        calls = 1 + plan.warmup + plan.sequential + plan.concurrent + plan.load * len(LOAD_WIDTHS)
        timeout = 120 + 3 * calls * 0.05
        self.peer = Peer(self.argv, env, self._stderr, timeout)
        self.next_id = 1
        self.kids: list[int] = []
        self.ready_s = self.first_call_s = math.nan
        self.listed: list[str] = []
        self.rm_rf = ""
        self.sequential_ns: list[int] = []
        self.sequential_wall_ns = 0
        self.concurrent_ns: list[int] = []
        self.concurrent_wall_ns = 0
        self.load_ns: dict[int, list[int]] = {width: [] for width in LOAD_WIDTHS}
        self.load_calls = dict.fromkeys(LOAD_WIDTHS, 0)
        self.load_wall_ns = dict.fromkeys(LOAD_WIDTHS, 0)
        self.status: dict[str, int] = {}  # VmRSS/VmHWM after the 8-way phase
        self.backend_rss_kb: int | None = None
        self.cpu_s = 0.0
        self.backend_cpu_s = 0.0
        self.echo_calls = 0

    @contextlib.contextmanager
    def _guard(self, *, account: bool = True) -> Iterator[None]:
        """Account the child's (and its backend's) CPU time (unless ``account`` is false);
        explain a failed check."""
        before = cpu_seconds(self.peer.proc.pid), sum(cpu_seconds(k) for k in self.kids)
        try:
            yield
        except AssertionError as exc:
            self.kill()
            tail = self.stderr_path.read_text(errors="replace")[-2000:]
            raise AssertionError(f"{exc}; {' '.join(self.argv)} stderr ends:\n{tail}") from exc
        if account:
            self.cpu_s += cpu_seconds(self.peer.proc.pid) - before[0]
            self.backend_cpu_s += sum(cpu_seconds(k) for k in self.kids) - before[1]

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _one(self, request_id: int) -> int:
        """One echo call, timed from writing the request to reading its answer."""
        start = time.perf_counter_ns()
        self.peer.write(echo_call(request_id))
        answer = self.peer.read()
        elapsed = time.perf_counter_ns() - start
        self.echo_calls += 1
        _check(answer.get("id") == request_id, f"answer to {request_id}: {answer}")
        _check(echo_text(answer) == f"call-{request_id}", f"bad echo: {answer}")
        return elapsed

    def start(self) -> None:
        """Ready time, the first call, the checks (listing, rm_rf), the warm-up."""
        peer = self.peer
        with self._guard():
            init = {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "relay-bench", "version": "1"},
            }
            answer = peer.request(1, "initialize", init)
            self.ready_s = (time.perf_counter_ns() - peer.spawned) / 1e9
            _check("result" in answer, f"initialize failed: {answer}")
            peer.write(encode({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            first = {"name": "echo", "arguments": {"text": "first"}}
            answer = peer.request(self._id(), "tools/call", first)
            self.first_call_s = (time.perf_counter_ns() - peer.spawned) / 1e9
            self.echo_calls += 1
            _check(echo_text(answer) == "first", f"first echo answered {answer}")
            listing = peer.request(self._id(), "tools/list", {})
            tools = listing.get("result", {}).get("tools", [])
            self.listed = sorted(str(t.get("name")) for t in tools)
            rm_rf = {"name": "rm_rf", "arguments": {"path": "/srv/x"}}
            self.rm_rf = classify_rm_rf(peer.request(self._id(), "tools/call", rm_rf))
            for _ in range(self.plan.warmup):
                self._one(self._id())
        self.kids = children(peer.proc.pid)

    def sequential(self, count: int) -> None:
        """``count`` calls one at a time, each timed; the block's wall time is added to the
        path's total."""
        with self._guard():
            began = time.perf_counter_ns()
            for _ in range(count):
                self.sequential_ns.append(self._one(self._id()))
            self.sequential_wall_ns += time.perf_counter_ns() - began

    def _keep_in_flight(self, count: int, width: int) -> tuple[list[int], list[int], int]:
        """``count`` calls with ``width`` in flight: the first ``width`` requests are written
        at once (the fill), then a new one as each answer arrives, until all are answered.
        Every answer must be the echo of a request in flight, each answered once.

        Returns the latencies (request written → its answer read, matched by id) of the fill
        requests and of those sent while the other ``width - 1`` were in flight, and the wall
        time from the first request written to the last answer read."""
        clock = time.perf_counter_ns
        peer = self.peer
        first = self.next_id + 1
        last = self.next_id + count
        self.next_id = last
        payloads = {i: echo_call(i) for i in range(first, last + 1)}
        sent: dict[int, int] = {}
        fill: list[int] = []
        steady: list[int] = []
        began = clock()
        upcoming = first
        while upcoming <= last and upcoming < first + width:
            sent[upcoming] = clock()
            peer.write(payloads[upcoming])
            upcoming += 1
        for _ in range(count):
            answer = peer.read()
            now = clock()
            request_id = answer.get("id")
            _check(
                isinstance(request_id, int) and request_id in sent,
                f"unexpected answer with {width} in flight: {answer}",
            )
            assert isinstance(request_id, int)  # noqa: S101 - checked above, for mypy
            _check(echo_text(answer) == f"call-{request_id}", f"bad echo: {answer}")
            (fill if request_id < first + width else steady).append(now - sent.pop(request_id))
            if upcoming <= last:
                sent[upcoming] = clock()
                peer.write(payloads[upcoming])
                upcoming += 1
        wall = clock() - began
        _check(not sent, f"{len(sent)} requests unanswered with {width} in flight")
        self.echo_calls += count
        return fill, steady, wall

    def concurrent(self, count: int) -> None:
        """``count`` calls with WIDTH in flight (:meth:`_keep_in_flight`), every one timed;
        the block's wall time is added to the path's total."""
        with self._guard():
            fill, steady, wall = self._keep_in_flight(count, WIDTH)
            self.concurrent_ns += fill + steady
            self.concurrent_wall_ns += wall

    def load(self, count: int, width: int) -> None:
        """``count`` calls with ``width`` in flight (:meth:`_keep_in_flight`). Only the calls
        sent while the window was full are timed: the fill requests, written back to back,
        wait behind fewer than ``width - 1`` others. Not part of the CPU-per-call figure."""
        with self._guard(account=False):
            _fill, steady, wall = self._keep_in_flight(count, width)
            self.load_ns[width] += steady
            self.load_calls[width] += count
            self.load_wall_ns[width] += wall

    def snapshot(self) -> None:
        """RSS of the child (and of the backend under it), read after the 8-way phase."""
        self.status = proc_status(self.peer.proc.pid)
        if self.kids:
            self.backend_rss_kb = sum(proc_status(kid).get("VmRSS", 0) for kid in self.kids)

    def finish(self) -> Sample:
        """Peak RSS after the load phase, then close the session."""
        if not self.status:
            self.snapshot()
        status = self.status
        load_hwm = proc_status(self.peer.proc.pid).get("VmHWM", 0)
        code = self.peer.close()
        self._stderr.close()
        timed = len(self.sequential_ns) + len(self.concurrent_ns)
        return Sample(
            ready_s=self.ready_s,
            first_call_s=self.first_call_s,
            listed=self.listed,
            rm_rf=self.rm_rf,
            sequential_ns=self.sequential_ns,
            rate=_rate(len(self.concurrent_ns), self.concurrent_wall_ns),
            concurrent_ns=self.concurrent_ns,
            rss_kb=status.get("VmRSS", 0),
            hwm_kb=status.get("VmHWM", 0),
            backend_rss_kb=self.backend_rss_kb,
            echo_calls=self.echo_calls,
            exit_code=code,
            cpu_ms=self.cpu_s * 1000 / timed,
            backend_cpu_ms=self.backend_cpu_s * 1000 / timed if self.kids else None,
            sequential_rate=_rate(len(self.sequential_ns), self.sequential_wall_ns),
            load_ns=self.load_ns,
            load_rate={w: _rate(self.load_calls[w], self.load_wall_ns[w]) for w in LOAD_WIDTHS},
            load_hwm_kb=load_hwm,
        )

    def kill(self) -> None:
        if self.peer.proc.poll() is None:
            self.peer.proc.kill()
        self.peer.close()
        self._stderr.close()


# ------------------------------------------------------------------ the three routes


def mcp_acp_command() -> list[str]:
    """The installed console script next to this interpreter, or ``python -m mcp_acp``."""
    script = Path(sys.executable).parent / "mcp-acp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mcp_acp"]


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(home)
    return env


def make_acp_home(base: Path, name: str, durability: str = "fsync") -> Path:
    """A fresh HOME with ``mcp-acp init`` done for the echo backend and the bench policy.

    One setting is changed from what ``init`` writes: the session rate limits are off (the
    defaults, 30 calls of one tool a minute and 50 requests/s, are abuse guards that any
    benchmark trips at once; the limiter still runs, with no limit)."""
    home = base / name
    home.mkdir(mode=0o700)
    subprocess.run(
        [
            *mcp_acp_command(),
            "init",
            "--non-interactive",
            "--backend-command",
            sys.executable,
            "--backend-arg",
            str(ECHO_SERVER),
        ],
        env=clean_env(home),
        check=True,
        capture_output=True,
    )
    config_dir = home / ".config" / "mcp-acp"
    (config_dir / "policy.json").write_text(json.dumps(POLICY))
    config = json.loads((config_dir / "config.json").read_text())
    proxy = config.setdefault("proxy", {})
    proxy["rate_limits"] = {"tool_calls_per_minute": 0, "requests_per_second": 0}
    if durability != "fsync":  # the no-fsync yardstick: records written, never synced
        config["audit"]["sinks"] = [{"use": "jsonl", "config": {"durability": durability}}]
    (config_dir / "config.json").write_text(json.dumps(config, indent=2))
    return home


def check_acp_audit(home: Path, sample: Sample, durability: str = "fsync") -> dict[str, Any]:
    """The session's audit trail verifies, had the durability asked for, and recorded every
    decision."""
    log_dir = home / ".local" / "state" / "mcp-acp" / "log"
    found: dict[str, Any] = {}
    for stream in ("decisions", "operations"):
        result = verify_stream(log_dir, stream)
        _check(result.ok, f"audit stream {stream} does not verify: {result.describe()}")
        records = [json.loads(line) for line in (log_dir / f"{stream}.jsonl").open()]
        opened = [r for r in records if r.get("event") == "stream_opened"]
        _check(
            bool(opened) and all(r["detail"]["durability"] == durability for r in opened),
            f"audit stream {stream} was not opened with durability {durability}",
        )
        found[stream] = records
    decisions = found["decisions"]
    allowed = sum(
        1 for r in decisions if r.get("tool_name") == "echo" and r.get("effect") == "allow"
    )
    denied = sum(
        1 for r in decisions if r.get("tool_name") == "rm_rf" and r.get("effect") == "deny"
    )
    _check(
        allowed == sample.echo_calls,
        f"{allowed} echo allow decisions on record, {sample.echo_calls} calls made",
    )
    _check(denied == 1, f"{denied} rm_rf deny decisions on record, expected 1")
    return {
        "decisions": len(decisions),
        "operations": len(found["operations"]),
        "echo_allowed": allowed,
        "rm_rf_denied": denied,
    }


def check_floor_records(home: Path, sample: Sample) -> None:
    """The floor kept its one rule: a record for every echo call, and the rm_rf denial."""
    lines = (home / "floor-records.jsonl").read_text().splitlines()
    echo = sum(1 for line in lines if line == '{"method": "tools/call", "name": "echo"}')
    denied = sum(1 for line in lines if line.startswith('{"deny":'))
    _check(echo == sample.echo_calls, f"floor: {echo} echo records, {sample.echo_calls} calls")
    _check(denied == 1, f"floor: {denied} rm_rf denials on record, expected 1")


@dataclass
class Route:
    """One way of reaching the backend, and its samples over rounds."""

    key: str
    label: str
    expect_listed: list[str]
    expect_rm_rf: Callable[[str], bool]
    samples: list[Sample] = field(default_factory=list)


def _denied(outcome: str) -> bool:
    return outcome.startswith("denied")


def _refused(outcome: str) -> bool:
    return outcome == f"denied: error {DENIED_CODE}"


def make_routes() -> dict[str, Route]:
    return {
        "direct": Route("direct", "backend direct", ["echo", "rm_rf"], lambda o: o == "ran"),
        "acp": Route("acp", "`mcp-acp run`", ["echo"], _refused),
        "acp-flush": Route("acp-flush", "`mcp-acp run`, no fsync", ["echo"], _refused),
        "fastmcp": Route("fastmcp", f"FastMCP {_version('fastmcp')} proxy", ["echo"], _denied),
        "floor": Route("floor", "floor: line relay + fsync", ["echo"], _refused),
        "floor-flush": Route("floor-flush", "floor, no fsync", ["echo"], _refused),
    }


def _durability(key: str) -> str:
    """The audit durability of an mcp-acp path: ``acp-flush`` never syncs its records."""
    return "flush" if key == "acp-flush" else "fsync"


def check_sample(path: Route, sample: Sample) -> None:
    """What the path must have answered: the listing, the rm_rf verdict, a clean exit."""
    _check(
        sample.listed == path.expect_listed,
        f"{path.key}: tools/list gave {sample.listed}, expected {path.expect_listed}",
    )
    _check(path.expect_rm_rf(sample.rm_rf), f"{path.key}: rm_rf answered '{sample.rm_rf}'")
    _check(len(sample.sequential_ns) > 0, f"{path.key}: no sequential calls timed")
    _check(sample.rate > 0, f"{path.key}: no 8-way calls")
    for width in LOAD_WIDTHS:
        _check(
            len(sample.load_ns.get(width, [])) > 0 and sample.load_rate.get(width, 0) > 0,
            f"{path.key}: no calls timed with {width} in flight",
        )
    _check(sample.rss_kb > 0, f"{path.key}: no VmRSS read")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def commands(key: str) -> list[str]:
    if key == "direct":
        return [sys.executable, str(ECHO_SERVER)]
    if key.startswith("acp"):
        return [*mcp_acp_command(), "run"]
    if key == "fastmcp":
        return [sys.executable, str(FASTMCP_PROXY), sys.executable, str(ECHO_SERVER)]
    flush = ["--flush"] if key == "floor-flush" else []
    return [sys.executable, str(FLOOR_RELAY), *flush, sys.executable, str(ECHO_SERVER)]


# ------------------------------------------------------------------ the suite


@dataclass
class Report:
    routes: dict[str, Route]
    plan: Plan
    machine: str
    date: str
    seconds: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    orders: list[list[str]]

    def per_round(self, key: str, value: Callable[[Sample], float]) -> list[float]:
        return [value(s) for s in self.routes[key].samples]

    def median(self, key: str, value: Callable[[Sample], float]) -> float:
        return _median(self.per_round(key, value))

    def added(self, key: str, value: Callable[[Sample], float]) -> list[float]:
        """Per round: ``value`` of the path minus ``value`` of direct in the same round."""
        return [
            value(s) - value(d)
            for s, d in zip(self.routes[key].samples, self.routes["direct"].samples, strict=True)
        ]

    def added_p(self, key: str, q: float) -> float:
        return _median(self.added(key, lambda s: s.p(q)))

    def throughput_ratio(self, key: str) -> float:
        return _median(
            [
                s.rate / d.rate
                for s, d in zip(
                    self.routes[key].samples, self.routes["direct"].samples, strict=True
                )
            ]
        )

    def ready_added(self, key: str) -> float:
        return _median(self.added(key, lambda s: s.ready_s))

    def load_added_p(self, key: str, width: int, q: float) -> float:
        """Median over rounds of the path's latency percentile minus direct's, with ``width``
        requests in flight (1: sequential)."""
        return _median(self.added(key, lambda s: s.load_p(width, q)))

    def vs_fastmcp(self, key: str = "acp") -> float:
        """FastMCP's added p50 divided by the path's."""
        added, peer = self.added_p(key, 50), self.added_p("fastmcp", 50)
        return math.inf if added <= 0 else peer / added

    def rss_mb(self, key: str) -> float:
        return self.median(key, lambda s: s.rss_kb * 1024 / 1e6)


def _rotated(keys: list[str], shift: int) -> list[str]:
    shift %= len(keys)
    return keys[shift:] + keys[:shift]


def run_round(base: Path, routes: dict[str, Route], plan: Plan, number: int) -> list[str]:
    """One round: spawn the paths one after another (so each ready time is measured alone),
    then run their sequential blocks, then their 8-way blocks (RSS read after them), then
    their load blocks at each width of LOAD_WIDTHS, taking turns block by block.
    Returns the order the paths were spawned in."""
    order = _rotated(list(routes), number)
    homes = {}
    sessions: dict[str, Session] = {}
    try:
        for key in order:
            if key.startswith("acp"):
                homes[key] = make_acp_home(base, f"home-{key}-{number}", _durability(key))
            else:
                homes[key] = base / f"home-{key}-{number}"
                homes[key].mkdir(mode=0o700)
            env = clean_env(homes[key])
            sessions[key] = Session(commands(key), env, homes[key] / "stderr.txt", plan)
            sessions[key].start()
        for block in range(plan.blocks):
            for key in _rotated(order, block):
                sessions[key].sequential(plan.sequential // plan.blocks)
        for block in range(plan.blocks):
            for key in _rotated(order, block):
                sessions[key].concurrent(plan.concurrent // plan.blocks)
        for key in order:
            sessions[key].snapshot()
        for width in LOAD_WIDTHS:
            for block in range(plan.blocks):
                for key in _rotated(order, block):
                    sessions[key].load(plan.load // plan.blocks, width)
        for key in order:
            sample = sessions.pop(key).finish()
            check_sample(routes[key], sample)
            if key.startswith("acp"):
                sample.audit = check_acp_audit(homes[key], sample, _durability(key))
            elif key.startswith("floor"):
                check_floor_records(homes[key], sample)
            routes[key].samples.append(sample)
    finally:
        for session in sessions.values():
            session.kill()
        for home in homes.values():
            shutil.rmtree(home, ignore_errors=True)
    return order


def compile_mcp_acp() -> None:
    """Compile mcp-acp's modules to bytecode (``__pycache__``, as ``pip install`` of a wheel
    does), so that every path starts from bytecode: the backend's and FastMCP's packages
    were compiled when pip installed them, but an editable checkout is not, and with
    ``PYTHONDONTWRITEBYTECODE`` set nothing ever writes its cache — every ``mcp-acp run``
    would compile its ~60 modules from source (about 50 ms here), which no installed
    mcp-acp does."""
    import mcp_acp

    for folder in mcp_acp.__path__:
        compileall.compile_dir(folder, quiet=1)


def run_suite(base: Path, plan: Plan, *, progress: bool = False) -> Report:
    """Run ``plan.rounds`` rounds under ``base``; the order of the paths rotates each round."""
    _check(
        plan.sequential % plan.blocks == 0
        and plan.concurrent % plan.blocks == 0
        and plan.load % plan.blocks == 0,
        "the call counts must divide into the blocks",
    )
    _check(
        plan.load // plan.blocks > max(LOAD_WIDTHS),
        f"a load block must hold more than {max(LOAD_WIDTHS)} calls (the fill is not timed)",
    )
    routes = make_routes()
    compile_mcp_acp()
    load_before = os.getloadavg()
    began = time.perf_counter()
    orders = []
    for number in range(plan.rounds):
        if progress:
            print(f"  round {number + 1}/{plan.rounds} ...", file=sys.stderr)
        orders.append(run_round(base, routes, plan, number))
    return Report(
        routes=routes,
        plan=plan,
        machine=machine_line(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.perf_counter() - began,
        load_before=load_before,
        load_after=os.getloadavg(),
        orders=orders,
    )


# ------------------------------------------------------------------ report


def machine_line() -> str:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return (
        f"{cpu_model()}, {cores} cores ({usable} usable), "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}"
    )


def _times(ratio: float) -> str:
    return "∞" if math.isinf(ratio) else f"{ratio:.1f}x"


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def render(report: Report, *, quick: bool) -> str:
    plan = report.plan
    routes = report.routes

    def row(key: str) -> str:
        label = routes[key].label
        p50 = report.median(key, lambda s: s.p(50))
        p99 = report.median(key, lambda s: s.p(99))
        rate = report.median(key, lambda s: s.rate)
        ready = report.median(key, lambda s: s.ready_s)
        rss = report.rss_mb(key)
        if key == "direct":
            added = "— | —"
            ratio = "—"
        else:
            added = f"{report.added_p(key, 50):+.2f} | {report.added_p(key, 99):+.2f}"
            ratio = f"{report.throughput_ratio(key):.0%}"
        return (
            f"| {label} | {p50:.2f} | {p99:.2f} | {added} | {rate:,.0f} | {ratio} "
            f"| {ready:.2f} | {rss:.1f} |"
        )

    def load_row(width: int, key: str) -> str:
        p50 = report.median(key, lambda s: s.load_p(width, 50))
        p99 = report.median(key, lambda s: s.load_p(width, 99))
        rate = report.median(key, lambda s: s.calls_per_s(width))
        if key == "direct":
            added = "— | —"
        else:
            added = (
                f"{report.load_added_p(key, width, 50):+.2f} | "
                f"{report.load_added_p(key, width, 99):+.2f}"
            )
        return f"| {width} | {routes[key].label} | {p50:.2f} | {p99:.2f} | {added} | {rate:,.0f} |"

    load_block = plan.load // plan.blocks
    acp_added = report.added_p("acp", 50)
    vs_fastmcp = report.vs_fastmcp()
    throughput = report.throughput_ratio("acp")
    ready_added = report.ready_added("acp")
    rss = report.rss_mb("acp")
    targets = [
        (
            "added p50 (mcp-acp minus direct, sequential)",
            f"{acp_added:.2f} ms",
            f"≤ {TARGET_ADDED_P50_MS:g} ms",
            acp_added <= TARGET_ADDED_P50_MS,
        ),
        (
            "FastMCP added p50 ÷ mcp-acp added p50",
            _times(vs_fastmcp),
            f"≥ {TARGET_VS_FASTMCP:g}x",
            vs_fastmcp >= TARGET_VS_FASTMCP,
        ),
        (
            "8-way calls/s, mcp-acp ÷ direct",
            f"{throughput:.1%}",
            f"≥ {TARGET_THROUGHPUT:.0%}",
            throughput >= TARGET_THROUGHPUT,
        ),
        (
            "ready (spawn → initialize answer), mcp-acp minus direct",
            f"{ready_added:+.2f} s",
            f"≤ +{TARGET_READY_S:g} s",
            ready_added <= TARGET_READY_S,
        ),
        (
            "RSS of the mcp-acp process after the run",
            f"{rss:.1f} MB",
            f"≤ {TARGET_RSS_MB:g} MB",
            rss <= TARGET_RSS_MB,
        ),
    ]
    lines = [
        "# Relay benchmark (`mcp-acp run`, stdio → stdio)",
        "",
        f"- Machine: {report.machine}",
        f"- Versions: mcp-acp {_version('mcp-acp')}, mcp {_version('mcp')}, "
        f"fastmcp {_version('fastmcp')}",
        f"- Date: {report.date}",
        f"- Command: `python bench/relay_bench.py{' --quick' if quick else ''}` "
        f"({plan.rounds} round(s), {report.seconds:.0f} s)",
        f"- Load average (1/5/15 min) before: {load_text(report.load_before)}; after: "
        f"{load_text(report.load_after)} (the benchmark keeps about 2 busy itself: client, and "
        "proxy or backend; more means other work shared the 2 cores)",
        f"- Per path and round: {plan.warmup} warm-up calls, {plan.sequential:,} sequential "
        f"calls (each timed), {plan.concurrent:,} calls {WIDTH} in flight. The paths are "
        f"spawned one after another, then take turns in blocks ({plan.blocks} per phase: "
        f"{plan.sequential // plan.blocks:,} sequential or {plan.concurrent // plan.blocks:,} "
        "8-way calls; each 8-way block fills and drains its 8 slots); the order rotates by "
        "block and by round",
        "- Backend: `bench/echo_server.py` (`mcp` low-level `Server`, stdio). mcp-acp: "
        "`mcp-acp init --non-interactive`, policy allow `echo` / deny `rm_rf`, rate limits "
        "0 (off: the defaults allow 30 calls of a tool a minute), default audit "
        "(`jsonl`, durability fsync: every call's decision record is durable and its request "
        "record written before it is forwarded; its response record is written as the answer "
        "is relayed; request and response records are synced within 20 ms). "
        "FastMCP: `create_proxy` + a `Middleware` raising "
        "`ToolError` for `rm_rf` (`bench/fastmcp_proxy.py`).",
        "- Bytecode: the benchmark compiles mcp-acp's modules first (`compileall`, as "
        "`pip install` does), so every path starts from bytecode; an editable checkout "
        "under `PYTHONDONTWRITEBYTECODE=1` would otherwise compile them at every start.",
        "- Each figure is the median over rounds of the per-round value; *added* and "
        "*vs direct* are taken within a round (path against direct) before the median. "
        "p50/p99: sequential `tools/call` round trip, request written → answer read. "
        "Ready: spawn → answer to `initialize`. RSS: `VmRSS` of the child itself after the "
        "8-way phase (MB = 10⁶ bytes).",
        "",
        "| path | p50 ms | p99 ms | added p50 ms | added p99 ms | 8-way calls/s "
        "| vs direct | ready s | RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        row("direct"),
        row("acp"),
        row("acp-flush"),
        row("fastmcp"),
        row("floor"),
        row("floor-flush"),
        "",
        "| target (from the issue) | measured | target | met? |",
        "|---|---:|---:|---|",
        *(f"| {name} | {value} | {want} | {_yes(ok)} |" for name, value, want, ok in targets),
        "",
        "The floor (`bench/floor_relay.py`, not a proxy to run: it parses each request, denies "
        "`rm_rf` by name and makes one record per request durable before forwarding it, and "
        "does nothing else) measured against the same targets, to show what they ask of any "
        "Python proxy that keeps the write-ahead rule on this machine; the same floor with "
        "its records never synced, and mcp-acp with `durability: flush` (its records written, "
        "never synced: not a setting to run with, a yardstick), to show what the fsync costs "
        "each:",
        "",
        "| target | mcp-acp | mcp-acp, no fsync | floor | floor, no fsync | target |",
        "|---|---:|---:|---:|---:|---:|",
        f"| added p50 | {acp_added:.2f} ms | {report.added_p('acp-flush', 50):.2f} ms "
        f"| {report.added_p('floor', 50):.2f} ms "
        f"| {report.added_p('floor-flush', 50):.2f} ms | ≤ {TARGET_ADDED_P50_MS:g} ms |",
        f"| FastMCP added p50 ÷ the path's | {_times(vs_fastmcp)} "
        f"| {_times(report.vs_fastmcp('acp-flush'))} "
        f"| {_times(report.vs_fastmcp('floor'))} | {_times(report.vs_fastmcp('floor-flush'))} "
        f"| ≥ {TARGET_VS_FASTMCP:g}x |",
        f"| 8-way calls/s ÷ direct | {throughput:.1%} "
        f"| {report.throughput_ratio('acp-flush'):.1%} "
        f"| {report.throughput_ratio('floor'):.1%} "
        f"| {report.throughput_ratio('floor-flush'):.1%} | ≥ {TARGET_THROUGHPUT:.0%} |",
        "",
        "Load: latency with N requests in flight (the security checklist's \"1, 10 and 100 "
        "concurrent clients\": mcp-acp's front is stdio, one client per proxy process, so "
        "here N requests in flight in one session); reported, no target. N = 1 is the "
        "sequential phase above. For N = "
        + " and ".join(str(width) for width in LOAD_WIDTHS)
        + f": {plan.load:,} calls per path, N and round, in {plan.blocks} blocks of "
        f"{load_block:,} taking turns as above, each block writing N requests at once, then a "
        "new one as each answer arrives, then draining; only the calls sent while the other "
        "N - 1 were in flight are timed (the first N of a block are not). Latency: request "
        "written → its answer read, matched by id; calls/s: calls ÷ the blocks' wall time "
        "(N = 1: sequential calls ÷ their wall time); *added*: path minus direct within a "
        "round, then the median over rounds.",
        "",
        "| in flight | path | p50 ms | p99 ms | added p50 ms | added p99 ms | calls/s |",
        "|---:|---|---:|---:|---:|---:|---:|",
        *(load_row(width, key) for width in (1, *LOAD_WIDTHS) for key in routes),
        "",
        "Diagnostics (not targets):",
        "",
    ]
    for key in routes:
        samples = routes[key].samples
        conc = [percentile(sorted(s.concurrent_ns), 50) / 1e6 for s in samples]
        first = report.median(key, lambda s: s.first_call_s)
        hwm = report.median(key, lambda s: s.hwm_kb * 1024 / 1e6)
        load_hwm = report.median(key, lambda s: s.load_hwm_kb * 1024 / 1e6)
        backend = [s.backend_rss_kb for s in samples if s.backend_rss_kb is not None]
        cpu = report.median(key, lambda s: s.cpu_ms)
        backend_text = ""
        if backend:
            backend_cpu = _median([s.backend_cpu_ms or 0.0 for s in samples])
            backend_text = (
                f"; the backend under it: RSS {_median([b * 1024 / 1e6 for b in backend]):.1f} "
                f"MB, CPU {backend_cpu:.2f} ms per call"
            )
        lines.append(
            f"- {routes[key].label}: CPU {cpu:.2f} ms per call (user + system, all threads, "
            f"over the timed calls){backend_text}; first `tools/call` answered {first:.2f} s "
            f"after spawn; 8-way per-call p50 {_median(conc):.2f} ms; peak RSS (VmHWM) "
            f"{hwm:.1f} MB, {load_hwm:.1f} MB after the load phase; `tools/list` → "
            f"{samples[0].listed}; `rm_rf` → "
            f"{', '.join(sorted({s.rm_rf for s in samples}))}."
        )
    audits = [s.audit for s in routes["acp"].samples]
    lines += [
        f"- mcp-acp audit, checked after every session: `decisions` and `operations` verify, "
        f"durability fsync, {audits[0]['echo_allowed']:,} echo allow decisions = echo calls "
        f"made, 1 rm_rf deny (first session: {audits[0]['decisions']:,} decision and "
        f"{audits[0]['operations']:,} operation records); the no-fsync path's the same way, "
        "with durability flush.",
        "",
        "Per round (p50 ms · 8-way calls/s · ready s; order: the order of spawning):",
        "",
        "| round | order | " + " | ".join(routes[key].label for key in routes) + " |",
        "|---:|---|" + "---:|" * len(routes),
        *(
            f"| {number + 1} | {', '.join(order)} | "
            + " | ".join(
                f"{routes[key].samples[number].p(50):.2f} · "
                f"{routes[key].samples[number].rate:,.0f} · "
                f"{routes[key].samples[number].ready_s:.2f}"
                for key in routes
            )
            + " |"
            for number, order in enumerate(report.orders)
        ),
        "",
        *(
            f"Target {name}: {'MET' if ok else 'NOT MET'} ({value})."
            for name, value, _, ok in targets
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(
        __doc__, DEFAULT_OUT, quick="1 round, few calls", scratch="the scratch homes and audit logs"
    )
    parser.add_argument("--rounds", type=int, default=None, help="override the rounds")
    args = parser.parse_args(argv)
    try:
        import fastmcp  # noqa: F401
    except ImportError:
        print("fastmcp is not installed: pip install -r bench/requirements.txt", file=sys.stderr)
        return 2
    plan = QUICK if args.quick else FULL
    if args.rounds is not None:
        plan = replace(plan, rounds=args.rounds)
    with scratch_dir(args.dir, "relay-bench") as base:
        report = run_suite(base, plan, progress=True)
    publish(render(report, quick=args.quick), args.out, DEFAULT_OUT, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
