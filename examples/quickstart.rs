//! The whole stack in one process: an rmcp Streamable HTTP MCP server behind the bearer, tool
//! policy and ATAG layers, with tower-mcp-auth's own authorization server beside it (in-memory
//! store, dev login), and a stand-in third-party service on the next port (a second instance
//! of our authorization server, with its own dev login) for the tool that acts there.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Environment:
//! - `PORT` (default 8080), `PUBLIC_URL` (default `http://127.0.0.1:$PORT`): the URL clients use;
//!   the MCP endpoint is `$PUBLIC_URL/mcp`, the issuer `$PUBLIC_URL`. The third party listens
//!   on `127.0.0.1:$PORT+1`.
//! - `DEMO_PASSWORD`: the password of the dev users `demo` (may hold every scope, so a
//!   step-up to `notes:admin` succeeds) and `reader` (may not hold `notes:admin`: its step-up
//!   yields a token without it); random per run when unset, printed.
//! - `ISSUER`: validate an external identity provider's tokens instead (Keycloak, Auth0, Okta,
//!   Entra ID, Cognito, any OpenID provider) and run no authorization server. Its keys are
//!   found through its discovery document unless `JWKS_URL` names them; at start-up the
//!   issuer is checked byte for byte against the provider's own. `INTROSPECTION_URL` with
//!   `INTROSPECTION_CLIENT_ID` and `INTROSPECTION_CLIENT_SECRET` accepts opaque tokens through
//!   RFC 7662 introspection (beside JWTs when `JWKS_URL` is set too, instead of them
//!   otherwise); `REQUIRE_AT_JWT=1` accepts only JWTs typed `at+jwt` (RFC 9068);
//!   `EXTRA_AUDIENCE` accepts a further `aud` (Entra ID v2 tokens name the API's application
//!   id there).
//! - `OIDC_ISSUER`, `OIDC_CLIENT_ID`, `OIDC_CLIENT_SECRET`: also let users sign in at this
//!   OpenID Connect provider (register `$PUBLIC_URL/oauth/callback/oidc` there).
//! - `GITHUB_CLIENT_ID`, `GITHUB_CLIENT_SECRET`: also let users sign in with GitHub (an OAuth
//!   App whose callback URL is `$PUBLIC_URL/oauth/callback/github`).
//! - `REDIS_URL` (built with `--features redis`): run as one replica of several behind a load
//!   balancer. Everything the authorization server, ATAG and the stand-in third party keep
//!   lives in that Redis (`redis://` or `rediss://`, with `user:password@`; keys under
//!   `REDIS_PREFIX`, default `quickstart:`); the signing keys are kept there sealed, the
//!   vault keys derived, with `SECRET_KEY` (required then: 32 random characters or more, the
//!   same on every replica, e.g. `openssl rand -base64 32`); the demo password is shared
//!   through it too. Give every replica the same `PUBLIC_URL`.
//!
//! - `METRICS=1`: Prometheus metrics at `$PUBLIC_URL/metrics` (the names are in the
//!   `tower_mcp_auth::metrics` docs).
//!
//! `--behind-gateway` serves the notes server alone, for the gateway example
//! (`examples/gateway.toml`): on `127.0.0.1:$PORT` (default 9000), no authorization server and
//! no bearer layer, the caller read from the gateway's user headers (`GatewayIdentityLayer`),
//! and every request refused that does not carry `GATEWAY_SECRET` (the same value the gateway
//! is given).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rmcp::handler::server::wrapper::Parameters;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{schemars, tool, tool_router};
use tower::ServiceBuilder;
use tower_mcp_auth::address::AddressPolicy;
use tower_mcp_auth::atag::{Atag, External, ExternalService};
use tower_mcp_auth::bearer::AuthFailureLimit;
use tower_mcp_auth::gateway::GatewayIdentityLayer;
use tower_mcp_auth::origin::OriginLayer;
use tower_mcp_auth::policy::{GroupMapping, ToolPolicy};
use tower_mcp_auth::resource::ProtectedResourceBuilder;
use tower_mcp_auth::server::{
    AuthServer, AuthServerBuilder, EncryptionKeys, EnterpriseIdp, GitHubProvider, IdJagAudience,
    OidcProvider, SigningKeys,
};
use tower_mcp_auth::validate::{
    ByFormat, IntrospectionValidator, JwksValidator, TokenValidator, discovery,
};
use tower_mcp_auth::{Auth, BearerLayer, ConfigError, ProtectedResource};

/// The scope every request needs (the baseline a client asks for first).
pub const BASE_SCOPE: &str = "mcp:tools";
/// Scopes of a typical user token in the tests (read and write, no admin).
pub const DEMO_SCOPES: &str = "mcp:tools notes:read notes:write";
/// The scope of `purge_all_notes`: a step-up, held only by members of [`ADMINS`].
pub const ADMIN_SCOPE: &str = "notes:admin";
/// The group whose members may hold [`ADMIN_SCOPE`] (`demo` is one, `reader` is not).
pub const ADMINS: &str = "admins";
/// The id of the stand-in third-party service.
pub const THIRD_PARTY: &str = "third-party";

