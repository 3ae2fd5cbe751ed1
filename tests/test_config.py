"""Config files on a real file system: location, validation errors, permissions, atomicity."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mcp_acp.config import (
    CONFIG_ENV,
    Config,
    HttpBackend,
    load_config,
    redact_text,
    redacted,
    resolve_config_path,
    save_config,
)
from mcp_acp.errors import ConfigError
from mcp_acp.registry import SecretEnvName, secret_env_names
from mcp_acp.runtime import load_runtime

CLI = Path(sys.executable).parent / "mcp-acp"
NOBODY = 65534
MINIMAL = {"backend": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"]}}


def write(path: Path, data: object, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(mode)
    return path


def test_path_precedence(tmp_path: Path, isolated_home: Path) -> None:
    assert resolve_config_path(None, {}) == isolated_home / ".config/mcp-acp/config.json"
    assert resolve_config_path(None, {CONFIG_ENV: str(tmp_path / "e.json")}) == tmp_path / "e.json"
    assert resolve_config_path(tmp_path / "c.json", {CONFIG_ENV: "/x"}) == tmp_path / "c.json"


def test_minimal_config_gets_safe_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c" / "config.json", MINIMAL))
    assert config.identity.use == "local"
    assert config.approver.use == "deny"
    assert config.plugins.allow == []
    assert config.backend.transport == "stdio"


@pytest.mark.parametrize(
    ("data", "field", "value"),
    [
        ({"backend": {"command": ""}}, "backend.command", '""'),
        (
            {"backend": {"transport": "http", "url": "http://10.1.2.3/mcp"}},
            "backend.url",
            '"http://10.1.2.3/mcp"',
        ),
        ({"backend": {"transport": "http", "url": "https://u:p@h/mcp"}}, "backend.url", None),
        (
            {"backend": {"transport": "http", "url": "https://h/mcp", "headers": {"X": "a\nb"}}},
            "backend.headers",
            None,
        ),
        (
            {"backend": {"transport": "http", "url": "https://h/mcp", "headers": {"A B": "c"}}},
            "backend.headers",
            None,
        ),
        ({**MINIMAL, "identty": {"use": "local"}}, "identty", None),
        ({**MINIMAL, "posture": {"interval_seconds": 0}}, "posture.interval_seconds", "0"),
        (
            {**MINIMAL, "posture": {"checks": [{"use": "Bad Name"}]}},
            "posture.checks[0].use",
            '"Bad Name"',
        ),
        ({**MINIMAL, "version": 2}, "version", "2"),
        ({"backend": {"command": "x", "env": {"A B": "1"}}}, "backend.env", None),
    ],
)
def test_invalid_field_is_named_in_one_line(
    tmp_path: Path, data: dict[str, object], field: str, value: str | None
) -> None:
    path = write(tmp_path / "c" / "config.json", data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    line = caught.value.user_line()
    assert "\n" not in line
    assert f"{path}: {field}" in line
    if value is not None:
        assert f"= {value}" in line
    assert "fix:" in line


def test_a_backend_with_a_url_and_no_command_is_an_http_backend(tmp_path: Path) -> None:
    """``transport`` may be left out both ways; written out, it decides."""
    by_url = {"backend": {"url": "https://h/mcp"}}
    assert isinstance(
        load_config(write(tmp_path / "a" / "config.json", by_url)).backend, HttpBackend
    )
    both = {"backend": {"url": "https://h/mcp", "command": "srv"}}  # not a guess: stdio's rules
    with pytest.raises(ConfigError, match=r"backend\.url"):
        load_config(write(tmp_path / "b" / "config.json", both))
    said = {"backend": {"transport": "stdio", "url": "https://h/mcp"}}
    with pytest.raises(ConfigError, match=r"backend\.command"):
        load_config(write(tmp_path / "c" / "config.json", said))


def test_an_http_request_may_take_at_least_as_long_as_its_parts(tmp_path: Path) -> None:
    backend = {"transport": "http", "url": "https://h/mcp", "timeout_seconds": 60}
    config = load_config(write(tmp_path / "a" / "config.json", {"backend": backend}))
    assert isinstance(config.backend, HttpBackend)
    assert config.backend.request_timeout_seconds == 600
    short = {"backend": {**backend, "request_timeout_seconds": 30}}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path / "b" / "config.json", short))
    assert "request_timeout_seconds (30) is shorter than timeout_seconds (60)" in (
        caught.value.user_line()
    )


def test_secret_values_are_not_echoed_in_errors(tmp_path: Path) -> None:
    data = {
        "backend": {
            "transport": "http",
            "url": "https://h/mcp",
            "headers": {"Authorization": 12345},
        }
    }
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path / "c" / "config.json", data))
    assert "Authorization" in str(caught.value)
    assert "12345" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"backend": {"command": "x"},}', "not valid JSON: line 1 column 30"),
        ("[1, 2]", "must hold a JSON object, not list"),
        ("", "not valid JSON"),
    ],
)
def test_unparseable_file(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path / "c" / "config.json", text))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c" / "config.json"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(b'{"backend": "\xff"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


@pytest.mark.parametrize(
    ("bom", "encoding", "expected"),
    [
        (b"\xef\xbb\xbf", "utf-8", "starts with a byte order mark (BOM)"),
        (b"\xff\xfe", "utf-16-le", "is UTF-16 text (it starts with a byte order mark)"),
        (b"\xfe\xff", "utf-16-be", "is UTF-16 text (it starts with a byte order mark)"),
    ],
    ids=["utf-8-bom", "utf-16-le", "utf-16-be"],
)
def test_a_byte_order_mark_is_named_with_how_to_save_the_file(
    tmp_path: Path, bom: bytes, encoding: str, expected: str
) -> None:
    """Notepad and PowerShell save JSON with a byte order mark. A UTF-8 one was "not valid
    JSON: line 1 column 1: Expecting value — fix: fix the JSON syntax (a trailing comma or
    a missing quote is typical)", pointing at nothing the user could see."""
    path = tmp_path / "c" / "config.json"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(bom + json.dumps(MINIMAL).encode(encoding))
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.user_line() == (
        f"config error: {path} {expected} — fix: save it as UTF-8 without a byte order mark"
    )


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config file at .* fix: run 'mcp-acp init'"):
        load_config(tmp_path / "nope.json")


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_config_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "c" / "config.json", MINIMAL, mode=mode)
    with pytest.raises(ConfigError, match="writable by group or others"):
        load_config(path)


