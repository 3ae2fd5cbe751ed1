"""A stdio MCP server (raw newline-delimited JSON-RPC) that is hard to stop and careless
about its children, for the proxy's life-cycle tests.

The first argument is a directory: the server writes its pid to ``server.pid`` there, and
``stdin-closed`` when its input ends. The options after it:

* ``--grandchild`` — start ``sleep 1000`` that inherits stdout, as an ``sh -c`` or ``npx``
  wrapper leaves the real server holding the pipe; its pid goes to ``grandchild.pid``;
* ``--ignore-term`` — ignore SIGTERM;
* ``--note-term`` — ignore SIGTERM, but append ``SIGTERM`` to ``events`` when it comes
  (and ``EOF`` when its input ends): in the order they came;
* ``--ignore-eof`` — keep running once its input has ended.

Tools: ``echo`` (answers with its arguments), ``slow`` (answers after ``seconds``, 60 by
default), ``crash`` (exits with code 3 without answering) and ``last_words`` (answers, then
exits with code 0).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

STATE = Path(sys.argv[1])
OPTIONS = set(sys.argv[2:])
TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "slow", "crash")]
TOOLS.append({"name": "last_words", "inputSchema": {"type": "object"}})
out = threading.Lock()


def send(body: dict[str, Any]) -> None:
    with out:
        sys.stdout.write(json.dumps(body) + "\n")
        sys.stdout.flush()


def result(request_id: Any, text: str) -> dict[str, Any]:
    content = [{"type": "text", "text": text}]
    return {"jsonrpc": "2.0", "id": request_id, "result": {"content": content}}


def later(request_id: Any, seconds: float) -> None:
    time.sleep(seconds)
    send(result(request_id, "slept"))


def handle(message: dict[str, Any]) -> None:
    request_id, method = message.get("id"), message.get("method")
    if method == "initialize":
        info = {"name": "stubborn", "version": "1"}
        answer = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}}
        send({"jsonrpc": "2.0", "id": request_id, "result": {**answer, "serverInfo": info}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        name = message["params"]["name"]
        arguments = message["params"].get("arguments", {})
        if name == "crash":
            os._exit(3)
        if name == "slow":
            seconds = float(arguments.get("seconds", 60))
            threading.Thread(target=later, args=(request_id, seconds), daemon=True).start()
            return
        send(result(request_id, json.dumps(arguments)))
        if name == "last_words":
            os._exit(0)  # the answer is in the pipe; the grandchild still holds it open
    elif request_id is not None:
        send({"jsonrpc": "2.0", "id": request_id, "result": {}})


def note(event: str) -> None:
    with (STATE / "events").open("a") as events:
        events.write(event + "\n")


def main() -> None:
    if "--ignore-term" in OPTIONS:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--note-term" in OPTIONS:
        signal.signal(signal.SIGTERM, lambda signum, frame: note("SIGTERM"))
    if "--grandchild" in OPTIONS:
        child = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL)
        (STATE / "grandchild.pid").write_text(str(child.pid))
    (STATE / "server.pid").write_text(str(os.getpid()))
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        handle(message)
    (STATE / "stdin-closed").write_text("")
    if "--note-term" in OPTIONS:
        note("EOF")
    while "--ignore-eof" in OPTIONS:
        time.sleep(1)


main()
