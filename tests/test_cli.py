"""The installed ``mcp-acp`` executable, run as a user would run it."""

from __future__ import annotations

import json
import os
import pty
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from strace_helpers import needs_strace, needs_syscall_numbers, race

CLI = Path(sys.executable).parent / "mcp-acp"
Run = Callable[..., subprocess.CompletedProcess[str]]

INIT = [
    "init",
    "--non-interactive",
    "--backend-command",
    "npx",
    "--backend-arg",
    "-y",
    "--backend-arg",
    "@modelcontextprotocol/server-filesystem",
    "--backend-arg",
    "/srv/project",
]


def test_help_lists_the_commands(run_cli: Run) -> None:
    result = run_cli("--help", check=True)
    for command in ("init", "config", "schema", "plugins", "policy", "audit", "status"):
        assert f"  {command} " in result.stdout


def test_run_loads_what_it_needs_before_the_backend_starts_and_no_more() -> None:
    """What ``mcp-acp run`` imports before the backend is spawned counts against the time
    to the first answer: the other commands' modules and cryptography (needed only by a
    configured token storage) wait until they are used."""
    code = (
        "import sys\n"
        "import mcp_acp.cli, mcp_acp.proxy.serve\n"
        "from mcp_acp.plugins import load_plugins\n"
        "load_plugins(set())\n"
        "late = ('cryptography', 'mcp_acp.policy.cli', 'mcp_acp.audit.cli',\n"
        "        'mcp_acp.control_cli')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(late))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_lazy_commands_run(run_cli: Run) -> None:
    for command in ("policy", "approvals", "audit", "logs"):
        assert "Usage: mcp-acp " + command in run_cli(command, "--help", check=True).stdout
    assert "no running proxy" in run_cli("status", check=True).stdout


def test_version(run_cli: Run) -> None:
    from mcp_acp import __version__

    assert run_cli("--version", check=True).stdout.strip() == f"mcp-acp, version {__version__}"


def test_init_then_validate(run_cli: Run, config_path: Path) -> None:
    result = run_cli(
        *INIT,
        "--identity",
        'local={"subject_id": "alice"}',
        "--backend-env",
        "NODE_ENV=production",
        "--posture-interval",
        "30",
        check=True,
    )
    assert f"wrote {config_path}" in result.stdout
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_path.parent.stat().st_mode) == 0o700
    written = json.loads(config_path.read_text())
    assert written["backend"]["args"][-1] == "/srv/project"
    assert written["backend"]["env"] == {"NODE_ENV": "production"}
    assert written["identity"] == {"use": "local", "config": {"subject_id": "alice"}}
    assert written["posture"]["interval_seconds"] == 30
    validated = run_cli("config", "validate", check=True)
    assert validated.stdout.startswith(f"ok: {config_path}")
    assert "identity: local" in validated.stdout


@pytest.mark.parametrize(
    ("env", "mode", "directory", "warned"),
    [
        ({"API_KEY": "sk-C4NARY"}, 0o644, 0o755, True),  # others can read the key
        ({"API_KEY": "sk-C4NARY"}, 0o640, 0o750, True),  # the group can
        ({"API_KEY": "sk-C4NARY"}, 0o644, 0o700, False),  # no one else can reach the file
        ({"API_KEY": "sk-C4NARY"}, 0o644, 0o750, True),  # the group can reach and read it
        ({"API_KEY": "sk-C4NARY"}, 0o604, 0o750, False),  # others can read it, not reach it
        ({"API_KEY": "sk-C4NARY"}, 0o600, 0o755, False),  # as init writes it
        ({}, 0o644, 0o755, False),  # nothing in it that config show hides
    ],
)
def test_a_config_others_can_read_is_warned_about_when_it_holds_secrets(
    run_cli: Run,
    env: dict[str, str],
    mode: int,
    directory: int,
    warned: bool,
) -> None:
    """A config copied into place 0644 with an API key in backend.env was used without a
    word, while a token file so readable is refused. Every command that reads such a config
    now warns, once, naming the file and the fix; the key is not shown. A file in a
    directory others cannot search is readable by no one else: not warned about. (Out of
    pytest's temporary directory, which only its owner can search.)"""
    base = Path(tempfile.mkdtemp(prefix="mcp-acp-readable-"))
    try:
        base.chmod(0o755)
        config_path = base / "conf" / "config.json"
        config = ("--config", str(config_path))
        run_cli(*config, *INIT, *[f"--backend-env={k}={v}" for k, v in env.items()], check=True)
        config_path.chmod(mode)
        config_path.parent.chmod(directory)
        for args in (("config", "validate"), ("config", "show"), ("policy", "show")):
            result = run_cli(*config, *args, check=True)
            warning = (
                f"warning: config {config_path} is readable by other users (mode {mode:04o}) and "
                "holds values 'config show' hides"
            )
            assert (warning in result.stderr) is warned, result.stderr
            if warned:
                (line,) = [x for x in result.stderr.splitlines() if "readable by other" in x]
                assert line.endswith(f"fix: chmod 600 {config_path}")
            assert "C4NARY" not in result.stderr
    finally:
        shutil.rmtree(base)


def test_init_gives_a_config_file_of_another_name_its_own_audit_directory(
    run_cli: Run, config_path: Path, isolated_home: Path
) -> None:
    """Two proxies cannot share a log directory (the second is refused): the default config
    file keeps the platform's directory, a config file of any other name gets its own
    beside it, unless ``--log-dir`` says otherwise."""
    logs = isolated_home / ".local" / "state" / "mcp-acp" / "log"
    run_cli(*INIT, check=True)
    assert json.loads(config_path.read_text())["audit"]["log_dir"] == str(logs)
    other = config_path.parent / "filesystem.json"
    run_cli("--config", str(other), *INIT, check=True)
    assert json.loads(other.read_text())["audit"]["log_dir"] == str(logs / "filesystem")
    chosen = isolated_home / "my-logs"
    third = config_path.parent / "git.json"
    run_cli("--config", str(third), *INIT, "--log-dir", str(chosen), check=True)
    assert json.loads(third.read_text())["audit"]["log_dir"] == str(chosen)


