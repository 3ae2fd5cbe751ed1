"""Every input of the security checklist's "Path matching" list (8.1), against a real tree.

Policy under test: allow ``read`` under ``<root>/srv/data/project``; the fixture tree has
``project`` and its prefix sibling ``project_secret``.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from importlib import resources
from pathlib import Path

import pytest
from policy_helpers import make_engine, make_request

from mcp_acp.models import Effect
from mcp_acp.policy.engine import AcpPolicyEngine
from mcp_acp.policy.model import PolicyFile
from mcp_acp.policy.paths import (
    AmbiguousPathError,
    file_uri_to_path,
    normalise_path,
    resolve_symlinks,
)
from mcp_acp.tools import ToolRegistry


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "srv" / "data" / "project"
    project.mkdir(parents=True)
    (project / "ok.txt").write_text("fine")
    secret = tmp_path / "srv" / "data" / "project_secret"
    secret.mkdir()
    (secret / "key").write_text("secret")
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0")
    return tmp_path


@pytest.fixture
def engine(root: Path) -> AcpPolicyEngine:
    return make_engine(
        {
            "id": "read-project",
            "effect": "allow",
            "conditions": {"operations": "read", "path_pattern": f"{root}/srv/data/project/**"},
        }
    )


def decide(engine: AcpPolicyEngine, path: str) -> tuple[Effect, str | None, str]:
    decision = engine.decide(make_request(tool="read_file", arguments={"path": path}))
    return decision.effect, decision.rule_id, decision.reason


def test_inside_the_project_is_allowed(engine: AcpPolicyEngine, root: Path) -> None:
    assert decide(engine, f"{root}/srv/data/project/ok.txt")[:2] == (Effect.ALLOW, "read-project")
    assert decide(engine, f"{root}/srv/data/project")[0] is Effect.ALLOW  # /p/** matches /p
    assert decide(engine, f"{root}/srv/data/project/")[0] is Effect.ALLOW
    assert decide(engine, f"{root}//srv/./data/project/ok.txt")[0] is Effect.ALLOW


@pytest.mark.parametrize(
    ("suffix", "reason"),
    [
        ("/srv/data/project/../project_secret/key", "'..' segment"),  # 1
        ("/srv/data/project/./../../../etc/passwd", "'..' segment"),  # 3
        ("/srv/data/project//../project_secret", "'..' segment"),  # 4
        ("/srv/data/project/ok.txt\x00/../../etc/passwd", "NUL"),  # 15
        ("/srv/data/project/a\nb", "control character U+000A"),  # 16
        ("/srv/data/project/a\rb", "control character U+000D"),
        ("/srv/data/project/a\tb", "control character U+0009"),
        ("/srv/data/project/\x1b[2Kx", "control character U+001B"),
        ("/srv/data/project/\u202etxt.exe", "bidi character U+202E"),
        ("/srv/data/project/a\u200bb", "invisible or bidi character U+200B"),
        ("/srv/data/project/a\u3164b", "invisible or bidi character U+3164"),  # Hangul filler
        ("/srv/data/project/a\u034fb", "invisible or bidi character U+034F"),  # grapheme joiner
        ("/srv/data/project/a\u180eb", "invisible or bidi character U+180E"),
        ("/srv/data/project/a\u2028b", "invisible or bidi character U+2028"),
        ("/srv/data/project/my\u00a0file", "invisible or bidi character U+00A0"),  # NBSP
        ("/srv/data/project/a\ufe0fb", "invisible or bidi character U+FE0F"),
        ("/srv/data/project/a\U000e0041b", "invisible or bidi character U+E0041"),  # a tag
        ("/srv/data/project/secret.", "ends with a dot or space"),  # 17
        ("/srv/data/project/secret ", "ends with a dot or space"),
        ("/srv/data/project/\uff45\uff54\uff43", "fullwidth character"),  # 12
        ("/srv/data/project\u2215..\u2215x", "look-alike slash U+2215"),
        ("/srv/data/project\u2044x", "look-alike slash U+2044"),
        ("/srv/data/project/cafe\u0301", "not in Unicode NFC"),
        ("/srv/data/project/%2e%2e%2fetc", "percent-encoding"),  # 13
        ("/srv/data/project/%252e%252e%252f", "percent-encoding"),
        ("/srv/data/project/%c0%ae%c0%ae/", "percent-encoding"),
        ("/srv/data/project/file.txt::$DATA", "contains ':'"),  # 18
        ("/srv/data/project/file.txt:hidden", "contains ':'"),
        ("/srv/data/project/CON", "reserved device name"),
        ("/srv/data/project/NUL", "reserved device name"),
        ("/srv/data/project/COM1.txt", "reserved device name"),
        ("/srv/data/project/aux.json", "reserved device name"),
        ("/srv/data/project/PROGRA~1", "8.3 short name"),  # 18: Windows reads another name
        ("/srv/data/project/SECRET~1/db.txt", "8.3 short name"),
        ("/srv/data/project/REPORT~12.TXT", "8.3 short name"),
        ("/srv/data/project/..\\..\\etc\\passwd", "backslash"),
    ],
)
def test_ambiguous_paths_are_denied_with_a_reason(
    engine: AcpPolicyEngine, root: Path, suffix: str, reason: str
) -> None:
    effect, rule, text = decide(engine, f"{root}{suffix}")
    assert (effect, rule) == (Effect.DENY, "builtin-ambiguous-path")
    assert reason in text
    assert "\n" not in text or "\\n" in repr(text)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("C:\\srv\\work\\project\\..\\x", "backslash"),  # 18: Windows forms
        ("C:/srv/work/project/x", "Windows drive path"),
        ("\\\\?\\C:\\x", "backslash"),
        ("\\\\.\\pipe\\x", "backslash"),
        ("\\\\host\\share\\x", "backslash"),
        ("\\\\?\\UNC\\host\\share", "backslash"),
        ("C:foo", "Windows drive path"),
        ("project/x", "not absolute"),  # 19: relative forms, nothing expanded
        ("../x", "not absolute"),
        ("~/x", "not absolute"),
        ("~root/x", "not absolute"),
        ("$HOME/x", "not absolute"),
        ("", "is empty"),  # 20
        (".", "not absolute"),
        ("/" + "a" * 4096, "longer than 4096 bytes"),
        ("/srv/" + "b" * 256, "name longer than 255 bytes"),
        ("/proc/self/root/etc/passwd", "magic link"),  # 24
        ("/proc/1234/cwd/x", "magic link"),
        ("/proc/thread-self/root/x", "magic link"),
        ("/dev/fd/3", "magic link"),
    ],
)
def test_foreign_and_magic_forms_are_denied(
    engine: AcpPolicyEngine, path: str, reason: str
) -> None:
    effect, rule, text = decide(engine, path)
    assert (effect, rule) == (Effect.DENY, "builtin-ambiguous-path")
    assert reason in text


def test_prefix_sibling_is_not_inside(engine: AcpPolicyEngine, root: Path) -> None:  # 2, 21
    effect, rule, _ = decide(engine, f"{root}/srv/data/project_secret/key")
    assert (effect, rule) == (Effect.DENY, None)


def test_case_variants_do_not_match_an_allow(engine: AcpPolicyEngine, root: Path) -> None:  # 11
    assert decide(engine, f"{root}/SRV/DATA/PROJECT/x")[0] is Effect.DENY
    assert decide(engine, f"{root}/srv/data/Project/x")[0] is Effect.DENY


def test_case_variants_cannot_dodge_a_deny(root: Path) -> None:  # 11, deny side
    engine = make_engine(
        {"id": "read-all", "effect": "allow", "conditions": {"path_pattern": "/**"}},
        {"id": "no-secrets", "effect": "deny", "conditions": {"path_pattern": "**/secrets/**"}},
    )
    for path in ("/x/secrets/a", "/x/SECRETS/a", "/x/Secrets/a"):
        assert decide(engine, path)[:2] == (Effect.DENY, "no-secrets"), path


def test_homoglyph_is_a_different_name(engine: AcpPolicyEngine, root: Path) -> None:  # 12
    assert decide(engine, f"{root}/srv/data/proj\u0435ct/x")[0] is Effect.DENY


def test_symlinked_directory_out_of_the_root(engine: AcpPolicyEngine, root: Path) -> None:  # 5
    (root / "srv/data/project/link").symlink_to(root / "etc")
    effect, rule, _ = decide(engine, f"{root}/srv/data/project/link/passwd")
    assert (effect, rule) == (Effect.DENY, None)
    trace = engine.trace(make_request(arguments={"path": f"{root}/srv/data/project/link/passwd"}))
    assert f"resolves to {root}/etc/passwd" in trace[0].details[0]


def test_symlinked_file_out_of_the_root(engine: AcpPolicyEngine, root: Path) -> None:  # 6
    (root / "srv/data/project/file").symlink_to(root / "etc/passwd")
    assert decide(engine, f"{root}/srv/data/project/file")[0] is Effect.DENY


def test_symlink_inside_the_root_is_fine(engine: AcpPolicyEngine, root: Path) -> None:
    (root / "srv/data/project/alias").symlink_to(root / "srv/data/project/ok.txt")
    assert decide(engine, f"{root}/srv/data/project/alias")[0] is Effect.ALLOW


def test_symlink_loop_is_denied_without_hanging(engine: AcpPolicyEngine, root: Path) -> None:  # 7
    (root / "srv/data/project/a").symlink_to(root / "srv/data/project/b")
    (root / "srv/data/project/b").symlink_to(root / "srv/data/project/a")
    effect, rule, text = decide(engine, f"{root}/srv/data/project/a/x")
    assert (effect, rule) == (Effect.DENY, "builtin-ambiguous-path")
    assert "more than 40 symlinks" in text


def test_dangling_symlink_to_outside(engine: AcpPolicyEngine, root: Path) -> None:  # 8
    (root / "srv/data/project/later").symlink_to(root / "etc/created-later")
    assert decide(engine, f"{root}/srv/data/project/later")[0] is Effect.DENY
    (root / "etc/created-later").write_text("now it exists")
    assert decide(engine, f"{root}/srv/data/project/later")[0] is Effect.DENY


def test_symlink_swap_race_is_checked_at_decision_time(
    engine: AcpPolicyEngine, root: Path
) -> None:  # 9
    """A thread keeps swapping a link between inside and outside. Each decision sees one
    state: allowed only when the link pointed inside at that moment. What the backend opens
    later is outside our reach (documented limit: decide-then-use across processes)."""
    link = root / "srv/data/project/swap"
    inside, outside = root / "srv/data/project/ok.txt", root / "etc/passwd"
    stop = threading.Event()

    def swapper() -> None:
        tmp = root / "srv/data/project/.swap-tmp"
        flip = False
        while not stop.is_set():
            if tmp.is_symlink():
                tmp.unlink()
            tmp.symlink_to(outside if flip else inside)
            os.replace(tmp, link)
            flip = not flip

    link.symlink_to(inside)
    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        seen = set()
        for _ in range(300):
            request = make_request(arguments={"path": str(link)})
            resolved = request.resource.paths[0].resolved
            effect = engine.decide(request).effect
            assert (effect is Effect.ALLOW) == (resolved == str(inside)), (effect, resolved)
            seen.add(effect)
    finally:
        stop.set()
        thread.join()
    assert Effect.DENY in seen


def test_hard_link_is_a_documented_limit(engine: AcpPolicyEngine, root: Path) -> None:  # 10
    """A hard link inside the root to a file outside looks like any other file: realpath
    cannot see it. Documented in docs/policies.md; this test pins the behaviour."""
    os.link(root / "etc/passwd", root / "srv/data/project/hard")
    assert decide(engine, f"{root}/srv/data/project/hard")[0] is Effect.ALLOW


def test_file_uris_are_paths_too(root: Path) -> None:  # 14
    engine = make_engine(
        {
            "id": "project-resources",
            "effect": "allow",
            "conditions": {
                "resource_type": "resource",
                "path_pattern": f"{root}/srv/data/project/**",
            },
        }
    )

    def read(uri: str) -> Effect:
        return engine.decide(make_request("resources/read", None, params={"uri": uri})).effect

    assert read(f"file://{root}/srv/data/project/ok.txt") is Effect.ALLOW
    assert read(f"file://{root}/srv/data/project/../../etc/passwd") is Effect.DENY
    assert read("file://localhost/etc/passwd") is Effect.DENY
    assert read(f"file://evil.example/{root}/srv/data/project/ok.txt") is Effect.DENY
    assert read(f"file://{root}/srv/data/project/%2e%2e/x") is Effect.DENY
    assert read(f"file://{root}/srv/data/project/%c0%ae%c0%ae/x") is Effect.DENY
    assert read(f"file://{root}/srv/data/project/%252e%252e/x") is Effect.DENY


def test_pattern_globs_do_not_cross_segments(root: Path) -> None:  # 21
    engine = make_engine(
        {
            "id": "one-level",
            "effect": "allow",
            "conditions": {"path_pattern": "/srv/data/project/*"},
        }
    )
    assert decide(engine, "/srv/data/project/x")[0] is Effect.ALLOW
    assert decide(engine, "/srv/data/project/x/y")[0] is Effect.DENY
    assert decide(engine, "/srv/data/project/../x")[0] is Effect.DENY
    deep = make_engine(
        {"id": "deep", "effect": "allow", "conditions": {"path_pattern": "/srv/data/project/**"}}
    )
    assert decide(deep, "/srv/data/project_secret")[0] is Effect.DENY


def test_an_8_3_short_name_does_not_dodge_a_deny_rule(root: Path) -> None:  # 18
    """On Windows (or a FAT/SMB share) ``SECRET~1`` is the short name of ``secrets``; a
    deny rule on ``**/secrets/**`` cannot see that, so such a name is refused."""
    project = root / "srv/data/project"
    (project / "secrets").mkdir()
    (project / "SECRET~1").mkdir()  # a legal Linux name: what the string names here
    (project / "SECRET~1" / "db.txt").write_text("password")
    engine = make_engine(
        {"id": "no-secrets", "effect": "deny", "conditions": {"path_pattern": "**/secrets/**"}},
        {"id": "project", "effect": "allow", "conditions": {"path_pattern": f"{project}/**"}},
    )
    effect, rule, text = decide(engine, f"{project}/SECRET~1/db.txt")
    assert (effect, rule) == (Effect.DENY, "builtin-ambiguous-path")
    assert "'SECRET~1' looks like a Windows 8.3 short name" in text
    for fine in ("notes.txt~", "a~b", "file.~1~", "~1x", "v~2a.txt"):  # editor backups, …
        (project / fine).write_text("x")
        assert decide(engine, f"{project}/{fine}")[:2] == (Effect.ALLOW, "project"), fine


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("{root}//keys/**", "{root}/keys/**"),  # a double slash no normalised path has
        ("{root}/./keys/**", "{root}/keys/**"),
        ("**//keys/**", "**/keys/**"),
        ("{root}/ke\u0301ys/**", "{root}/k\u00e9ys/**"),  # NFD: request paths are NFC
    ],
)
def test_path_patterns_are_normalised_as_paths_are(root: Path, written: str, stored: str) -> None:
    """A pattern that is not in the normal form of request paths never matched one: deny
    ``/srv//keys/**`` let ``/srv/keys/id`` through."""
    keys = root / "keys" if "\u0301" not in written else root / "k\u00e9ys"
    keys.mkdir()
    (keys / "id").write_text("key")
    pattern = written.replace("{root}", str(root))
    engine = make_engine(
        {"id": "no-keys", "effect": "deny", "conditions": {"path_pattern": pattern}},
        {"id": "all", "effect": "allow", "conditions": {"path_pattern": f"{root}/**"}},
    )
    assert engine.policy.rules[0].conditions.path_pattern == [stored.replace("{root}", str(root))]
    assert decide(engine, f"{keys}/id")[:2] == (Effect.DENY, "no-keys")


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\u200b", "U+200B"),  # a zero-width space pasted with the pattern
        ("\u202e", "U+202E"),  # a right-to-left override
        ("\u00a0", "U+00A0"),  # a no-break space
        ("\t", "U+0009"),
        ("\ufffd", "U+FFFD"),
    ],
)
def test_a_path_pattern_no_path_could_match_is_refused(char: str, name: str) -> None:
    """A request path with a control, invisible or undecodable character is refused as
    ambiguous, so a pattern holding one never matched anything: ``/srv/se\u200bcrets/**``
    loaded, ``policy validate`` said ok, and the deny rule let ``/srv/secrets/key`` through."""
    rule = {"id": "no-secrets", "effect": "deny", "conditions": {"path_pattern": ""}}
    for field in ("path_pattern", "source_path", "dest_path"):
        rule["conditions"] = {field: f"/srv/se{char}crets/**"}
        with pytest.raises(ValueError, match=re.escape(f"contains {name}")) as caught:
            PolicyFile.model_validate({"version": "1", "rules": [rule]})
        assert "never match" in str(caught.value)


def test_glob_characters_in_requests_are_literal() -> None:  # 22
    engine = make_engine(
        {"id": "exact", "effect": "allow", "conditions": {"path_pattern": "/srv/a/file"}}
    )
    for path in ("/srv/a/*", "/srv/a/[!a]ile", "/srv/a/{file,x}", "/srv/a/fil?"):
        assert decide(engine, path)[0] is Effect.DENY, path
    literal = make_engine(
        {"id": "star", "effect": "allow", "conditions": {"path_pattern": "/srv/a/x*"}}
    )
    assert decide(literal, "/srv/a/x[1]")[0] is Effect.ALLOW  # '*' in the *pattern* is a glob


def test_every_path_argument_is_checked(root: Path) -> None:  # 23
    engine = make_engine(
        {"id": "project", "effect": "allow", "conditions": {"path_pattern": "/srv/project/**"}}
    )
    ok = make_request(
        tool="read_multiple_files", arguments={"paths": ["/srv/project/a", "/srv/project/b"]}
    )
    assert engine.decide(ok).effect is Effect.ALLOW
    bad = make_request(
        tool="read_multiple_files", arguments={"paths": ["/srv/project/a", "/etc/shadow"]}
    )
    assert engine.decide(bad).effect is Effect.DENY
    cwd = make_request(tool="run_command", arguments={"command": "ls", "cwd": "/etc"})
    assert [p.argument for p in cwd.resource.paths] == ["cwd"]
    unknown_tool = make_request(
        tool="frobnicate", arguments={"destination": "/etc/x", "source": "/srv/project/a"}
    )
    assert {(p.role, p.path) for p in unknown_tool.resource.paths} == {
        ("dest", "/etc/x"),
        ("source", "/srv/project/a"),
    }
    assert engine.decide(unknown_tool).effect is Effect.DENY


def test_paths_anywhere_in_an_unknown_tools_arguments_are_checked() -> None:  # 23
    """A tool no registry entry names: its other arguments, at any depth, are scanned for
    strings that start like a path, so a deny rule on paths sees them."""
    engine = make_engine(
        {"id": "no-ssh", "effect": "deny", "conditions": {"path_pattern": "/home/u/.ssh/**"}},
        {"id": "any-tool", "effect": "allow", "conditions": {"tool_name": "*"}},
    )
    hidden = {
        "outfile": "/home/u/.ssh/authorized_keys",
        "config": {"nested": [{"target_file": "/home/u/.ssh/id_rsa"}]},
        "Path": "/home/u/.ssh/config",  # a name matches whatever its case
        "flags": ["--output=/home/u/.ssh/known_hosts"],
        "upload": "@/home/u/.ssh/id_ed25519",
        "uri": "file:///home/u/.ssh/id_ecdsa",
        "home": "~/.ssh/config",
    }
    for name, value in hidden.items():
        request = make_request(tool="frobnicate", arguments={"text": "hello", name: value})
        decision = engine.decide(request)
        assert decision.effect is Effect.DENY, (name, request.resource.paths)
        assert decision.rule_id in {"no-ssh", "builtin-ambiguous-path"}, name
    where = make_request(tool="frobnicate", arguments={"config": {"a": ["x", "/srv/f"]}})
    assert [(p.argument, p.path) for p in where.resource.paths] == [("config.a[1]", "/srv/f")]
    plain = make_request(
        tool="frobnicate",
        arguments={"text": "see a/b and https://example.test/x", "to": "bob@example.test", "n": 3},
    )
    assert plain.resource.paths == ()
    assert engine.decide(plain).effect is Effect.ALLOW


def test_a_registry_tool_is_read_as_the_registry_says_whatever_the_case() -> None:
    engine = make_engine(
        {"id": "project", "effect": "allow", "conditions": {"path_pattern": "/srv/project/**"}}
    )
    upper = make_request(tool="read_text_file", arguments={"PATH": "/etc/shadow"})
    assert [(p.argument, p.path) for p in upper.resource.paths] == [("PATH", "/etc/shadow")]
    assert engine.decide(upper).effect is Effect.DENY
    # a registry tool's other arguments are not scanned: the registry names its paths
    write = make_request(
        tool="write_file", arguments={"path": "/srv/project/a", "content": "/etc/passwd"}
    )
    assert [p.argument for p in write.resource.paths] == ["path"]


@pytest.fixture
def starter() -> AcpPolicyEngine:
    text = resources.files("mcp_acp.data").joinpath("starter_policy.json").read_text("utf-8")
    return AcpPolicyEngine(PolicyFile.model_validate_json(text))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home directory with real keys in it."""
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]")
    return tmp_path


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("fetch_file", {"path": ".ssh/id_rsa"}),  # was filed under 'fetch_*': no paths
        ("fetch_local_file", {"file_path": ".aws/credentials"}),
        ("git_diff_file", {"repo_path": "", "file": ".ssh/id_rsa"}),  # under 'git_diff*'
        ("fetch", {"url": "https://example.test/", "file": ".ssh/id_rsa"}),
        ("read_file", {"path": "ok.txt", "paths": [".ssh/id_rsa"]}),
        ("list_allowed_directories", {"path": ".ssh/id_rsa"}),
        ("evaluate_file", {"filename": ".ssh/id_rsa"}),  # under 'evaluate*': no paths
        ("git_diff", {"repo_path": "", "target": "{home}/.ssh/id_rsa"}),  # loose, rooted
    ],
)
def test_a_registry_entry_never_hides_a_generic_path_argument(  # 23
    starter: AcpPolicyEngine, home: Path, tool: str, arguments: dict[str, object]
) -> None:
    """The generic path names are paths for every tool: a registry entry adds path
    arguments, it cannot make ``path`` or ``file`` of a tool it names invisible."""

    def place(value: object) -> object:
        if isinstance(value, list):
            return [place(item) for item in value]
        if isinstance(value, str) and not value.startswith(("http", "{")):
            return f"{home}/{value}".rstrip("/")
        return value.replace("{home}", str(home)) if isinstance(value, str) else value

    request = make_request(tool=tool, arguments={k: place(v) for k, v in arguments.items()})
    decision = starter.decide(request)
    assert decision.effect is Effect.DENY, (decision.rule_id, request.resource.paths)
    assert decision.rule_id in {"deny-secrets", "deny-code-execution"}, decision.reason
    assert any(".ssh" in p.path or ".aws" in p.path for p in request.resource.paths)


def test_tools_that_only_share_a_prefix_are_not_filed_under_an_entry(home: Path) -> None:
    """``fetch_*``, ``git_diff*``, ``exec*``, ``shell*`` filed any tool with that prefix as
    a network fetch, a diff or a shell — and a registry tool's other arguments are not
    scanned, so a key written by ``executive_report`` went unseen."""
    registry = ToolRegistry.default()
    assert registry.facts("fetch_local_file").side_effects == frozenset()
    assert registry.facts("fetch").side_effects == {"network_egress", "untrusted_content"}
    assert registry.facts("git_diff_unstaged").source == "registry: git_diff_unstaged"
    assert "code_exec" not in registry.facts("shellcheck").side_effects
    for tool in ("shell", "shell_exec", "exec", "exec_command", "execute_code", "run_python"):
        assert "code_exec" in registry.facts(tool).side_effects, tool
    engine = make_engine(
        {"id": "no-ssh", "effect": "deny", "conditions": {"path_pattern": "**/.ssh/**"}},
        {"id": "reports", "effect": "allow", "conditions": {"tool_name": "executive_report"}},
    )
    keys = f"{home}/.ssh/authorized_keys"
    request = make_request(tool="executive_report", arguments={"out": keys, "title": "Q3"})
    assert [p.path for p in request.resource.paths] == [keys]
    assert engine.decide(request).rule_id == "no-ssh"


def test_a_loose_argument_of_a_registry_tool_is_a_path_only_when_rooted() -> None:
    """git_diff's ``target`` is a branch name (``origin/main``), not a relative path."""
    request = make_request(
        tool="git_diff", arguments={"repo_path": "/srv/repo", "target": "origin/main"}
    )
    assert [p.argument for p in request.resource.paths] == ["repo_path"]


def test_too_many_values_to_scan_make_the_paths_ambiguous() -> None:
    engine = make_engine({"id": "any-tool", "effect": "allow", "conditions": {"tool_name": "*"}})
    request = make_request(tool="frobnicate", arguments={"rows": list(range(100_001))})
    assert engine.decide(request).rule_id == "builtin-ambiguous-path"


def test_non_string_path_argument_is_ambiguous() -> None:
    engine = make_engine({"id": "all", "effect": "allow", "conditions": {"path_pattern": "/**"}})
    request = make_request(tool="read_file", arguments={"path": {"$ref": "/etc/passwd"}})
    assert engine.decide(request).rule_id == "builtin-ambiguous-path"


def test_bind_mount_aliases_are_a_documented_limit() -> None:  # 25
    """Two paths to one inode through a bind mount cannot be seen from path strings; the
    policy judges the path as requested and as resolved. docs/policies.md says so."""
    assert resolve_symlinks("/") == "/"


def test_normalise_and_resolve_units(tmp_path: Path) -> None:
    assert normalise_path("//a/./b//c/") == "/a/b/c"
    assert normalise_path("/") == "/"
    with pytest.raises(AmbiguousPathError):
        normalise_path(123)  # type: ignore[arg-type]
    (tmp_path / "rel").symlink_to("sub/../target")
    assert resolve_symlinks(f"{tmp_path}/rel/x") == f"{tmp_path}/target/x"
    assert file_uri_to_path("file:///a/b%20c") == "/a/b c"


def test_a_missing_name_whose_unicode_equivalent_exists_is_refused(root: Path) -> None:
    """``café`` asked for in NFC, where the disk holds the NFD name (as macOS writes it) as
    a symlink out of the tree: the filesystem server opens the equivalent entry it finds
    and follows the link, so deciding on the missing NFC path would allow what leads out."""
    project = root / "srv/data/project"
    (project / "cafe\u0301").symlink_to(root / "etc")
    effect, rule, text = decide(engine_for(project), f"{project}/caf\u00e9/passwd")
    assert (effect, rule) == (Effect.DENY, "builtin-ambiguous-path")
    assert "'cafe\\u0301', the same name in another Unicode form, does" in text
    # a name with no equivalent on disk is kept as written (a file about to be created)
    assert resolve_symlinks(f"{project}/\u00e7a/new") == f"{project}/\u00e7a/new"
    assert decide(engine_for(project), f"{project}/\u00e7a/new")[0] is Effect.ALLOW


def test_an_ascii_name_beside_its_compatibility_twin_is_refused(root: Path) -> None:
    """The Kelvin sign U+212A is ``K`` in NFC: asked for ``Key``, missing, the filesystem
    server opens ``\u212aey`` beside it — a link out of the tree. ASCII names are checked
    for such twins too."""
    project = root / "srv/data/project"
    (project / "\u212aey").symlink_to(root / "etc")
    effect, rule, text = decide(engine_for(project), f"{project}/Key/passwd")
    assert (effect, rule) == (Effect.DENY, "builtin-ambiguous-path")
    assert "'\\u212aey', the same name in another Unicode form, does" in text
    assert decide(engine_for(project), f"{project}/Kez/new")[0] is Effect.ALLOW  # no twin


def test_characters_our_unicode_tables_do_not_know_are_refused(root: Path) -> None:
    """A backend with newer Unicode tables composes characters ours call unassigned (Node
    20 has Unicode 17; Python 3.11 has 14: U+16D67 twice is U+16D68 there). Neither such a
    name asked for, nor a missing name beside an entry holding one, can be judged here."""
    project = root / "srv/data/project"
    unknown = chr(0x16D67)
    assert unicodedata.category(unknown) == "Cn"  # on this Python: its tables are older
    effect, rule, text = decide(engine_for(project), f"{project}/{unknown * 2}/x")
    assert (effect, rule) == (Effect.DENY, "builtin-ambiguous-path")
    assert "contains U+16D67, which this proxy's Unicode tables" in text
    (project / chr(0x16D68)).symlink_to(root / "etc")
    effect, rule, text = decide(engine_for(project), f"{project}/new-name/x")
    assert (effect, rule) == (Effect.DENY, "builtin-ambiguous-path")
    assert "beside it holds U+16D68, which this proxy's Unicode tables" in text


def test_a_symlink_into_proc_self_is_refused(root: Path) -> None:
    """The proxy would follow ``/proc/self/cwd`` into its own working directory, the
    backend into its own: written out, such a path is refused, and so it is through a link
    (an absolute or a relative one)."""
    project = root / "srv/data/project"
    (project / "here").symlink_to("/proc/self/cwd")
    (project / "fds").symlink_to("/dev/fd")
    (project / "up").symlink_to("../" * len(project.parts) + "proc/thread-self/root")
    for name in ("here", "fds", "up"):
        effect, rule, text = decide(engine_for(project), f"{project}/{name}/x")
        assert (effect, rule) == (Effect.DENY, "builtin-ambiguous-path"), name
        assert "which each process sees as its own" in text, name
    with pytest.raises(AmbiguousPathError, match="leads into /proc/self,"):
        resolve_symlinks("/dev/stdin")  # -> /proc/self/fd/0


@pytest.mark.parametrize("code", [0xDCFF, 0xDC80, 0xD800, 0xFFFD])
def test_names_that_programs_decode_differently_are_refused(root: Path, code: int) -> None:
    """Python writes U+DCFF to disk as the byte 0xFF; Node reads that byte as U+FFFD, and a
    name it could not decode also as U+FFFD: either way the two would open other files."""
    project = root / "srv/data/project"
    effect, rule, text = decide(engine_for(project), f"{project}/a{chr(code)}b")
    assert (effect, rule) == (Effect.DENY, "builtin-ambiguous-path")
    assert f"U+{code:04X} (a name programs decode differently)" in text


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("file:///srv/allo\twed/x.txt", "control character U+0009"),
        ("file:///srv/allowed\n/x.txt", "control character U+000A"),
        ("file:///srv/allowed/x.txt\r", "control character U+000D"),
        ("\x01file:///srv/allowed/x.txt", "control character U+0001"),
        (" file:///srv/allowed/x.txt", "begins or ends with a space"),
        ("file:///srv/allowed/x.txt ", "begins or ends with a space"),
    ],
)
def test_file_uris_are_refused_as_written_not_as_urlsplit_cleans_them(
    uri: str, reason: str
) -> None:
    """``urlsplit`` drops tabs and line breaks anywhere, and controls and spaces at the
    start: deciding on what is left would be deciding on another string."""
    with pytest.raises(AmbiguousPathError, match=re.escape(reason)):
        file_uri_to_path(uri)
    engine = make_engine(
        {"id": "files", "effect": "allow", "conditions": {"path_pattern": "/srv/allowed/**"}}
    )
    decision = engine.decide(make_request("resources/read", None, params={"uri": uri}))
    assert (decision.effect, decision.rule_id) == (Effect.DENY, "builtin-ambiguous-path")


def engine_for(project: Path) -> AcpPolicyEngine:
    return make_engine(
        {"id": "project", "effect": "allow", "conditions": {"path_pattern": f"{project}/**"}}
    )
