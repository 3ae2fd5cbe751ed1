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
        step("Validate it, every plugin section included", "config", "validate", env=env)
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