def test_init_http_backend_with_every_flag(run_cli: Run, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "c.json"
    run_cli(
        "--config",
        str(target),
        "init",
        "--non-interactive",
        "--backend-url",
        "https://mcp.example.test/mcp",
        "--backend-header",
        "Authorization: Bearer s3cret",
        "--backend-timeout",
        "12",
        "--backend-request-timeout",
        "900",
        "--approver",
        "deny",
        "--log-dir",
        str(tmp_path / "logs"),
        check=True,
    )
    written = json.loads(target.read_text())
    assert written["backend"] == {
        "transport": "http",
        "url": "https://mcp.example.test/mcp",
        "headers": {"Authorization": "Bearer s3cret"},
        "timeout_seconds": 12.0,
        "request_timeout_seconds": 900.0,
    }
    assert written["audit"]["log_dir"] == str(tmp_path / "logs")
    shown = run_cli("--config", str(target), "config", "show", check=True).stdout
    assert "s3cret" not in shown
    assert json.loads(shown)["backend"]["headers"]["Authorization"] == "<redacted>"


def test_config_show_hides_credentials_in_arguments_env_and_urls(
    run_cli: Run, tmp_path: Path
) -> None:
    target = tmp_path / "c.json"
    canaries = ["sk-live-C4NARY123", "ghp_" + "C4NARY" * 6, "pw-C4NARY", "hunter2-C4NARY"]
    settings = {
        "backend": {
            "command": "npx",
            "args": [
                f"--api-key={canaries[0]}",
                "--token",
                canaries[1],
                "--author=alice",  # not a secret: shown
                "--path",
                "/srv/repo",
            ],
            "env": {"DB_URL": f"postgres://u:{canaries[2]}@db/x", "GITHUB_PAT": canaries[1]},
        }
    }
    target.write_text(json.dumps(settings))
    target.chmod(0o600)
    shown = run_cli("--config", str(target), "config", "show", check=True).stdout
    for canary in canaries[:3]:
        assert canary not in shown
    backend = json.loads(shown)["backend"]
    assert backend["args"] == [
        "--api-key=<redacted>",
        "--token",
        "<redacted>",
        "--author=alice",
        "--path",
        "/srv/repo",
    ]
    assert backend["env"]["DB_URL"] == "<redacted>"  # every env value
    url = f"https://alice:{canaries[3]}@mcp.example.test/mcp"
    settings = {"backend": {"transport": "http", "url": url}}
    target.write_text(json.dumps(settings))
    refused = run_cli("--config", str(target), "config", "validate")
    assert refused.returncode == 10
    assert canaries[3] not in refused.stderr + refused.stdout
    assert "must not carry credentials" in refused.stderr


def test_a_long_argument_or_value_is_redacted_in_linear_time(run_cli: Run, tmp_path: Path) -> None:
    """Redaction looked for a secret name or a URL scheme from after every ``-`` to the
    end of the run: ``a-a-a-…`` took time quadratic in its length — 5 s for 16,000
    characters, hours for 800,000 — so ``config show``, and ``run`` naming a bad value,
    hung instead of answering. (``run_cli`` gives each command 60 s.)"""
    long = "a-" * 400_000
    target = tmp_path / "c.json"
    target.write_text(json.dumps({"backend": {"command": "npx", "args": [long, "x"]}}))
    target.chmod(0o600)
    shown = run_cli("--config", str(target), "config", "show", check=True).stdout
    assert json.loads(shown)["backend"]["args"] == [long, "x"]
    target.write_text(json.dumps({"backend": {"transport": "http", "url": long}}))
    refused = run_cli("--config", str(target), "run", input="")
    assert refused.returncode == 10, refused.stderr
    assert refused.stderr.startswith(f'config error: {target}: backend.url = "a-a-a-')
    assert "must be an http:// or https:// URL with a host" in refused.stderr


def test_config_show_hides_header_arguments_and_passphrases(run_cli: Run, tmp_path: Path) -> None:
    """``npx mcp-remote URL --header "X-API-Key: …"`` is how many MCP configs carry a
    credential; ``config show`` printed it whole, and a ``--passphrase`` too — what users
    paste into bug reports."""
    target = tmp_path / "c.json"
    args = [
        "mcp-remote",
        "https://mcp.example.test/mcp",
        "--header",
        "X-API-Key: key-C4NARY",
        "--header",
        "Authorization: Bearer C4NARY",  # too short for the bearer shape
        "-H",
        "Private-Token: glpat-C4NARY",
        "--passphrase",
        "pp-C4NARY",
        "--db-passphrase=dbpp-C4NARY",
        "Content-Type: application/json",  # no secret in the name: shown
    ]
    target.write_text(json.dumps({"backend": {"command": "npx", "args": args}}))
    target.chmod(0o600)
    shown = run_cli("--config", str(target), "config", "show", check=True).stdout
    assert "C4NARY" not in shown
    assert json.loads(shown)["backend"]["args"] == [
        "mcp-remote",
        "https://mcp.example.test/mcp",
        "--header",
        "X-API-Key: <redacted>",
        "--header",
        "Authorization: <redacted>",
        "-H",
        "Private-Token: <redacted>",
        "--passphrase",
        "<redacted>",
        "--db-passphrase=<redacted>",
        "Content-Type: application/json",
    ]


def test_config_show_shows_settings_whose_names_only_sound_secret(
    run_cli: Run, tmp_path: Path
) -> None:
    """``proxy.outbound_secrets`` (ask or off) and a storage's ``passphrase_env`` (a
    variable's name) were shown as ``<redacted>``: a user could not see whether the check
    of credentials going out was on. A value that is a secret stays hidden."""
    target = tmp_path / "c.json"
    config = {
        "backend": {"command": "x", "args": ["--token", "t-C4NARY"]},
        "proxy": {"outbound_secrets": "off"},
        "token_storage": {"use": "encrypted-file", "config": {"passphrase_env": "MY_PP"}},
    }
    target.write_text(json.dumps(config))
    target.chmod(0o600)
    shown = json.loads(run_cli("--config", str(target), "config", "show", check=True).stdout)
    assert shown["proxy"]["outbound_secrets"] == "off"
    assert shown["token_storage"]["config"]["passphrase_env"] == "MY_PP"
    assert shown["backend"]["args"] == ["--token", "<redacted>"]


def test_config_show_redacts_every_header_and_environment_value(
    run_cli: Run, tmp_path: Path
) -> None:
    """Headers and environment variables carry credentials under any name (``MYSQL_PWD``,
    ``DB_PASS``, ``X-Api``): every value is redacted, as the README promises."""
    target = tmp_path / "c.json"
    env = {"MYSQL_PWD": "s3cr3t-pw-value", "SMTP_PASSWD": "smtp-C4NARY", "DB_PASS": "db-C4NARY"}
    target.write_text(json.dumps({"backend": {"command": "srv", "env": env}}))
    target.chmod(0o600)
    shown = run_cli("--config", str(target), "config", "show", check=True).stdout
    assert json.loads(shown)["backend"]["env"] == dict.fromkeys(env, "<redacted>")
    headers = {"X-Api": "api-C4NARY", "X-Access": "access-C4NARY"}
    http = {"transport": "http", "url": "https://mcp.example.test/mcp", "headers": headers}
    target.write_text(json.dumps({"backend": http}))
    shown = run_cli("--config", str(target), "config", "show", check=True).stdout
    assert json.loads(shown)["backend"]["headers"] == dict.fromkeys(headers, "<redacted>")


def test_init_and_validate_summaries_hide_credentials_in_arguments(
    run_cli: Run, config_path: Path
) -> None:
    secrets = ["sk-live-hunter2secret", "hunter2pw", "ghp_" + "C4NARY" * 6]
    args = [
        "--api-key",
        secrets[0],
        f"--password={secrets[1]}",
        f"Authorization: Bearer {secrets[2]}",
    ]
    init = run_cli(
        "init",
        "--non-interactive",
        "--backend-command",
        "npx",
        *[item for arg in ["server", *args] for item in ("--backend-arg", arg)],
        check=True,
    )
    validate = run_cli("config", "validate", check=True)
    for output in (init.stdout, validate.stdout):
        assert "backend:  stdio npx server --api-key '<redacted>'" in output
        for secret in secrets:
            assert secret not in output
    written = json.loads(config_path.read_text())["backend"]["args"]
    assert written == ["server", *args]  # redacted when shown, not when saved
    url = f"https://mcp.example.test/mcp?token={secrets[0]}"
    again = run_cli("init", "--non-interactive", "--force", "--backend-url", url, check=True)
    assert "backend:  http https://mcp.example.test/mcp?token=<redacted>" in again.stdout
    assert secrets[0] not in again.stdout


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (
            [
                "--backend-url",
                "https://h/mcp",
                "--backend-header",
                "Authorization Bearer ghp_C4NARY",
            ],
            "the 1st --backend-header is not NAME:VALUE",
        ),
        (
            ["--backend-command", "x", "--backend-env", "A=1", "--backend-env", "ghp_C4NARY"],
            "the 2nd --backend-env is not NAME=VALUE",
        ),
        (
            ["--backend-command", "x", "--identity", 'oidc={"client_secret":"ghp_C4NARY",}'],
            "--identity: the options after '=' are not valid JSON",
        ),
        (
            ["--backend-command", "x", "--approver", 'cli=["ghp_C4NARY"]'],
            "--approver: the options after '=' must be a JSON object",
        ),
        (
            ["--backend-command", "x", "--identity", "oidc=" + "[" * 100_000],
            "--identity: the options after '=' nest arrays or objects too deeply",
        ),
        (  # Python refuses the conversion with a plain ValueError: was "internal error"
            ["--backend-command", "x", "--posture-check", 'x={"a":' + "1" * 5_000 + "}"],
            "--posture-check: in the options after '=', a number has more than 4300 digits",
        ),
    ],
)
def test_bad_flag_errors_name_the_flag_never_its_value(
    run_cli: Run, config_path: Path, flags: list[str], named: str
) -> None:
    result = run_cli("init", "--non-interactive", *flags)
    assert result.returncode == 10, result.stderr
    assert named in result.stderr
    assert "C4NARY" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert not config_path.exists()


