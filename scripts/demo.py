"""Walk through what mcp-acp does today, with the real CLI, in a throw-away home directory.

Run it with ``nox -s demo`` (the README's first command). Each step prints the command and
its output, and the script stops with an error if a step does not end as expected.
(When the proxy lands, ``mcp-acp demo`` replaces this walk-through.)
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

CLI = str(Path(sys.executable).parent / "mcp-acp")


def step(title: str, *args: str, expect: int = 0, env: dict[str, str], show: bool = True) -> str:
    print(f"\n## {title}\n$ mcp-acp {shlex.join(args)}", flush=True)
    result = subprocess.run([CLI, *args], env=env, capture_output=True, text=True)
    output = (result.stdout + result.stderr).rstrip()
    print(output if show else f"({len(output.splitlines())} lines)")
    if result.returncode != expect:
        sys.exit(f"demo: expected exit {expect}, got {result.returncode}")
    print(f"(exit {result.returncode})")
    return result.stdout


def decide(title: str, expected: str, *args: str, env: dict[str, str]) -> None:
    """A ``policy explain --json`` step whose effect must be ``expected``."""
    decision = json.loads(step(title, "policy", "explain", *args, "--json", env=env))
    if decision["effect"] != expected:
        sys.exit(f"demo: expected {expected}, the policy said {decision['effect']}")


RECORDER = """
import asyncio, sys
from pathlib import Path
from mcp_acp.audit.events import DecisionEvent
from mcp_acp.config import resolve_config_path
from mcp_acp.models import Provenance, Subject
from mcp_acp.request import build_decision_request
from mcp_acp.runtime import load_runtime
from mcp_acp.tools import ToolRegistry

async def main(project):
    runtime = load_runtime(resolve_config_path())
    engine = runtime.build("policy")
    trail = runtime.audit_trail(runtime.shutdown_coordinator(session_id="demo"))
    await trail.start()
    subject = Subject(subject_id="alice", provenance=Provenance.CONFIG)
    for number, (tool, path) in enumerate([("read_file", "notes.md"),
                                           ("read_file", ".ssh/id_ed25519"),
                                           ("write_file", "notes.md")], start=1):
        request = build_decision_request(
            method="tools/call", params={"name": tool, "arguments": {"path": f"{project}/{path}"}},
            subject=subject, registry=ToolRegistry.default(), backend_id="fs",
            session_id="demo", request_id=str(number))
        decision = engine.decide(request)
        await trail.record(DecisionEvent.of(request, decision))  # written before enforcing
    await trail.close()

