// The TypeScript SDK v2 client (@modelcontextprotocol/client) against the quickstart: its OAuth
// client (discovery from the 401, registration, PKCE, the iss check), its SEP-2350 step-up on a
// 403 insufficient_scope, and on protocol revision 2026-07-28 its input_required handling with a
// URL-mode elicitation handler, for the ATAG connect flow. The person's part (login, consent, the
// third party) is played by a cookie-keeping "browser".
//
//   node e2e-v2.mjs <mcpUrl> <scenario> [password]
//
// Prints one JSON report line on stdout (diagnostics on stderr); exits 1 on an unexpected failure
// (then the report carries `fatal`). Scenarios: stepup-demo, stepup-reader, stepup-decline,
// atag-elicitation, atag-no-elicitation, atag-decline, atag-cancel.
import { Client, StreamableHTTPClientTransport, UnauthorizedError } from "@modelcontextprotocol/client";
import { browse, field, form } from "./browser.mjs";

const [mcpUrl, scenario, password = "demo-password"] = process.argv.slice(2);
const base = new URL(mcpUrl).origin;
const redirectUrl = "http://127.0.0.1:4567/callback";
const report = { scenario, rounds: [] };
const log = (...a) => console.error("[e2e-v2]", ...a);
const describe = (e) => ({ error: String(e?.message ?? e), errorCode: e?.code ?? null });
const text = (result) => result.content?.map((c) => c.text ?? "").join("\n");

// The SDK's OAuth client provider, in memory. redirectToAuthorization only records the URL: the
// SDK then throws UnauthorizedError and the "person" (authorize() below) takes over.
let pendingAuthorization;
const store = {};
const provider = {
  get redirectUrl() { return redirectUrl; },
  get clientMetadata() {
    return { client_name: "ts-sdk v2 e2e", redirect_uris: [redirectUrl], grant_types: ["authorization_code", "refresh_token"],
             response_types: ["code"], token_endpoint_auth_method: "none" };
  },
  clientInformation: () => store.client,
  saveClientInformation: (info) => { store.client = info; },
  tokens: () => store.tokens,
  saveTokens: (tokens) => { store.tokens = tokens; },
  redirectToAuthorization: (url) => { pendingAuthorization = url; },
  saveCodeVerifier: (v) => { store.verifier = v; },
  codeVerifier: () => store.verifier,
  saveDiscoveryState: (s) => { store.discovery = s; },
  discoveryState: () => store.discovery,
};


// The person at an authorization server: follows redirects, signs in on a login page, answers a
// consent page with `decision`, until a redirect goes to `stopAt`. Reports what was shown.
async function walk(url, { stopAt, username = "demo", decision = "approve" }) {
  const seen = { login: false, consent: false, consentItems: [], newScopes: [] };
  let init;
  for (let step = 0; step < 10; step++) {
    const res = await browse(url, init);
    const origin = new URL(url).origin;
    if (res.status >= 300 && res.status < 400) {
      const next = new URL(res.headers.get("location"), url).toString();
      if (next.startsWith(stopAt)) return { ...seen, location: new URL(next) };
      [url, init] = [next, undefined];
      continue;
    }
    const html = await res.text();
    // oidc-provider's dev pages (an external identity provider): any login name signs in.
    const action = html.match(/action="([^"]+)"/)?.[1];
    if (html.includes('name="prompt" value="login"')) {
      seen.login = true;
      [url, init] = [action, form({ prompt: "login", login: username, password })];
    } else if (html.includes('name="prompt" value="consent"')) {
      seen.consent = true;
      [url, init] = [action, form({ prompt: "consent" })];
    } else if (html.includes('name="password"')) {
      if (seen.login) throw new Error(`sign-in as ${username} refused at ${origin} (${res.status}): ${html.match(/color:#b00">([^<]*)/)?.[1]}`);
      seen.login = true;
      [url, init] = [`${origin}/oauth/login`, form({ request: field(html, "request"), csrf: field(html, "csrf"), username, password })];
    } else if (res.status === 200 && html.includes('name="decision"')) {
      seen.consent = true;
      // The scopes are list items with the scope in <code>; new ones carry <span class="new">new</span>.
      seen.consentItems = (html.match(/<li>[\s\S]*?<\/li>/g) ?? []).filter((li) => li.includes("<code>"));
      seen.newScopes = seen.consentItems.filter((li) => li.includes('class="new"')).map((li) => li.match(/<code>([^<]*)<\/code>/)[1]);
      [url, init] = [`${origin}/oauth/consent`, form({ request: field(html, "request"), csrf: field(html, "csrf"), decision })];
    } else {
      throw new Error(`unexpected page at ${url}: ${res.status} ${html.slice(0, 300)}`);
    }
  }
  throw new Error(`no redirect to ${stopAt} after 10 steps`);
}

// One authorization round the SDK started: the person signs in (if asked) and answers consent,
// then the app hands the callback's query to transport.finishAuth (code + iss, or error).
async function authorize(transport, { username, decision }) {
  const url = pendingAuthorization;
  pendingAuthorization = undefined;
  const page = await walk(url.toString(), { stopAt: redirectUrl, username, decision });
  const params = page.location.searchParams;
  const round = { scope: url.searchParams.get("scope"), login: page.login, consent: page.consent, consentItems: page.consentItems,
                  newScopes: page.newScopes, decision: page.consent ? decision : null, error: params.get("error"), tokenScope: null };
  try {
    await transport.finishAuth(params);
    round.tokenScope = store.tokens?.scope ?? null;
  } catch (e) {
    round.finishAuth = describe(e);
  }
  report.rounds.push(round);
  log("authorization round", JSON.stringify(round));
  return round;
}