def test_a_config_nested_too_deeply_is_a_config_error(run_cli: Run, tmp_path: Path) -> None:
    target = tmp_path / "deep.json"
    target.write_text('{"backend": ' + "[" * 100_000 + "]" * 100_000 + "}")
    target.chmod(0o600)
    refused = run_cli("--config", str(target), "config", "validate")
    assert refused.returncode == 10
    assert "nests arrays or objects too deeply" in refused.stderr
    assert "internal error" not in refused.stderr


def test_options_nested_deeper_than_a_config_needs_are_a_config_error(
    run_cli: Run, tmp_path: Path, config_path: Path
) -> None:
    """Options 300 levels deep — within what the JSON reader takes (~970), beyond what
    pydantic writes out (255) — ended ``config show`` and ``init`` in "internal error:
    ValueError: Maximum serialization depth exceeded … report it" (exit 1)."""
    deep = "[" * 300 + "]" * 300
    target = tmp_path / "deep.json"
    target.write_text(
        '{"backend": {"command": "cat"}, "identity": {"use": "local", "config": {"a": '
        + deep
        + "}}}"
    )
    target.chmod(0o600)
    shown = run_cli("--config", str(target), "config", "show")
    assert shown.returncode == 10, shown.stderr
    assert shown.stderr.splitlines() == [
        f"config error: {target} nests arrays or objects more than 100 deep, too deeply to "
        "be a config file — fix: check that this is really the config file"
    ]
    init = run_cli(
        "init",
        "--non-interactive",
        "--backend-command",
        "cat",
        "--identity",
        f'local={{"a": {deep}}}',
    )
    assert init.returncode == 10, init.stderr
    assert init.stderr.splitlines() == [
        "config error: --identity: the options after '=' nest arrays or objects more than "
        """100 deep; nothing was written — fix: write it as --identity 'NAME={"option": "value"}'"""
    ]
    assert not config_path.exists()


def test_a_number_of_more_than_4300_digits_in_the_config_is_one_config_error(
    run_cli: Run, tmp_path: Path
) -> None:
    """Python refuses to read such an integer with a plain ValueError: 'internal error …
    report it' (exit 1) until the JSON reader said what it was, and where."""
    target = tmp_path / "big.json"
    target.write_text(
        '{"backend": {"transport": "stdio", "command": "cat"},\n "x": -' + "1" * 5_000 + "}"
    )
    target.chmod(0o600)
    for command in (["config", "validate"], ["run"]):
        refused = run_cli("--config", str(target), *command, input="")
        assert refused.returncode == 10, refused.stderr
        assert refused.stderr.splitlines() == [
            f"config error: {target}: line 2 column 7: a number has more than 4300 digits — fix: "
            "no setting takes a number that long: check that this is really the config file"
        ]