/// A small notes server: each user sees only their own notes.
#[derive(Clone, Default)]
pub struct Notes {
    by_user: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// The third party's API (its OpenID userinfo endpoint).
    third_party_userinfo: Option<String>,
}

impl Notes {
    /// With the third party whose issuer URL is `issuer`.
    pub fn with_third_party(issuer: &str) -> Self {
        Notes {
            third_party_userinfo: Some(format!("{issuer}/oauth/userinfo")),
            ..Notes::default()
        }
    }
}

/// Arguments of `add_note`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct AddNote {
    /// The note's text.
    pub text: String,
}

#[tool_router(server_handler)]
impl Notes {
    #[tool(description = "Show who the server thinks you are: subject, client and scopes")]
    async fn whoami(&self, Auth(auth): Auth) -> String {
        format!(
            "subject={} client={} scopes={}",
            auth.subject(),
            auth.client_id().unwrap_or("-"),
            auth.scopes()
        )
    }

    #[tool(description = "Add a note to your notebook")]
    async fn add_note(
        &self,
        Auth(auth): Auth,
        Parameters(AddNote { text }): Parameters<AddNote>,
    ) -> String {
        let mut notes = self.by_user.lock().unwrap_or_else(|e| e.into_inner());
        let mine = notes.entry(auth.subject().to_owned()).or_default();
        mine.push(text);
        format!("{} notes", mine.len())
    }

    #[tool(description = "List the notes in your notebook")]
    async fn list_notes(&self, Auth(auth): Auth) -> String {
        let notes = self.by_user.lock().unwrap_or_else(|e| e.into_inner());
        notes
            .get(auth.subject())
            .map(|n| n.join("\n"))
            .unwrap_or_default()
    }

    #[tool(
        description = "Ask the third-party service who you are there (needs your account there: the first call gives you a link to connect it)"
    )]
    async fn third_party_profile(&self, External(account): External) -> String {
        let Some(userinfo) = &self.third_party_userinfo else {
            return "no third party is configured".into();
        };
        // The user's own token at the third party, injected by the ATAG layer.
        let answer = reqwest::Client::new()
            .get(userinfo)
            .bearer_auth(account.secret())
            .send()
            .await;
        match answer {
            Ok(response) => match response.json::<serde_json::Value>().await {
                Ok(me) => format!("At the third party you are {}", me["sub"]),
                Err(e) => format!("the third party answered something else: {e}"),
            },
            Err(e) => format!("the third party is unreachable: {e}"),
        }
    }

    #[tool(description = "Delete every user's notes (administrators only)")]
    async fn purge_all_notes(&self, Auth(auth): Auth) -> String {
        let mut notes = self.by_user.lock().unwrap_or_else(|e| e.into_inner());
        let count: usize = notes.values().map(Vec::len).sum();
        notes.clear();
        format!("{} purged {count} notes", auth.subject())
    }
}

/// Who may use which tool: declared beside the tools, enforced by `ToolPolicyLayer` on
/// `tools/call` (403 with a step-up challenge) and reflected in `tools/list`.
///
/// | tool | needs |
/// |---|---|
/// | `whoami` | `mcp:tools` (the default) |
/// | `list_notes` | `notes:read` |
/// | `add_note` | `notes:write` |
/// | `purge_*` | `notes:admin` |
///
/// With the `:` hierarchy, a token with `notes` may use all three `notes:*` levels.
pub fn policy() -> ToolPolicy {
    ToolPolicy::builder()
        .default_scopes([BASE_SCOPE])
        .tool("list_notes", ["notes:read"])
        .tool("add_note", ["notes:write"])
        .tool("purge_*", [ADMIN_SCOPE])
        .tool("third_party_*", [BASE_SCOPE])
        .needs_service(THIRD_PARTY, ["profile"])
        .scope_separator(":")
        .build()
        .unwrap_or_else(|e| panic!("the quickstart policy is valid: {e}"))
}

/// The whole application without a third party (the external identity provider mode): the
/// MCP endpoint at `/mcp` behind the bearer and tool policy layers, and the protected resource
/// metadata routes beside it. With no ATAG layer, `third_party_profile` is not offered.
pub fn app<V: TokenValidator>(resource: ProtectedResource, validator: V) -> axum::Router {
    let bearer = bearer(validator, &resource);
    axum::Router::new()
        .nest_service(
            "/mcp",
            ServiceBuilder::new()
                .layer(origins(&resource))
                .layer(bearer)
                .layer(policy().layer(&resource))
                .service(mcp_service(&resource, Notes::default())),
        )
        .layer(cors())
        .merge(resource.router())
}

/// The application with the ATAG layer too: tools that need the third party get the user's
/// token there, or a link to connect it.
pub fn app_with_third_party<V: TokenValidator>(
    resource: ProtectedResource,
    validator: V,
    atag: &Atag,
    third_party_issuer: &str,
) -> Result<axum::Router, tower_mcp_auth::ConfigError> {
    let bearer = bearer(validator, &resource);
    let notes = Notes::with_third_party(third_party_issuer);
    // One policy value for both layers: an ATAG layer built from it is what lets the policy
    // layer offer the tools that need the third party.
    let policy = policy();
    let atag = atag.layer(&policy)?;
    Ok(axum::Router::new()
        .nest_service(
            "/mcp",
            ServiceBuilder::new()
                .layer(origins(&resource))
                .layer(bearer)
                .layer(policy.layer(&resource))
                .layer(atag)
                .service(mcp_service(&resource, notes)),
        )
        .layer(cors())
        .merge(resource.router()))
}

