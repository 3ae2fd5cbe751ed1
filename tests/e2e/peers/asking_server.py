"""A 2026-07-28 server on the ``mcp`` SDK whose tool asks the client to sample.

In that era a server cannot send the client a request: the tool answers with an
``InputRequiredResult`` that carries the ``sampling/createMessage`` request, and the client
retries the call with the answer. Each round is appended to the file named by the first
argument, so a test can see what reached the server.
"""

import sys
from pathlib import Path

import mcp_types as types
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

ROUNDS = Path(sys.argv[1])
server = MCPServer("asking-server")


@server.tool(name="summarise", structured_output=False)
async def summarise(text: str, ctx: Context) -> str | types.InputRequiredResult:
    answers = ctx.input_responses
    if not answers:
        with ROUNDS.open("a") as rounds:
            rounds.write("asked\n")
        question = types.SamplingMessage(
            role="user", content=types.TextContent(type="text", text=f"summarise: {text}")
        )
        sampling = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(messages=[question], max_tokens=20)
        )
        return types.InputRequiredResult(input_requests={"llm": sampling})
    with ROUNDS.open("a") as rounds:
        rounds.write("answered\n")
    answer = answers["llm"]
    assert isinstance(answer, types.CreateMessageResult)
    assert isinstance(answer.content, types.TextContent)
    return f"summary: {answer.content.text}"


server.run()
