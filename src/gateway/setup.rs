//! [`Gateway`]: the authorization server, ATAG and one protected route per backend, as one
//! axum router.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderName, Method};
use serde_json::json;
use tower_layer::Layer;

use super::backend::Backend;
use super::proxy::McpProxy;
use super::session::{SessionCheckLayer, SessionSeal};
use super::user_headers::UserHeaders;
use crate::atag::{Atag, ExternalService};
use crate::origin::OriginLayer;
use crate::server::{AuthServer, AuthServerBuilder, EncryptionKeys};
use crate::{ConfigError, ProtectedResource, Scopes, audit};

/// An authenticating front door for several backend MCP servers, built from the crate's own
/// layers: for each [`Backend`], `/{name}/mcp` is guarded by
/// [`OriginLayer`] → [`BearerLayer`](crate::BearerLayer) (tokens of this gateway's
/// authorization server for that backend's resource only) →
/// [`ToolPolicyLayer`](crate::ToolPolicyLayer) → [`AtagLayer`](crate::atag::AtagLayer) (when
/// third-party services are configured) → [`McpProxy`].
///
/// Its router also serves the authorization server ([`AuthServer::router`]), the ATAG connect
/// routes, each backend's protected-resource metadata
/// (`/.well-known/oauth-protected-resource/{name}/mcp`), `GET /services` (the backends the
/// caller's token lets it use), `GET /healthz` (the process answers) and `GET /readyz` (the
/// store answers).
///
/// ```
/// use tower_mcp_auth::gateway::{Backend, Gateway};
/// use tower_mcp_auth::server::AuthServer;
///
/// let gateway = Gateway::builder(
///         AuthServer::builder("https://gateway.example.com").dev_user("demo", "demo"),
///     )
///     .backend(Backend::new("notes", "http://10.0.0.5:8080/mcp"))
///     .backend(Backend::new("search", "http://10.0.0.6:8080/mcp"))
///     .build()
///     .unwrap();
/// assert_eq!(gateway.resource("notes").unwrap().resource(), "https://gateway.example.com/notes/mcp");
/// let app: axum::Router = gateway.router();
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct Gateway {
    auth: AuthServer,
    atag: Option<Atag>,
    mounted: Arc<[Mounted]>,
    router: axum::Router,
}

#[derive(Debug)]
struct Mounted {
    name: String,
    description: Option<String>,
    resource: ProtectedResource,
    required: Scopes,
}

/// Builder of [`Gateway`].
#[must_use]
pub struct GatewayBuilder {
    auth: AuthServerBuilder,
    backends: Vec<Backend>,
    services: Vec<ExternalService>,
    vault_keys: Option<EncryptionKeys>,
    addresses: crate::address::AddressPolicy,
    user_headers: UserHeaders,
    ingress_header: Option<HeaderName>,
    origins: Vec<String>,
    loopback_origins: bool,
    session_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("auth", &self.auth)
            .field("backends", &self.backends)
            .field("user_headers", &self.user_headers)
            .field("ingress_header", &self.ingress_header)
            .field("session_key", &self.session_key.map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Headers a configured name must not be: the proxy removes or sets them itself, so a user or
/// service header under such a name would be lost, or would smuggle one back in.
const RESERVED_HEADERS: [&str; 14] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "accept-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "x-mcp-gateway-secret",
];

fn check_header_name(name: &HeaderName, what: &str) -> Result<(), ConfigError> {
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(ConfigError::InvalidServer(format!(
            "{what} cannot be `{name}`: the gateway manages that header itself"
        )));
    }
    Ok(())
}

impl Gateway {
    /// A gateway whose authorization server is built from `auth` (its base URL is the
    /// gateway's public URL; the backends' resources are added to it).
    pub fn builder(auth: AuthServerBuilder) -> GatewayBuilder {
        GatewayBuilder {
            auth,
            backends: Vec::new(),
            services: Vec::new(),
            vault_keys: None,
            addresses: crate::address::AddressPolicy::default(),
            user_headers: UserHeaders::default(),
            ingress_header: None,
            origins: Vec::new(),
            loopback_origins: false,
            session_key: None,
        }
    }

