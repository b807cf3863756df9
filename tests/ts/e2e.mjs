// The TypeScript SDK's own OAuth client against the quickstart: discovery, registration,
// dev login (driven like a browser), PKCE code exchange, tool calls, step-up refusal.
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
    return { client_name: "ts-sdk e2e", redirect_uris: [redirectUrl], grant_types: ["authorization_code", "refresh_token"],
             response_types: ["code"], token_endpoint_auth_method: "none", scope: "mcp:tools notes:read notes:write" };
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
let client = new Client({ name: "ts-sdk-e2e", version: "1.0.0" });
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
client = new Client({ name: "ts-sdk-e2e", version: "1.0.0" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
const who = await client.callTool({ name: "whoami", arguments: {} });
await client.callTool({ name: "add_note", arguments: { text: "from the TypeScript SDK" } });
const notes = await client.callTool({ name: "list_notes", arguments: {} });
let stepUp = "none";
try { await client.callTool({ name: "purge_all_notes", arguments: {} }); } catch (e) { stepUp = String(e.message || e); }
// The tool acting at the third party answers with a connect link (this SDK declares no URL
// elicitation); the person opens it in the same browser, signs in there (prefilled), approves.
const third = await client.callTool({ name: "third_party_profile", arguments: {} });
const link = third.content[0].text.match(/http:\/\/\S+/)[0];
const toThirdParty = await browse(link);
const tpLogin = await (await browse(toThirdParty.headers.get("location"))).text();
const tpOrigin = new URL(toThirdParty.headers.get("location")).origin;
const tpConsent = await (await browse(`${tpOrigin}/oauth/login`, form({ request: field(tpLogin, "request"), csrf: field(tpLogin, "csrf"), username: field(tpLogin, "username"), password: field(tpLogin, "password") }))).text();
const tpBack = await browse(`${tpOrigin}/oauth/consent`, form({ request: field(tpConsent, "request"), csrf: field(tpConsent, "csrf"), decision: "approve" }));
const connected = await browse(tpBack.headers.get("location"));
const again = await client.callTool({ name: "third_party_profile", arguments: {} });
console.log(JSON.stringify({ client_id: clientInfo.client_id, tools, who: who.content[0].text, notes: notes.content[0].text,
  stepUp, third: { isError: third.isError, link }, connected: connected.status, again: again.content[0].text }));
await client.close();
