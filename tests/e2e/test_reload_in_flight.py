"""SIGHUP with a valid and then an invalid policy while requests are in flight: calls already
forwarded are answered, calls sent during a reload are answered, the new policy decides once
it is loaded, and after the invalid file the last-known-good one still decides."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from typing import Any

from proxy_helpers import DENIED, Proxy, configure, decisions, proxy_env, wait_for_event

SLOW = "trigger-long-running-operation"
FIRST = {
    "version": "1",
    "rules": [
        {"id": "slow-and-echo", "effect": "allow", "conditions": {"tool_name": [SLOW, "echo"]}},
    ],
}
SECOND = {
    "version": "1",
    "rules": [
        {"id": "echo-only", "effect": "allow", "conditions": {"tool_name": "echo"}},
        {"id": "no-slow", "effect": "deny", "conditions": {"tool_name": SLOW}},
    ],
}


def read_until(proxy: Proxy, done: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        proxy.set_aside.append(proxy.recv(timeout=max(0.0, deadline - time.monotonic())))


def read_available(proxy: Proxy) -> None:
    while True:
        try:
            proxy.set_aside.append(json.loads(proxy.lines.get_nowait()))
        except Empty:
            return


def progress(proxy: Proxy) -> list[dict[str, Any]]:
    return [m for m in proxy.set_aside if m.get("method") == "notifications/progress"]


def answered(proxy: Proxy, request_id: int) -> bool:
    return any(m.get("id") == request_id and "method" not in m for m in proxy.set_aside)


def test_reloads_while_requests_are_in_flight(everything: Path, isolated_home: Path) -> None:
    log_dir = configure(isolated_home, "node", [str(everything), "stdio"], FIRST)
    policy = isolated_home / ".config" / "mcp-acp" / "policy.json"
    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    proxy.initialize()

    def slow() -> int:
        # progress every 0.5 s for 3 s: still running at the backend through both reloads,
        # which take well under a second
        arguments = {"duration": 3, "steps": 6}
        params: dict[str, Any] = {"name": SLOW, "arguments": arguments}
        params["_meta"] = {"progressToken": f"p{proxy.next_id + 1}"}
        return proxy.request("tools/call", params)

    def echo(text: str) -> int:
        return proxy.request("tools/call", {"name": "echo", "arguments": {"message": text}})

    in_flight = [slow() for _ in range(3)]
    started = {f"p{i}" for i in in_flight}
    read_until(  # each one is running at the backend: its first progress notification came
        proxy,
        lambda: started <= {m["params"]["progressToken"] for m in progress(proxy)},
    )

    policy.write_text(json.dumps(SECOND))
    proxy.proc.send_signal(signal.SIGHUP)
    during_first = [echo(f"during reload {n}") for n in range(5)]
    reloaded = wait_for_event(log_dir, "system", "policy_reloaded")
    refused = proxy.answer(slow())
    assert refused["error"]["code"] == DENIED
    assert "denied by rule no-slow" in refused["error"]["message"]

    policy.write_text("{not json")
    proxy.proc.send_signal(signal.SIGHUP)
    during_second = [echo(f"during failed reload {n}") for n in range(5)]
    failed = wait_for_event(log_dir, "system", "policy_reload_failed")
    assert failed["detail"]["errors"]
    assert failed["detail"]["policy_id"] == reloaded["detail"]["policy_id"]  # last-known-good
    still = proxy.answer(slow())
    assert "denied by rule no-slow" in still["error"]["message"]
    assert "result" in proxy.answer(echo("after"))

    read_available(proxy)
    assert not any(answered(proxy, i) for i in in_flight), "finished before the reloads"
    for request_id in in_flight:  # forwarded under the first policy: answered in full
        text = proxy.answer(request_id, timeout=15)["result"]["content"][0]["text"]
        assert text.startswith("Long running operation completed")
    for n, request_id in enumerate(during_first):
        assert proxy.answer(request_id)["result"]["content"][0]["text"] == (
            f"Echo: during reload {n}"
        )
    for request_id in during_second:
        assert "result" in proxy.answer(request_id)

    assert proxy.close() == 0
    read_available(proxy)
    assert not [m for m in proxy.set_aside if "id" in m], "an answer came twice"

    policy_of = {r["request_id"]: r["policy_id"] for r in decisions(log_dir)}
    first_id = policy_of[str(in_flight[0])]
    assert {policy_of[str(i)] for i in in_flight} == {first_id}
    assert first_id != reloaded["detail"]["policy_id"]
    assert policy_of[str(refused["id"])] == reloaded["detail"]["policy_id"]
    assert policy_of[str(still["id"])] == reloaded["detail"]["policy_id"]
