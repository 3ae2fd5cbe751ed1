"""Soak: one ``mcp-acp run`` with the ``oidc`` identity, driven at a steady rate for an hour
while its access token expires and is refreshed again and again.

Run from the repository root, as root (see below)::

    python bench/soak.py                # 60 minutes; writes bench/results/soak.md
    python bench/soak.py --minutes 5    # any length; also writes the results file
    python bench/soak.py --quick        # ~1 minute, 20 s tokens; prints only (unless --output)

What runs, all on this machine:

* **the IdP**: the real npm ``oidc-provider`` of the plugin's tests
  (``plugins/mcp-acp-oidc/tests/idp/server.mjs``, ``npm ci`` first if need be) on 127.0.0.1,
  issuing access tokens that live ``--token-ttl`` seconds (default 60);
* **a device login** as alice, approved headlessly through the provider's own pages (the
  ``oidc`` provider's ``login()`` and ``local_idp.approve_device``, as the plugin's tests do),
  the tokens kept in the built-in ``encrypted-file`` storage;
* **one** ``mcp-acp run``: identity ``oidc`` (every request's token validated; a refresh when
  the token has less than ``min(10, ttl / 4)`` s left, so ≈ minutes · 60 / (ttl - margin)
  refreshes in a run), a policy allowing ``echo`` for subject alice with
  ``min_provenance: {"subject": "token"}`` and denying ``rm_rf``, the default audit
  (``jsonl``, durability fsync), session rate limits off, backend ``bench/echo_server.py``;
* **the client**: newline-delimited JSON-RPC on the proxy's stdin/stdout (``initialize``,
  ``notifications/initialized``), then ``tools/call`` one at a time at ``--rate`` per second
  (default 20) for ``--minutes`` (default 60): ``echo`` with a distinct text, every 100th
  call ``rm_rf``. Every echo must come back with its text and every ``rm_rf`` denied
  (JSON-RPC error -32003); any other answer, the proxy ending, or no answer within
  ``--call-timeout`` seconds stops the run with a one-line error (exit 1).

Every ``--sample-seconds`` (default 15) the proxy process's ``VmRSS``, ``VmHWM`` and
``Threads`` (``/proc/PID/status``), the number of entries of ``/proc/PID/fd``, and the
backend's ``VmRSS`` are recorded. ``mcp-acp run`` makes itself not dumpable, so its
``/proc/PID/fd`` is readable only with ``CAP_SYS_PTRACE``: run the soak as root.

At the end the session is closed (the proxy must exit 0), ``mcp-acp audit verify`` must pass
on the log directory, ``auth.jsonl`` must hold at least minutes · 60 / ttl - 2 (and at least
one) ``token_refreshed`` events, and the decision records of ``tools/call`` must number the
calls made (an allow for alice, provenance token, per echo; a deny per ``rm_rf``); any
failure exits 1. The resource checks — RSS growth after warm-up ≤ 5 MB, fd count stable —
are reported as MET / NOT MET, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from bench_scratch import check, load_text, percentile, publish, scratch_dir
from relay_bench import (
    DENIED_CODE,
    ECHO_SERVER,
    PROTOCOL,
    Peer,
    _version,
    children,
    classify_rm_rf,
    clean_env,
    cpu_seconds,
    echo_call,
    echo_text,
    encode,
    machine_line,
    mcp_acp_command,
    proc_status,
)

from mcp_acp.audit.chain import chain_files

HERE = Path(__file__).resolve().parent
IDP_DIR = HERE.parent / "plugins" / "mcp-acp-oidc" / "tests" / "idp"
sys.path.insert(0, str(IDP_DIR))  # local_idp: the test IdP and the headless device approval

DEFAULT_OUT = HERE / "results" / "soak.md"
AUDIENCE: Final = "urn:mcp-acp:proxy"
CLIENT_ID: Final = "mcp-acp-cli"
SUBJECT: Final = "alice"
DENY_EVERY: Final = 100  # every 100th call is rm_rf, which the policy denies
RSS_BOUND_MB: Final = 5.0  # RSS growth after warm-up
FD_BOUND: Final = 0  # max - min of the fd count after the first minute
TABLE_ROWS: Final = 20
START_TIMEOUT: Final = 60.0  # seconds for the answer to initialize

POLICY: Final = {
    "version": "1",
    "default_action": "deny",
    "rules": [
        {"id": "deny-rm-rf", "effect": "deny", "conditions": {"tool_name": "rm_rf"}},
        {
            "id": "alice-echo",
            "effect": "allow",
            "conditions": {
                "tool_name": "echo",
                "subject_id": SUBJECT,
                "min_provenance": {"subject": "token"},
            },
        },
    ],
}


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    minutes: float
    rate: float  # calls per second
    token_ttl: int  # the IdP's access-token lifetime, seconds
    sample_seconds: float
    call_timeout: float

    @property
    def seconds(self) -> float:
        return self.minutes * 60

    @property
    def refresh_margin(self) -> float:
        """The proxy refreshes when the token has this long left (``refresh_margin_seconds``)."""
        return min(10.0, self.token_ttl / 4)

    @property
    def refresh_retry(self) -> float:
        """At most one refresh attempt this often (``refresh_retry_seconds``): a failed
        refresh is tried again well before the token expires."""
        return self.refresh_margin / 2

    @property
    def expected_refreshes(self) -> float:
        return self.seconds / (self.token_ttl - self.refresh_margin)

    @property
    def required_refreshes(self) -> int:
        return max(1, math.ceil(self.seconds / self.token_ttl - 2))


FULL: Final = {"minutes": 60.0, "token_ttl": 60, "sample_seconds": 15.0}
QUICK: Final = {"minutes": 1.0, "token_ttl": 20, "sample_seconds": 5.0}


# ------------------------------------------------------------------ /proc


@dataclass
class Sample:
    """The proxy (and its backend) at one moment of the run."""

    t_s: float  # since the first call
    calls: int  # made so far
    refreshes: int  # token_refreshed events on record so far
    rss_kb: int
    hwm_kb: int
    fds: int
    threads: int
    backend_rss_kb: int


def fd_count(pid: int) -> int:
    """Entries in ``/proc/PID/fd`` (root only for ``mcp-acp run``: it is not dumpable)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