    /// Everything the gateway serves.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// The gateway's authorization server.
    pub fn auth_server(&self) -> &AuthServer {
        &self.auth
    }

    /// ATAG, when third-party services are configured.
    pub fn atag(&self) -> Option<&Atag> {
        self.atag.as_ref()
    }

    /// The protected resource of backend `name`.
    pub fn resource(&self, name: &str) -> Option<&ProtectedResource> {
        self.mounted
            .iter()
            .find(|m| m.name == name)
            .map(|m| &m.resource)
    }
}

impl GatewayBuilder {
    /// Adds a backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backends.push(backend);
        self
    }

    /// A third-party service (GitHub, Google, …) whose users' tokens the ATAG vault keeps for
    /// the backends whose policies need it.
    pub fn third_party(mut self, service: ExternalService) -> Self {
        self.services.push(service);
        self
    }

    /// Which addresses the third-party services' token endpoints may be reached at (default
    /// public only; see [`AddressPolicy`](crate::address::AddressPolicy)). Backends are the
    /// operator's own and are not screened.
    pub fn address_policy(mut self, policy: crate::address::AddressPolicy) -> Self {
        self.addresses = policy;
        self
    }

    /// The keys that encrypt the vault (default: generated at start-up, so connections do not
    /// survive a restart; give persistent keys for several replicas).
    pub fn vault_keys(mut self, keys: EncryptionKeys) -> Self {
        self.vault_keys = Some(keys);
        self
    }

    /// Which user-context headers backends receive (default: all, under their default names).
    pub fn user_headers(mut self, headers: UserHeaders) -> Self {
        self.user_headers = headers;
        self
    }

    /// Reads clients' tokens from `name` (e.g. `X-Authorization`) instead of `Authorization`,
    /// for deployments where `Authorization` is reserved for something in front. Off by
    /// default. The header never reaches a backend.
    pub fn ingress_header(mut self, name: HeaderName) -> Self {
        self.ingress_header = Some(name);
        self
    }

    /// Also accepts requests from the browser origin `origin` (besides the gateway's own).
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.push(origin.into());
        self
    }

    /// Also accepts every loopback origin (for a gateway on a developer's machine).
    pub fn allow_loopback_origins(mut self) -> Self {
        self.loopback_origins = true;
        self
    }

    /// The key that seals session ids (see [`McpProxyBuilder::session_key`](super::McpProxyBuilder::session_key)):
    /// give every replica the same one so any of them accepts a session opened through another
    /// (default: random per process, so route sessions stickily or give a key).
    pub fn session_key(mut self, key: [u8; 32]) -> Self {
        self.session_key = Some(key);
        self
    }

    /// Builds the authorization server, ATAG and every backend's stack.
    pub fn build(self) -> Result<Gateway, ConfigError> {
        if self.backends.is_empty() {
            return Err(ConfigError::InvalidServer(
                "a gateway needs at least one backend".into(),
            ));
        }
        let mut taken: Vec<HeaderName> = Vec::new();
        for name in self.user_headers.reserved() {
            check_header_name(&name, "a user header")?;
            taken.push(name);
        }
        if let Some(name) = &self.ingress_header {
            check_header_name(name, "the ingress header")?;
            if taken.contains(name) {
                return Err(ConfigError::InvalidServer(format!(
                    "the ingress header `{name}` is also a user header"
                )));
            }
        }
        for backend in &self.backends {
            let name = &backend.service_token_header;
            check_header_name(name, "a service token header")?;
            if taken.contains(name) || self.ingress_header.as_ref() == Some(name) {
                return Err(ConfigError::InvalidServer(format!(
                    "backend `{}`: the service token header `{name}` is also a user or ingress header",
                    backend.name
                )));
            }
        }
        let base = self.auth.base().trim_end_matches('/').to_owned();
        let insecure = base.starts_with("http://");
        let mut auth = self.auth;
        let mut policies = Vec::with_capacity(self.backends.len());
        for (i, backend) in self.backends.iter().enumerate() {
            backend.check_name()?;
            if self.backends[..i].iter().any(|b| b.name == backend.name) {
                return Err(ConfigError::InvalidServer(format!(
                    "two backends are named `{}`",
                    backend.name
                )));
            }
            let policy = backend.effective_policy()?;
            auth = auth
                .describe_scopes_of(&policy)
                .resource(format!("{base}/{}/mcp", backend.name))
                .scopes_supported(
                    policy
                        .scopes()
                        .iter()
                        .chain(backend.required_scopes.iter().map(String::as_str)),
                );
            policies.push(policy);
        }
        let auth = auth.build()?;
        let atag = if self.services.is_empty() {
            None
        } else {
            let mut builder = Atag::builder(&auth);
            for service in self.services {
                builder = builder.service(service);
            }
            if let Some(keys) = self.vault_keys {
                builder = builder.vault_keys(keys);
            }
            Some(builder.address_policy(self.addresses).build()?)
        };

        let session_key = match self.session_key {
            Some(key) => key,
            None => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| {
                    ConfigError::InvalidServer(format!("no randomness for the session key: {e}"))
                })?;
                key
            }
        };
        let mut router = auth.router();
        if let Some(atag) = &atag {
            router = router.merge(atag.router());
        }
        let mut mounted = Vec::with_capacity(self.backends.len());
        for (backend, policy) in self.backends.into_iter().zip(policies) {
            let mut resource = ProtectedResource::builder(format!("{base}/{}/mcp", backend.name))
                .authorization_server(auth.issuer())
                .scopes_supported(&backend.required_scopes)
                .policy(&policy)
                .resource_name(
                    backend
                        .description
                        .clone()
                        .unwrap_or_else(|| backend.name.clone()),
                );
            if insecure {
                resource = resource.allow_insecure_http();
            }
            let resource = resource.build()?;
            let mut origin = OriginLayer::new(&resource);
            for allowed in &self.origins {
                origin = origin.allow(allowed)?;
            }
            if self.loopback_origins {
                origin = origin.allow_loopback();
            }
            // Sessions are bound by the proxy's sealed ids, which every replica can check; the
            // bearer layer's own binding is per process.
            let mut bearer = auth.bearer_layer(&resource)?.session_binding(false);
            if !backend.required_scopes.is_empty() {
                bearer = bearer.require_scopes(&backend.required_scopes);
            }
            if let Some(scopes) = &backend.challenge_scopes {
                bearer = bearer.challenge_scopes(scopes);
            }
            let mut proxy = McpProxy::builder(&backend.name, &backend.url)
                .session_key(session_key)
                .own_issuer(auth.issuer())
                .user_headers(self.user_headers.clone());
            if let Some(name) = &self.ingress_header {
                bearer = bearer.token_header(name.clone());
                proxy = proxy.strip_request_header(name.clone());
            }
            if let Some(timeout) = backend.connect_timeout {
                proxy = proxy.connect_timeout(timeout);
            }
            if let Some(timeout) = backend.response_timeout {
                proxy = proxy.response_timeout(timeout);
            }
            if let Some(limit) = backend.max_in_flight {
                proxy = proxy.max_in_flight(limit);
            }
            if let Some(limit) = backend.max_response_bytes {
                proxy = proxy.max_response_bytes(limit);
            }
            if let Some(secret) = &backend.gateway_secret {
                proxy = proxy.gateway_secret(secret);
            }
            if let Some(limit) = backend.max_in_flight_per_user {
                proxy = proxy.max_in_flight_per_user(limit);
            }
            if atag.is_none() {
                // With ATAG the layer removes a client's copy before setting its own; without
                // it nothing else would, and the backend would take a forged token as real.
                proxy = proxy.strip_request_header(backend.service_token_header.clone());
            }
            let proxy = proxy.build()?;
            let guarded = policy.layer(&resource);
            let sessions = SessionCheckLayer::new(SessionSeal::new(session_key), &backend.name);
            let path = format!("{}/{}/mcp", auth.urls().local_path(""), backend.name);
            let route = match &atag {
                Some(atag) => {
                    let third_party = atag
                        .layer(&policy)?
                        .forward_header(backend.service_token_header.clone());
                    let stack = origin.layer(
                        bearer.layer(sessions.layer(guarded.layer(third_party.layer(proxy)))),
                    );
                    axum::Router::new().nest_service(&path, stack)
                }
                None => {
                    if let Some(id) = policy.service_ids().first() {
                        return Err(ConfigError::InvalidService(format!(
                            "backend `{}` needs service `{id}`, but no third-party service is configured",
                            backend.name
                        )));
                    }
                    let stack = origin.layer(bearer.layer(sessions.layer(guarded.layer(proxy))));
                    axum::Router::new().nest_service(&path, stack)
                }
            };
            let document = resource.document().clone();
            router = router.merge(route.layer(cors())).route(
                resource.metadata_path(),
                get({
                    let document = document.clone();
                    move |method: Method| {
                        let document = document.clone();
                        async move { crate::resource::metadata_response(&method, document) }
                    }
                })
                .options(move |method: Method| {
                    let document = document.clone();
                    async move { crate::resource::metadata_response(&method, document) }
                }),
            );
            mounted.push(Mounted {
                name: backend.name,
                description: backend.description,
                required: Scopes::new(&backend.required_scopes),
                resource,
            });
        }
        let mounted: Arc<[Mounted]> = mounted.into();
        let listing = Listing {
            auth: auth.clone(),
            mounted: mounted.clone(),
            ingress: self.ingress_header.clone(),
        };
        let local = |path: &str| auth.urls().local_path(path);
        router = router
            .route(&local("/services"), get(list_services).with_state(listing))
            .merge(auth.health_router());
        Ok(Gateway {
            auth,
            atag,
            mounted,
            router,
        })
    }
}

