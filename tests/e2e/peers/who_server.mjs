// A stdio MCP server on the MCP TypeScript SDK (the handshake era): one tool, `echo`,
// which answers with the name of the client the server serves the call as — what the
// `initialize` it took named (`getClientVersion()`), whatever the request says.
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const server = new Server({ name: "who", version: "1" }, { capabilities: { tools: {} } });
server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: [{ name: "echo", inputSchema: { type: "object" } }],
}));
server.setRequestHandler(CallToolRequestSchema, async () => ({
  content: [{ type: "text", text: "served-as=" + (server.getClientVersion()?.name ?? "none") }],
}));
await server.connect(new StdioServerTransport());