# ------------------------------------------------------------------ the client


class SoakPeer(Peer):
    """relay_bench's :class:`Peer` with a deadline on every answer: an answer not complete
    within ``call_timeout`` seconds ends the run at once (``lifetime`` still bounds the
    whole process, as a last resort)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        stderr: IO[bytes],
        *,
        lifetime: float,
        call_timeout: float,
    ) -> None:
        super().__init__(argv, env, stderr, lifetime)
        assert self.proc.stdout is not None  # noqa: S101 - PIPE given
        self._out = self.proc.stdout.fileno()
        self._pending = bytearray()
        self.call_timeout = call_timeout
        self._readline = self._line_before_deadline  # what Peer.read reads with

    def _line_before_deadline(self, _size: int = -1) -> bytes:
        """One whole line, as ``readline()`` (the signature Peer's reader has); raises
        ``AssertionError`` when none is complete in time."""
        deadline = time.monotonic() + self.call_timeout
        while True:
            end = self._pending.find(b"\n")
            if end >= 0:
                line = bytes(self._pending[: end + 1])
                del self._pending[: end + 1]
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._out], [], [], remaining)[0]:
                raise AssertionError(f"no answer within {self.call_timeout:g} s (a hang)")
            chunk = os.read(self._out, 65536)
            if not chunk:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)  # so the error can name the exit code
                return b""  # Peer.read reports the closed output
            self._pending += chunk


# ------------------------------------------------------------------ the site


class Site:
    """The scratch machine: config, token store, audit logs, the IdP's issuer."""

    def __init__(self, base: Path, issuer: str, settings: Settings) -> None:
        self.base = base
        self.issuer = issuer
        self.config_dir = base / "config"
        self.config_dir.mkdir(mode=0o700)
        self.home = base / "home"
        self.home.mkdir(mode=0o700)
        self.logs = base / "logs"
        self.options: dict[str, Any] = {
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "audience": AUDIENCE,
            "scope": "openid offline_access mcp:tools",
            "token_type": "at+jwt",
            "refresh_margin_seconds": settings.refresh_margin,
            "refresh_retry_seconds": settings.refresh_retry,
        }
        config = {
            "version": 1,
            "backend": {"command": sys.executable, "args": [str(ECHO_SERVER)]},
            "plugins": {"allow": ["oidc"]},
            "identity": {"use": "oidc", "config": self.options},
            "token_storage": {"use": "encrypted-file"},
            "proxy": {
                "socket_dir": str(base / "run"),
                # the defaults (30 calls of a tool a minute, 50 requests/s) are abuse
                # guards any soak trips; the limiter still runs, with no limit
                "rate_limits": {"tool_calls_per_minute": 0, "requests_per_second": 0},
                "desktop_notifications": False,
            },
            "audit": {"log_dir": str(self.logs), "fallback_path": str(base / "fallback.jsonl")},
        }
        self.config = self.config_dir / "config.json"
        self.config.write_text(json.dumps(config, indent=2))
        self.config.chmod(0o600)
        (self.config_dir / "policy.json").write_text(json.dumps(POLICY, indent=2))

    def env(self) -> dict[str, str]:
        env = clean_env(self.home)
        env["MCP_ACP_CONFIG"] = str(self.config)
        return env

    async def login(self) -> None:
        """The device flow as ``mcp-acp auth login`` runs it, approved through the pages."""
        import local_idp
        from mcp_acp_oidc.device import DeviceAuthorization
        from mcp_acp_oidc.provider import OIDCConfig, OIDCIdentityProvider, refresh_lock_path

        from mcp_acp.tokens.encrypted_file import EncryptedFileStorage

        async def fast_sleep(seconds: float) -> None:
            # the provider names no poll interval, so the client would wait the RFC's 5 s
            await asyncio.sleep(seconds / 50)

        storage = EncryptedFileStorage(
            self.config_dir / "tokens", key_file=self.config_dir / "token-storage.key"
        )
        provider = OIDCIdentityProvider(
            OIDCConfig(**self.options),
            storage,
            lock_path=refresh_lock_path(storage, self.issuer),
            sleep=fast_sleep,
        )
        approving: list[asyncio.Task[None]] = []

        def show(authorization: DeviceAuthorization) -> None:
            approving.append(
                asyncio.create_task(asyncio.to_thread(local_idp.approve_device, authorization))
            )

        subject = await provider.login(show)
        await approving[0]
        check(subject.subject_id == SUBJECT, f"logged in as {subject.subject_id}, not {SUBJECT}")

    def records(self, stream: str) -> Iterator[dict[str, Any]]:
        """The stream's records, oldest file first (a line being written is skipped)."""
        for path in chain_files(self.logs, stream):
            with path.open() as lines:
                for line in lines:
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)

    def auth_events(self) -> Counter[str]:
        return Counter(str(r.get("event")) for r in self.records("auth"))


