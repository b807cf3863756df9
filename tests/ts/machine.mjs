// The TypeScript SDK v2 client's machine authentication (@modelcontextprotocol/client
// PrivateKeyJwtProvider): client_credentials with a private_key_jwt assertion, discovered from
// the MCP server's 401, then tool calls with the token.
//
//   node machine.mjs <mcpUrl> <clientId> <privateKeyPemFile> [dpop]
//
// With `dpop`, the provider also holds a DpopSession (ES256): its token requests and MCP
// requests carry DPoP proofs, and the token it gets is bound to that key.
// Prints one JSON report line on stdout; exits 1 on failure (the report then carries `fatal`).
import { readFileSync } from "node:fs";
import { Client, DpopSession, PrivateKeyJwtProvider, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [mcpUrl, clientId, keyFile, mode] = process.argv.slice(2);
const report = {};
try {
  const options = { clientId, privateKey: readFileSync(keyFile, "utf8"), algorithm: "ES256" };
  let provider;
  if (mode === "dpop") {
    const session = await DpopSession.create();
    report.thumbprint = session.thumbprint;
    class DpopMachine extends PrivateKeyJwtProvider {
      dpop() { return session; }
    }
    provider = new DpopMachine(options);
  } else {
    provider = new PrivateKeyJwtProvider(options);
  }
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
  const client = new Client({ name: "machine", version: "1.0.0" }, { capabilities: {} });
  await client.connect(transport);
  report.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  const text = (r) => r.content?.map((c) => c.text ?? "").join("\n");
  report.added = text(await client.callTool({ name: "add_note", arguments: { text: "written by a machine" } }));
  report.whoami = text(await client.callTool({ name: "whoami", arguments: {} }));
  report.scope = provider.tokens()?.scope ?? null;
  report.tokenType = provider.tokens()?.token_type ?? null;
  const token = provider.tokens()?.access_token;
  if (token) report.cnf = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()).cnf ?? null;
  await client.close();
  console.log(JSON.stringify(report));
} catch (e) {
  report.fatal = String(e?.stack ?? e);
  console.log(JSON.stringify(report));
  process.exit(1);
}