def test_config_export_as_python_m_runs_nothing_from_the_clients_working_directory(
    run_cli: Run, config_path: Path, isolated_home: Path, tmp_path: Path
) -> None:
    """Exported as ``python -m mcp_acp``, the client's working directory was first on
    ``sys.path``: a ``pluggy.py`` in the workspace the client starts the proxy in ran."""
    run_cli(*INIT[:2], "--backend-command", "cat", check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env |= {"HOME": str(isolated_home), "XDG_RUNTIME_DIR": str(isolated_home / "run")}
    exported = subprocess.run(
        [sys.executable, "-m", "mcp_acp", "config", "export", "--claude"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    (entry,) = json.loads(exported.stdout)["mcpServers"].values()
    assert entry["command"] == sys.executable
    assert entry["args"] == ["-P", "-m", "mcp_acp", "--config", str(config_path), "run"]
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    marker = tmp_path / "ran"
    (workspace / "pluggy.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")

    def start(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # as a client would: in its workspace, then stdin closed
            argv,
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )

    without = start([sys.executable, *entry["args"][1:]])  # what was exported before
    assert marker.read_text() == "ran", without.stderr  # the trap works
    marker.unlink()
    started = start([entry["command"], *entry["args"]])
    assert started.returncode == 0, started.stderr
    assert not marker.exists()


# Runs ``mcp-acp --config argv[1] init`` in process once told to on stdin; says its
# first line, or the error.
INIT_WHEN_TOLD = """
import shutil
import sys
import tempfile
from mcp_acp.cli import cli
sys.stdin.readline()
try:
    cli.main(["--config", sys.argv[1], "init", "--non-interactive", "--backend-command",
              "mine"], standalone_mode=False)
except Exception as exc:
    print("error:", exc.user_line() if hasattr(exc, "user_line") else exc, flush=True)
"""


@needs_strace
@needs_syscall_numbers
def test_init_never_replaces_a_config_that_appears_while_it_runs(tmp_path: Path) -> None:
    """``init`` checked that no config was there, then (after its questions, which may take
    minutes) replaced whatever was there by then: a config written meanwhile — by the user,
    or another ``init`` — was lost without ``--force``. The finished file is now put in
    place only if the name is still free, in one step; held in the kernel with strace at
    that step, a config written meanwhile is kept, and nothing of this init is left."""
    home = tmp_path / "cfg"
    home.mkdir(mode=0o700)
    config = home / "config.json"
    theirs = '{"theirs": true}\n'
    said = race(  # its second placing: the starter policy's is the first
        INIT_WHEN_TOLD,
        str(config),
        [],
        "rename,renameat,renameat2,link,linkat",
        lambda: config.write_text(theirs),
        when=2,
    )
    assert said == (
        f"error: config error: a config file appeared at {config} while init ran; nothing was "
        "written — fix: pass --force to replace it, or edit it and run 'mcp-acp config "
        "validate'"
    )
    assert config.read_text() == theirs
    assert sorted(p.name for p in home.iterdir()) == ["config.json"]  # no policy, no tmp


def test_config_env_variable_and_path_command(run_cli: Run, tmp_path: Path) -> None:
    target = tmp_path / "via-env.json"
    assert run_cli(
        "config", "path", env={"MCP_ACP_CONFIG": str(target)}, check=True
    ).stdout.strip() == str(target)


def test_init_refuses_to_overwrite(run_cli: Run, config_path: Path) -> None:
    run_cli(*INIT, check=True)
    before = config_path.read_bytes()
    result = run_cli("init", "--non-interactive", "--backend-command", "other")
    assert result.returncode == 10
    assert "already exists" in result.stderr
    assert "--force" in result.stderr
    assert config_path.read_bytes() == before
    run_cli("init", "--non-interactive", "--force", "--backend-command", "other", check=True)
    assert json.loads(config_path.read_text())["backend"]["command"] == "other"


NOBODY = 65534
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away")
REFUSED = (
    "nothing was written — fix: choose a directory of yours that nobody else can write "
    "(--config), or chmod go-w it; whoever can change the config or the policy decides what "
    "passes"
)


@ROOT_ONLY
@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o700], ids=["0777", "1777", "0700"])
def test_init_refuses_a_directory_another_user_owns(
    run_cli: Run, tmp_path: Path, mode: int
) -> None:
    """init wrote the config and the starter policy there and said so; 'config validate'
    and 'run' then refused both (exit 10). Sticky or not, its owner can replace them."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(mode)
    os.chown(theirs, NOBODY, NOBODY)
    target = theirs / "sub" / "config.json"
    result = run_cli("--config", str(target), *INIT)
    assert result.returncode == 10, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"config error: refusing to use config: {theirs} is owned by uid {NOBODY}, not by you "
        f"(uid 0); {REFUSED}"
    ]
    assert result.stdout == ""
    assert list(theirs.iterdir()) == []


def test_init_refuses_a_directory_others_may_write(run_cli: Run, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    result = run_cli("--config", str(shared / "config.json"), *INIT)
    assert result.returncode == 10, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"config error: refusing to use config: directory {shared} is writable by group or "
        f"others (mode 0775); {REFUSED}"
    ]
    assert list(shared.iterdir()) == []
    # the same problem 'config validate' names, once a config is there
    (shared / "config.json").write_text('{"backend": {"command": "cat"}}')
    (shared / "config.json").chmod(0o600)
    validated = run_cli("--config", str(shared / "config.json"), "config", "validate")
    assert validated.returncode == 10
    assert validated.stderr.startswith(
        f"config error: refusing to use config: directory {shared} is writable by group or "
        "others (mode 0775) — fix:"
    )


@ROOT_ONLY
def test_init_refuses_a_policy_another_user_planted_in_a_sticky_directory(
    run_cli: Run, tmp_path: Path
) -> None:
    """In a sticky directory (a /tmp of one's own making is allowed: others cannot replace
    our files there) init kept a policy.json another user had put there, said nothing of
    it, and wrote a config that every later command refused (exit 12)."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    planted = sticky / "policy.json"
    allow_all = json.dumps(
        {"version": "1", "rules": [{"effect": "allow", "conditions": {"tool_name": "*"}}]}
    )
    planted.write_text(allow_all)
    os.chown(planted, NOBODY, NOBODY)
    result = run_cli("--config", str(sticky / "config.json"), *INIT)
    assert result.returncode == 12, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"policy error: refusing to use policy: {planted} is owned by uid {NOBODY}, not by you "
        "(uid 0); nothing was written — fix: keep the policy in a directory of yours, writable "
        "by you alone (chmod go-w the file and its directory)"
    ]
    assert [p.name for p in sticky.iterdir()] == ["policy.json"]
    assert planted.read_text() == allow_all
    os.chown(planted, 0, 0)  # now ours: kept, and said so
    kept = run_cli("--config", str(sticky / "config.json"), *INIT, check=True)
    assert f"kept existing policy {planted}\n" in kept.stdout
    assert planted.read_text() == allow_all
    assert run_cli("--config", str(sticky / "config.json"), "config", "validate").returncode == 0