def test_config_in_a_group_writable_directory_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c" / "config.json", MINIMAL)
    path.parent.chmod(0o770)
    with pytest.raises(ConfigError, match=r"directory .* is writable by group"):
        load_config(path)


def test_a_config_link_into_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """The link's own directory is ours, but the file it leads to sits where others can
    swap it (not sticky): refused, naming that directory."""
    shared = tmp_path / "shared"
    target = write(shared / "config.json", MINIMAL)
    shared.chmod(0o777)
    link = tmp_path / "c" / "config.json"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(target)
    with pytest.raises(ConfigError) as caught:
        load_config(link)
    assert caught.value.message == (
        f"refusing to use config: directory {shared} is writable by group or others (mode 0777)"
    )


def test_config_in_sticky_tmp_like_directory_is_accepted(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert load_config(write(shared / "config.json", MINIMAL)).backend.transport == "stdio"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_config_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c" / "config.json", MINIMAL)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        load_config(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a symlink to another user")
def test_a_config_link_another_user_planted_in_a_sticky_directory_is_refused(
    run_cli: Any, tmp_path: Path
) -> None:
    """The config path is in a /tmp-like directory, and another user (uid 65534) put a
    symlink at that name, to a config root owns: every check of that file and of the
    directories passes (root's, 0600; the sticky directory's). Sticky keeps others from
    replacing our entries, not their own: their link is refused (exit 10), as is a path
    through their link to a directory, or a link of ours that leads through theirs; the
    same links made by us (root) are read."""
    system = tmp_path / "system"
    system.mkdir(mode=0o755)
    target = write(system / "config.json", MINIMAL)
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    planted = sticky / "config.json"
    planted.symlink_to(target)
    through = sticky / "dir"
    through.symlink_to(system)
    (tmp_path / "c").mkdir(mode=0o700)
    ours = tmp_path / "c" / "config.json"
    ours.symlink_to(planted)
    for link in (planted, through):
        os.lchown(link, NOBODY, NOBODY)
    for path, link in ((planted, planted), (through / "config.json", through), (ours, planted)):
        shown = run_cli("--config", str(path), "config", "show")
        assert shown.returncode == 10, shown.stderr
        assert shown.stderr.startswith(
            f"config error: refusing to use config: symlink {link} is owned by uid {NOBODY}, "
            f"not by you (uid 0) or root, in directory {sticky}, which others can write "
            "(mode 1777): its owner can replace it — fix:"
        ), shown.stderr
    for link in (planted, through):
        os.lchown(link, 0, 0)
    for path in (planted, through / "config.json", ours):
        assert load_config(path).backend.transport == "stdio"