# ------------------------------------------------------------------ the run


@dataclass
class Run:
    """What the soak did and saw."""

    settings: Settings
    command: str
    date: str = ""
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wall_s: float = 0.0  # everything: IdP, login, run, checks
    drive_s: float = 0.0  # first call to last answer
    calls: int = 0
    denied: int = 0
    behind: int = 0  # times the client fell a second behind its schedule and reset it
    latencies_ns: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    proxy_cpu_s: float = math.nan
    backend_cpu_s: float = math.nan
    exit_code: int | None = None
    verify_lines: list[str] = field(default_factory=list)
    auth: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # stream: (files, bytes)
    stderr_lines: int = 0
    versions: str = ""


def drive(peer: SoakPeer, site: Site, run: Run, progress: Callable[[str], None]) -> None:
    """Calls at the steady rate until the time is up, sampling on schedule; raises
    ``AssertionError`` naming the call on any wrong answer, exit or hang."""
    settings = run.settings
    pid = peer.proc.pid
    kids = children(pid)
    check(len(kids) == 1, f"expected one backend process under the proxy, found {kids}")
    backend = kids[0]
    interval = 1 / settings.rate
    cpu_before = cpu_seconds(pid), cpu_seconds(backend)
    start = time.monotonic()
    end = start + settings.seconds
    next_call = next_sample = start
    next_progress = start + 60
    clock = time.perf_counter_ns

    def take_sample(now: float) -> None:
        status = proc_status(pid, ("VmRSS", "VmHWM", "Threads"))
        check(bool(status), f"the proxy (pid {pid}) is gone")
        run.samples.append(
            Sample(
                t_s=now - start,
                calls=run.calls,
                refreshes=site.auth_events()["token_refreshed"],
                rss_kb=status["VmRSS"],
                hwm_kb=status["VmHWM"],
                fds=fd_count(pid),
                threads=status["Threads"],
                backend_rss_kb=proc_status(backend).get("VmRSS", 0),
            )
        )

    while True:
        now = time.monotonic()
        if now >= end:
            take_sample(now)  # the last one, whatever the sampling interval
            break
        if now >= next_sample:
            take_sample(now)
            next_sample += settings.sample_seconds
            if now >= next_progress:
                last = run.samples[-1]
                progress(
                    f"  {last.t_s / 60:5.1f} min: {run.calls:,} calls, {last.refreshes} "
                    f"refreshes, RSS {_mb(last.rss_kb):.1f} MB, {last.fds} fds, "
                    f"{last.threads} threads"
                )
                next_progress += 60
            continue
        if now < next_call:
            time.sleep(min(next_call, next_sample, end) - now)
            continue
        number = run.calls + 1
        denied = number % DENY_EVERY == 0
        began = clock()
        try:
            if denied:
                rm_rf = {"name": "rm_rf", "arguments": {"path": "/srv/soak"}}
                answer = peer.request(number, "tools/call", rm_rf)
            else:
                peer.write(echo_call(number))
                answer = peer.read()
        except (AssertionError, OSError) as exc:
            raise AssertionError(f"call {number} at {now - start:.1f} s: {exc}") from exc
        run.latencies_ns.append(clock() - began)
        if denied:
            outcome = classify_rm_rf(answer)
            check(
                outcome == f"denied: error {DENIED_CODE}",
                f"call {number} (rm_rf) at {now - start:.1f} s was not denied: {outcome}: "
                f"{json.dumps(answer)[:300]}",
            )
            run.denied += 1
        else:
            check(
                answer.get("id") == number and echo_text(answer) == f"call-{number}",
                f"call {number} (echo) at {now - start:.1f} s was not answered with its "
                f"text: {json.dumps(answer)[:300]}",
            )
        run.calls = number
        next_call += interval
        if time.monotonic() - next_call > 1.0:  # a slow answer: go on steadily, no burst
            run.behind += 1
            next_call = time.monotonic()
    run.drive_s = time.monotonic() - start
    run.proxy_cpu_s = cpu_seconds(pid) - cpu_before[0]
    run.backend_cpu_s = cpu_seconds(backend) - cpu_before[1]


