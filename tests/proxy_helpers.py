"""Helpers for end-to-end proxy tests: the real ``mcp-acp run`` process, driven line by line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from queue import Empty, Queue
from typing import Any

E2E = Path(__file__).parent / "e2e"
CLI = Path(sys.executable).parent / "mcp-acp"
FILESYSTEM = E2E / "node_modules" / "@modelcontextprotocol" / "server-filesystem" / "dist"
DENIED = -32003


class Proxy:
    """The real ``mcp-acp run`` process, driven line by line."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.stderr = (home / "proxy-stderr.txt").open("w")
        self.proc = subprocess.Popen(
            [str(CLI), "run"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        self.lines: Queue[bytes] = Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.next_id = 1

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, body: dict[str, Any]) -> None:
        self.send_raw(json.dumps(body).encode() + b"\n")

    def recv(self, timeout: float = 30) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=timeout))  # type: ignore[no-any-return]
        except Empty:
            raise AssertionError(
                "no answer from the proxy; stderr: " + (self.home / "proxy-stderr.txt").read_text()
            ) from None

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            body["params"] = params
        self.send(body)
        answer = self.recv()
        assert answer["id"] == self.next_id
        return answer

    def initialize(self) -> dict[str, Any]:
        answer = self.call(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "1"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def close(self) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        code = self.proc.wait(timeout=30)
        self.stderr.close()
        return code


def records(log_dir: Path, stream: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (log_dir / f"{stream}.jsonl").read_text().splitlines()]