def test_init_keeps_a_valid_policy_of_ours_and_refuses_one_run_would_refuse(
    run_cli: Run, config_path: Path
) -> None:
    policy = config_path.parent / "policy.json"
    policy.parent.mkdir(parents=True, mode=0o700)
    policy.write_text('{"version": "1", "rules": [], "typo": 1}')
    refused = run_cli(*INIT)
    assert refused.returncode == 12, refused.stderr
    assert refused.stderr.startswith(f"policy error: {policy}:1: typo: Extra inputs")
    assert "; nothing was written — fix:" in refused.stderr
    assert not config_path.exists()
    policy.write_text('{"version": "1", "rules": []}')
    kept = run_cli(*INIT, check=True)
    assert kept.stdout.splitlines()[:2] == [
        f"wrote {config_path}",
        f"kept existing policy {policy}",
    ]
    assert policy.read_text() == '{"version": "1", "rules": []}'


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--backend-url", "http://192.0.2.1/mcp"], "backend.url"),
        (["--backend-command", "x", "--approver", "nobody"], "approver.use = 'nobody'"),
        (["--backend-command", "x", "--identity", "local={not json"], "--identity"),
        (
            ["--backend-command", "x", "--identity", 'local={"x": 1}'],
            "identity.config.x (plugin 'local-identity')",
        ),
        (
            ["--backend-command", "x", "--plugin", "not-installed"],
            "'not-installed' is allowed by --plugin but",
        ),
        (
            ["--backend-command", "x", "--posture-check", "marker-file"],
            "(available: none); installed but not allowed: ",
        ),
        (["--backend-command", "x", "--backend-env", "NOEQUALS"], "1st --backend-env"),
        ([], "no backend given"),
    ],
)
def test_bad_init_flags_write_nothing(
    run_cli: Run, config_path: Path, flags: list[str], expected: str
) -> None:
    """One line, nothing written; and its fix speaks of init's flags and of running init
    again — not of a config file's plugins.allow, nor of validating a file not written."""
    result = run_cli("init", "--non-interactive", *flags)
    assert result.returncode in (10, 11), result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert "config validate" not in result.stderr
    assert "plugins.allow" not in result.stderr
    assert not config_path.exists()


@pytest.mark.parametrize(
    ("flags", "fix"),
    [
        (
            ["--posture-check", "marker-file"],
            "allow the one that provides 'marker-file' (pass --plugin NAME), or pick an "
            "available name ('mcp-acp plugins' lists what each registers)",
        ),
        (
            ["--plugin", "example-posturr"],
            "check the spelling, install the distribution that provides it into mcp-acp's "
            "environment (by path or wheel file: see the README, 'Extras and plugins'), or drop "
            "--plugin example-posturr",
        ),
        (
            ["--plugin", "example-posture", "--posture-check", 'marker-file={"pth": "x"}'],
            "correct that option (plugin 'example-posture' documents it)",
        ),
    ],
    ids=["not-allowed", "allowlist-typo", "bad-option"],
)
def test_init_errors_point_at_its_flags(
    run_cli: Run, config_path: Path, flags: list[str], fix: str
) -> None:
    result = run_cli("init", "--non-interactive", "--backend-command", "x", *flags)
    assert result.returncode in (10, 11), result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].split(" — fix: ")[1] == fix  # the first (or only) problem's own fix
    if len(lines) > 1:  # every problem of init's flags, then how many
        assert lines[-1].endswith(
            "problems, one per line above; nothing was written — fix: correct each as its line says"
        )
    assert "config validate" not in result.stderr  # no file to validate
    assert not config_path.exists()


