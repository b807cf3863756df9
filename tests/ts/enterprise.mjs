// The TypeScript SDK v2 client's cross-app access (@modelcontextprotocol/client
// CrossAppAccessProvider, the MCP enterprise-managed authorization extension): the client trades
// the user's id_token for an ID-JAG at the enterprise IdP (RFC 8693 token exchange), redeems it
// at the MCP server's authorization server (RFC 7523 jwt-bearer), and calls tools.
//
//   node enterprise.mjs <mcpUrl> <idpTokenEndpoint> <idToken> <idpClientId> <asClientId> <asClientSecret>
//
// Prints one JSON report line on stdout; exits 1 on failure (the report then carries `fatal`).
import { Client, CrossAppAccessProvider, StreamableHTTPClientTransport, requestJwtAuthorizationGrant } from "@modelcontextprotocol/client";

const [mcpUrl, idpTokenEndpoint, idToken, idpClientId, clientId, clientSecret] = process.argv.slice(2);
const report = {};
try {
  const provider = new CrossAppAccessProvider({
    clientId,
    clientSecret,
    assertion: async (ctx) => {
      report.audience = ctx.authorizationServerUrl;
      const grant = await requestJwtAuthorizationGrant({
        tokenEndpoint: idpTokenEndpoint,
        audience: ctx.authorizationServerUrl,
        resource: ctx.resourceUrl,
        idToken,
        clientId: idpClientId,
        scope: "mcp:tools notes:read notes:write",
        fetchFn: ctx.fetchFn,
      });
      return grant.jwtAuthGrant;
    },
  });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
  const client = new Client({ name: "enterprise", version: "1.0.0" }, { capabilities: {} });
  await client.connect(transport);
  const text = (r) => r.content?.map((c) => c.text ?? "").join("\n");
  report.whoami = text(await client.callTool({ name: "whoami", arguments: {} }));
  report.added = text(await client.callTool({ name: "add_note", arguments: { text: "from the enterprise" } }));
  report.scope = provider.tokens()?.scope ?? null;
  await client.close();
  console.log(JSON.stringify(report));
} catch (e) {
  report.fatal = String(e?.stack ?? e);
  console.log(JSON.stringify(report));
  process.exit(1);
}