def test_dangling_symlink_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "c" / "config.json"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(tmp_path / "gone.json")
    with pytest.raises(ConfigError, match="dangling symlink"):
        load_config(link)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c" / "config.json", " " * (1 << 20) + "{}")
    with pytest.raises(ConfigError, match="over the 1 MiB limit"):
        load_config(path)


def test_save_is_private_and_atomic_under_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "config.json"
    old_umask = os.umask(0)
    try:
        save_config(Config.model_validate(MINIMAL), path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert load_config(path) == Config.model_validate(MINIMAL)
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left


def test_failed_save_leaves_the_old_file_whole(tmp_path: Path) -> None:
    """A real EFBIG (RLIMIT_FSIZE) mid-write, in a child process: root cannot escape it."""
    path = write(tmp_path / "c" / "config.json", MINIMAL)
    before = path.read_bytes()
    child = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from mcp_acp.config import Config, save_config\n"
        "from mcp_acp.errors import ConfigError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))\n"
        "big = Config.model_validate({'backend': {'command': 'x' * 4096}})\n"
        "try:\n"
        "    save_config(big, Path(sys.argv[1]))\n"
        "except ConfigError as exc:\n"
        "    print(exc.user_line())\n"
        "    sys.exit(exc.exit_code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", child, str(path)], capture_output=True, text=True
    )
    assert result.returncode == 10, result.stderr
    assert "cannot write" in result.stdout
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # temp file removed


def test_unknown_component_name_lists_the_available_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "c" / "config.json", {**MINIMAL, "approver": {"use": "osascript"}})
    with pytest.raises(
        ConfigError, match=r"approver.use = 'osascript': no approver .*available: cli, deny"
    ):
        load_runtime(path, environ={})


def test_unknown_component_name_lists_the_installed_plugins_not_allowed(tmp_path: Path) -> None:
    """``marker-file`` is the installed example plugin's, which the config does not allow:
    the error says that plugin is installed and how to allow the one that provides it."""
    checks = {"checks": [{"use": "marker-file", "config": {"path": "/etc/x"}}]}
    path = write(tmp_path / "c" / "config.json", {**MINIMAL, "posture": checks})
    with pytest.raises(ConfigError) as caught:
        load_runtime(path, environ={})
    message, fix = str(caught.value).split(" — fix: ")
    assert "posture.checks[0].use = 'marker-file': no posture check of that name" in message
    assert "(available: none); installed but not allowed: " in message
    assert "example-posture" in message.split("installed but not allowed: ")[1].split(", ")
    assert "plugins.allow" in fix


def test_plugin_section_is_validated_by_the_plugins_model(tmp_path: Path) -> None:
    data = {**MINIMAL, "identity": {"use": "local", "config": {"subject_id": ""}}}
    path = write(tmp_path / "c" / "config.json", data)
    with pytest.raises(ConfigError) as caught:
        load_runtime(path, environ={})
    line = str(caught.value)
    assert "identity.config.subject_id (plugin 'local-identity')" in line
    assert "at least 1 character" in line