/// Browser requests only from the resource's own origin, and from the loopback origins when it
/// serves on loopback (browser-based clients such as the MCP Inspector on the same machine): a
/// page elsewhere that re-points its name at this server (DNS rebinding) gets 403.
fn origins(resource: &ProtectedResource) -> OriginLayer {
    let layer = OriginLayer::new(resource);
    let loopback = url::Url::parse(resource.resource())
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|host| ["127.0.0.1", "localhost", "[::1]"].contains(&host.as_str()));
    if loopback {
        layer.allow_loopback()
    } else {
        layer
    }
}

/// The bearer layer: every request needs `mcp:tools`; a client without a token is told to ask
/// for what a typical session uses (read and write), so clients that cannot step up later
/// (some SDKs only refresh on a 403) still work; administration stays a step-up. Each client
/// address may present 100 refused tokens a minute; past that, new tokens from it wait
/// (`429`) without costing a signature check.
fn bearer<V: TokenValidator>(validator: V, resource: &ProtectedResource) -> BearerLayer<V> {
    BearerLayer::new(validator, resource.clone())
        .require_scopes([BASE_SCOPE])
        .challenge_scopes(DEMO_SCOPES.split(' '))
        .limit_auth_failures(AuthFailureLimit::new(
            AUTH_FAILURES_PER_MINUTE,
            std::time::Duration::from_secs(60),
        ))
}

/// Refused tokens each client address may present per minute.
pub const AUTH_FAILURES_PER_MINUTE: u32 = 100;

/// The rmcp Streamable HTTP service: one notebook for the process (rmcp calls the factory
/// once per session).
pub fn mcp_service(
    resource: &ProtectedResource,
    notes: Notes,
) -> StreamableHttpService<Notes, LocalSessionManager> {
    StreamableHttpService::new(
        move || Ok(notes.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_allowed_hosts(allowed_hosts(resource.resource())),
    )
}

/// The notes server alone, behind a gateway (`--behind-gateway`): the caller comes from the
/// gateway's user headers, and with `secret`, only requests carrying it are served.
pub fn behind_gateway_app(secret: Option<&str>) -> axum::Router {
    let mut identity = GatewayIdentityLayer::new();
    if let Some(secret) = secret {
        identity = identity.shared_secret(secret);
    }
    let notes = Notes::default();
    let service = StreamableHttpService::new(
        move || Ok(notes.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_allowed_hosts(allowed_hosts("http://127.0.0.1")),
    );
    axum::Router::new().nest_service(
        "/mcp",
        ServiceBuilder::new().layer(identity).service(service),
    )
}

/// The stand-in third party: another authorization server (its own issuer, users and cookie
/// names), where the MCP server is registered as the public client `quickstart-gateway`.
pub fn third_party_server(
    issuer: &str,
    mcp_public_url: &str,
    password: &str,
) -> Result<AuthServer, tower_mcp_auth::ConfigError> {
    third_party_builder(issuer, mcp_public_url, password).build()
}

fn third_party_builder(issuer: &str, mcp_public_url: &str, password: &str) -> AuthServerBuilder {
    AuthServer::builder(issuer)
        .resource(format!("{issuer}/api"))
        .scopes_supported(["profile"])
        .dev_user("demo", password)
        .dev_user("reader", password)
        .prefill_login(true)
        .public_client(
            "quickstart-gateway",
            [format!("{mcp_public_url}/atag/callback/{THIRD_PARTY}")],
            ["profile"],
        )
}

/// The third party as seen from the MCP server: an external service.
pub fn third_party_service(issuer: &str) -> ExternalService {
    ExternalService::custom(
        THIRD_PARTY,
        format!("{issuer}/oauth/authorize"),
        format!("{issuer}/oauth/token"),
        "quickstart-gateway",
        None,
    )
    .display_name("Demo Third Party")
}

/// rmcp refuses requests whose `Host` is not listed (DNS rebinding protection): list the public
/// host, and the loopback names when it is a loopback address.
fn allowed_hosts(public_url: &str) -> Vec<String> {
    let host = url::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .unwrap_or_else(|| "127.0.0.1".into());
    let mut hosts = vec![host.clone()];
    if ["127.0.0.1", "localhost", "::1"].contains(&host.as_str()) {
        hosts.extend(["127.0.0.1", "localhost", "::1"].map(String::from));
    }
    hosts
}

fn env_or(name: &str, default: impl FnOnce() -> String) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(default)
}

/// The embedded authorization server: dev login (its form prefilled with `demo`, so a person
/// signs in with one click), every client registering itself (RFC 7591), tokens for the MCP
/// endpoint only.
pub fn auth_server(
    public_url: &str,
    resource_uri: &str,
    password: &str,
) -> Result<AuthServer, tower_mcp_auth::ConfigError> {
    auth_server_builder(public_url, resource_uri, password).build()
}

/// [`auth_server`]'s builder, for adding to it.
pub fn auth_server_builder(
    public_url: &str,
    resource_uri: &str,
    password: &str,
) -> AuthServerBuilder {
    AuthServer::builder(public_url)
        .resource(resource_uri)
        // Whatever the policy can ask for, clients may request.
        .scopes_supported(policy().scopes().iter())
        // Every user may hold the read and write scopes; `notes:admin` only members of
        // `admins`. A request for more is narrowed to that (the token's `scope` says so).
        .groups(GroupMapping {
            scopes: BTreeMap::from([(ADMINS.to_owned(), vec![ADMIN_SCOPE.to_owned()])]),
            ..GroupMapping::default()
        })
        .user_scopes(DEMO_SCOPES.split(' '))
        .scope_description(BASE_SCOPE, "Use the tools of this MCP server")
        .scope_description("notes:read", "Read your notes")
        .scope_description("notes:write", "Add notes")
        .scope_description(ADMIN_SCOPE, "Delete everyone's notes (administrators)")
        .dev_user_in_groups("demo", password, [ADMINS])
        .dev_user("reader", password)
        .prefill_login(true)
        .server_name("Quickstart notes server")
}

/// The quickstart's machine client: a program (a nightly job, another service) that gets tokens
/// with `client_credentials`, proving itself with a JWT signed by its own key
/// (`private_key_jwt`), not a shared secret.
pub const MACHINE_CLIENT_ID: &str = "quickstart-machine";
/// What the machine client may be granted.
pub const MACHINE_CLIENT_SCOPES: [&str; 3] = [BASE_SCOPE, "notes:read", "notes:write"];

/// A fresh ES256 key pair for the machine client: the client (its public key registered) and
/// the private key as PKCS#8 PEM, which the quickstart prints for the program to sign with.
pub fn machine_client()
-> Result<(tower_mcp_auth::server::MachineClient, String), Box<dyn std::error::Error>> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine;
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| "cannot generate a key pair")?;
    let pkcs8 = pair
        .to_pkcs8v1()
        .map_err(|_| "cannot encode the private key")?;
    let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|line| std::str::from_utf8(line).ok())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    // The public key is the uncompressed point 0x04 ‖ x ‖ y.
    let point = pair.public_key().as_ref();
    let coordinate = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
        "x": coordinate(point.get(1..33).ok_or("short public key")?),
        "y": coordinate(point.get(33..65).ok_or("short public key")?),
    }))?;
    let client =
        tower_mcp_auth::server::MachineClient::new(MACHINE_CLIENT_ID, MACHINE_CLIENT_SCOPES)
            .key(tower_mcp_auth::validate::JwtKey::from_jwk(&jwk)?);
    Ok((client, pem))
}

