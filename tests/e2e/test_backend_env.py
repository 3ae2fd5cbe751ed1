"""What a stdio backend inherits from the real ``mcp-acp run``: its environment, minus the
secrets mcp-acp was given. With the ``encrypted-file`` token storage reading its passphrase
from a variable, that variable must not reach the backend — or the backend could decrypt
the token file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import CANARIES
from proxy_helpers import E2E, Proxy, configure, proxy_env, records

ENVIRONMENT_SERVER = E2E / "peers" / "environment_server.py"


def test_the_token_storage_passphrase_does_not_reach_the_backend(
    isolated_home: Path, tmp_path: Path
) -> None:
    seen = tmp_path / "env.json"
    backend_args = [str(ENVIRONMENT_SERVER), str(seen), str(tmp_path / "received.jsonl")]
    log_dir = configure(isolated_home, sys.executable, backend_args, {"version": "1", "rules": []})
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["token_storage"] = {
        "use": "encrypted-file",
        "config": {"passphrase_env": "TOKEN_STORAGE_PASSPHRASE"},
    }
    config_file.write_text(json.dumps(config))
    env = proxy_env(isolated_home)
    env["TOKEN_STORAGE_PASSPHRASE"] = CANARIES[0].decode()
    env["UNRELATED_SETTING"] = "passes"

    proxy = Proxy(isolated_home, env)
    try:
        proxy.initialize()  # answered: the backend wrote its environment before reading
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.close()

    backend_env = json.loads(seen.read_text())
    assert "TOKEN_STORAGE_PASSPHRASE" not in backend_env
    assert backend_env["UNRELATED_SETTING"] == "passes"
    assert backend_env["HOME"] == str(isolated_home)
    started = next(r for r in records(log_dir, "system") if r["event"] == "backend_started")
    assert started["detail"]["withheld_env"] == ["TOKEN_STORAGE_PASSPHRASE"]