def test_posture_check_from_an_allowed_plugin_validates(tmp_path: Path) -> None:
    data = {
        **MINIMAL,
        "plugins": {"allow": ["example-posture"]},
        "posture": {"checks": [{"use": "marker-file", "config": {"path": "/etc/x", "pth": 1}}]},
    }
    path = write(tmp_path / "c" / "config.json", data)
    with pytest.raises(ConfigError, match=r"posture.checks\[0\].config.pth \(plugin 'example-"):
        load_runtime(path, environ={})
    data["posture"] = {"checks": [{"use": "marker-file", "config": {"path": "/etc/hostname"}}]}
    runtime = load_runtime(write(path, data), environ={})
    assert runtime.components["posture.checks[0]"].registration.plugin == "example-posture"


async def test_runtime_builds_the_selected_components(tmp_path: Path) -> None:
    data = {**MINIMAL, "identity": {"use": "local", "config": {"subject_id": "alice"}}}
    runtime = load_runtime(write(tmp_path / "c" / "config.json", data), environ={})
    subject = await runtime.build("identity").current_subject()
    assert subject.subject_id == "alice"


def test_the_token_storage_passphrase_variable_is_a_secret_env_name(tmp_path: Path) -> None:
    """What a stdio backend must not inherit: ``passphrase_env`` of the encrypted-file
    storage, also as the keychain's fallback; nothing when the key file is used."""
    path = tmp_path / "c" / "config.json"
    assert load_runtime(write(path, MINIMAL), environ={}).secret_env_names() == frozenset()
    key_file = {**MINIMAL, "token_storage": {"use": "encrypted-file"}}
    assert load_runtime(write(path, key_file), environ={}).secret_env_names() == frozenset()
    storage = {"use": "encrypted-file", "config": {"passphrase_env": "TOKEN_PASSPHRASE"}}
    data = {**MINIMAL, "token_storage": storage}
    runtime = load_runtime(write(path, data), environ={})
    assert runtime.secret_env_names() == {"TOKEN_PASSPHRASE"}
    fallback = {
        "use": "keychain",
        "config": {
            "fallback": "encrypted-file",
            "encrypted_file": {"passphrase_env": "KEYCHAIN_FALLBACK_PASSPHRASE"},
        },
    }
    data = {**MINIMAL, "plugins": {"allow": ["keychain"]}, "token_storage": fallback}
    runtime = load_runtime(write(path, data), environ={})
    assert runtime.secret_env_names() == {"KEYCHAIN_FALLBACK_PASSPHRASE"}


def test_secret_env_names_are_read_from_every_marked_option_at_any_depth() -> None:
    """A plugin marks an option ``SecretEnvName`` — alone, optional, in a list, in a nested
    model or a list of them — and its value is withheld; an unmarked option never is, even
    with a secret-looking name or value."""

    class Inner(BaseModel):
        token_env: SecretEnvName
        label: str = "PLAIN_INNER"

    class Options(BaseModel):
        secret_env: SecretEnvName
        maybe_env: SecretEnvName | None = None
        many_env: list[SecretEnvName] = []
        password_env: str = "NOT_MARKED"  # a secret-looking name is not a declaration
        inner: Inner | None = None
        inners: list[Inner] = []

    options = Options(
        secret_env="A",
        maybe_env="B",
        many_env=["C", "D"],
        inner=Inner(token_env="E"),
        inners=[Inner(token_env="F"), Inner(token_env="G", label="H")],
    )
    assert list(secret_env_names(options)) == ["A", "B", "C", "D", "E", "F", "G"]
    assert list(secret_env_names(Options(secret_env="A"))) == ["A"]  # None and [] add nothing


