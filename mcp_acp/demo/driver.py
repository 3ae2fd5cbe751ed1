"""``mcp-acp demo``: the whole path, end to end, in a throw-away home.

A real MCP server (:mod:`mcp_acp.demo.backend`, a notes server) runs behind the real proxy
(``mcp-acp run``, a child process) with the starter policy, the ``local`` identity and the
``cli`` approver. A scripted client speaks newline-delimited JSON-RPC to the proxy, as
Claude Desktop would: one allowed call, one denied call, one call that waits for a human,
who answers through the proxy's control socket exactly as ``mcp-acp approvals approve``
does. Then the decision trail is printed and the hash chains verified with the real CLI.

Nothing is written outside the demo's home (a temporary directory unless ``--keep DIR``)
and a temporary runtime directory for the control socket: HOME and the XDG directories
of every child point there, and the config names every path. No network, no prompt. A step
that does not end as expected raises :class:`DemoFailed` (exit 1).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from queue import Empty, Queue
from typing import IO, Any

import click

from mcp_acp._fs import atomic_write_text, ensure_private_dir
from mcp_acp.config import Config, save_config
from mcp_acp.control import ask
from mcp_acp.control_cli import approval_line
from mcp_acp.errors import McpAcpError, printable
from mcp_acp.proxy.messages import DENIED

__all__ = ["DemoFailed", "demo_policy", "run_demo"]

#: How long the scripted client waits for any one answer.
ANSWER_SECONDS = 30.0
WELCOME = "Welcome! This note may be read by anyone the policy allows.\n"
FAKE_SECRET = "API_KEY=demo-not-a-real-key\n"  # noqa: S105 - a stand-in the policy protects
TODO = "- try mcp-acp demo\n"


class DemoFailed(McpAcpError):
    """A demo step did not end as expected (exit 1, as any :class:`McpAcpError`; the class
    only gives the error line its label, ``demo error: …``)."""

    kind = "demo"


def _failed(message: str) -> DemoFailed:
    return DemoFailed(
        message, fix="the proxy's own messages are printed above; --keep DIR keeps its files"
    )


def _say(text: str = "") -> None:
    click.echo(text)


def _step(number: int, title: str) -> None:
    click.echo()
    click.echo(click.style(f"[{number}/8] {title}", bold=True))


class _Client:
    """A scripted MCP client: the real ``mcp-acp run`` as a child, driven line by line."""

    def __init__(self, config: Path, env: dict[str, str], home: Path) -> None:
        self.stderr: IO[bytes] = (home / "proxy-stderr.txt").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_acp", "--config", str(config), "run"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            cwd=home,
        )
        self.lines: Queue[bytes] = Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.next_id = 0

    def _pump(self) -> None:
        assert self.proc.stdout is not None  # noqa: S101 - PIPE given
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, body: dict[str, Any]) -> None:
        assert self.proc.stdin is not None  # noqa: S101 - PIPE given
        self.proc.stdin.write(json.dumps(body).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> int:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return self.next_id

    def answer(self, request_id: int) -> dict[str, Any]:
        deadline = time.monotonic() + ANSWER_SECONDS
        while True:
            try:
                line = self.lines.get(timeout=0.1)
                break
            except Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise _failed(f"the proxy exited {self.proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise _failed(
                        f"no answer from the proxy to request {request_id} "
                        f"in {ANSWER_SECONDS:.0f} s"
                    ) from None
        try:
            body = json.loads(line)
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("id") != request_id:
            raise _failed(f"expected the answer to request {request_id}, got {line!r}")
        return body

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.answer(self.request(method, params))

    def close(self) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # the client ends the session
        try:
            return self.proc.wait(timeout=ANSWER_SECONDS)
        finally:
            self.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def _text_of(answer: dict[str, Any]) -> str:
    content = answer.get("result", {}).get("content", [])
    return "".join(c.get("text", "") for c in content if isinstance(c, dict))


def _short(text: str, width: int = 70) -> str:
    text = text.strip().replace("\n", " / ")
    return text if len(text) <= width else text[: width - 1] + "…"


@contextlib.contextmanager
def _home(keep: Path | None) -> Iterator[Path]:
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="mcp-acp-demo-") as tmp:
            yield Path(tmp).resolve()
        return
    keep = keep.expanduser().absolute()
    try:
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            raise click.BadParameter(
                f"{keep} exists and is not an empty directory; name a new or empty one",
                param_hint="'--keep'",
            )
        ensure_private_dir(keep)
    except OSError as exc:  # /proc/x, a read-only place, a file where a parent should be
        raise click.BadParameter(
            f"{printable(str(keep))} cannot be made the demo's home: {exc.strerror or exc}; "
            "name a new or empty directory you can write to",
            param_hint="'--keep'",
        ) from None
    yield keep.resolve()


def _environment(home: Path, runtime: Path) -> dict[str, str]:
    """The children's environment: this one, with every user directory inside ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_RUNTIME_DIR=str(runtime),  # short: Unix socket paths are limited to ~100 bytes
    )
    return env


