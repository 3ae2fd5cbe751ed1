"""A stdio MCP server that shows what reached it and the environment it was started with,
standard library only (it starts at once).

It writes the environment it was started with, as JSON, to the file named by the first
argument before it reads anything; then it appends every line it receives to the file
named by the second, and answers every request with an empty result (``initialize`` with
a minimal one). A test that has had an answer knows both files are written up to there.
"""

import json
import os
import sys

with open(sys.argv[1], "w") as env_file:
    json.dump(dict(os.environ), env_file)

with open(sys.argv[2], "a") as received:
    for line in sys.stdin:
        received.write(line)
        received.flush()
        message = json.loads(line)
        if "id" not in message or "method" not in message:
            continue
        result = {}
        if message["method"] == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "recording-server", "version": "1"},
            }
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}))
        sys.stdout.write("\n")
        sys.stdout.flush()
