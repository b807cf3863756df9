//! An rmcp Streamable HTTP MCP server behind tower-mcp-auth's bearer layer.
//!
//! ```text
//! cargo run --example quickstart                  # serve on 127.0.0.1:8080, print a dev token
//! cargo run --example quickstart -- token bob "mcp:tools"   # mint a token (needs DEV_JWT_SECRET)
//! ```
//!
//! Environment:
//! - `PORT` (default 8080), `PUBLIC_URL` (default `http://127.0.0.1:$PORT`): the URL clients use;
//!   the MCP endpoint is `$PUBLIC_URL/mcp`.
//! - Tokens of an external identity provider: `JWKS_URL` and `ISSUER` (e.g. a Keycloak realm).
//! - Otherwise dev tokens: HS256 JWTs signed with `DEV_JWT_SECRET` (random per run when unset),
//!   issuer `$PUBLIC_URL`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{schemars, tool, tool_router};
use tower::ServiceBuilder;
use tower_mcp_auth::policy::ToolPolicy;
use tower_mcp_auth::validate::{JwksValidator, JwtKey, JwtValidator, TokenValidator};
use tower_mcp_auth::{Auth, BearerLayer, ProtectedResource};

/// The scope every request needs (the baseline a client asks for first).
pub const BASE_SCOPE: &str = "mcp:tools";
/// The scopes of the dev token the quickstart prints.
pub const DEMO_SCOPES: &str = "mcp:tools notes:read notes:write";

/// A small notes server: each user sees only their own notes.
#[derive(Clone, Default)]
pub struct Notes {
    by_user: Arc<Mutex<HashMap<String, Vec<String>>>>,
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
        .tool("purge_*", ["notes:admin"])
        .scope_separator(":")
        .build()
        .unwrap_or_else(|e| panic!("the quickstart policy is valid: {e}"))
}

/// The whole application: the MCP endpoint at `/mcp` behind the bearer and tool policy layers,
/// and the protected resource metadata routes beside it.
pub fn app<V: TokenValidator>(resource: ProtectedResource, validator: V) -> axum::Router {
    // One notebook for the process; rmcp calls the factory once per session.
    let notes = Notes::default();
    let mcp = StreamableHttpService::new(
        move || Ok(notes.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_allowed_hosts(allowed_hosts(resource.resource())),
    );
    let bearer = BearerLayer::new(validator, resource.clone()).require_scopes([BASE_SCOPE]);
    axum::Router::new()
        .nest_service(
            "/mcp",
            ServiceBuilder::new()
                .layer(bearer)
                .layer(policy().layer(&resource))
                .service(mcp),
        )
        .merge(resource.router())
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

/// Mints an HS256 dev token the quickstart's dev validator accepts.
pub fn mint_dev_token(
    secret: &[u8],
    issuer: &str,
    audience: &str,
    subject: &str,
    scope: &str,
    ttl: Duration,
) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + ttl;
    let claims = serde_json::json!({
        "iss": issuer, "aud": audience, "sub": subject, "scope": scope,
        "client_id": "quickstart-dev", "exp": exp.as_secs(),
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
}

fn env_or(name: &str, default: impl FnOnce() -> String) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_mcp_auth=debug".into()),
        )
        .init();
    let port: u16 = env_or("PORT", || "8080".into()).parse()?;
    let public_url = env_or("PUBLIC_URL", || format!("http://127.0.0.1:{port}"));
    let public_url = public_url.trim_end_matches('/').to_owned();
    let resource_uri = format!("{public_url}/mcp");
    let jwks = std::env::var("JWKS_URL").ok().filter(|v| !v.is_empty());
    let issuer = env_or("ISSUER", || public_url.clone());
    let resource = ProtectedResource::builder(&resource_uri)
        .authorization_server(&issuer)
        .scopes_supported([BASE_SCOPE])
        .resource_name("tower-mcp-auth quickstart")
        .build()?;

    let secret = env_or("DEV_JWT_SECRET", || {
        let bytes: [u8; 32] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    });
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("token") {
        let subject = args.next().unwrap_or_else(|| "demo".into());
        let scope = args.next().unwrap_or_else(|| BASE_SCOPE.into());
        if std::env::var("DEV_JWT_SECRET").is_err() {
            return Err("set DEV_JWT_SECRET to the secret the server runs with".into());
        }
        let token = mint_dev_token(
            secret.as_bytes(),
            &issuer,
            resource.resource(),
            &subject,
            &scope,
            Duration::from_secs(3600),
        );
        println!("{token}");
        return Ok(());
    }

    let app = match &jwks {
        Some(jwks_url) => {
            let validator =
                JwksValidator::builder(jwks_url, &issuer, resource.resource()).build()?;
            app(resource.clone(), validator)
        }
        None => {
            let validator = JwtValidator::builder(&issuer, resource.resource())
                .key(JwtKey::hmac(secret.as_bytes(), Algorithm::HS256)?)
                .build()?;
            app(resource.clone(), validator)
        }
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("MCP endpoint:      {resource_uri}");
    println!("Resource metadata: {}", resource.metadata_url());
    match &jwks {
        Some(url) => println!("Validating tokens of {issuer} with keys from {url}"),
        None => {
            let token = mint_dev_token(
                secret.as_bytes(),
                &issuer,
                resource.resource(),
                "demo",
                DEMO_SCOPES,
                Duration::from_secs(3600),
            );
            println!("Dev secret:        DEV_JWT_SECRET={secret}");
            println!("Dev token (user `demo`, scopes `{DEMO_SCOPES}`, 1 hour):\n\n{token}\n");
            println!(
                "It lists and adds notes; `purge_all_notes` is hidden from it and answers 403 asking for `notes:admin`."
            );
            println!(
                "Mint others: DEV_JWT_SECRET={secret} cargo run --example quickstart -- token alice \"mcp:tools notes\"\n"
            );
            println!("Try it:\n  curl -i {resource_uri} -H 'Authorization: Bearer {token}' \\");
            println!(
                "    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\"
            );
            println!(
                "    -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"curl\",\"version\":\"1\"}}}}}}'"
            );
        }
    }
    axum::serve(listener, app).await?;
    Ok(())
}