asyncio.run(main(sys.argv[1]))
"""


def record_decisions(home: Path, project: Path, env: dict[str, str]) -> None:
    """Use the library as a proxy would: decide three requests, record each decision."""
    print("\n## The library: decide three requests and record them, write-ahead")
    subprocess.run([sys.executable, "-c", RECORDER, str(project)], env=env, check=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mcp-acp-demo-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_ACP_", "XDG_"))}
        env["HOME"] = str(home)
        marker = home / "mdm-enrolled"
        marker.write_text("enrolled\n")
        marker.chmod(0o600)

        step(
            "Installed plugins: built-ins load, installed ones only when allowed",
            "plugins",
            env=env,
        )
        step(
            "Create a config from flags (no prompts)",
            "init",
            "--non-interactive",
            "--backend-command",
            "npx",
            "--backend-arg",
            "-y",
            "--backend-arg",
            "@modelcontextprotocol/server-filesystem",
            "--backend-arg",
            str(home / "project"),
            "--plugin",
            "example-posture",
            "--posture-check",
            json.dumps({"path": str(marker)}).join(("marker-file=", "")),
            env=env,
        )
        step(
            "Validate it, every plugin section and the starter policy included",
            "config",
            "validate",
            env=env,
        )
        project = home / "project"
        project.mkdir()
        (project / "notes.md").write_text("hello")
        policy = home / ".config" / "mcp-acp" / "policy.json"
        policy.write_text(
            json.dumps(
                {
                    "version": "1",
                    "default_action": "deny",
                    "rules": [
                        {
                            "id": "deny-secrets",
                            "effect": "deny",
                            "conditions": {"path_pattern": ["**/.ssh/**", "**/*.pem", "**/.env"]},
                        },
                        {
                            "id": "read-project",
                            "effect": "allow",
                            "conditions": {"operations": "read", "path_pattern": f"{project}/**"},
                        },
                        {
                            "id": "ask-project-writes",
                            "effect": "ask",
                            "conditions": {
                                "operations": ["write"],
                                "path_pattern": f"{project}/**",
                            },
                        },
                    ],
                },
                indent=2,
            )
        )
        step("Scope the policy to the project, then validate it", "policy", "validate", env=env)
        step(
            "Policy: a read inside the project is allowed (with the trace of every rule)",
            "policy",
            "explain",
            "--tool",
            "read_file",
            "--arg",
            f"path={project}/notes.md",
            env=env,
        )
        decide(
            "Policy: a key is denied; the reason names the rule and the pattern",
            "deny",
            "--tool",
            "read_file",
            "--arg",
            f"path={project}/.ssh/id_ed25519",
            env=env,
        )
        decide(
            "Policy: a write asks a human",
            "ask",
            "--tool",
            "write_file",
            "--arg",
            f"path={project}/notes.md",
            env=env,
        )
        (project / "escape").symlink_to("/etc")
        decide(
            "Policy: a symlink out of the tree is followed before deciding",
            "deny",
            "--tool",
            "read_file",
            "--arg",
            f"path={project}/escape/shadow",
            env=env,
        )
        decide(
            "Policy: '..' is never guessed",
            "deny",
            "--tool",
            "read_file",
            "--arg",
            f"path={project}/../.bashrc",
            env=env,
        )
        examples = Path(__file__).resolve().parent.parent / "examples" / "policies"
        step(
            "Golden cases for the filesystem cookbook policy",
            "policy",
            "test",
            str(examples / "filesystem.cases.json"),
            "--policy",
            str(examples / "filesystem.json"),
            env=env,
        )
        record_decisions(home, project, env)
        step(
            "The audit trail: decisions in readable columns",
            "logs",
            "show",
            "--stream",
            "decisions",
            env=env,
        )
        step("The hash chain verifies", "audit", "verify", env=env)
        decisions = home / ".local" / "state" / "mcp-acp" / "log" / "decisions.jsonl"
        lines = decisions.read_bytes().splitlines(keepends=True)
        lines[2] = lines[2].replace(b'"effect":"deny"', b'"effect":"allow"')
        decisions.write_bytes(b"".join(lines))
        step(
            "Someone edits a decision: verify names the line, exit 13",
            "audit",
            "verify",
            "--stream",
            "decisions",
            expect=13,
            env=env,
        )
        step(
            "A plugin's own command (added through register_commands)",
            "marker-file",
            str(marker),
            env=env,
        )
        marker.unlink()
        step(
            "The same check once the device loses its marker",
            "marker-file",
            str(marker),
            expect=1,
            env=env,
        )

        config = home / ".config" / "mcp-acp" / "config.json"
        data = json.loads(config.read_text())
        data["posture"]["checks"][0]["config"]["path"] = "relative/path"
        config.write_text(json.dumps(data, indent=2))
        before = config.read_bytes()
        step(
            "A broken plugin option: one line naming the field and the plugin, exit 10",
            "config",
            "validate",
            expect=10,
            env=env,
        )
        if config.read_bytes() != before:
            sys.exit("demo: the config file changed")
        schema = json.loads(
            step(
                "JSON Schema for policy files (first keys)", "schema", "policy", env=env, show=False
            )
        )
        print("policy schema properties:", ", ".join(schema["properties"]))
        print("\ndemo: all steps ended as expected")


if __name__ == "__main__":
    main()
