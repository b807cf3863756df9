// The TypeScript SDK's own OAuth client against the gateway example: the 401 of one service
// behind the gateway, discovery of that service's metadata, registration and sign-in at the
// gateway's authorization server, then tools of the backend, called through the gateway.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { browse, field, form } from "./browser.mjs";

const mcpUrl = process.argv[2];
const redirectUrl = "http://127.0.0.1:4567/callback";
let authorizationUrl, codeVerifier, clientInfo, tokens;
const provider = {
  get redirectUrl() { return redirectUrl; },
  get clientMetadata() {
    return { client_name: "ts-sdk gateway e2e", redirect_uris: [redirectUrl], grant_types: ["authorization_code", "refresh_token"],
             response_types: ["code"], token_endpoint_auth_method: "none" };
  },
  clientInformation() { return clientInfo; },
  saveClientInformation(info) { clientInfo = info; },
  tokens() { return tokens; },
  saveTokens(t) { tokens = t; },
  redirectToAuthorization(url) { authorizationUrl = url; },
  saveCodeVerifier(v) { codeVerifier = v; },
  codeVerifier() { return codeVerifier; },
};

let transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
let client = new Client({ name: "ts-sdk-gateway", version: "1.0.0" });
try {
  await client.connect(transport);
  throw new Error("expected the 401 to start authorization");
} catch (e) {
  if (!(e instanceof UnauthorizedError)) throw e;
}
const base = new URL(mcpUrl).origin;
const login = await (await browse(authorizationUrl.toString())).text();
const consent = await (await browse(`${base}/oauth/login`, form({ request: field(login, "request"), csrf: field(login, "csrf"), username: field(login, "username"), password: field(login, "password") }))).text();
const back = await browse(`${base}/oauth/consent`, form({ request: field(consent, "request"), csrf: field(consent, "csrf"), decision: "approve" }));
const location = new URL(back.headers.get("location"));
if (location.searchParams.get("iss") !== base) throw new Error("iss missing or wrong: " + location);
await transport.finishAuth(location.searchParams.get("code"));

transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
client = new Client({ name: "ts-sdk-gateway", version: "1.0.0" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
const who = await client.callTool({ name: "whoami", arguments: {} });
await client.callTool({ name: "add_note", arguments: { text: "through the gateway" } });
const notes = await client.callTool({ name: "list_notes", arguments: {} });
let denied = "none";
try { await client.callTool({ name: "third_party_profile", arguments: {} }); } catch (e) { denied = String(e.message || e); }
console.log(JSON.stringify({ authorization: authorizationUrl.toString(), scope: tokens.scope, tools, who: who.content[0].text,
  notes: notes.content[0].text, denied, sessionId: transport.sessionId ?? null }));
await client.close();