/// CORS for browser-based MCP clients: any origin (the origin check is the Origin layer's),
/// the challenge and session headers readable.
fn cors() -> tower_http::cors::CorsLayer {
    use tower_http::cors::{Any, CorsLayer};
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([http::header::WWW_AUTHENTICATE, crate::wire::MCP_SESSION_ID])
}

#[derive(Debug, Clone)]
struct Listing {
    auth: AuthServer,
    mounted: Arc<[Mounted]>,
    /// Where clients put their token, when not in `Authorization`.
    ingress: Option<HeaderName>,
}

/// `GET /services`: the backends the caller's token (ours, for any backend) lets it use.
async fn list_services(
    State(listing): State<Listing>,
    method: http::Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    mut headers: HeaderMap,
) -> Response {
    if let Some(ingress) = &listing.ingress {
        // Read the token where the MCP routes read it: only the ingress header counts.
        let token = headers.get_all(ingress).iter().cloned().collect::<Vec<_>>();
        headers.remove(http::header::AUTHORIZATION);
        for value in token {
            headers.append(http::header::AUTHORIZATION, value);
        }
    }
    let caller = crate::server::CallerRequest {
        method: &method,
        path: uri.path(),
        headers: &headers,
    };
    let ctx = match crate::server::bearer_caller(&listing.auth, caller).await {
        Ok(ctx) => ctx,
        Err(e) => return e.into_response(),
    };
    let services: Vec<_> = listing
        .mounted
        .iter()
        .filter(|m| ctx.scopes().contains_all(m.required.iter()))
        .map(|m| {
            json!({
                "name": m.name,
                "description": m.description,
                "url": m.resource.resource(),
                "resource_metadata": m.resource.metadata_url(),
                "scopes_supported": m.resource.scopes_supported().iter().collect::<Vec<_>>(),
            })
        })
        .collect();
    tracing::debug!(target: audit::TARGET, subject = %audit::Escaped(ctx.subject()), listed = services.len(), "services listed");
    let mut response = axum::Json(json!({ "services": services })).into_response();
    crate::server::no_store(response.headers_mut());
    response
}