/// The stand-in enterprise identity provider's application: the client that signs employees in
/// there (getting id_tokens) and trades them for ID-JAGs for this server.
pub const ENTERPRISE_APP: &str = "quickstart-enterprise-app";
/// The same application as this server knows it: the confidential client that redeems the
/// ID-JAGs (enterprise-managed authorization).
pub const ENTERPRISE_CLIENT: &str = "quickstart-enterprise-client";

/// A stand-in enterprise identity provider (a second `AuthServer`, like the stand-in third
/// party): the demo users sign in there, and its application `ENTERPRISE_APP` trades their
/// id_tokens for ID-JAGs addressed to this server (`public_url`).
pub fn enterprise_idp(
    idp_url: &str,
    public_url: &str,
    password: &str,
) -> Result<axum::Router, Box<dyn std::error::Error>> {
    let idp = AuthServer::builder(idp_url)
        .resource(format!("{idp_url}/profile"))
        .dev_user_in_groups("demo", password, [ADMINS])
        .dev_user("reader", password)
        .prefill_login(true)
        .server_name("Quickstart enterprise IdP")
        // Any loopback port (RFC 8252): the employee's app runs on their machine.
        .public_client(ENTERPRISE_APP, ["http://127.0.0.1/callback"], ["openid"])
        .issue_id_jags_for(IdJagAudience::new(public_url).client(ENTERPRISE_APP, ENTERPRISE_CLIENT))
        .build()?;
    Ok(idp.router())
}

/// This server trusting the stand-in enterprise IdP at `idp_url`: its ID-JAGs are redeemed by
/// `ENTERPRISE_CLIENT` (with `secret`), for what the demo users may hold.
pub fn trust_enterprise_idp(
    builder: AuthServerBuilder,
    idp_url: &str,
    secret: &str,
) -> AuthServerBuilder {
    builder
        .client(
            ENTERPRISE_CLIENT,
            secret,
            DEMO_SCOPES.split(' ').chain([ADMIN_SCOPE]),
        )
        .trust_enterprise_idp(
            EnterpriseIdp::new("enterprise", idp_url)
                .jwks_uri(
                    format!("{idp_url}/oauth/jwks"),
                    AddressPolicy::public_only().allow_loopback(),
                )
                .allowed_clients([ENTERPRISE_CLIENT])
                // The stand-in IdP is ours: its `admins` are our admins.
                .trust_groups(true),
        )
}