@pytest.mark.parametrize("limit", [500, 1500])
def test_init_that_cannot_write_everything_writes_nothing(
    isolated_home: Path, config_path: Path, limit: int
) -> None:
    """A disk that fills during init (here: a file size limit, ``RLIMIT_FSIZE``, in the
    child — 500 bytes stops the starter policy of ~1.1 KiB, 1500 the config made bigger
    than it) leaves neither file, one line, and an init that can run again."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(isolated_home)
    args = [*INIT, *[item for n in range(60) for item in ("--backend-arg", f"/srv/dir-{n:04}")]]

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    failed = subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, env=env, preexec_fn=small_files
    )
    assert failed.returncode == 10, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("config error: cannot write ")
    assert "nothing was written" in lines[0]
    assert "wrote" not in failed.stdout
    assert list(config_path.parent.iterdir()) == []  # no config, no policy, no temporary file
    again = subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert (config_path.parent / "policy.json").exists()


def test_broken_config_one_line_nonzero_and_untouched(run_cli: Run, config_path: Path) -> None:
    run_cli(*INIT, check=True)
    data = json.loads(config_path.read_text())
    data["posture"]["interval_seconds"] = "often"
    config_path.write_text(json.dumps(data))
    before = (config_path.read_bytes(), config_path.stat().st_mtime_ns)
    for args in (
        ["config", "validate"],
        ["config", "show"],
        ["plugins"],
        ["init", "--non-interactive", "--backend-command", "x"],
    ):
        result = run_cli(*args)
        assert result.returncode == 10, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("config error: ")
        assert "posture.interval_seconds" in lines[0] or "already exists" in lines[0]
    assert (config_path.read_bytes(), config_path.stat().st_mtime_ns) == before


@pytest.mark.parametrize(
    ("args", "env", "code", "kind"),
    [
        (["config", "validate"], {}, 10, "config error: "),
        (["plugins"], {"MCP_ACP_PLUGINS": "no-such-plugin"}, 11, "plugin error: "),
    ],
)
def test_debug_adds_the_traceback_and_changes_nothing_else(
    run_cli: Run, args: list[str], env: dict[str, str], code: int, kind: str
) -> None:
    quiet = run_cli(*args, env=env)
    assert quiet.returncode == code, quiet.stderr
    assert "Traceback" not in quiet.stderr
    for loud in (
        run_cli("--debug", *args, env=env),
        run_cli(*args, env={**env, "MCP_ACP_DEBUG": "1"}),
    ):
        assert loud.returncode == code, loud.stderr
        assert "Traceback" in loud.stderr
        assert loud.stderr.strip().splitlines()[-1] == quiet.stderr.strip()
        assert quiet.stderr.startswith(kind)


def test_config_validate_lists_every_problem_and_others_say_how_many(
    run_cli: Run, config_path: Path
) -> None:
    run_cli(*INIT, check=True)
    data = json.loads(config_path.read_text())
    data["proxy"]["approval_timeout_seconds"] = 1
    data["proxy"]["rate_limits"]["burst"] = 0
    data["proxy"]["burst"] = 7
    config_path.write_text(json.dumps(data))
    result = run_cli("config", "validate")
    assert result.returncode == 10
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4, result.stderr
    assert lines[0].startswith(f"config error: {config_path}: proxy.approval_timeout_seconds = 1: ")
    assert lines[1].startswith(f"config error: {config_path}: proxy.rate_limits.burst = 0: ")
    assert lines[2].startswith(f"config error: {config_path}: proxy.burst = 7: Extra inputs")
    assert lines[3] == (
        f"config error: {config_path}: 3 problems, one per line above — fix: correct each "
        "as its line says"
    )
    assert "config validate" not in result.stderr  # it does not send you to itself
    shown = run_cli("config", "show")
    assert shown.returncode == 10
    assert shown.stderr.strip() == lines[0].split(" — fix: ")[0] + (
        " (and 2 more) — fix: correct that field ('mcp-acp schema config' lists every field), "
        "then run 'mcp-acp config validate' to see them all"
    )


def test_config_validate_lists_the_problems_of_every_plugin_section(
    run_cli: Run, config_path: Path
) -> None:
    run_cli(*INIT, check=True)
    data = json.loads(config_path.read_text())
    data["plugins"]["allow"] = ["example-posture"]
    data["identity"]["config"] = {"subject": "alice"}
    data["posture"]["checks"] = [{"use": "marker-file", "config": {"pth": "/etc/x"}}]
    config_path.write_text(json.dumps(data))
    result = run_cli("config", "validate")
    assert result.returncode == 10
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4, result.stderr
    assert "identity.config.subject (plugin 'local-identity') = \"alice\": Extra" in lines[0]
    assert "posture.checks[0].config.path (plugin 'example-posture'): Field required" in lines[1]
    assert "posture.checks[0].config.pth (plugin 'example-posture') = " in lines[2]
    assert lines[3].endswith("3 problems, one per line above — fix: correct each as its line says")
    shown = run_cli("posture")
    assert shown.returncode == 10
    assert len(shown.stderr.strip().splitlines()) == 1
    assert "(and 2 more)" in shown.stderr


def test_config_validate_shows_one_problem_without_sending_you_to_itself(
    run_cli: Run, config_path: Path
) -> None:
    run_cli(*INIT, check=True)
    data = json.loads(config_path.read_text())
    data["proxy"]["approval_timeout_seconds"] = 1
    config_path.write_text(json.dumps(data))
    result = run_cli("config", "validate")
    assert result.returncode == 10
    assert result.stderr.strip() == (
        f"config error: {config_path}: proxy.approval_timeout_seconds = 1: Input should be "
        "greater than or equal to 5 — fix: correct that field ('mcp-acp schema config' "
        "lists every field)"
    )
    shown = run_cli("config", "show")
    assert shown.stderr.strip().endswith("then run 'mcp-acp config validate'")


def test_init_lists_every_problem_of_its_flags_as_nothing_is_written(
    run_cli: Run, config_path: Path
) -> None:
    """'config validate' cannot show more of what init refused: there is no file."""
    flags = ["--backend-url", "https://x.example/mcp", "--backend-timeout", "0"]
    result = run_cli("init", "--non-interactive", *flags, "--posture-interval", "0")
    assert result.returncode == 10
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith("config error: mcp-acp init flags: backend.timeout_seconds = 0.0")
    assert lines[1].startswith("config error: mcp-acp init flags: posture.interval_seconds = 0.0")
    assert lines[2] == (
        "config error: mcp-acp init flags: 2 problems, one per line above; nothing was "
        "written — fix: correct each as its line says"
    )
    one = run_cli("init", "--non-interactive", *flags)
    assert one.returncode == 10
    assert one.stderr.strip().endswith(
        "greater than 0; nothing was written — fix: correct that field ('mcp-acp schema "
        "config' lists every field)"
    )
    assert "config validate" not in result.stderr + one.stderr
    assert not config_path.exists()


def _warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


@pytest.mark.parametrize(
    ("config", "flags", "expected"),
    [
        (
            "h/fs.json",
            ["--backend-arg", "-y", "--backend-arg", "h/project"],
            "backend.args[1] {h}/project is inside mcp-acp's config directory {h}, which the "
            "proxy protects: every call on a path in it will be denied (builtin-protected-path)"
            " — fix: move the config file to a directory of its own, e.g. mcp-acp --config "
            "~/.config/mcp-acp/fs.json init …",
        ),
        (
            "h/fs.json",
            ["--backend-cwd", "h"],
            "backend.cwd {h} is mcp-acp's config directory {h}, which the proxy protects: "
            "every call on a path in it will be denied",
        ),
        (
            "h/cfg/fs.json",
            ["--backend-arg", "h"],
            "backend.args[0] {h} holds mcp-acp's config directory {h}/cfg, which the proxy "
            "protects: every call on a path in {h}/cfg will be denied, whatever else it holds",
        ),
        (
            "c/fs.json",
            ["--backend-arg", "h", "--log-dir", "h/logs"],
            "backend.args[0] {h} holds mcp-acp's audit log directory {h}/logs, which the "
            "proxy protects: every call on a path in {h}/logs will be denied, whatever else it "
            "holds (builtin-protected-path) — fix: set audit.log_dir outside it, e.g. "
            "~/.local/state/mcp-acp/log/fs (init --log-dir)",
        ),
    ],
)
def test_init_and_validate_warn_when_the_backend_works_in_a_protected_directory(
    run_cli: Run, tmp_path: Path, config: str, flags: list[str], expected: str
) -> None:
    """A config file beside the project the backend serves protects the project: every
    call is denied. init and config validate say so, and still succeed."""
    h = tmp_path / "h"
    (h / "project").mkdir(parents=True)
    (h / "cfg").mkdir()
    (tmp_path / "c").mkdir()
    flags = [str(tmp_path / f) if f.startswith("h") else f for f in flags]
    path = str(tmp_path / config)
    init = run_cli(
        "--config", path, "init", "--non-interactive", "--backend-command", "npx", *flags
    )
    assert init.returncode == 0, init.stderr
    validate = run_cli("--config", path, "config", "validate")
    assert validate.returncode == 0, validate.stderr
    for result in (init, validate):
        (warning,) = _warnings(result)
        assert warning.startswith("warning: " + expected.format(h=h)), warning


def test_a_backend_elsewhere_or_serving_home_is_not_warned_about(
    run_cli: Run, isolated_home: Path, tmp_path: Path
) -> None:
    """mcp-acp's own platform directories under a home the backend serves hold nothing
    of the user's: the calls denied there are the protection working."""
    (tmp_path / "project").mkdir()
    for backend in (str(tmp_path / "project"), str(isolated_home)):
        args = ["--backend-command", "npx", "--backend-arg", backend, "--force"]
        init = run_cli("init", "--non-interactive", *args)
        assert init.returncode == 0, init.stderr
        validate = run_cli("config", "validate")
        assert validate.returncode == 0, validate.stderr
        assert _warnings(init) == _warnings(validate) == []


