// The TypeScript SDK's client running the matrix scenario (tests/mcp_matrix_helpers.py).
//
// Usage: node scenario.mjs PLAN.json, where the plan names the transport ("stdio" with
// command, args and env, or "http" with url) and the steps. Prints one JSON transcript on
// stdout: what the client listed and each call's result. The SDK itself validates every
// structuredContent against the tool's outputSchema (callTool throws when it does not
// match), so a schema the SDK rejects fails the cell here, not only in Python.
import { readFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));
const transport =
  plan.transport === "http"
    ? new StreamableHTTPClientTransport(new URL(plan.url))
    : new StdioClientTransport({ command: plan.command, args: plan.args, env: plan.env, stderr: "inherit" });
const client = new Client({ name: "matrix-ts-sdk", version: "0" });
await client.connect(transport);

const text = (content) =>
  (content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("");

const transcript = {
  tools: (await client.listTools()).tools,
  resources: (await client.listResources()).resources.map((r) => r.uri),
  prompts: (await client.listPrompts()).prompts.map((p) => p.name),
  calls: [],
};
for (const step of plan.steps) {
  const result = await client.callTool({ name: step.tool, arguments: step.arguments });
  transcript.calls.push({
    tool: step.tool,
    isError: Boolean(result.isError),
    structuredContent: result.structuredContent ?? null,
    text: text(result.content),
  });
}
await client.close();
process.stdout.write(JSON.stringify(transcript));