/// What the replicas of one deployment share, from `REDIS_URL` and `SECRET_KEY` (feature
/// `redis`): the stores of the authorization server and of the stand-in third party, their
/// signing keys (kept in the store, sealed), the vault keys, and the demo password.
#[derive(Clone)]
pub struct Replicated {
    #[cfg(feature = "redis")]
    store: tower_mcp_auth::store::RedisStore,
    #[cfg(feature = "redis")]
    third_party_store: tower_mcp_auth::store::RedisStore,
    signing: SigningKeys,
    third_party_signing: SigningKeys,
    vault: EncryptionKeys,
    /// The dev users' password, the same on every replica.
    pub password: String,
}

impl Replicated {
    /// From `REDIS_URL`, `REDIS_PREFIX` and `SECRET_KEY`; `None` without `REDIS_URL`.
    pub async fn from_env() -> Option<Result<Replicated, Box<dyn std::error::Error>>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let url = var("REDIS_URL")?;
        let prefix = var("REDIS_PREFIX").unwrap_or_else(|| "quickstart:".into());
        let Some(secret) = var("SECRET_KEY").filter(|s| s.len() >= 32) else {
            return Some(Err(
                "REDIS_URL needs SECRET_KEY: 32 random characters or more, \
                 the same on every replica (e.g. `openssl rand -base64 32`)"
                    .into(),
            ));
        };
        Some(Self::connect(&url, &prefix, &secret, var("DEMO_PASSWORD")).await)
    }

    /// Connects to the Redis at `url` (keys under `prefix`), with keys derived from `secret`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        secret: &str,
        password: Option<String>,
    ) -> Result<Replicated, Box<dyn std::error::Error>> {
        #[cfg(not(feature = "redis"))]
        {
            let _ = (url, prefix, secret, password);
            Err("REDIS_URL needs the redis feature: cargo run --example quickstart --features redis".into())
        }
        #[cfg(feature = "redis")]
        {
            use sha2::{Digest, Sha256};
            use tower_mcp_auth::store::{RedisStore, Store};
            // One secret, a key per purpose: SHA-256 over a label and the secret.
            let derive = |label: &str| -> [u8; 32] {
                Sha256::new()
                    .chain_update(label)
                    .chain_update([0])
                    .chain_update(secret)
                    .finalize()
                    .into()
            };
            let sealing = EncryptionKeys::new("kek-1", &derive("quickstart signing keys"))?;
            let vault = EncryptionKeys::new("vault-1", &derive("quickstart vault"))?;
            let store = RedisStore::builder(url).prefix(prefix).connect().await?;
            let third_party_store = RedisStore::builder(url)
                .prefix(format!("{prefix}third-party:"))
                .connect()
                .await?;
            let signing = SigningKeys::shared(&store, &sealing).await?;
            let third_party_signing = SigningKeys::shared(&third_party_store, &sealing).await?;
            // The first replica's password (given or random) is everyone's.
            let candidate = password.unwrap_or_else(random_password);
            let sealed = sealing.seal(candidate.as_bytes(), b"demo-password")?;
            let ten_years = std::time::Duration::from_secs(10 * 365 * 24 * 3600);
            store
                .put_if_absent("demo-password", sealed.into(), ten_years)
                .await?;
            let stored = store
                .get("demo-password")
                .await?
                .ok_or("the shared demo password vanished")?;
            let password =
                String::from_utf8(sealing.open(std::str::from_utf8(&stored)?, b"demo-password")?)?;
            Ok(Replicated {
                store,
                third_party_store,
                signing,
                third_party_signing,
                vault,
                password,
            })
        }
    }

    /// `auth` keeping its state and keys where every replica finds them.
    pub fn authorization_server(&self, auth: AuthServerBuilder) -> AuthServerBuilder {
        #[cfg(feature = "redis")]
        let auth = auth.store(self.store.clone());
        auth.signing_keys(self.signing.clone())
    }
}

/// The enterprise client's secret for a deployment whose demo password is `password`.
pub fn enterprise_client_secret(password: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"quickstart enterprise client\0")
        .chain_update(password.as_bytes())
        .finalize();
    digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// A random dev password (18 hex digits).
