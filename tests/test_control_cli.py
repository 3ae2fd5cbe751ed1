"""``mcp-acp status`` and ``mcp-acp approvals`` against a real socket that answers what a
hostile or broken proxy could: nothing from it reaches the terminal unescaped, and a
missing field does not end the command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]
CLI = Path(sys.executable).parent / "mcp-acp"

#: What a client may put in a tool name: erase the line, move the cursor up, retitle.
HOSTILE = "write_note\x1b[2K\x1b[1G\x1b[1A\x1b]0;PWNED\x07\u202e"


class FakeProxy:
    """A control socket in a private directory answering each op with a fixed answer; an
    op whose answer is None is taken and the connection closed without one (a proxy that
    ends before it can reply)."""

    def __init__(self, directory: Path, answers: dict[str, Any]) -> None:
        directory.mkdir(mode=0o700)
        self.directory = directory
        self.answers = answers
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(directory / "proxy-1.sock"))
        self.listener.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                op = json.loads(data)["op"]
                if op in self.answers and self.answers[op] is None:
                    continue  # hang up
                conn.sendall(json.dumps(self.answers.get(op, {})).encode() + b"\n")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def fake_proxy(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Path]]:
    made: list[FakeProxy] = []

    def start(answers: dict[str, Any]) -> Path:
        made.append(FakeProxy(tmp_path / f"sockets{len(made)}", answers))
        return made[-1].directory

    yield start
    for proxy in made:
        proxy.close()


def test_approvals_list_and_answers_escape_what_the_socket_says(
    run_cli: Run, fake_proxy: Callable[[dict[str, Any]], Path]
) -> None:
    item = {
        "id": "a1\x1b[31m",
        "expires_in": 30,
        "summary": f"tools/call {HOSTILE} path=/x",
        "cacheable": False,
        "not_remembered": "code\x1b]0;x\x07",
    }
    directory = fake_proxy(
        {
            "list": {"pending": [item]},
            "approve": {"ok": True, "result": "approved\x1b[2K"},
        }
    )
    listed = run_cli("approvals", "list", "--socket-dir", str(directory))
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout
    assert "\x07" not in listed.stdout
    assert "\u202e" not in listed.stdout
    assert "write_note\\x1b[2K\\x1b[1G\\x1b[1A\\x1b]0;PWNED\\x07\\u202e" in listed.stdout
    assert listed.stdout.count("\n") == 1  # one pending item, one line
    approved = run_cli("approvals", "approve", "a1", "--socket-dir", str(directory))
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout == "a1: approved\\x1b[2K\n"


def test_approvals_show_escapes_what_the_socket_says_and_names_a_silent_proxy(
    run_cli: Run, fake_proxy: Callable[[dict[str, Any]], Path]
) -> None:
    """``approvals show ID`` prints the line ``list`` prints, then each field and the
    arguments, every value escaped as ``list`` escapes it; ``--json`` prints the item. An
    id the proxy does not hold, or a proxy that takes the command and does not answer, is
    a one-line error, exit 1."""
    item = {
        "id": "a1",
        "expires_in": 30,
        "summary": f"tools/call {HOSTILE}",
        "cacheable": True,
        "rule": "ask\x1b[31m",
        "tool": HOSTILE,
        "paths": ["/n/\u202eevil"],
        "arguments": {"name\x1b": [HOSTILE, "\u2028\x7f"]},
        "arguments_omitted": None,
    }
    directory = fake_proxy({"show": {"pending": item}})
    shown = run_cli("approvals", "show", "a1", "--socket-dir", str(directory))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (
        "a1  expires in 30s  tools/call write_note\\x1b[2K\\x1b[1G\\x1b[1A\\x1b]0;PWNED"
        "\\x07\\u202e\n"
        "  rule: ask\\x1b[31m\n"
        "  subject: ?\n"
        "  method: ?\n"
        "  tool: write_note\\x1b[2K\\x1b[1G\\x1b[1A\\x1b]0;PWNED\\x07\\u202e\n"
        "  name: ?\n"
        "  uri: ?\n"
        "  path: /n/\\u202eevil\n"
        "  arguments:\n"
        "    {\n"
        '      "name\\u001b": [\n'
        '        "write_note\\u001b[2K\\u001b[1G\\u001b[1A\\u001b]0;PWNED\\u0007\\u202e",\n'
        '        "\\u2028\\x7f"\n'
        "      ]\n"
        "    }\n"
    )
    as_json = run_cli("approvals", "show", "a1", "--json", "--socket-dir", str(directory))
    assert json.loads(as_json.stdout) == item

    unknown = fake_proxy({"show": {"error": "no pending approval 'a2'"}})
    missing = run_cli("approvals", "show", "a2", "--socket-dir", str(unknown))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.startswith("error: no pending approval 'a2' in any running proxy")
    assert missing.stderr.count("\n") == 1

    silent = fake_proxy({"show": None})  # takes the command, closes without an answer
    unanswered = run_cli("approvals", "show", "a1", "--socket-dir", str(silent))
    assert (unanswered.returncode, unanswered.stdout) == (1, "")
    assert unanswered.stderr.startswith("error: no answer from proxy pid 1 (")
    assert "its approval a1, if any, not shown" in unanswered.stderr
    assert unanswered.stderr.count("\n") == 1


def test_status_shows_what_a_partial_or_hostile_answer_holds(
    run_cli: Run, fake_proxy: Callable[[dict[str, Any]], Path]
) -> None:
    directory = fake_proxy({"status": {"pid": 1, "subject": HOSTILE, "uptime_seconds": "x"}})
    result = run_cli("status", "--socket-dir", str(directory))
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr
    assert "\x1b" not in result.stdout
    assert result.stdout.startswith("pid 1  up xs  subject write_note\\x1b[2K")
    assert "pending approvals ?" in result.stdout


def test_approvals_list_skips_what_is_not_an_approval(
    run_cli: Run, fake_proxy: Callable[[dict[str, Any]], Path]
) -> None:
    directory = fake_proxy({"list": {"pending": ["not an item", {"id": "a2"}]}})
    result = run_cli("approvals", "list", "--socket-dir", str(directory))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "a2  expires in ?s  ?  (never remembered)\n"


def test_approvals_list_says_the_seconds_left_are_the_time_before_the_denial(
    run_cli: Run, fake_proxy: Callable[[dict[str, Any]], Path]
) -> None:
    item = {
        "id": "7c4f73d1d0c4cf35",
        "expires_in": 53.1,
        "summary": 'root wants tools/call write_note (path="/n/todo.md"); rule ask-writes',
        "cacheable": True,
    }
    directory = fake_proxy({"list": {"pending": [item]}})
    listed = run_cli("approvals", "list", "--socket-dir", str(directory))
    assert listed.stdout == (
        "7c4f73d1d0c4cf35  expires in 53s  root wants tools/call write_note "
        '(path="/n/todo.md"); rule ask-writes\n'
    )
    as_json = run_cli("approvals", "list", "--json", "--socket-dir", str(directory))
    assert json.loads(as_json.stdout) == [item]  # unchanged: seconds left as a number


def test_without_socket_dir_the_configs_is_used_else_the_runtime_dir(
    run_cli: Run,
    fake_proxy: Callable[[dict[str, Any]], Path],
    isolated_home: Path,
    config_path: Path,
) -> None:
    """No ``--socket-dir``: no config, the runtime dir; a config that sets
    ``proxy.socket_dir``, that directory — where its proxies serve their sockets."""
    (isolated_home / "run").mkdir(mode=0o700)
    runtime = FakeProxy(isolated_home / "run" / "mcp-acp", {"list": {"pending": [{"id": "r1"}]}})
    try:
        assert run_cli("approvals", "list").stdout.startswith("r1  ")
        configured = fake_proxy({"list": {"pending": [{"id": "c1"}]}, "status": {"pid": 7}})
        run_cli("init", "--non-interactive", "--backend-command", sys.executable, check=True)
        config = json.loads(config_path.read_text())
        config["proxy"] = {"socket_dir": str(configured)}
        config_path.write_text(json.dumps(config))
        assert run_cli("approvals", "list").stdout.startswith("c1  ")
        assert run_cli("status").stdout.startswith("pid 7  ")
        given = run_cli("approvals", "list", "--socket-dir", str(runtime.directory))
        assert given.stdout.startswith("r1  ")  # --socket-dir wins
    finally:
        runtime.close()


def test_a_config_that_cannot_be_read_is_a_one_line_error(
    run_cli: Run, fake_proxy: Callable[[dict[str, Any]], Path], config_path: Path
) -> None:
    config_path.parent.mkdir(parents=True)
    config_path.write_text("{not json")
    config_path.chmod(0o600)
    for args in (["approvals", "list"], ["status"], ["approvals", "deny", "a1"]):
        result = run_cli(*args)
        assert result.returncode == 10
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"config error: {config_path} is not valid JSON")
        assert "fix: " in result.stderr
    directory = fake_proxy({"list": {"pending": [{"id": "a1"}]}})
    given = run_cli("approvals", "list", "--socket-dir", str(directory))  # not read then
    assert given.returncode == 0, given.stderr


def test_an_answer_taken_as_the_proxy_ended_is_told_from_the_note_it_left(
    run_cli: Run, fake_proxy: Callable[[dict[str, Any]], Path]
) -> None:
    """A proxy that ends fail closed cannot reply; the note it leaves (``proxy-<pid>.ended``,
    :meth:`ControlServer.record_ended`) can. An answer the proxy took just before it ended
    is printed with what became of the request, as the proxy would have replied; an answer
    that comes too late — an approval nobody had answered, or one answered before — is a
    one-line error (exit 1) saying why the approval ended. What the note holds is escaped."""
    directory = fake_proxy({"approve": None, "deny": None})  # taken, never replied to
    outcome = "denied: the audit trail cannot be written (gone\x1b[2K)"
    ended = {
        "a1": {"answer": "allow_once", "by": "alice", "outcome": outcome},
        "a2": {"answer": None, "by": None, "outcome": "the proxy shut down (x); denied"},
    }
    (directory / "proxy-1.ended").write_text(json.dumps({"pid": 1, "ended": ended}))
    taken = run_cli("approvals", "approve", "a1", "--socket-dir", str(directory))
    assert taken.returncode == 0, taken.stderr
    escaped = "denied: the audit trail cannot be written (gone\\x1b[2K)"
    assert taken.stdout == f"a1: allow_once; the proxy: {escaped}\n"
    unanswered = run_cli("approvals", "deny", "a2", "--socket-dir", str(directory))
    assert unanswered.returncode == 1
    assert unanswered.stderr == (
        "error: approval a2 ended unanswered: the proxy shut down (x); denied (proxy pid 1)\n"
    )
    unknown = run_cli("approvals", "approve", "a3", "--socket-dir", str(directory))
    assert unknown.returncode == 1
    assert unknown.stderr.startswith(
        "error: no pending approval 'a3' in any running proxy; proxy pid 1 took the answer "
        "but did not reply (it may have ended)"
    )
    (directory / "proxy-1.sock").unlink()  # the proxy is gone: nothing takes an answer now
    late = run_cli("approvals", "deny", "a1", "--socket-dir", str(directory))
    assert late.returncode == 1
    assert late.stderr == (
        "error: approval a1 was answered (allow_once by alice) before its proxy ended "
        f"(pid 1); the proxy: {escaped}\n"
    )


def test_a_runtime_directory_another_user_made_first_is_a_one_line_refusal(
    isolated_home: Path, tmp_path: Path
) -> None:
    """Without ``XDG_RUNTIME_DIR`` (and no ``/run/user/<uid>``) the sockets live in
    ``$TMPDIR/runtime-<uid>``, which any user can create first: platformdirs refuses it, and
    so must every command that needs it, with exit 10 and the fix, not a traceback."""
    if Path(f"/run/user/{os.geteuid()}").is_dir():
        pytest.skip("/run/user/<uid> exists here: platformdirs never falls back to $TMPDIR")
    temp = tmp_path / "tmp"
    temp.mkdir()
    taken = temp / f"runtime-{os.geteuid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env.update(HOME=str(isolated_home), TMPDIR=str(temp))
    subprocess.run(
        [str(CLI), "init", "--non-interactive", "--backend-command", sys.executable],
        env=env,
        check=True,
        capture_output=True,
    )
    ways = [lambda: taken.symlink_to(tmp_path)]  # a link: anyone can plant one
    if os.geteuid() == 0:  # a directory of another user's: only root can make one here
        ways.append(lambda: (taken.mkdir(mode=0o777), os.chown(taken, 65534, 65534)))
    for plant in ways:
        plant()
        for args in (["status"], ["approvals", "list"], ["run"]):
            result = subprocess.run(
                [str(CLI), *args], env=env, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 10, (args, result.stderr)
            error = result.stderr.splitlines()[-1]  # run warns of the local identity first
            assert error.startswith("config error: refusing the runtime directory:")
            assert str(taken) in error
            assert "fix: set XDG_RUNTIME_DIR to a directory of yours" in error
            assert "Traceback" not in result.stderr
            assert "internal error" not in result.stderr
        if taken.is_symlink():
            taken.unlink()
        else:
            taken.rmdir()