def _write_config(home: Path, notes: Path, sockets: Path) -> Path:
    config_path = home / ".config" / "mcp-acp" / "config.json"
    config = Config.model_validate(
        {
            "backend": {
                "transport": "stdio",
                "command": sys.executable,
                "args": ["-m", "mcp_acp.demo.backend", str(notes)],
            },
            "identity": {"use": "local"},
            "approver": {"use": "cli"},
            "proxy": {"approval_timeout_seconds": ANSWER_SECONDS, "socket_dir": str(sockets)},
            "audit": {
                "log_dir": str(home / ".local" / "state" / "mcp-acp" / "log"),
                "fallback_path": str(home / ".local" / "state" / "mcp-acp" / "fallback.jsonl"),
            },
        }
    )
    save_config(config, config_path)
    atomic_write_text(config_path.parent / "policy.json", demo_policy())
    return config_path


def demo_policy() -> str:
    """The policy the demo runs on: the starter policy that ``mcp-acp init`` writes."""
    return resources.files("mcp_acp.data").joinpath("starter_policy.json").read_text("utf-8")


def _cli(config: Path, env: dict[str, str], *args: str) -> str:
    """Run ``mcp-acp --config CONFIG ARGS`` as a user would; show the command and output."""
    shown = shlex.join(["mcp-acp", "--config", str(config), *args])
    _say(f"  $ {shown}")
    done = subprocess.run(
        [sys.executable, "-m", "mcp_acp", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    for line in (done.stdout + done.stderr).rstrip().splitlines():
        _say(f"  {line}")
    if done.returncode != 0:
        raise DemoFailed(f"'{shown}' exited {done.returncode}", fix="see its output above")
    return done.stdout


def _wait_pending(socket: Path) -> dict[str, Any]:
    """The one pending approval, as ``mcp-acp approvals list`` sees it."""
    deadline = time.monotonic() + ANSWER_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            pending = ask(socket, {"op": "list"}).get("pending", [])
            if pending:
                return pending[0]  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise _failed(f"no pending approval appeared on {socket}")


def _session(client: _Client, notes: Path, sockets: Path) -> None:
    """Steps 2-6: the scripted client's session through the proxy."""
    from mcp_acp.demo.backend import TOOLS

    _step(2, "Start the proxy, as an MCP client (Claude Desktop, an IDE) would")
    init = client.call(
        "initialize",
        {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "mcp-acp-demo-client", "version": "1"},
        },
    )
    if "result" not in init:
        raise _failed(f"initialize failed: {init.get('error')}")
    client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    server = init["result"].get("serverInfo", {})
    _say(
        f"  -> initialize    <- {server.get('name')} (protocol {init['result']['protocolVersion']})"
    )

    _step(3, "List the tools: the proxy hides what the policy could never allow")
    listed = [t["name"] for t in client.call("tools/list", {}).get("result", {}).get("tools", [])]
    offered = [t.name for t in TOOLS]
    hidden = [name for name in offered if name not in listed]
    _say(f"  the backend offers: {', '.join(offered)}")
    _say(f"  the client sees:    {', '.join(listed)}")
    _say(f"  hidden:             {', '.join(hidden)} (the policy denies code execution)")
    if hidden != ["run_command"]:
        raise _failed(f"expected only run_command hidden, got {hidden}")

    welcome = notes / "welcome.md"
    _step(4, f"An allowed call: read_note {welcome}")
    answer = client.call("tools/call", {"name": "read_note", "arguments": {"path": str(welcome)}})
    if "result" not in answer or answer["result"].get("isError") or _text_of(answer) != WELCOME:
        raise _failed(f"the allowed read did not return the note: {answer}")
    _say(f'  ALLOWED, the backend answered: "{_short(_text_of(answer))}"')

    secret = notes / ".env"
    _step(5, f"A denied call: read_note {secret}")
    answer = client.call("tools/call", {"name": "read_note", "arguments": {"path": str(secret)}})
    error = answer.get("error", {})
    if error.get("code") != DENIED or (error.get("data") or {}).get("rule") != "deny-secrets":
        raise _failed(f"the read of {secret} was not denied by deny-secrets: {answer}")
    _say(f"  DENIED, JSON-RPC error {error['code']} from the proxy; the backend never saw it:")
    _say(f"  {_short(error['message'], 200)}")

    todo = notes / "todo.md"
    _step(6, f"A call that needs a human: write_note {todo}")
    request_id = client.request(
        "tools/call", {"name": "write_note", "arguments": {"path": str(todo), "text": TODO}}
    )
    socket = sockets / f"proxy-{client.proc.pid}.sock"
    pending = _wait_pending(socket)
    _say("  the proxy holds the call; 'mcp-acp approvals list' in another terminal shows:")
    _say(f"  {approval_line(pending)}")
    _say(f"  the demo answers for you: mcp-acp approvals approve {pending['id']}")
    reply = ask(socket, {"op": "approve", "id": pending["id"], "remember": False})
    if not reply.get("ok"):
        raise _failed(f"the approval was not accepted: {reply}")
    answer = client.answer(request_id)
    if "result" not in answer or answer["result"].get("isError"):
        raise _failed(f"the approved write failed: {answer}")
    if not todo.is_file() or todo.read_text() != TODO:
        raise _failed(f"the approved write did not reach {todo}")
    _say(f'  APPROVED ({reply["result"]}), forwarded: "{_short(_text_of(answer))}"')


def _records(log_dir: Path, stream: str) -> list[dict[str, Any]]:
    text = (log_dir / f"{stream}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _check_trail(log_dir: Path) -> dict[str, Any]:
    """Check the records of what the demo showed; return the approved decision."""
    calls = [r for r in _records(log_dir, "decisions") if r.get("mcp_method") == "tools/call"]
    got = [(r.get("tool_name"), r["effect"], r.get("final_effect"), r["rule_id"]) for r in calls]
    expected = [
        ("read_note", "allow", None, "allow-reads"),
        ("read_note", "deny", None, "deny-secrets"),
        ("write_note", "ask", "allow", "ask-changes"),
    ]
    if got != expected:
        raise _failed(f"the decision trail holds {got}, expected {expected}")
    if not calls[2].get("approved_by"):
        raise _failed("the approved decision does not name who approved it")
    denied = calls[1]["request_id"]
    sent = {
        r["request_id"]: r["outcome"]
        for r in _records(log_dir, "operations")
        if r.get("direction") == "client_to_server"
    }
    if sent.get(denied) != "denied":
        raise _failed(f"request {denied} is recorded as {sent.get(denied)}, not denied")
    ended = [r for r in _records(log_dir, "auth") if r.get("event") == "session_ended"]
    if len(ended) != 1:
        raise _failed(f"expected one session_ended record, found {len(ended)}")
    return calls[2]


def _show_proxy_stderr(home: Path) -> None:
    path = home / "proxy-stderr.txt"
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    click.echo(f"the proxy's stderr:\n{text or '(empty)'}", err=True)


def run_demo(keep: Path | None = None) -> None:
    """Run the demo; raise :class:`DemoFailed` if a step does not end as expected."""
    with _home(keep) as home, tempfile.TemporaryDirectory(prefix="mcp-acp-run-") as runtime:
        try:
            _walk(home, Path(runtime), kept=keep is not None)
        except DemoFailed:
            _show_proxy_stderr(home)
            raise


def _walk(home: Path, runtime: Path, *, kept: bool) -> None:
    sockets = runtime / "mcp-acp"
    env = _environment(home, runtime)
    notes = home / "notes"
    notes.mkdir()
    (notes / "welcome.md").write_text(WELCOME)
    (notes / ".env").write_text(FAKE_SECRET)
    config = _write_config(home, notes, sockets)
    log_dir = home / ".local" / "state" / "mcp-acp" / "log"

    _say("mcp-acp demo: a real MCP server behind the real proxy, on this machine only.")
    _say(f"Everything happens in {home} (HOME for every child); no network, no prompts.")
    _step(1, "Set up")
    _say(f"  notes      {notes} (welcome.md, .env)")
    _say(f"  backend    python -m mcp_acp.demo.backend {notes} (a notes server, mcp SDK)")
    _say(
        "  policy     the starter policy 'mcp-acp init' writes: deny secrets, deny code "
        "execution, allow reads, ask before changes"
    )
    _say("  identity   local (your OS user; fine for a demo, not Zero Trust)")
    _say("  approver   cli (pending calls answered with 'mcp-acp approvals')")
    _say(f"  config     {config}")
    _say(f"  audit log  {log_dir}")

    client = _Client(config, env, home)
    try:
        _session(client, notes, sockets)
    except BaseException:
        client.kill()
        raise
    code = client.close()
    if code != 0:
        raise _failed(f"the proxy exited {code} at the end of the session")
    _say("  the client closes its end; the proxy ends the session and exits 0")

    _step(7, "The decision trail (written and fsynced before each call went on)")
    _cli(config, env, "logs", "show", "--stream", "decisions")
    approval = _check_trail(log_dir)
    waited = round(approval["approval_seconds"] * 1000)
    _say(
        f"  the write was approved by {approval['approved_by']} through the "
        f"{approval['approver']} approver, {waited} ms after the proxy asked"
    )

    _step(8, "Verify the audit trail's hash chains")
    _cli(config, env, "audit", "verify")

    _say()
    _say("demo: all steps ended as expected.")
    if kept:
        shutil.rmtree(sockets, ignore_errors=True)
        _say(f"The demo home is kept in {home}; look around with:")
        _say(f"  mcp-acp --config {config} logs show")
        _say(f"  mcp-acp --config {config} policy explain --tool read_note --arg path={notes}/.env")
    else:
        _say("Next: 'mcp-acp init' writes a config for your own MCP server (see the README).")