def test_redaction_of_secret_looking_values() -> None:
    dump = {
        "backend": {
            "headers": {"Authorization": "Bearer abc", "X-Trace": "1"},
            "env": {"GITHUB_TOKEN": "ghp_x", "PATH": "/bin"},
        }
    }
    shown = redacted(dump)
    # every header and environment value, whatever its name (X-Api, MYSQL_PWD, DB_PASS)
    assert shown["backend"]["headers"] == {"Authorization": "<redacted>", "X-Trace": "<redacted>"}
    assert shown["backend"]["env"] == {"GITHUB_TOKEN": "<redacted>", "PATH": "<redacted>"}
    assert redacted({"db_pwd": "x", "smtp_passwd": "y"}) == dict.fromkeys(
        ("db_pwd", "smtp_passwd"), "<redacted>"
    )


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("PGPASSWORD=hunter2 psql", "PGPASSWORD=<redacted> psql"),
        ("--githubtoken=ghx1", "--githubtoken=<redacted>"),
        ("DBSECRET=s3", "DBSECRET=<redacted>"),
        ("--author=me --hotkey=F5 oauth=yes", "--author=me --hotkey=F5 oauth=yes"),
        ("tokens-per-minute=5 broken=1", "tokens-per-minute=5 broken=1"),
    ],
)
def test_a_secret_word_glued_to_a_name_is_redacted(text: str, shown: str) -> None:
    """``PGPASSWORD=…`` (libpq's variable, often put on a command line) was shown whole:
    a secret word counted only as a whole part of a name. The unmistakable ones count
    glued to its end too; ``key`` and ``auth``, which end ``hotkey`` and ``oauth``, not."""
    assert redact_text(text) == shown
    flags = redacted({"args": ["--pgpassword", "pw", "--monkey", "banana"]})
    assert flags == {"args": ["--pgpassword", "<redacted>", "--monkey", "banana"]}