fn random_password() -> String {
    let bytes: [u8; 9] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The embedded default, whole: the MCP endpoint behind the bearer, policy and ATAG layers
/// with the authorization server (from `auth`) and the ATAG routes beside it (the third party
/// as an external service), and the stand-in third party's own app to serve at
/// `third_party_url`. With `replicated`, the ATAG vault and the third party share its state.
pub fn embedded_stack(
    auth: AuthServerBuilder,
    resource_uri: &str,
    third_party_url: &str,
    password: &str,
    replicated: Option<&Replicated>,
) -> Result<(axum::Router, axum::Router), Box<dyn std::error::Error>> {
    let auth = match replicated {
        Some(shared) => shared.authorization_server(auth),
        None => auth,
    }
    .build()?;
    let mut atag = Atag::builder(&auth)
        .service(third_party_service(third_party_url))
        .address_policy(outbound_policy()?);
    if let Some(shared) = replicated {
        atag = atag.vault_keys(shared.vault.clone());
    }
    let atag = atag.build()?;
    let public_url = auth.issuer().to_owned();
    let mut third_party = third_party_builder(third_party_url, &public_url, password);
    if let Some(shared) = replicated {
        #[cfg(feature = "redis")]
        {
            third_party = third_party.store(shared.third_party_store.clone());
        }
        third_party = third_party.signing_keys(shared.third_party_signing.clone());
    }
    let third_party = third_party.build()?;
    let resource = resource_builder(resource_uri, auth.issuer())
        .resource_name("tower-mcp-auth quickstart")
        .build()?;
    let app = app_with_third_party(
        resource,
        auth.validator(resource_uri)?,
        &atag,
        third_party_url,
    )?
    .merge(auth.router())
    .merge(auth.health_router())
    .merge(atag.router());
    Ok((app, third_party.router()))
}

/// The protected resource metadata: the baseline scope first, then every scope the policy can
/// ask for (a client choosing from the metadata can reach every tool).
pub fn resource_builder(resource_uri: &str, issuer: &str) -> ProtectedResourceBuilder {
    ProtectedResource::builder(resource_uri)
        .authorization_server(issuer)
        .scopes_supported([BASE_SCOPE])
        .policy(&policy())
}

/// Binds `port` on loopback with `TCP_NODELAY` on every accepted connection. Without it, a
/// response written in several small pieces (rmcp's SSE frames) waits for the client's delayed
/// ACK (Nagle's algorithm): about 40 ms per request on a kept-alive connection, which is what
/// every MCP client uses.
pub async fn bind(port: u16) -> std::io::Result<NoDelayListener> {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    Ok(listener.tap_io(no_delay))
}

/// A TCP listener whose connections send each write at once (see [`bind`]).
pub type NoDelayListener =
    axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>;

fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!("cannot set TCP_NODELAY: {e}");
    }
}

/// What the embedded default prints after `MCP endpoint:` (each claim is checked by a test).
pub fn banner(
    public_url: &str,
    resource_uri: &str,
    third_party_url: &str,
    password: &str,
) -> String {
    format!(
        "\
Resource metadata: {public_url}/.well-known/oauth-protected-resource/mcp
Authorization:     {public_url}/.well-known/oauth-authorization-server
Sign in as:        demo / {password}  (the login form comes prefilled; may hold every scope)
               or: reader / {password}  (may not hold {ADMIN_SCOPE})

Connect any MCP client to {resource_uri}: it discovers the authorization server,
registers itself, and opens the login page in your browser. Then try `whoami`,
`add_note`, and `purge_all_notes`, which asks for {ADMIN_SCOPE} (step-up): as demo you
approve the new scope and the call succeeds; as reader the new token lacks it and the
call stays refused.
Third party:       {third_party_url} (sign in there as demo / the same password)
`third_party_profile` acts at the third party: the first call answers with a link to
connect your account there; open it, sign in, approve, and call it again.
"
    )
}

/// The external identity provider mode: tokens come from `issuer`, verified with its published
/// keys, or by asking its introspection endpoint.
#[derive(Debug, Clone, Default)]
pub struct ExternalIdp {
    /// The provider's issuer, exactly as its tokens carry it.
    pub issuer: String,
    /// Its JWKS URL; found through discovery when unset (and no introspection is set).
    pub jwks_url: Option<String>,
    /// RFC 7662: the endpoint, and our client id and secret there.
    pub introspection: Option<(String, String, String)>,
    /// Only JWTs typed `at+jwt`.
    pub require_at_jwt: bool,
    /// A further accepted audience, for providers that cannot put the resource URI in `aud`
    /// (Entra ID v2 tokens carry the API's application id).
    pub extra_audience: Option<String>,
    /// How long an introspection answer is reused (default 60 s): a revoked opaque token is
    /// refused at most this long after its revocation.
    pub introspection_cache: Option<std::time::Duration>,
}