// The SDK hides a 403 behind its step-up: keep the last challenge for the report.
async function watch403(url, init) {
  const res = await fetch(url, init);
  if (res.status === 403) report.challenge403 = res.headers.get("www-authenticate");
  return res;
}

// A connected client, signing in first when the SDK asks for it (the 401 on initialize, or on
// the server/discover probe with 2026-07-28).
async function connect({ username = "demo", options = {}, onElicit } = {}) {
  for (let attempt = 0; ; attempt++) {
    const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: watch403 });
    const client = new Client({ name: "ts-sdk-v2-e2e", version: "1.0.0" }, options);
    if (onElicit) client.setRequestHandler("elicitation/create", onElicit);
    try {
      await client.connect(transport);
      return { client, transport };
    } catch (e) {
      if (!(e instanceof UnauthorizedError) || !pendingAuthorization || attempt > 0) throw e;
      const round = await authorize(transport, { username, decision: "approve" });
      if (!round.tokenScope) throw new Error(`sign-in failed: ${JSON.stringify(round)}`);
    }
  }
}

// Calls a tool; each time the SDK starts an authorization (step-up: UnauthorizedError after the
// 403 insufficient_scope), the person takes part and the call is retried, at most `cap` times.
async function callTool(client, transport, name, { username, decision = "approve", cap = 1 } = {}) {
  let authorizations = 0;
  for (;;) {
    try {
      const result = await client.callTool({ name, arguments: {} });
      return { ok: true, isError: result.isError === true, text: text(result), authorizations };
    } catch (e) {
      if (!(e instanceof UnauthorizedError) || !pendingAuthorization) return { ok: false, ...describe(e), authorizations };
      authorizations++;
      if (authorizations > cap) {
        report.pendingScope = pendingAuthorization.searchParams.get("scope");
        return { ok: false, ...describe(e), authorizations, capped: true };
      }
      const round = await authorize(transport, { username, decision });
      if (!round.tokenScope) return { ok: false, ...(round.finishAuth ?? { error: "no token" }), authorizations };
    }
  }
}

// The third party's part of the ATAG flow, in the same browser: the connect link on our origin
// redirects there; sign in, approve; its redirect to our /atag/callback must answer 200.
async function connectThirdParty(link) {
  const page = await walk(link, { stopAt: `${base}/atag/callback` });
  return (await browse(page.location.toString())).status;
}

const modern = (elicitation) => ({
  versionNegotiation: { mode: { pin: "2026-07-28" } },
  capabilities: elicitation ? { elicitation: { url: {} } } : {},
  inputRequired: { maxRounds: 3 },
});

async function stepUp({ username = "demo", decision = "approve", cap = 1 }) {
  const { client, transport } = await connect({ username });
  report.client_id = store.client.client_id;
  report.protocol = client.getNegotiatedProtocolVersion();
  report.who = text(await client.callTool({ name: "whoami", arguments: {} }));
  report.purge = await callTool(client, transport, "purge_all_notes", { username, decision, cap });
  report.tokenScope = store.tokens?.scope ?? null;
  if (decision === "deny") {
    // The old token still works, on the same client and transport.
    report.whoAfter = text(await client.callTool({ name: "whoami", arguments: {} }));
  }
  await client.close();
}

async function atag(action, elicitation = true) {
  report.elicitations = [];
  const onElicit = async (request) => {
    const { mode, url, message } = request.params;
    const prompt = { mode, url, message, action };
    report.elicitations.push(prompt);
    if (action === "accept") prompt.callback = await connectThirdParty(url);
    return { action };
  };
  const { client, transport } = await connect({ options: modern(elicitation), onElicit: elicitation ? onElicit : undefined });
  report.client_id = store.client.client_id;
  report.protocol = client.getNegotiatedProtocolVersion();
  report.result = await callTool(client, transport, "third_party_profile");
  report.handlerCalls = report.elicitations.length;
  const link = report.result.text?.match(/http:\/\/\S+/)?.[0];
  if (!elicitation && report.result.ok && link) {
    // The tool error's link, opened by the person; then the call works.
    report.link = link;
    report.callback = await connectThirdParty(link);
    report.again = await callTool(client, transport, "third_party_profile");
  }
  await client.close();
}

const scenarios = {
  "stepup-demo": () => stepUp({}),
  "stepup-reader": () => stepUp({ username: "reader", cap: 2 }),
  "stepup-decline": () => stepUp({ decision: "deny" }),
  "atag-elicitation": () => atag("accept"),
  "atag-no-elicitation": () => atag("accept", false),
  "atag-decline": () => atag("decline"),
  "atag-cancel": () => atag("cancel"),
};
if (!scenarios[scenario]) {
  console.error(`usage: node e2e-v2.mjs <mcpUrl> <${Object.keys(scenarios).join("|")}> [password]`);
  process.exit(2);
}
try {
  await scenarios[scenario]();
  console.log(JSON.stringify(report));
} catch (e) {
  console.error(e);
  console.log(JSON.stringify({ ...report, fatal: String(e?.message ?? e) }));
  process.exit(1);
}