def soak(base: Path, run: Run, progress: Callable[[str], None]) -> None:
    """The whole soak under ``base``: IdP, login, one session, the checks. Fills ``run``."""
    import local_idp

    settings = run.settings
    began = time.monotonic()
    run.date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    run.load_before = os.getloadavg()
    with (
        (base / "idp-stderr.txt").open("wb") as idp_err,
        local_idp.running(settings.token_ttl, stderr=idp_err) as issuer,
    ):
        site = Site(base, issuer, settings)
        progress(f"IdP at {issuer} (access tokens live {settings.token_ttl} s); logging in")
        asyncio.run(site.login())
        stderr_path = base / "proxy-stderr.txt"
        with stderr_path.open("wb") as stderr:
            peer = SoakPeer(
                [*mcp_acp_command(), "run"],
                site.env(),
                stderr,
                lifetime=settings.seconds + 600,
                call_timeout=settings.call_timeout,
            )
            try:
                init = {
                    "protocolVersion": PROTOCOL,
                    "capabilities": {},
                    "clientInfo": {"name": "soak", "version": "1"},
                }
                peer.call_timeout = START_TIMEOUT  # the start: gates, backend, its imports
                try:
                    answer = peer.request(0, "initialize", init)
                except AssertionError as exc:
                    raise AssertionError(f"initialize: {exc}") from exc
                check("result" in answer, f"initialize failed: {answer}")
                peer.call_timeout = settings.call_timeout
                peer.write(encode({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                progress(
                    f"mcp-acp run (pid {peer.proc.pid}) up; {settings.minutes:g} min at "
                    f"{settings.rate:g} calls/s"
                )
                drive(peer, site, run, progress)
                run.exit_code = peer.close()
            except AssertionError as exc:
                if peer.proc.poll() is None:
                    peer.proc.kill()
                peer.close()
                tail = stderr_path.read_text(errors="replace").strip().splitlines()[-8:]
                raise SoakFailed(str(exc), tail) from exc
        run.stderr_lines = len(stderr_path.read_text(errors="replace").splitlines())
        check(run.exit_code == 0, f"mcp-acp run exited {run.exit_code} at the end of the session")
        check_trail(site, run)
    run.load_after = os.getloadavg()
    run.wall_s = time.monotonic() - began


class SoakFailed(Exception):
    """The run stopped on a wrong answer, an exit or a hang; ``tail``: the proxy's stderr."""

    def __init__(self, message: str, tail: list[str]) -> None:
        super().__init__(message)
        self.tail = tail


def check_trail(site: Site, run: Run) -> None:
    """``audit verify`` passes; refreshes happened; one decision record per call."""
    verify = subprocess.run(
        [*mcp_acp_command(), "audit", "verify", "--log-dir", str(site.logs)],
        capture_output=True,
        text=True,
        env=site.env(),
        timeout=600,
        check=False,
    )
    run.verify_lines = verify.stdout.strip().splitlines()
    check(
        verify.returncode == 0,
        f"mcp-acp audit verify failed (exit {verify.returncode}): "
        f"{(verify.stdout + verify.stderr).strip()[-500:]}",
    )
    for stream in ("decisions", "operations", "auth"):
        paths = chain_files(site.logs, stream)
        run.files[stream] = (len(paths), sum(path.stat().st_size for path in paths))
    run.auth = site.auth_events()
    refreshed = run.auth["token_refreshed"]
    required = run.settings.required_refreshes
    check(
        refreshed >= required,
        f"{refreshed} token_refreshed events, at least {required} expected: the soak did not "
        "exercise refresh",
    )
    decisions: Counter[str] = Counter()
    fsync = False
    for record in site.records("decisions"):
        if record.get("event") == "stream_opened":
            fsync = (record.get("detail") or {}).get("durability") == "fsync"
        if record.get("mcp_method") != "tools/call":
            continue
        key = f"{record.get('tool_name')} {record.get('effect')}"
        if (record.get("subject_id"), record.get("subject_provenance")) != (SUBJECT, "token"):
            key += f" for {record.get('subject_id')}/{record.get('subject_provenance')}"
        decisions[key] += 1
    run.decisions = decisions
    check(fsync, "the decisions stream was not opened with durability fsync")
    want = Counter({"echo allow": run.calls - run.denied, "rm_rf deny": run.denied})
    check(
        decisions == +want,
        f"decision records {dict(decisions)} do not match the calls made {dict(want)}",
    )


# ------------------------------------------------------------------ report


def _mb(kb: float) -> float:
    return kb * 1024 / 1e6


def downsample(samples: Sequence[Sample], rows: int = TABLE_ROWS) -> list[Sample]:
    """About ``rows`` samples, evenly spread, the first and the last included."""
    if len(samples) <= rows:
        return list(samples)
    picks = sorted({round(i * (len(samples) - 1) / (rows - 1)) for i in range(rows)})
    return [samples[i] for i in picks]


@dataclass(frozen=True)
class Checks:
    warm: list[Sample]  # samples between 10% and 20% of the run
    last: list[Sample]  # the last 10% of the samples
    rss_growth_mb: float
    fd_window: list[Sample]  # samples after the first minute
    fd_spread: int

    @property
    def rss_met(self) -> bool:
        return self.rss_growth_mb <= RSS_BOUND_MB

    @property
    def fd_met(self) -> bool:
        return self.fd_spread <= FD_BOUND


def resource_checks(run: Run) -> Checks:
    samples = run.samples
    n = len(samples)
    low = int(n * 0.1)
    warm = samples[low : max(int(n * 0.2), low + 1)]
    last = samples[-max(1, round(n * 0.1)) :]
    growth = _mb(statistics.median(s.rss_kb for s in last)) - _mb(
        statistics.median(s.rss_kb for s in warm)
    )
    # after the first minute; a run of under two minutes: its second half
    settle = 60.0 if run.settings.seconds >= 120 else run.settings.seconds / 2
    window = [s for s in samples if s.t_s >= settle] or samples[-1:]
    spread = max(s.fds for s in window) - min(s.fds for s in window)
    return Checks(warm, last, growth, window, spread)


def render(run: Run, checks: Checks) -> str:
    settings = run.settings
    lat = sorted(run.latencies_ns)
    auth = run.auth
    fds = [s.fds for s in checks.fd_window]
    places = 1 if settings.minutes >= 10 else 2  # of the minute column
    rows = [
        f"| {s.t_s / 60:.{places}f} | {s.calls:,} | {_mb(s.rss_kb):.1f} | {_mb(s.hwm_kb):.1f} "
        f"| {s.fds} | {s.threads} | {_mb(s.backend_rss_kb):.1f} | {s.refreshes} |"
        for s in downsample(run.samples)
    ]
    results = [
        (
            "RSS growth after warm-up: median RSS of the last 10% of samples "
            f"({len(checks.last)}) minus the median of the samples from 10% to 20% of the run "
            f"({len(checks.warm)})",
            f"{checks.rss_growth_mb:+.2f} MB",
            f"≤ {RSS_BOUND_MB:g} MB",
            checks.rss_met,
        ),
        (
            f"fd count: max - min over the {len(fds)} samples from "
            f"{checks.fd_window[0].t_s / 60:.1f} min on",
            f"{checks.fd_spread} ({min(fds)} to {max(fds)})",
            f"{FD_BOUND}",
            checks.fd_met,
        ),
    ]
    half = run.samples[len(run.samples) // 2 :]
    second_half = (
        f"over the second half of the run ({half[0].t_s / 60:.1f} to {half[-1].t_s / 60:.1f} "
        f"min, {half[-1].refreshes - half[0].refreshes} refreshes) the proxy's RSS went "
        f"{_mb(half[0].rss_kb):.1f} → {_mb(half[-1].rss_kb):.1f} MB (range "
        f"{_mb(min(s.rss_kb for s in half)):.1f} to {_mb(max(s.rss_kb for s in half)):.1f} MB): "
        "flat there points to a warm-up that ended, a steady climb to a leak."
    )
    other_auth = {
        k: v for k, v in sorted(auth.items()) if k not in ("token_refreshed", "stream_opened")
    }
    lines = [
        "# Soak (`mcp-acp run`, `oidc` identity, token expiry and refresh)",
        "",
        f"- Machine: {machine_line()}",
        f"- Versions: {run.versions}",
        f"- Date: {run.date}",
        f"- Command: `{run.command}` ({run.drive_s / 60:.1f} min of calls, "
        f"{run.wall_s / 60:.1f} min in all)",
        f"- Load average (1/5/15 min) before: {load_text(run.load_before)}; after: "
        f"{load_text(run.load_after)} (the soak itself keeps well under 1 busy)",
        f"- Set-up: the test IdP (`oidc-provider`, tests/idp/server.mjs) issuing access "
        f"tokens that live {settings.token_ttl} s; a device login as {SUBJECT}, approved "
        "through the provider's pages; one `mcp-acp run`: identity `oidc` (the token "
        f"validated on every request, refreshed with {settings.refresh_margin:g} s left: "
        f"`refresh_margin_seconds` {settings.refresh_margin:g}, `refresh_retry_seconds` "
        f"{settings.refresh_retry:g}), `encrypted-file` token storage, policy allow `echo` for "
        f"{SUBJECT} with `min_provenance: {{subject: token}}` and deny `rm_rf`, default audit "
        "(`jsonl`, durability fsync), session rate limits off, backend `bench/echo_server.py`.",
        f"- Calls: {run.calls:,} made, 0 failed (one at a time at {settings.rate:g}/s: "
        f"{run.calls / run.drive_s:.2f}/s achieved; every {DENY_EVERY}th `rm_rf`: {run.denied:,} "
        f"denied with error {DENIED_CODE}; the rest `echo`, each answered with its own text). "
        f"Round trip p50 {percentile(lat, 50) / 1e6:.2f} ms, p99 "
        f"{percentile(lat, 99) / 1e6:.2f} ms, max {lat[-1] / 1e6:.1f} ms; the schedule was "
        f"reset {run.behind} times after falling 1 s behind.",
        f"- Refreshes: {auth['token_refreshed']} `token_refreshed` events in auth.jsonl "
        f"(expected ≈ {settings.expected_refreshes:.0f}: {settings.seconds:g} s ÷ "
        f"({settings.token_ttl} - {settings.refresh_margin:g}) s; required ≥ "
        f"{settings.required_refreshes}: minutes · 60 ÷ ttl - 2); other auth events: "
        + (", ".join(f"{k} {v}" for k, v in other_auth.items()) or "none")
        + ".",
        f"- Audit: `mcp-acp audit verify` passed ({'; '.join(run.verify_lines)}); "
        f"{sum(run.decisions.values()):,} `tools/call` decision records = {run.calls:,} calls "
        f"made ({', '.join(f'{k} {v:,}' for k, v in sorted(run.decisions.items()))}; every one "
        f"for {SUBJECT}, provenance token); files per stream: "
        + ", ".join(f"{k} {n} ({size / 1e6:.1f} MB)" for k, (n, size) in run.files.items())
        + f". The proxy exited {run.exit_code} when its input closed; it wrote "
        f"{run.stderr_lines} lines to stderr.",
        f"- CPU over the calls: proxy {run.proxy_cpu_s:.1f} s "
        f"({run.proxy_cpu_s * 1000 / max(run.calls, 1):.2f} ms per call), backend "
        f"{run.backend_cpu_s:.1f} s.",
        "",
        f"Samples every {settings.sample_seconds:g} s ({len(run.samples)} in all; "
        f"{len(rows)} shown, evenly spread): the proxy's `VmRSS`, `VmHWM` and `Threads` "
        "(`/proc/PID/status`), the entries of `/proc/PID/fd`, and the backend's `VmRSS` "
        "(MB = 10⁶ bytes).",
        "",
        "| minute | calls | RSS MB | HWM MB | fds | threads | backend RSS MB | refreshes |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "| check | measured | bound | |",
        "|---|---:|---:|---|",
        *(
            f"| {name} | {value} | {bound} | {'MET' if ok else 'NOT MET'} |"
            for name, value, bound, ok in results
        ),
        "",
        f"Diagnostic (not a check): {second_half}",
        "",
        f"Check RSS growth after warm-up: {'MET' if checks.rss_met else 'NOT MET'} "
        f"({checks.rss_growth_mb:+.2f} MB, bound {RSS_BOUND_MB:g} MB).",
        f"Check fd count stable: {'MET' if checks.fd_met else 'NOT MET'} "
        f"(max - min {checks.fd_spread}, bound {FD_BOUND}).",
        "",
    ]
    return "\n".join(lines)


def versions() -> str:
    node = shutil.which("node")
    node_version = "?"
    if node is not None:
        node_version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    try:
        package = IDP_DIR / "node_modules" / "oidc-provider" / "package.json"
        provider = json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        provider = "?"
    return (
        f"mcp-acp {_version('mcp-acp')}, mcp-acp-oidc {_version('mcp-acp-oidc')}, "
        f"oidc-provider {provider} on Node {node_version}"
    )


# ------------------------------------------------------------------ main


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a ~1 minute run with 20 s tokens, sampled every 5 s; writes nothing unless "
        "--output is given",
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="how long to call (default 60; --quick 1)"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="calls per second (default 20)")
    parser.add_argument(
        "--token-ttl",
        type=int,
        default=None,
        help="the IdP's access-token lifetime in seconds (default 60; --quick 20)",
    )
    parser.add_argument(
        "--sample-seconds",
        type=float,
        default=None,
        help="how often to read /proc (default 15; --quick 5)",
    )
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for any one answer before calling it a hang (default 30)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="parent directory for the scratch config, token store and audit logs "
        "(default: bench/.tmp next to this script); a fresh subdirectory is made and deleted",
    )
    parser.add_argument(
        "--output",
        "--out",
        dest="out",
        type=Path,
        default=None,
        help=f"markdown results file (default: {DEFAULT_OUT.relative_to(HERE.parent)} unless "
        "--quick; a --quick run writes nothing unless --output is given)",
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    settings = Settings(
        minutes=args.minutes if args.minutes is not None else float(defaults["minutes"]),
        rate=args.rate,
        token_ttl=args.token_ttl if args.token_ttl is not None else int(defaults["token_ttl"]),
        sample_seconds=args.sample_seconds
        if args.sample_seconds is not None
        else float(defaults["sample_seconds"]),
        call_timeout=args.call_timeout,
    )
    if settings.minutes <= 0 or not 0 < settings.rate <= 500:
        parser.error("--minutes must be above 0 and --rate between 0 and 500")
    if settings.token_ttl < 8:
        parser.error("--token-ttl must be at least 8 s (the proxy refreshes ttl/4 before expiry)")
    if settings.sample_seconds < 1 or settings.call_timeout <= 0:
        parser.error("--sample-seconds must be at least 1 and --call-timeout above 0")
    return args, settings


def main(argv: Sequence[str] | None = None) -> int:
    args, settings = parse(argv)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if os.geteuid() != 0:
        progress(
            "soak: run it as root: mcp-acp run makes itself not dumpable, so only root "
            "(CAP_SYS_PTRACE) can count the entries of its /proc/PID/fd"
        )
        return 2
    if importlib.util.find_spec("mcp_acp_oidc") is None:
        progress("soak: the oidc plugin is not installed: pip install -e plugins/mcp-acp-oidc")
        return 2
    command = " ".join(["python bench/soak.py", *(argv if argv is not None else sys.argv[1:])])
    run = Run(settings=settings, command=command, versions=versions())
    progress(f"machine: {machine_line()}")
    try:
        with scratch_dir(args.dir, "soak") as base:
            soak(base, run, progress)
    except SoakFailed as exc:
        progress(f"soak: FAILED: {exc}")
        if exc.tail:
            progress("mcp-acp run's stderr ends:\n    " + "\n    ".join(exc.tail))
        return 1
    except AssertionError as exc:
        progress(f"soak: FAILED: {exc}")
        return 1
    publish(render(run, resource_checks(run)), args.out, DEFAULT_OUT, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