impl ExternalIdp {
    /// From `ISSUER` (or the older `JWKS_URL` alone, which then needs `ISSUER` too),
    /// `JWKS_URL`, `INTROSPECTION_*` and `REQUIRE_AT_JWT`; `None` for the embedded default.
    pub fn from_env() -> Option<Result<ExternalIdp, String>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let jwks_url = var("JWKS_URL");
        let issuer = match (var("ISSUER"), &jwks_url) {
            (Some(issuer), _) => issuer,
            (None, Some(_)) => return Some(Err("ISSUER is required with JWKS_URL".into())),
            (None, None) => return None,
        };
        let introspection = match (
            var("INTROSPECTION_URL"),
            var("INTROSPECTION_CLIENT_ID"),
            var("INTROSPECTION_CLIENT_SECRET"),
        ) {
            (Some(url), Some(id), Some(secret)) => Some((url, id, secret)),
            (None, None, None) => None,
            _ => {
                return Some(Err(
                    "INTROSPECTION_URL needs INTROSPECTION_CLIENT_ID and INTROSPECTION_CLIENT_SECRET"
                        .into(),
                ));
            }
        };
        Some(Ok(ExternalIdp {
            issuer,
            jwks_url,
            introspection,
            require_at_jwt: var("REQUIRE_AT_JWT").is_some_and(|v| v == "1" || v == "true"),
            extra_audience: var("EXTRA_AUDIENCE"),
            introspection_cache: None,
        }))
    }

    /// The validator for tokens of this provider audienced to `resource`, checked against the
    /// provider at start-up (issuer byte for byte, keys reachable and usable).
    pub async fn validator(
        &self,
        resource: &str,
    ) -> Result<Box<dyn TokenValidator>, Box<dyn std::error::Error>> {
        let introspection = match &self.introspection {
            Some((url, id, secret)) => {
                let mut builder = IntrospectionValidator::builder(url, resource)
                    .address_policy(outbound_policy()?)
                    .client_credentials(id, secret)
                    .issuer(&self.issuer);
                if let Some(ttl) = self.introspection_cache {
                    builder = builder.cache_ttl(ttl);
                }
                if let Some(audience) = &self.extra_audience {
                    builder = builder.also_audience(audience);
                }
                Some(builder.build()?)
            }
            None => None,
        };
        let jwks_url = match (&self.jwks_url, &introspection) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(_)) => None,
            (None, None) => {
                let provider =
                    discovery::discover(&reqwest::Client::new(), &self.issuer, false).await?;
                Some(
                    provider
                        .jwks_uri
                        .ok_or("the provider publishes no jwks_uri: set JWKS_URL")?,
                )
            }
        };
        let jwks = match jwks_url {
            Some(url) => {
                let mut builder = JwksValidator::builder(url, &self.issuer, resource)
                    .address_policy(outbound_policy()?);
                if self.require_at_jwt {
                    builder = builder.expected_type("at+jwt");
                }
                if let Some(audience) = &self.extra_audience {
                    builder = builder.also_audience(audience);
                }
                Some(builder.build_checked().await?)
            }
            None => None,
        };
        Ok(match (jwks, introspection) {
            (Some(jwks), Some(opaque)) => Box::new(ByFormat::new(jwks, opaque)),
            (Some(jwks), None) => Box::new(jwks),
            (None, Some(opaque)) => Box::new(opaque),
            (None, None) => return Err("no way to validate tokens".into()),
        })
    }

    /// What the quickstart prints in this mode: what the provider must issue.
    pub fn banner(&self, resource: &ProtectedResource) -> String {
        let how = match (&self.jwks_url, &self.introspection) {
            (_, Some((url, _, _))) if self.jwks_url.is_none() => {
                format!("opaque tokens, asked of {url} (RFC 7662)")
            }
            (_, Some((url, _, _))) => format!("JWTs, and opaque tokens asked of {url}"),
            (Some(url), None) => format!("JWTs verified with the keys at {url}"),
            (None, None) => "JWTs verified with the keys its discovery document names".into(),
        };
        let typ = if self.require_at_jwt {
            " typed at+jwt (RFC 9068),"
        } else {
            ""
        };
        format!(
            "\
Resource metadata: {metadata}
Tokens:            {how}
The identity provider must issue access tokens{typ} with
  iss   exactly {issuer}
  aud   {resource} (RFC 8707 resource indicator, or an audience mapper){extra}
  scope (or scp) from: {scopes}
  sub, exp; client_id or azp if you want the client named
and let clients that register themselves ask for those scopes, now and later (step-up).
Tools that need a third-party account are not offered in this mode (no ATAG layer).
",
            metadata = resource.metadata_url(),
            issuer = self.issuer,
            resource = resource.resource(),
            scopes = resource.scopes_supported(),
            extra = self
                .extra_audience
                .as_ref()
                .map(|a| format!(" or {a}"))
                .unwrap_or_default(),
        )
    }
}

/// Where the quickstart's own fetches may go: public addresses and loopback (its stand-in third
/// party and a local identity provider), plus what `OUTBOUND_ALLOW` adds (`private`,
/// `link-local`, `any`, or networks such as `10.20.0.0/16`, comma-separated).
fn outbound_policy() -> Result<AddressPolicy, ConfigError> {
    let mut allow = vec!["loopback".to_owned()];
    if let Ok(more) = std::env::var("OUTBOUND_ALLOW") {
        allow.extend(
            more.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    let mut outbound = tower_mcp_auth::config::OutboundConfig::default();
    outbound.allow = allow;
    outbound.address_policy()
}

/// Upstream identity providers configured through the environment, beside the dev login.
fn with_upstream_providers(
    mut builder: AuthServerBuilder,
) -> Result<AuthServerBuilder, Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let (Some(issuer), Some(id)) = (var("OIDC_ISSUER"), var("OIDC_CLIENT_ID")) {
        let mut oidc = OidcProvider::builder("oidc", &issuer, id)
            .display_name(&issuer)
            .address_policy(outbound_policy()?);
        if let Some(secret) = var("OIDC_CLIENT_SECRET") {
            oidc = oidc.client_secret(secret);
        }
        println!("Sign-in also at:   {issuer}");
        builder = builder.identity_provider(oidc.build()?);
    }
    if let (Some(id), Some(secret)) = (var("GITHUB_CLIENT_ID"), var("GITHUB_CLIENT_SECRET")) {
        println!("Sign-in also at:   GitHub");
        builder = builder.identity_provider(GitHubProvider::new(id, secret)?);
    }
    Ok(builder)
}

/// `app` with `GET /metrics`: what `handle`'s Prometheus recorder holds, in the text format.
/// Serve it where only your scraper can reach it in production (it names backends and tools).
pub fn with_metrics(
    app: axum::Router,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> axum::Router {
    app.route(
        "/metrics",
        axum::routing::get(move || {
            let text = handle.render();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    text,
                )
            }
        }),
    )
}

