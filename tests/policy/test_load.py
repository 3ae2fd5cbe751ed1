"""Reading policy files from a real file system: strict JSON, sizes, odd file types."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from proxy_helpers import Proxy, configure, proxy_env, wait_for_event

from mcp_acp.errors import PolicyError
from mcp_acp.policy.engine import AcpPolicyEngine
from mcp_acp.policy.load import load_policy
from mcp_acp.policy.model import PolicyFile

ALLOW_X = {"id": "b", "effect": "allow", "conditions": {"tool_name": "x"}}
DENY_X = {"id": "a", "effect": "deny", "conditions": {"tool_name": "x"}}
#: ``rules`` twice: a last-wins reader sees only the allow rule.
TWICE = (
    f'{{"version": "1",\n "rules": [{json.dumps(DENY_X)}],\n "rules": [{json.dumps(ALLOW_X)}]}}\n'
)


def test_a_key_given_twice_is_refused_with_its_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(TWICE)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}:3: rules: key 'rules' appears twice in one object")
    nested = '{"rules": [{"id": "a", "effect": "deny",\n "effect": "allow",'
    path.write_text(nested + ' "conditions": {"tool_name": "x"}}]}')
    with pytest.raises(PolicyError, match=r":2: rules\[0\]\.effect: key 'effect' appears twice"):
        load_policy(path)


def test_reload_refuses_a_key_given_twice_and_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"rules": [DENY_X]}))
    engine = AcpPolicyEngine.from_file(path)
    good = engine.policy_id
    path.write_text(TWICE)
    errors = engine.reload()
    assert errors
    assert "appears twice" in errors[0]
    assert engine.policy_id == good


#: Run in a child whose address space is capped 512 MiB above what the imports took, so
#: reading without a limit fails with MemoryError instead of eating the machine; the
#: timeout only guards against a hang (a FIFO without a writer blocks a plain read).
CAPPED = """
import resource, sys
from pathlib import Path
from mcp_acp.config import load_config
from mcp_acp.errors import McpAcpError
from mcp_acp.policy.load import load_policy
from mcp_acp.policy.model import PolicyFile
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + (512 << 20), resource.RLIM_INFINITY))
load = load_config if sys.argv[1] == "config" else load_policy
try:
    load(Path(sys.argv[2]))
except McpAcpError as exc:
    print(exc.exit_code, exc)
"""


def load_capped(kind: str, path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CAPPED, kind, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert not result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("kind", ["config", "policy"])
def test_a_huge_sparse_file_is_refused_without_reading_it(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "c" / "file.json"
    path.parent.mkdir(mode=0o700)
    with path.open("wb") as handle:
        handle.truncate(3 << 30)  # 3 GiB of holes: no disk used
    path.chmod(0o600)
    code = "10" if kind == "config" else "12"
    assert load_capped(kind, path).startswith(f"{code} ")
    assert f"{path} is {3 << 30} bytes, over the" in load_capped(kind, path)


def test_a_device_as_policy_is_refused_without_reading_it() -> None:
    out = load_capped("policy", Path("/dev/zero"))
    assert out.startswith("12 policy /dev/zero is a character device, not a regular file")


def test_a_fifo_as_policy_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.json"
    os.mkfifo(fifo)
    out = load_capped("policy", fifo)
    assert out.startswith(f"12 policy {fifo} is a FIFO (named pipe), not a regular file")


#: Parses as far as the JSON reader's recursion limit allows, then fails with RecursionError.
TOO_DEEP = "[" * 100_000


def test_a_policy_nested_too_deeply_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(TOO_DEEP)
    with pytest.raises(PolicyError, match="nests arrays or objects too deeply"):
        load_policy(path)
    path.write_text('{"version": "1", "rules": ' + "[" * 5_000 + "]" * 5_000 + "}")
    with pytest.raises(PolicyError, match="nests arrays or objects too deeply"):
        load_policy(path)


def test_reload_of_a_policy_nested_too_deeply_is_recorded_and_keeps_the_last_good(
    isolated_home: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    log_dir = configure(
        isolated_home,
        sys.executable,
        ["-m", "mcp_acp.demo.backend", str(notes)],
        {"version": "1", "rules": [ALLOW_X]},
    )
    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    proxy.initialize()  # answered: the SIGHUP handler is in place
    good = PolicyFile.model_validate({"version": "1", "rules": [ALLOW_X]}).policy_id()
    (isolated_home / ".config" / "mcp-acp" / "policy.json").write_text(TOO_DEEP)
    proxy.proc.send_signal(signal.SIGHUP)
    failed = wait_for_event(log_dir, "system", "policy_reload_failed")
    assert "nests arrays or objects too deeply" in failed["detail"]["errors"][0]
    assert failed["detail"]["policy_id"] == good  # the last good policy stays
    assert proxy.close() == 0
    assert "Traceback" not in (isolated_home / "proxy-stderr.txt").read_text()


def _policy_in(directory: Path, mode: int = 0o700) -> Path:
    directory.mkdir(mode=mode, parents=True)
    directory.chmod(mode)  # whatever the umask
    path = directory / "policy.json"
    path.write_text(json.dumps({"version": "1", "rules": [ALLOW_X]}))
    path.chmod(0o600)
    return path


def test_a_policy_others_could_change_is_refused(tmp_path: Path) -> None:
    """Whoever can change the policy decides what passes: a policy file writable by group
    or others, in a directory they can write (not sticky), owned by another user, or a link
    to such a file or into such a directory is refused, as the config is — at load, with a
    fix; one that only its owner can change, through a link too, is read."""
    writable = _policy_in(tmp_path / "w")
    writable.chmod(0o666)
    open_dir = _policy_in(tmp_path / "open", 0o770)
    elsewhere = _policy_in(tmp_path / "shared", 0o777)
    link = _policy_in(tmp_path / "mine").parent / "link.json"
    link.symlink_to(elsewhere)
    cases = [
        (writable, f"file {writable} is writable by group or others (mode 0666)"),
        (open_dir, f"directory {open_dir.parent} is writable by group or others (mode 0770)"),
        (link, f"directory {elsewhere.parent} is writable by group or others (mode 0777)"),
    ]
    if os.geteuid() == 0:  # only root can give a file away
        foreign = _policy_in(tmp_path / "foreign")
        os.chown(foreign, 65534, 65534)
        cases.append((foreign, f"{foreign} is owned by uid 65534, not by you (uid 0)"))
    for path, problem in cases:
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        assert caught.value.message == f"refusing to use policy: {problem}", path
        assert "chmod go-w" in (caught.value.fix or "")
    sticky = _policy_in(tmp_path / "sticky", 0o1777)  # like /tmp: others cannot swap it
    trusted = _policy_in(tmp_path / "trusted")
    (tmp_path / "trusted" / "via.json").symlink_to(trusted)
    for path in (sticky, trusted, tmp_path / "trusted" / "via.json"):
        assert load_policy(path).rules[0].id == "b"


def test_reload_refuses_a_policy_made_writable_by_others_and_keeps_the_last_good(
    tmp_path: Path,
) -> None:
    path = _policy_in(tmp_path / "p")
    engine = AcpPolicyEngine.from_file(path)
    good = engine.policy_id
    path.write_text(json.dumps({"version": "1", "rules": []}))
    path.chmod(0o662)
    errors = engine.reload()
    assert errors[0].startswith(
        f"refusing to use policy: file {path} is writable by group or others (mode 0662) — fix:"
    )
    assert engine.policy_id == good
    path.chmod(0o600)
    assert engine.reload() == []
    assert engine.policy_id != good


@pytest.mark.parametrize(
    ("bom", "encoding", "expected"),
    [
        (b"\xef\xbb\xbf", "utf-8", "starts with a byte order mark (BOM)"),
        (b"\xff\xfe", "utf-16-le", "is UTF-16 text (it starts with a byte order mark)"),
    ],
    ids=["utf-8-bom", "utf-16-le"],
)
def test_a_policy_with_a_byte_order_mark_is_named_with_how_to_save_it(
    tmp_path: Path, bom: bytes, encoding: str, expected: str
) -> None:
    """As the config's: Notepad's UTF-8 BOM was 'not valid JSON at column 1: Expecting
    value', pointing at nothing the user could see; UTF-16 was 'not UTF-8 (byte 0)'."""
    path = tmp_path / "policy.json"
    path.write_bytes(bom + json.dumps({"version": "1", "rules": [ALLOW_X]}).encode(encoding))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.user_line() == (
        f"policy error: policy {path} {expected} — fix: save it as UTF-8 without a byte order mark"
    )


