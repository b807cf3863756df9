// The TypeScript SDK v2 client's machine authentication (@modelcontextprotocol/client
// PrivateKeyJwtProvider): client_credentials with a private_key_jwt assertion, discovered from
// the MCP server's 401, then tool calls with the token.
//
//   node machine.mjs <mcpUrl> <clientId> <privateKeyPemFile>
//
// Prints one JSON report line on stdout; exits 1 on failure (the report then carries `fatal`).
import { readFileSync } from "node:fs";
import { Client, PrivateKeyJwtProvider, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [mcpUrl, clientId, keyFile] = process.argv.slice(2);
const report = {};
try {
  const provider = new PrivateKeyJwtProvider({
    clientId,
    privateKey: readFileSync(keyFile, "utf8"),
    algorithm: "ES256",
  });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
  const client = new Client({ name: "machine", version: "1.0.0" }, { capabilities: {} });
  await client.connect(transport);
  report.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  const text = (r) => r.content?.map((c) => c.text ?? "").join("\n");
  report.added = text(await client.callTool({ name: "add_note", arguments: { text: "written by a machine" } }));
  report.whoami = text(await client.callTool({ name: "whoami", arguments: {} }));
  report.scope = provider.tokens()?.scope ?? null;
  await client.close();
  console.log(JSON.stringify(report));
} catch (e) {
  report.fatal = String(e?.stack ?? e);
  console.log(JSON.stringify(report));
  process.exit(1);
}
