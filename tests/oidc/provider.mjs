// A real OpenID provider (the `oidc-provider` package) as the external IdP of the integration
// tests: `node tests/oidc/provider.mjs <port> <resource>` listens on 127.0.0.1:<port> with the
// issuer `http://127.0.0.1:<port>` and prints ONE JSON line on stdout once it listens:
//   {"issuer", "authorization_endpoint", "token_endpoint", "registration_endpoint", "jwks_uri",
//    "introspection_endpoint", "revocation_endpoint", "resource", "access_token_format",
//    "introspector": {"client_id", "client_secret"}, "ready": true}
// then runs until SIGTERM/SIGINT, or until its stdin closes when stdin is a pipe (spawn it with
// a piped stdin and kill_on_drop; a /dev/null or terminal stdin is not watched).
// Everything else it says (oidc-provider's notices and warnings, among them "Unsupported
// runtime" on Node 20) goes to stderr.
//
// - Any login name signs in (devInteractions: its built-in login and consent pages); `sub` is
//   the login name.
// - Open dynamic client registration (no initial access token); public clients
//   (`token_endpoint_auth_method: none`), web or native, with loopback http redirect URIs.
//   A client's registered `scope` is dropped, so any client may ask for any supported scope
//   later (step-up) whatever it registered with.
// - PKCE S256 required for every client.
// - Resource indicators (RFC 8707): the one resource is <resource>; it is the default when a
//   request names none; any other is refused with invalid_target. Its access tokens carry
//   aud=<resource> and the scopes `mcp:tools notes:read notes:write notes:admin` (those the
//   user consented to), as RFC 9068 `at+jwt` signed ES256, or opaque with OPAQUE=1.
// - Introspection and revocation on; the confidential client `rs-introspector` (secret below,
//   client_secret_basic) may introspect any token; a client may revoke its own tokens.
// - Refresh tokens are issued to every client registered with the refresh_token grant, not
//   only when `offline_access` was asked for.
// - Nothing calls out: every outbound fetch (jwks_uri, sector_identifier_uri, request_uri,
//   client id metadata documents) is refused.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";

import Provider, { errors } from "oidc-provider";

// oidc-provider prints its notices with console.info, on stdout: keep stdout for the one JSON line.
console.info = console.error;
console.log = console.error;

const [port, resource] = process.argv.slice(2);
if (!/^\d+$/.test(port ?? "") || !URL.canParse(resource ?? "")) {
  console.error("usage: node provider.mjs <port> <resource>");
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const opaque = process.env.OPAQUE === "1";

const MCP_SCOPES = "mcp:tools notes:read notes:write notes:admin";
const INTROSPECTOR = { client_id: "rs-introspector", client_secret: "introspector-secret-of-32-characters!!" };

// Fresh signing keys for each run: EC P-256 (ES256: the access tokens) and RSA (RS256: the
// id_tokens' default alg), each with its own kid, published at jwks_uri.
function key(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: "jwk" }), kid: `${alg.toLowerCase()}-${crypto.randomUUID().slice(0, 8)}`, alg, use: "sig" };
}
const jwks = { keys: [key("ec", { namedCurve: "P-256" }, "ES256"), key("rsa", { modulusLength: 2048 }, "RS256")] };

const sameResource = (indicator) => indicator === resource || URL.parse(indicator)?.href === new URL(resource).href;

const provider = new Provider(issuer, {
  jwks,
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  scopes: ["openid", "offline_access", ...MCP_SCOPES.split(" ")],
  clients: [
    {
      ...INTROSPECTOR,
      token_endpoint_auth_method: "client_secret_basic",
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  // The registered `scope` would otherwise be an allow-list for the client's later requests
  // (of the scopes above): drop it at registration. The validator is called for each listed
  // property, before the metadata is checked, and may change it.
  extraClientMetadata: {
    properties: ["scope"],
    validator(_ctx, key, _value, metadata) {
      if (key === "scope") delete metadata.scope;
    },
  },
  pkce: { required: () => true },
  clientBasedCORS: () => true,
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
  ttl: {
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL || 600,
    AuthorizationCode: 60,
    ClientCredentials: 600,
    IdToken: 600,
    RefreshToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  cookies: { keys: ["tower-mcp-auth-tests-cookie-key-1", "tower-mcp-auth-tests-cookie-key-2"] },
  fetch: async (url) => {
    throw new Error(`this test IdP fetches nothing (${url})`);
  },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true, initialAccessToken: false },
    introspection: {
      enabled: true,
      allowedPolicy: async (_ctx, client, token) =>
        client.clientId === INTROSPECTOR.client_id || client.clientId === token.clientId,
    },
    revocation: {
      enabled: true,
      allowedPolicy: async (_ctx, client, token) => client.clientId === token.clientId,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (!sameResource(indicator)) throw new errors.InvalidTarget();
        return {
          scope: MCP_SCOPES,
          audience: resource,
          accessTokenTTL: 600,
          ...(opaque ? { accessTokenFormat: "opaque" } : { accessTokenFormat: "jwt", jwt: { sign: { alg: "ES256" } } }),
        };
      },
    },
  },
});

provider.on("server_error", (_ctx, err) => console.error("server_error", err));

const server = http.createServer(provider.callback());
server.listen(Number(port), "127.0.0.1", () => {
  const url = (name) => provider.urlFor(name);
  process.stdout.write(
    JSON.stringify({
      issuer,
      authorization_endpoint: url("authorization"),
      token_endpoint: url("token"),
      registration_endpoint: url("registration"),
      jwks_uri: url("jwks"),
      introspection_endpoint: url("introspection"),
      revocation_endpoint: url("revocation"),
      resource,
      access_token_format: opaque ? "opaque" : "jwt",
      introspector: INTROSPECTOR,
      ready: true,
    }) + "\n",
  );
});

const stop = () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
if (fs.fstatSync(0).isFIFO()) {
  process.stdin.on("end", stop).on("error", stop).resume();
}