def test_the_machines_localtime_is_refused_as_a_time_zone(tmp_path: Path) -> None:
    """tzdata's ``localtime`` is a link to the machine's own setting: the same policy meant
    different hours on different machines, and changed with the host's clock settings."""
    path = tmp_path / "policy.json"
    window = {"start": "09:00", "end": "17:00", "timezone": "localtime"}
    rule = {"id": "day", "effect": "allow", "conditions": {"tool_name": "x", "time": window}}
    path.write_text(json.dumps({"version": "1", "rules": [rule]}))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert "rules[0].conditions.time.timezone: 'localtime' is whatever zone" in message
    assert "\n" not in message


def test_a_time_window_with_a_utc_offset_is_refused_at_load(tmp_path: Path) -> None:
    """``"start": "22:00+02:00"`` was accepted; every request the rule was asked about then
    compared a time with an offset to one without — an engine error, a deny with no rule —
    and ``policy explain`` crashed. The time zone is the window's ``timezone``."""
    path = tmp_path / "policy.json"
    window = {"start": "22:00+02:00", "end": "06:00", "timezone": "Europe/Vienna"}
    rule = {"id": "night", "effect": "deny", "conditions": {"tool_name": "x", "time": window}}
    path.write_text(json.dumps({"version": "1", "rules": [rule]}, indent=1))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert "rules[0].conditions.time.start: 22:00:00+02:00 has a UTC offset" in message
    assert "\n" not in message
    path.write_text(json.dumps({"version": "1", "rules": [ALLOW_X]}))
    engine = AcpPolicyEngine.from_file(path)
    path.write_text(json.dumps({"version": "1", "rules": [rule]}))
    problems = engine.reload()
    assert len(problems) == 1
    assert "has a UTC offset" in problems[0]
    assert engine.policy.rules[0].id == "b"  # the last good policy stays


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("tool_name", "read\u200b_text_file", "U+200B"),
        ("extension", ".p\u200bem", "U+200B"),
        ("mcp_method", "tools/\u2060call", "U+2060"),
        ("groups", "contractors\x1b", "U+001B"),
    ],
)
def test_a_condition_with_a_character_that_does_not_show_is_refused(
    tmp_path: Path, field: str, value: str, shown: str
) -> None:
    """A zero-width space pasted into a deny rule's tool name or extension: the policy
    loaded (``policy validate`` said ok) and the rule denied nothing — a ``.pem`` key was
    read through the real filesystem server. Only path and URI patterns refused such
    characters; every string condition does now, at load, in one line."""
    path = tmp_path / "policy.json"
    rule = {"id": "no", "effect": "deny", "conditions": {field: value}}
    path.write_text(json.dumps({"version": "1", "rules": [rule]}))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert f"rules[0].conditions.{field}" in message
    assert f"contains {shown}, a control or invisible character" in message
    assert "\n" not in message