/// Browser-based clients (the MCP Inspector) call the MCP endpoint from another origin: let
/// them, and let them read the challenge and session id. Outside the bearer layer, since
/// preflights carry no token. The authorization server's endpoints and the metadata bring
/// their own CORS: a second layer around them would send every header twice.
fn cors() -> tower_http::cors::CorsLayer {
    use tower_http::cors::{Any, CorsLayer};
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([
            http::header::WWW_AUTHENTICATE,
            http::HeaderName::from_static("mcp-session-id"),
            http::HeaderName::from_static("dpop-nonce"),
        ])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_mcp_auth=debug".into()),
        )
        .init();
    if std::env::args().any(|arg| arg == "--behind-gateway") {
        let port: u16 = env_or("PORT", || "9000".into()).parse()?;
        let secret = std::env::var("GATEWAY_SECRET")
            .ok()
            .filter(|s| !s.is_empty());
        let listener = bind(port).await?;
        println!("Notes backend:     http://127.0.0.1:{port}/mcp (for the gateway example)");
        match &secret {
            Some(_) => println!("Gateway secret:    required on every request (GATEWAY_SECRET)"),
            None => println!(
                "Gateway secret:    none (GATEWAY_SECRET unset): anything on this machine can claim to be any user"
            ),
        }
        axum::serve(listener, behind_gateway_app(secret.as_deref())).await?;
        return Ok(());
    }
    let port: u16 = env_or("PORT", || "8080".into()).parse()?;
    let public_url = env_or("PUBLIC_URL", || format!("http://127.0.0.1:{port}"));
    let public_url = public_url.trim_end_matches('/').to_owned();
    let resource_uri = format!("{public_url}/mcp");
    let listener = bind(port).await?;
    println!("MCP endpoint:      {resource_uri}");

    let app = match ExternalIdp::from_env() {
        // An external identity provider issues the tokens.
        Some(external) => {
            let external = external?;
            let resource = resource_builder(&resource_uri, &external.issuer).build()?;
            let validator = external.validator(resource.resource()).await?;
            print!("{}", external.banner(&resource));
            app(resource, validator)
        }
        // The embedded default: our own authorization server, in this process.
        None => {
            let replicated = Replicated::from_env().await.transpose()?;
            let password = match &replicated {
                Some(shared) => shared.password.clone(),
                None => env_or("DEMO_PASSWORD", random_password),
            };
            // The stand-in third party, on the next port.
            let third_party_port = port.checked_add(1).ok_or("PORT must be below 65535")?;
            let third_party_url = format!("http://127.0.0.1:{third_party_port}");
            let third_party_listener = bind(third_party_port).await?;
            let (machine, machine_key) = machine_client()?;
            // The stand-in enterprise IdP, on the port after.
            let enterprise_port = port.checked_add(2).ok_or("PORT must be below 65534")?;
            let enterprise_url = format!("http://127.0.0.1:{enterprise_port}");
            let enterprise_listener = bind(enterprise_port).await?;
            // Derived from the demo password, so every replica configures the same secret.
            let enterprise_secret = enterprise_client_secret(&password);
            let enterprise = enterprise_idp(&enterprise_url, &public_url, &password)?;
            let (app, third_party) = embedded_stack(
                with_upstream_providers(trust_enterprise_idp(
                    auth_server_builder(&public_url, &resource_uri, &password)
                        .machine_client(machine),
                    &enterprise_url,
                    &enterprise_secret,
                ))?,
                &resource_uri,
                &third_party_url,
                &password,
                replicated.as_ref(),
            )?;
            if replicated.is_some() {
                println!(
                    "Replica:           state in Redis (REDIS_URL), shared with every replica"
                );
            }
            tokio::spawn(async move { axum::serve(third_party_listener, third_party).await });
            tokio::spawn(async move { axum::serve(enterprise_listener, enterprise).await });
            print!(
                "{}",
                banner(&public_url, &resource_uri, &third_party_url, &password)
            );
            println!(
                "Machine client:    {MACHINE_CLIENT_ID} (client_credentials, private_key_jwt; ES256, aud = {public_url});\n                   its private key, for this run only:\n{machine_key}"
            );
            println!(
                "Enterprise IdP:    {enterprise_url} (sign in as demo or reader; its app {ENTERPRISE_APP} trades\n                   id_tokens for ID-JAGs for this server, which {ENTERPRISE_CLIENT} redeems\n                   with the secret {enterprise_secret})"
            );
            app
        }
    };
    // METRICS=1: Prometheus text at /metrics (the library records through the `metrics` facade;
    // this installs a recorder and serves what it holds).
    let app = if std::env::var("METRICS").is_ok_and(|v| v == "1") {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
        println!("Metrics:           {public_url}/metrics (Prometheus text)");
        with_metrics(app, handle)
    } else {
        app
    };
    // The peer address keys the per-address registration limit.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await?;
    Ok(())
}
