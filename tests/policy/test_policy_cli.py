"""``mcp-acp policy …`` through the installed executable, and the shipped golden cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from proxy_helpers import E2E, Proxy, configure, proxy_env

CLI = Path(sys.executable).parent / "mcp-acp"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
RECORDING_SERVER = E2E / "peers" / "recording_server.py"


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(home)
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("name", ["filesystem", "git", "shell"])
def test_shipped_golden_cases_pass(isolated_home: Path, name: str) -> None:
    result = run(
        isolated_home,
        "policy",
        "test",
        str(EXAMPLES / f"{name}.cases.json"),
        "--policy",
        str(EXAMPLES / f"{name}.json"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    total = len(json.loads((EXAMPLES / f"{name}.cases.json").read_text())["cases"])
    assert f"{total} of {total} cases as expected" in result.stdout
    assert "FAIL" not in result.stdout


def test_a_mismatch_fails_with_a_diff(isolated_home: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.json"
    cases.write_text(
        json.dumps(
            {
                "cases": [
                    {
                        "name": "wrong on purpose",
                        "request": {"tool": "read_file", "arguments": {"path": "/etc/shadow"}},
                        "expect": {"effect": "allow", "rule": "read-project"},
                    }
                ]
            }
        )
    )
    result = run(
        isolated_home, "policy", "test", str(cases), "--policy", str(EXAMPLES / "filesystem.json")
    )
    assert result.returncode == 1
    assert "FAIL wrong on purpose" in result.stdout
    assert "- expected: allow by read-project" in result.stdout
    assert "+ got:      deny by None: denied by default" in result.stdout


def test_validate_reports_every_error_with_path_and_line(
    isolated_home: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(
        '{\n  "version": "1",\n  "rules": [\n'
        '    {"effect": "allow", "conditions": {"tool_name": "x"}},\n'
        '    {"effect": "permit",\n'
        '     "conditions": {"path_pattern": "/srv/../etc"}},\n'
        '    {"effect": "allow", "conditions": {}}\n  ]\n}\n'
    )
    result = run(isolated_home, "policy", "validate", str(policy))
    assert result.returncode == 12
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{policy}:5: rules[1].effect: Input should be 'allow', 'deny' or 'ask'"
    assert lines[1] == (
        f"{policy}:6: rules[1].conditions.path_pattern[0]: path pattern "
        "'/srv/../etc' contains a '..' segment"
    )
    assert lines[2].startswith(f"{policy}:7: rules[2].conditions: a rule needs at least one")
    assert lines[3].startswith("policy error: ")
    assert "3 problem(s)" in lines[3]


def test_validate_show_hash_on_a_good_policy(isolated_home: Path) -> None:
    path = str(EXAMPLES / "git.json")
    ok = run(isolated_home, "policy", "validate", "--policy", path)
    assert ok.returncode == 0
    digest = run(isolated_home, "policy", "hash", "--policy", path).stdout.strip()
    assert digest.startswith("sha256:")
    assert digest in ok.stdout
    shown = json.loads(run(isolated_home, "policy", "show", "--policy", path).stdout)
    assert [r["id"] for r in shown["rules"]][:2] == ["git-read", "git-commit-hours"]


def test_explain_json_is_one_decision_object(isolated_home: Path) -> None:
    result = run(
        isolated_home,
        "policy",
        "explain",
        "--policy",
        str(EXAMPLES / "filesystem.json"),
        "--tool",
        "read_file",
        "--arg",
        "path=/home/alice/project/.ssh/id_rsa",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["effect"] == "deny"
    assert decision["rule"] == "deny-secrets"
    assert decision["explanation"] == (
        "denied by rule deny-secrets: path /home/alice/project/.ssh/id_rsa matches **/.ssh/**"
    )
    assert {"rule": "read-project", "effect": "allow"} in decision["matched"]
    assert decision["policy_id"].startswith("sha256:")
    assert isinstance(decision["eval_us"], float)


def test_explain_trace_lists_every_rule(isolated_home: Path) -> None:
    result = run(
        isolated_home,
        "policy",
        "explain",
        "--policy",
        str(EXAMPLES / "filesystem.json"),
        "--tool",
        "move_file",
        "--arg",
        "source=/home/alice/project/a",
        "--arg",
        "destination=/tmp/a",
    )
    out = result.stdout
    assert out.startswith("DENY: denied by default")
    assert "\nsubject alice (provenance token)\n" in out  # what it assumed, said
    assert "source argument source: /home/alice/project/a" in out
    assert "[  -  ] archive-moves (allow): " in out
    assert "path /tmp/a does not match /home/alice/archive/**" in out
    assert out.count("\n  [") == 5


def test_init_writes_a_starter_policy_and_validate_checks_it(isolated_home: Path) -> None:
    init = run(isolated_home, "init", "--non-interactive", "--backend-command", "true")
    assert init.returncode == 0, init.stderr
    policy = isolated_home / ".config" / "mcp-acp" / "policy.json"
    assert policy.exists()
    assert oct(policy.stat().st_mode & 0o777) == "0o600"
    validated = run(isolated_home, "config", "validate")
    assert validated.returncode == 0
    assert "policy:   acp sha256:" in validated.stdout
    explained = run(
        isolated_home, "policy", "explain", "--tool", "run_command", "--arg", "command=ls", "--json"
    )
    assert json.loads(explained.stdout)["rule"] == "deny-code-execution"
    # a broken policy makes the config invalid, with the line
    policy.write_text('{"rules": [{"effect": "allow"}]}')
    broken = run(isolated_home, "config", "validate")
    assert broken.returncode == 12
    assert f"{policy}:1: rules[0].conditions: Field required" in broken.stderr


def test_config_tool_registry_entries_come_first(isolated_home: Path) -> None:
    run(isolated_home, "init", "--non-interactive", "--backend-command", "true")
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["tools"] = {
        "registry": [
            {
                "tool": "read_file",
                "operations": ["read", "delete"],
                "side_effects": ["fs_write"],
                "path_arguments": {"path": "path"},
            }
        ]
    }
    config_file.write_text(json.dumps(config))
    result = run(isolated_home, "policy", "explain", "--tool", "read_file", "--arg", "path=/srv/x")
    assert "operations delete, read" in result.stdout
    # read+delete is neither "only read" nor "only write/delete": no starter rule fits
    assert result.stdout.startswith("DENY: denied by default")


def test_explain_without_config_or_policy_says_what_to_do(isolated_home: Path) -> None:
    result = run(isolated_home, "policy", "explain", "--tool", "read_file")
    assert result.returncode == 10
    assert "pass --policy FILE, or run 'mcp-acp init'" in result.stderr


def test_explain_takes_every_attribute_a_case_can_set(isolated_home: Path, tmp_path: Path) -> None:
    """A case file could set annotations, issuer, audience, client id, time and untrusted
    content; ``policy explain`` had no option for them, so a rule on any of them could not be
    explained from the command line (it was decided as if they were absent)."""
    policy = tmp_path / "policy.json"
    rules = [
        {"id": "no-delete", "effect": "deny", "conditions": {"operations": "delete"}},
        {"id": "tainted", "effect": "deny", "conditions": {"untrusted_content_seen": True}},
        {
            "id": "office",
            "effect": "allow",
            "conditions": {
                "tool_name": "echo",
                "issuer": "https://idp.example",
                "audience": "mcp-acp",
                "client_id": "desktop",
                "time": {"start": "09:00", "end": "17:00", "timezone": "Europe/Vienna"},
            },
        },
    ]
    policy.write_text(json.dumps({"version": "1", "rules": rules}))
    base = ("policy", "explain", "--policy", str(policy), "--tool", "echo")
    who = ("--issuer", "https://idp.example", "--audience", "other", "--audience", "mcp-acp")
    who += ("--client-id", "desktop")
    noon = ("--time", "2026-11-24T12:00:00+01:00")
    out = run(isolated_home, *base, *who, *noon).stdout
    assert out.startswith("ALLOW: allowed by rule office"), out
    evening = run(isolated_home, *base, *who, "--time", "2026-11-24T18:00:00+01:00").stdout
    assert evening.startswith("DENY: denied by default"), evening
    assert "time Tue 18:00 Europe/Vienna is outside" in evening
    for drop in ("--issuer", "--audience", "--client-id"):
        i = who.index(drop)
        rest = who[:i] + who[i + 2 :] if drop != "--audience" else who[:2] + who[6:]
        assert run(isolated_home, *base, *rest, *noon).stdout.startswith("DENY"), drop
    destructive = run(isolated_home, *base, *who, *noon, "--annotation", "destructiveHint=true")
    assert destructive.stdout.startswith("DENY: denied by rule no-delete"), destructive.stdout
    hint = run(isolated_home, *base, *who, *noon, "--annotation", "destructiveHint=false")
    assert hint.stdout.startswith("ALLOW"), hint.stdout
    tainted = run(isolated_home, *base, *who, *noon, "--untrusted-content-seen")
    assert tainted.stdout.startswith("DENY: denied by rule tainted"), tainted.stdout
    bad = run(isolated_home, *base, "--annotation", "destructiveHint")
    assert bad.returncode == 12
    assert bad.stderr.splitlines() == [
        "policy error: --annotation destructiveHint is not NAME=VALUE — "
        "fix: write --annotation destructiveHint=true"
    ]
    naive = run(isolated_home, *base, "--time", "2026-11-24T12:00:00")
    assert naive.returncode == 12
    assert "has no UTC offset" in naive.stderr


def test_backend_identity_in_explain_and_in_cases(isolated_home: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "version": "1",
                "rules": [
                    {
                        "id": "notes-server",
                        "effect": "allow",
                        "conditions": {
                            "tool_name": "echo",
                            "backend_identity": "DNS:notes.internal",
                        },
                    }
                ],
            }
        )
    )
    args = ("policy", "explain", "--policy", str(policy), "--tool", "echo")
    out = run(isolated_home, *args, "--backend-identity", "dns:NOTES.internal").stdout
    assert out.startswith("ALLOW: allowed by rule notes-server")
    assert "backend identity (mtls): DNS:notes.internal" in out
    out = run(isolated_home, *args).stdout
    assert out.startswith("DENY: denied by default")
    assert "backend identity (none) does not match DNS:notes.internal" in out
    bad = run(isolated_home, *args, "--backend-identity", "notes.internal")
    assert bad.returncode == 12
    assert "must start with DNS:, URI: or IP:" in bad.stderr
    cases = tmp_path / "cases.json"
    cases.write_text(
        json.dumps(
            {
                "cases": [
                    {
                        "name": "the notes server",
                        "request": {"tool": "echo", "backend_identity": ["DNS:notes.internal"]},
                        "expect": {"effect": "allow", "rule": "notes-server"},
                    },
                    {
                        "name": "another server",
                        "request": {"tool": "echo", "backend_identity": ["DNS:other.internal"]},
                        "expect": {"effect": "deny"},
                    },
                    {
                        "name": "no mTLS",
                        "request": {"tool": "echo"},
                        "expect": {"effect": "deny"},
                    },
                ]
            }
        )
    )
    result = run(isolated_home, "policy", "test", str(cases), "--policy", str(policy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 of 3 cases as expected" in result.stdout


def test_a_cases_file_that_is_not_utf8_is_a_policy_error(
    isolated_home: Path, tmp_path: Path
) -> None:
    cases = tmp_path / "cases.json"
    cases.write_bytes(b'{"cases": [{"name": "caf\xe9"}]}')
    result = run(
        isolated_home, "policy", "test", str(cases), "--policy", str(EXAMPLES / "filesystem.json")
    )
    assert result.returncode == 12, result.stderr
    assert result.stderr.startswith(f"policy error: {cases} is not UTF-8 text (byte 24)")


def test_a_cases_file_that_is_a_fifo_or_too_large_is_refused_at_once(
    isolated_home: Path, tmp_path: Path
) -> None:
    """The cases file was read with read_text(): a FIFO blocked 'policy test' for ever (here:
    until the 60 s timeout), a 300 MB file took 650 MB."""
    policy = str(EXAMPLES / "filesystem.json")
    fifo = tmp_path / "cases.fifo"
    os.mkfifo(fifo)
    result = run(isolated_home, "policy", "test", str(fifo), "--policy", policy)
    assert result.returncode == 12, result.stderr
    assert result.stderr.splitlines() == [
        f"policy error: {fifo} is a FIFO (named pipe), not a regular file — fix: give the "
        "cases as a JSON file"
    ]
    large = tmp_path / "large.json"
    with large.open("wb") as sparse:  # refused by its size: never read
        sparse.truncate((16 << 20) + 1)
    result = run(isolated_home, "policy", "test", str(large), "--policy", policy)
    assert result.returncode == 12, result.stderr
    assert result.stderr.splitlines() == [
        f"policy error: {large} is 16777217 bytes, over the 16 MiB limit of a cases file — "
        "fix: split the cases into several files"
    ]
    unreadable = tmp_path / "big-number.json"  # pydantic's reader: no field to name
    unreadable.write_text('{"cases": [' + "1" * 5_000 + "]}")
    result = run(isolated_home, "policy", "test", str(unreadable), "--policy", policy)
    assert result.returncode == 12, result.stderr
    assert result.stderr.startswith(f"policy error: {unreadable}: Invalid JSON: number out")


def test_an_argument_nested_too_deeply_is_a_policy_error(isolated_home: Path) -> None:
    result = run(
        isolated_home,
        "policy",
        "explain",
        "--policy",
        str(EXAMPLES / "filesystem.json"),
        "--tool",
        "write_file",
        "--arg",
        "path=" + "[" * 100_000,
    )
    assert result.returncode == 12, result.stderr
    assert "--arg path: the JSON value nests arrays or objects too deeply" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_number_of_more_than_4300_digits_is_one_policy_error(
    isolated_home: Path, tmp_path: Path
) -> None:
    """Python refuses to read such an integer with a plain ValueError: 'internal error …
    report it' (exit 1) until the JSON reader said what it was, and where."""
    big = "9" * 4_301
    explained = run(
        isolated_home,
        "policy",
        "explain",
        "--policy",
        str(EXAMPLES / "filesystem.json"),
        "--tool",
        "write_file",
        "--arg",
        f"path=[{big}]",
    )
    assert explained.returncode == 12, explained.stderr
    assert explained.stderr.splitlines() == [
        "policy error: --arg path: in the JSON value, a number has more than 4300 digits — "
        "fix: give a value a request could carry (a number that long as a string)"
    ]
    policy = tmp_path / "policy.json"
    policy.write_text(f'{{"version": "1", "rules": [],\n  "note": "{big}", "x": {big}}}')
    validated = run(isolated_home, "policy", "validate", str(policy))
    assert validated.returncode == 12, validated.stderr
    assert validated.stderr.splitlines() == [  # the number's, not the string's before it
        f"{policy}:2: column {len(big) + 20}: a number has more than 4300 digits",
        f"policy error: {policy}: 1 problem(s) — fix: correct the lines above, then validate again",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a symlink to another user")
def test_a_policy_link_another_user_planted_in_a_sticky_directory_is_refused(
    isolated_home: Path, tmp_path: Path
) -> None:
    """The policy path is in a /tmp-like directory, where another user (uid 65534) put a
    symlink to a policy root owns — one that allows what they want — so every check of
    that file and of the directories passes. Sticky keeps others from replacing our
    entries, not their own: the link is refused (exit 12), naming its owner; the same link
    made by us (root) is read."""
    system = tmp_path / "system"
    system.mkdir(mode=0o755)
    target = system / "policy.json"
    target.write_bytes((EXAMPLES / "git.json").read_bytes())
    target.chmod(0o644)
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    planted = sticky / "policy.json"
    planted.symlink_to(target)
    os.lchown(planted, 65534, 65534)
    result = run(isolated_home, "policy", "validate", str(planted))
    assert result.returncode == 12, result.stderr
    assert result.stderr.startswith(
        f"policy error: refusing to use policy: symlink {planted} is owned by uid 65534, not "
        f"by you (uid 0) or root, in directory {sticky}, which others can write (mode 1777): "
        "its owner can replace it — fix: keep the policy in a directory of yours"
    ), result.stderr
    os.lchown(planted, 0, 0)
    result = run(isolated_home, "policy", "validate", str(planted))
    assert result.returncode == 0, result.stderr


def test_a_prompts_arguments_are_decided_as_the_proxy_decides_them(
    isolated_home: Path, tmp_path: Path
) -> None:
    """A prompt may open a file its arguments name, so the proxy reads paths in a
    ``prompts/get``'s arguments; ``policy test`` and ``explain`` left them out, and said
    ``allow`` where ``mcp-acp run`` denied. Arguments a request of its method would not
    carry are refused rather than silently dropped."""
    policy = {
        "version": "1",
        "rules": [
            {"id": "no-secrets", "effect": "deny", "conditions": {"path_pattern": "**/secrets/**"}},
            {"id": "prompts", "effect": "allow", "conditions": {"mcp_method": "prompts/get"}},
        ],
    }
    configure(isolated_home, sys.executable, [str(RECORDING_SERVER), str(tmp_path / "got")], policy)
    arguments = {"file": "/srv/secrets/key"}
    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    try:
        proxy.initialize()
        answer = proxy.call("prompts/get", {"name": "summarise", "arguments": arguments})
    finally:
        proxy.close()
    assert answer["error"]["data"]["rule"] == "no-secrets"
    request = {"method": "prompts/get", "tool": "summarise", "arguments": arguments}
    cases = tmp_path / "cases.json"
    case = {"name": "a prompt naming a secret", "request": request}
    cases.write_text(json.dumps({"cases": [{**case, "expect": {"effect": "deny"}}]}))
    result = run(isolated_home, "policy", "test", str(cases))
    assert result.returncode == 0, result.stdout + result.stderr
    explain = ("policy", "explain", "--method", "prompts/get", "--tool", "summarise")
    out = run(isolated_home, *explain, "--arg", "file=/srv/secrets/key").stdout
    assert out.startswith("DENY: denied by rule no-secrets"), out
    refused = run(isolated_home, "policy", "explain", "--method", "resources/read", "--arg", "a=/b")
    assert refused.returncode == 12
    assert refused.stderr.startswith(
        "policy error: arguments are given, but a resources/read request has none here"
    ), refused.stderr


def test_a_case_time_without_a_utc_offset_is_refused(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case's ``time`` without an offset was read in the zone of the machine running
    ``policy test``: the same golden case passed in CI (UTC) and failed in Tokyo. The proxy
    decides on the time with its offset; a case must say which instant it means."""
    policy = tmp_path / "policy.json"
    window = {"start": "09:00", "end": "17:00", "timezone": "UTC"}
    rule = {"id": "office", "effect": "allow", "conditions": {"tool_name": "x", "time": window}}
    policy.write_text(json.dumps({"version": "1", "rules": [rule]}))
    cases = tmp_path / "cases.json"
    monkeypatch.setenv("TZ", "Asia/Tokyo")

    def test_at(when: str) -> subprocess.CompletedProcess[str]:
        request = {"tool": "x", "time": when}
        case = {"name": "office hours", "request": request, "expect": {"effect": "allow"}}
        cases.write_text(json.dumps({"cases": [case]}))
        return run(isolated_home, "policy", "test", str(cases), "--policy", str(policy))

    naive = test_at("2026-11-24T10:00:00")
    assert naive.returncode == 12, naive.stdout + naive.stderr
    assert naive.stderr.startswith(
        f"policy error: {cases}: cases.0.request.time: 2026-11-24T10:00:00 has no UTC offset"
    ), naive.stderr
    aware = test_at("2026-11-24T10:00:00Z")
    assert aware.returncode == 0, aware.stdout + aware.stderr
    assert "1 of 1 cases as expected" in aware.stdout
