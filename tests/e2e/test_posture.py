"""Device posture through the real ``mcp-acp run`` process, with the example plugin's
``marker-file`` check on a real file: the start-up gate, a device that loses its posture
mid-session (the file is deleted), and ``mcp-acp posture``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from proxy_helpers import CLI, Proxy, proxy_env, records


def with_marker_check(home: Path, marker: Path) -> None:
    config_file = home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["plugins"] = {"allow": ["example-posture"]}
    config["posture"] = {
        "checks": [{"use": "marker-file", "config": {"path": str(marker)}}],
        "interval_seconds": 1,
    }
    config_file.write_text(json.dumps(config))


def posture(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "posture", "--json"],
        env=proxy_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gate_refuses_an_unhealthy_device(setup: Any, isolated_home: Path, tmp_path: Path) -> None:
    _, _, log_dir, _ = setup
    with_marker_check(isolated_home, tmp_path / "enrolled")
    refused = subprocess.run(
        [str(CLI), "run"],
        stdin=subprocess.DEVNULL,
        env=proxy_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 15
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("posture error: device posture: marker-file is fail")
    assert "does not exist" in last
    failed = [r for r in records(log_dir, "auth") if r["event"] == "device_health_failed"]
    assert failed[-1]["detail"]["checks"][0]["status"] == "fail"

    result = posture(isolated_home)
    assert result.returncode == 15
    assert json.loads(result.stdout)[0]["status"] == "fail"


def test_posture_lost_mid_session_ends_it(setup: Any, isolated_home: Path, tmp_path: Path) -> None:
    _, project, log_dir, _ = setup
    marker = tmp_path / "enrolled"
    marker.write_text("enrolled\n")
    with_marker_check(isolated_home, marker)
    result = posture(isolated_home)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"check": "marker-file", "status": "pass", "detail": f"{marker} present"}
    ]

    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    try:
        proxy.initialize()
        read = {"name": "read_text_file", "arguments": {"path": str(project / "notes.md")}}
        assert "result" in proxy.call("tools/call", read)
        marker.unlink()  # the device falls out of compliance
        assert proxy.proc.wait(timeout=30) == 15
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
        proxy.close()
    events = [r["event"] for r in records(log_dir, "auth")]
    assert events.index("device_health_passed") < events.index("device_health_failed")
    shutdown = json.loads((log_dir / "shutdowns.jsonl").read_text().splitlines()[-1])
    assert shutdown["failure_class"] == "posture"
    assert shutdown["exit_code"] == 15