def test_hostile_value_cannot_forge_extra_error_lines(run_cli: Run, config_path: Path) -> None:
    run_cli(*INIT, check=True)
    data = json.loads(config_path.read_text())
    data["approver"]["use"] = "deny\nok: everything is fine"
    config_path.write_text(json.dumps(data))
    result = run_cli("config", "validate")
    assert result.returncode == 10
    assert len(result.stderr.splitlines()) == 1
    assert "\\n" in result.stderr


@pytest.mark.parametrize("what", ["config", "policy"])
def test_schema_is_json_schema(run_cli: Run, what: str) -> None:
    document = json.loads(run_cli("schema", what, check=True).stdout)
    assert document["$schema"].startswith("https://json-schema.org/")
    assert document["type"] == "object"
    expected = {
        "config": {"backend", "identity", "plugins"},
        "policy": {"rules", "default_action"},
    }[what]
    assert expected <= set(document["properties"])


def test_plugins_table_and_allowlist(run_cli: Run) -> None:
    table = run_cli("plugins", check=True).stdout
    assert "local-identity" in table
    assert "identity_provider:local" in table
    example = next(line for line in table.splitlines() if line.startswith("example-posture"))
    assert "not allowed" in example
    listing = json.loads(
        run_cli("plugins", "--json", env={"MCP_ACP_PLUGINS": "example-posture"}, check=True).stdout
    )
    rows = {row["name"]: row for row in listing["plugins"]}
    assert rows["example-posture"]["status"] == "loaded"
    assert rows["example-posture"]["distribution"] == "mcp-acp-example-posture"
    assert set(rows["example-posture"]["registers"]) == {
        "posture_check:marker-file",
        "command:marker-file",
    }
    assert "MCP_ACP_PLUGINS" in listing["allowlist_source"]


def test_plugins_shows_each_components_summary(run_cli: Run) -> None:
    """What a plugin says of its components (``register(..., summary=...)``) is shown."""
    allowed = {"MCP_ACP_PLUGINS": "example-posture"}
    table = run_cli("plugins", env=allowed, check=True).stdout
    line = next(line for line in table.splitlines() if "posture_check:marker-file" in line[:40])
    assert "passes while a root- or user-owned marker file exists" in line
    assert line.rstrip().endswith("[example-posture]")
    jsonl = next(line for line in table.splitlines() if "audit_sink:jsonl" in line[:40])
    assert "fail closed" in jsonl
    listing = json.loads(run_cli("plugins", "--json", env=allowed, check=True).stdout)
    rows = {row["name"]: row for row in listing["plugins"]}
    summaries = rows["example-posture"]["summaries"]
    assert summaries == {
        "posture_check:marker-file": "passes while a root- or user-owned marker file exists"
    }
    assert rows["oidc"]["summaries"] == {}  # not allowed: registers nothing


def test_schema_plugin_prints_a_components_options(run_cli: Run) -> None:
    allowed = {"MCP_ACP_PLUGINS": "example-posture"}
    for name in ("marker-file", "posture_check:marker-file"):
        document = json.loads(run_cli("schema", "plugin", name, env=allowed, check=True).stdout)
        assert (
            document["title"] == "options of posture check 'marker-file' (plugin 'example-posture')"
        )
        assert document["required"] == ["path"]
        assert document["additionalProperties"] is False  # an unknown option is an error
        assert document["$schema"].startswith("https://json-schema.org/")
    builtin = json.loads(run_cli("schema", "plugin", "jsonl", check=True).stdout)
    assert set(builtin["properties"]) == {"durability", "max_file_bytes"}
    # not allowed: its components are not loaded, and the error says why it may be missing
    missing = run_cli("schema", "plugin", "marker-file")
    assert missing.returncode == 10
    assert missing.stderr.count("\n") == 1
    assert "no loaded plugin registers a component 'marker-file'" in missing.stderr
    assert "installed but not allowed" in missing.stderr
    wrong_kind = run_cli("schema", "plugin", "approver:marker-file", env=allowed)
    assert wrong_kind.returncode == 10
    assert run_cli("schema", "plugin").returncode == 2
    assert run_cli("schema", "config", "jsonl").returncode == 2