def test_audit_fallback_must_be_outside_the_log_dir(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    data = {**MINIMAL, "audit": {"log_dir": str(logs), "fallback_path": str(logs / "fb.jsonl")}}
    with pytest.raises(ConfigError, match="fallback_path must be outside log_dir"):
        load_config(write(tmp_path / "c" / "config.json", data))
    data["audit"]["fallback_path"] = str(tmp_path / "elsewhere" / "fb.jsonl")
    assert load_config(write(tmp_path / "c" / "config.json", data)).audit.sinks[0].use == "jsonl"


def test_audit_fallback_inside_the_log_dir_by_another_name_is_refused(tmp_path: Path) -> None:
    """``…/other/../logs/fb.jsonl``, a symlinked parent or a symlinked log_dir passed the
    check, which compared the paths as written."""
    logs, real = tmp_path / "logs", tmp_path / "real-logs"
    logs.mkdir()
    real.mkdir()
    (tmp_path / "link").symlink_to(logs)
    (tmp_path / "logs-link").symlink_to(real)
    for log_dir, fallback in [
        (logs, tmp_path / "other" / ".." / "logs" / "fb.jsonl"),
        (logs, tmp_path / "link" / "fb.jsonl"),
        (logs, tmp_path / "link" / "not-yet" / "fb.jsonl"),
        (tmp_path / "logs-link", real / "fb.jsonl"),
        (tmp_path / "link" / ".." / "logs", logs / "fb.jsonl"),
    ]:
        data = {**MINIMAL, "audit": {"log_dir": str(log_dir), "fallback_path": str(fallback)}}
        with pytest.raises(ConfigError, match="fallback_path must be outside log_dir"):
            load_config(write(tmp_path / "c" / "config.json", data))
    data = {**MINIMAL, "audit": {"log_dir": str(logs), "fallback_path": str(real / "fb.jsonl")}}
    assert load_config(write(tmp_path / "c" / "config.json", data)).audit.log_dir == logs


def test_reviewing_new_tools_needs_pins(tmp_path: Path) -> None:
    data = {**MINIMAL, "proxy": {"new_tools": "review", "tool_pinning": False}}
    with pytest.raises(ConfigError, match="new_tools 'review' needs tool_pinning: true") as bad:
        load_config(write(tmp_path / "c" / "config.json", data))
    assert "\n" not in bad.value.user_line()
    data["proxy"] = {"new_tools": "review"}
    assert load_config(write(tmp_path / "c" / "config.json", data)).proxy.new_tools == "review"


def test_audit_sink_options_are_validated_by_the_sink(tmp_path: Path) -> None:
    data = {**MINIMAL, "audit": {"sinks": [{"use": "jsonl", "config": {"durability": "never"}}]}}
    with pytest.raises(
        ConfigError, match=r"audit.sinks\[0\].config.durability \(plugin 'jsonl-audit'\)"
    ):
        load_runtime(write(tmp_path / "c" / "config.json", data), environ={})


async def test_runtime_builds_a_working_audit_trail(tmp_path: Path) -> None:
    from mcp_acp.audit.chain import verify_stream
    from mcp_acp.audit.events import SystemEvent

    logs = tmp_path / "logs"
    data = {
        **MINIMAL,
        "audit": {
            "log_dir": str(logs),
            "health_check_seconds": 5,
            "fallback_path": str(tmp_path / "state" / "fb.jsonl"),
        },
    }
    runtime = load_runtime(write(tmp_path / "c" / "config.json", data), environ={})
    trail = runtime.audit_trail(runtime.shutdown_coordinator(session_id="s1"))
    assert trail.health_interval == 5
    await trail.start()
    await trail.record(SystemEvent(event="config_loaded", session_id="s1"))
    await trail.close()
    assert verify_stream(logs, "system").lines == 2


def test_a_key_given_twice_is_refused_with_its_path_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c" / "config.json",
        '{"backend": {"command": "a"},\n'
        ' "audit": {"record_payloads": false,\n'
        '           "record_payloads": true},\n'
        ' "backend": {"command": "b"}}',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(
        f"{path}: line 3: audit.record_payloads: key 'record_payloads' appears twice"
    )


def _unusable_config_paths(tmp_path: Path) -> list[tuple[list[str], dict[str, str], str]]:
    """(arguments, environment, expected line) for paths no file system call can settle."""
    loop = tmp_path / "loop" / "config.json"
    loop.parent.mkdir(mode=0o700, parents=True)
    loop.symlink_to("config.json")
    long = tmp_path / ("x" * 300) / "config.json"
    return [
        (["--config", str(loop)], {}, f"refusing to use config: {loop} is a symlink loop"),
        (["--config", str(long)], {}, f"cannot check {long}: file name too long"),
        ([], {CONFIG_ENV: "~nosuchuser-mcp-acp/c.json"}, "'~nosuchuser-mcp-acp/c.json': cannot"),
    ]


@pytest.mark.parametrize("command", [["config", "show"], ["init", "--non-interactive"]])
def test_unusable_config_paths_are_config_errors(
    run_cli: Any, tmp_path: Path, command: list[str]
) -> None:
    for args, env, expected in _unusable_config_paths(tmp_path / command[0]):
        extra = ["--backend-command", "true"] if command[0] == "init" else []
        result = run_cli(*args, *command, *extra, env=env)
        assert result.returncode == 10, (args, result.stderr)
        assert result.stderr.startswith("config error: ")
        if command[0] == "init" and "symlink loop" in expected:
            expected = "a config file already exists at"  # a link is an entry: not replaced
        assert expected in result.stderr
        assert len(result.stderr.splitlines()) == 1


#: The CLI as user nobody: the interpreter lives under /root (0700), so the child imports
#: everything as root, then drops to nobody before the command runs.
AS_NOBODY = f"""
import os, sys
from mcp_acp.cli import main
os.setgroups([])
os.setgid({NOBODY})
os.setuid({NOBODY})
main(sys.argv[1:])
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as another user")
@pytest.mark.parametrize("command", [["config", "show"], ["init", "--non-interactive"]])
def test_a_config_in_a_directory_you_may_not_search_is_a_config_error(
    tmp_path: Path, command: list[str]
) -> None:
    shared = Path(tempfile.mkdtemp(prefix="mcp-acp-test-"))  # tmp_path is 0700: nobody's out
    try:
        shared.chmod(0o755)
        private = shared / "root-only"
        private.mkdir(mode=0o700)
        config = private / "config.json"
        write(config, MINIMAL)
        extra = ["--backend-command", "true"] if command[0] == "init" else []
        result = subprocess.run(
            [sys.executable, "-c", AS_NOBODY, "--config", str(config), *command, *extra],
            capture_output=True,
            text=True,
            env={"PATH": os.environ["PATH"], "HOME": str(shared)},
            timeout=60,
        )
        assert result.returncode == 10, result.stderr
        assert result.stderr == (
            f"config error: cannot check {config}: permission denied — fix: check the path "
            "and the permissions of the directories on it\n"
        )
    finally:
        shutil.rmtree(shared)


def test_a_dangling_symlink_config_is_named_as_one_and_init_keeps_it(
    run_cli: Any, tmp_path: Path
) -> None:
    link = tmp_path / "c" / "config.json"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(tmp_path / "elsewhere.json")
    shown = run_cli("--config", str(link), "config", "show")
    assert shown.returncode == 10
    assert f"{link} is a dangling symlink (to {tmp_path / 'elsewhere.json'})" in shown.stderr
    assert "chmod" not in shown.stderr
    init = run_cli("--config", str(link), "init", "--non-interactive", "--backend-command", "x")
    assert init.returncode == 10
    assert "already exists" in init.stderr
    assert link.is_symlink()
    assert not (tmp_path / "elsewhere.json").exists()


@pytest.mark.parametrize(
    ("backend", "field"),
    [
        ({"command": "x", "cwd": "/srv/a\x00b"}, "backend.cwd"),
        ({"command": "x", "env": {"TOKEN_FILE": "/a\x00b"}}, "backend.env"),
    ],
)
def test_nul_in_a_backend_cwd_or_env_value_is_refused(
    tmp_path: Path, backend: dict[str, Any], field: str
) -> None:
    path = write(tmp_path / "c" / "config.json", {"backend": backend})
    with pytest.raises(ConfigError, match=rf"{field}\b.*must not contain NUL"):
        load_config(path)


def test_validate_refuses_what_run_refuses_for_a_components_sake(
    run_cli: Any, tmp_path: Path
) -> None:
    config = {
        **MINIMAL,
        "plugins": {"allow": ["oidc"]},
        "identity": {
            "use": "oidc",
            "config": {"issuer": "https://idp.example.test", "client_id": "c", "audience": "a"},
        },
        "audit": {"log_dir": str(tmp_path / "logs")},
    }
    path = write(tmp_path / "c" / "config.json", config)
    (tmp_path / "c" / "policy.json").write_text('{"version": "1", "rules": []}')
    result = run_cli("--config", str(path), "config", "validate")
    assert result.returncode == 10, result.stdout + result.stderr
    assert "this component needs a token_storage section" in result.stderr


def test_relative_and_home_paths_are_taken_from_the_config_dir_and_home(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "c"
    data = {
        "backend": {"command": "x", "cwd": "project"},
        "policy": {"use": "acp", "config": {"path": "policies/main.json"}},
        "token_storage": {"use": "encrypted-file", "config": {"directory": "~/tokens"}},
        "audit": {"log_dir": "~/mylogs", "fallback_path": "../fallback.jsonl"},
        "proxy": {"socket_dir": "run"},
    }
    path = write(here / "config.json", data)
    (here / "policies").mkdir()
    (here / "policies" / "main.json").write_text('{"version": "1", "rules": []}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the start directory must not matter
    runtime = load_runtime(path)
    config = runtime.config
    assert config.backend.cwd == here / "project"  # type: ignore[union-attr]
    assert config.audit.log_dir == isolated_home / "mylogs"
    assert config.audit.fallback_path == here / ".." / "fallback.jsonl"
    assert config.proxy.socket_dir == here / "run"
    assert runtime.components["policy"].options.path == here / "policies" / "main.json"  # type: ignore[attr-defined]
    assert runtime.components["token_storage"].options.directory == isolated_home / "tokens"  # type: ignore[attr-defined]
    assert runtime.build("policy").reload() == []  # found from elsewhere


async def test_a_plugins_relative_path_is_anchored_before_its_own_validators_run(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example plugin refuses a relative path in its own validator (docs/plugins.md
    §2); the path the config means — beside the config file, or under ``~`` — is what
    that validator sees, also in an optional tuple of paths (linux-posture)."""
    here = tmp_path / "c"
    data = {
        **MINIMAL,
        "plugins": {"allow": ["example-posture", "linux-posture"]},
        "posture": {
            "checks": [
                {"use": "marker-file", "config": {"path": "marker"}},
                {"use": "marker-file", "config": {"path": "~/enrolled"}},
                {"use": "linux-disk-encryption", "config": {"paths": ["data", "/"]}},
            ]
        },
    }
    path = write(here / "config.json", data)
    write(here / "marker", "")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the start directory must not matter
    runtime = load_runtime(path, environ={})
    options = [runtime.components[f"posture.checks[{i}]"].options for i in range(3)]
    assert options[0].path == here / "marker"  # type: ignore[attr-defined]
    assert options[1].path == isolated_home / "enrolled"  # type: ignore[attr-defined]
    assert options[2].paths == (here / "data", Path("/"))  # type: ignore[attr-defined]
    result = await runtime.build("posture.checks[0]").check()
    assert (result.status.value, result.detail) == ("pass", f"{here / 'marker'} present")


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"audit": {"log_dir": "~nosuchuser-mcp-acp/logs"}}, "audit.log_dir"),
        (
            {"policy": {"use": "acp", "config": {"path": "~nosuchuser-mcp-acp/p.json"}}},
            "policy.config.path",
        ),
    ],
)
def test_a_home_of_nobody_known_is_a_config_error(
    tmp_path: Path, section: dict[str, Any], field: str
) -> None:
    path = write(tmp_path / "c" / "config.json", {**MINIMAL, **section})
    with pytest.raises(ConfigError, match=rf"{field}.* = .*cannot expand '~nosuchuser-mcp-acp'"):
        load_runtime(path)