def test_plugin_command_only_when_allowed(run_cli: Run, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.write_text("")
    marker.chmod(0o600)
    denied = run_cli("marker-file", str(marker))
    assert denied.returncode == 2
    assert "No such command 'marker-file'" in denied.stderr
    allowed = run_cli("marker-file", str(marker), env={"MCP_ACP_PLUGINS": "example-posture"})
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("marker-file: pass")
    marker.unlink()
    missing = run_cli("marker-file", str(marker), env={"MCP_ACP_PLUGINS": "example-posture"})
    assert missing.returncode == 1
    assert "marker-file: fail" in missing.stdout


def test_init_without_a_terminal_asks_for_flags(run_cli: Run, config_path: Path) -> None:
    result = run_cli("init", input="")
    assert result.returncode == 10
    assert "--non-interactive" in result.stderr
    assert not config_path.exists()


def _converse(args: list[str], answers: list[tuple[str, str]], env: dict[str, str]) -> str:
    """Run the CLI on a real pseudo-terminal; answer each prompt when it appears."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(CLI), *args], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            if pending and pending[0][0].encode() in seen.rsplit(b"\n", 1)[-1]:
                os.write(master, pending.pop(0)[1].encode() + b"\r")
            if proc.poll() is not None and not ready:
                break
        proc.wait(timeout=10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen.decode(errors="replace")
    return seen.decode(errors="replace")


def test_interactive_init_on_a_terminal(isolated_home: Path, config_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(isolated_home)
    transcript = _converse(
        ["init"],
        [
            ("Backend transport", "stdio"),
            ("Backend command line", "uvx mcp-server-git --repository '/srv/my repo'"),
            ("Plugins to allow", "example-posture"),
            ("Identity provider", ""),
            ("Approver", ""),
            ("Audit log directory", str(isolated_home / "logs")),
        ],
        env,
    )
    assert f"wrote {config_path}" in transcript
    written = json.loads(config_path.read_text())
    assert written["backend"]["command"] == "uvx"
    assert written["backend"]["args"] == ["mcp-server-git", "--repository", "/srv/my repo"]
    assert written["plugins"]["allow"] == ["example-posture"]
    assert written["identity"]["use"] == "local"
    assert written["audit"]["log_dir"] == str(isolated_home / "logs")


def test_interactive_init_asks_again_for_a_command_line_it_cannot_split(
    isolated_home: Path, config_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
    env["HOME"] = str(isolated_home)
    transcript = _converse(
        ["init"],
        [
            ("Backend transport", "stdio"),
            ("Backend command line", 'npx "unterminated'),
            ("Backend command line", "   "),
            ("Backend command line", "uvx mcp-server-git"),
            ("Plugins to allow", ""),
            ("Identity provider", ""),
            ("Approver", ""),
            ("Audit log directory", str(isolated_home / "logs")),
        ],
        env,
    )
    assert "cannot be split into words: no closing quotation" in transcript
    assert "the command line is empty" in transcript
    assert "internal error" not in transcript
    written = json.loads(config_path.read_text())["backend"]
    assert (written["command"], written["args"]) == ("uvx", ["mcp-server-git"])


def test_config_export_refuses_a_path_that_is_not_utf8(run_cli: Any, tmp_path: Path) -> None:
    """A config under a directory whose name's bytes are no UTF-8 (Latin-1 ``caf\\xe9``)
    was exported as ``caf\\udce9``: valid JSON, but Claude Desktop reads another path, and
    the proxy it starts is refused with a config error it cannot show. It is refused here."""
    parent = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(parent, 0o700)
    path = Path(os.fsdecode(parent)) / "config.json"
    path.write_text(json.dumps({"backend": {"command": "x"}}))
    path.chmod(0o600)
    result = run_cli("--config", str(path), "config", "export", "--claude")
    assert result.returncode == 10
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "is not a UTF-8 name: a client's JSON config cannot name it" in line
    assert "fix: move the config (or mcp-acp) to a path whose name is UTF-8" in line


@pytest.mark.parametrize(
    ("file", "backend", "name"),
    [
        (
            "filesystem.json",
            {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/p"]},
            "filesystem",
        ),
        (
            "config.json",
            {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/p"]},
            "server-filesystem",
        ),
        (
            "config.json",
            {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory@2025.1.0"]},
            "server-memory",
        ),
        (
            "config.json",
            {"command": "uvx", "args": ["mcp-server-git==2026.1", "-r", "/r"]},
            "mcp-server-git",
        ),
        (
            "config.json",
            {"command": "/usr/bin/python3", "args": ["-u", "/srv/notes/server.py"]},
            "server",
        ),
        ("config.json", {"command": "/opt/bin/my-server", "args": ["--port", "1"]}, "my-server"),
        ("config.json", {"url": "https://mcp.example.com/mcp"}, "mcp.example.com"),
        (  # an option's URL value, with a credential in it, is no name ("build-s3cret")
            "config.json",
            {
                "command": "uvx",
                "args": ["--index-url", "https://build:s3cret@pypi.example/simple", "mcp-git"],
            },
            "mcp-git",
        ),
    ],
)
def test_config_export_names_the_server_after_the_config_file_or_the_backend(
    run_cli: Any, tmp_path: Path, file: str, backend: dict[str, Any], name: str
) -> None:
    """Two npx backends must not both be called "npx" in the client's mcpServers."""
    path = tmp_path / "c" / file
    path.parent.mkdir(mode=0o700)
    path.write_text(json.dumps({"backend": backend}))
    path.chmod(0o600)
    result = run_cli("--config", str(path), "config", "export", "--claude", check=True)
    entry = json.loads(result.stdout)["mcpServers"]
    assert list(entry) == [name]
    assert entry[name]["command"] == str(CLI.resolve())
    assert entry[name]["args"] == ["--config", str(path), "run"]
    renamed = run_cli("--config", str(path), "config", "export", "--claude", "--name", "files")
    assert list(json.loads(renamed.stdout)["mcpServers"]) == ["files"]