def test_init_stores_absolute_paths(run_cli: Any, tmp_path: Path, config_path: Path) -> None:
    start = tmp_path / "start"
    start.mkdir()
    init = ["init", "--non-interactive", "--backend-command", "x", "--backend-cwd", "proj"]
    result = _cli_in(start, config_path, init)
    assert result.returncode == 0, result.stderr
    assert json.loads(config_path.read_text())["backend"]["cwd"] == str(start / "proj")


def _cli_in(start: Path, config_path: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """``mcp-acp ARGS`` run in the directory ``start``, with the HOME ``config_path`` is in."""
    return subprocess.run(
        [str(CLI), *args],
        cwd=start,
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(config_path.parents[2])},
        timeout=60,
    )


def test_init_stores_the_plugin_paths_it_is_given_absolute(
    tmp_path: Path, config_path: Path
) -> None:
    """A path in a component's options on init's command line means the working directory,
    as --backend-cwd and --log-dir do; the file gets it absolute, so that it is not taken
    from the config file's directory later."""
    start = tmp_path / "start"
    start.mkdir()
    config = Path("init-t") / "f.json"
    (start / "init-t").mkdir()
    result = _cli_in(
        start,
        config_path,
        [
            "--config",
            str(config),
            "init",
            "--non-interactive",
            "--backend-command",
            "x",
            "--plugin",
            "example-posture",
            "--posture-check",
            'marker-file={"path": "flag"}',
            "--posture-check",
            'marker-file={"path": "~/enrolled"}',
            "--posture-check",
            'marker-file={"path": "/etc/x"}',
            "--token-storage",
            'encrypted-file={"directory": "tokens"}',
        ],
    )
    assert result.returncode == 0, result.stderr
    written = json.loads((start / config).read_text())
    paths = [check["config"]["path"] for check in written["posture"]["checks"]]
    assert paths == [str(start / "flag"), str(config_path.parents[2] / "enrolled"), "/etc/x"]
    assert written["token_storage"]["config"] == {"directory": str(start / "tokens")}
